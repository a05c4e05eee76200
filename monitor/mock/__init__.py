"""A vLLM-faithful mock server (GLM-4-9B-Chat flavoured) with misconfiguration and fault modes.

`reasoning_model` switches to a reasoning model with tool calls and structured output (GLM-4.5 or
Qwen3 behind vLLM's parsers; monitor/mock/reasoning.py has the wire and its pipeline faults).

`create_mock_app(config)` builds the aiohttp application; `monitor.mock.server.run_mock(config,
host, port)` serves it until SIGINT/SIGTERM (not imported here, so `python -m monitor.mock.server`
runs cleanly). Wire shapes follow vLLM 0.32 (checked against recorded responses in
tests/fixtures/vllm-0.32.0); the "§" numbers in comments are sections of
docs/vllm-wire.md.
"""

from __future__ import annotations

from monitor.mock.app import create_mock_app
from monitor.mock.config import MockConfig

__all__ = ["MockConfig", "create_mock_app"]
