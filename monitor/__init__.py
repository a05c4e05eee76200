"""llm-monitor: canary probes, trend alerts and load tests for OpenAI-compatible LLM endpoints."""

__version__ = "0.1.0"
