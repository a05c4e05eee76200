"""`MockConfig`: every knob of the mock vLLM server, settable at startup and at run time.

Each field becomes a `--kebab-case` CLI flag (its `description` is the help string) and a key
of `POST /_mock/config`. Units live in the names (`ttft_ms`, `drip_bytes_per_s`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatTemplateVariant",
    "DEFAULT_MODEL",
    "VLLM_VERSION",
    "MockConfig",
    "MockFlavor",
    "ReasoningField",
    "ReasoningModel",
]

DEFAULT_MODEL = "glm-4-9b-chat"
VLLM_VERSION = "0.32.0"  # the vLLM whose wire the mock follows (tests/fixtures/vllm-0.32.0)

MockFlavor = Literal["vllm", "openai"]
# "none": GLM-4-9B-Chat served without parsers; the others: a <think> model served with its parsers
# (monitor/mock/reasoning.py has the vLLM flags and the wire).
ReasoningModel = Literal["none", "glm45", "qwen3"]
ReasoningField = Literal["reasoning", "reasoning_content"]
ChatTemplateVariant = Literal["glm4", "no_system"]


class MockConfig(BaseModel):
    """Behaviour of the mock server: model identity, latency, misconfiguration and fault modes."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = Field(default=DEFAULT_MODEL, min_length=1, description="Served model name (the only one accepted).")
    max_model_len: int = Field(default=8192, ge=16, description="Context window in tokens (prompt + completion).")
    ttft_ms: float = Field(default=0.0, ge=0, description="Delay before the first token, in milliseconds.")
    itl_ms: float = Field(default=0.0, ge=0, description="Delay between streamed tokens, in milliseconds.")
    seed: int = Field(default=0, description="Seed for canned-reply choice and the fault-rate dice.")
    api_key: str | None = Field(default=None, description="Require 'Authorization: Bearer KEY' on /v1/*.")

    # Incident modes: misconfigurations seen with GLM-4-9B-Chat on vLLM (wire reference §6.3).
    no_chat_template: bool = Field(
        default=False, description="Chat requests fail with vLLM's 400 'default chat template is no longer allowed'."
    )
    no_stop_tokens: bool = Field(
        default=False,
        description="Chat replies never stop: the model writes the next user turn itself until max_tokens.",
    )
    leak_special_tokens: bool = Field(
        default=False, description="Replies contain raw special tokens such as <|user|> and <|assistant|>."
    )

    # Fault modes.
    error_rate: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of generation requests answered 500 with an empty body."
    )
    status: int | None = Field(
        default=None, ge=100, le=599, description="Answer every /v1 request with this HTTP status (500: empty body)."
    )
    stall_after: int | None = Field(
        default=None, ge=0, description="Stop sending after N tokens and hang with the connection open."
    )
    disconnect_after: int | None = Field(
        default=None, ge=0, description="Close the connection abruptly after N tokens (no [DONE])."
    )
    malformed_rate: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of responses with a malformed JSON body or stream event."
    )
    error_event_after: int | None = Field(
        default=None, ge=0, description="After N tokens send a vLLM mid-stream error event, then [DONE]."
    )
    drip_bytes_per_s: float | None = Field(
        default=None, gt=0, description="Send response bodies at this many bytes per second."
    )
    no_stream_usage: bool = Field(
        default=False, description="Never send usage in streams, even when stream_options.include_usage is set."
    )
    oversize_500: bool = Field(
        default=False,
        description="A prompt longer than max_model_len gets 500 with an empty body instead of a clean 400.",
    )
    flavor: MockFlavor = Field(
        default="vllm",
        description="Wire flavour: 'vllm', or 'openai' (ASCII escapes, CRLF, keep-alive comments, "
        "separate finish chunk, no /health or /metrics).",
    )
    # Deployment identity (what `llm-monitor fingerprint` records): flip one to make one component drift.
    server_version: str = Field(default=VLLM_VERSION, min_length=1, description="What GET /version reports.")
    chat_template_variant: ChatTemplateVariant = Field(
        default="glm4",
        description="'glm4' (GLM-4's template) or 'no_system' (a template that drops system messages): "
        "changes /tokenize with messages and the prompt_tokens of chats.",
    )
    tokenizer_variant: int = Field(
        default=0, ge=0, le=1000, description="Another tokenizer version: /tokenize token ids shift by 7 per step."
    )
    weights_variant: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Other model weights: another temperature-0 reply and other logprob distributions.",
    )
    default_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="A generation_config.json max_new_tokens: the max_tokens of requests that omit it.",
    )
    logprob_noise: float = Field(
        default=0.01, ge=0, le=0.5, description="Relative noise on every logprob, as batching causes."
    )
    record_timings: bool = Field(default=True, description="Record per-token send times, served at GET /_mock/timings.")
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        description="vLLM's --max-num-seqs: at most N requests generate at once, the rest wait (TTFT grows).",
    )

    # Reasoning models, tool calls and structured output (monitor/mock/reasoning.py).
    reasoning_model: ReasoningModel = Field(
        default="none",
        description="Model family: 'none' (GLM-4-9B-Chat, no parsers), 'glm45' (GLM-4.5: --reasoning-parser glm45 "
        "--tool-call-parser glm45) or 'qwen3' (Qwen3: --reasoning-parser qwen3 --tool-call-parser hermes).",
    )
    reasoning_field: ReasoningField = Field(
        default="reasoning",
        description="Name of the reasoning field in messages and deltas: 'reasoning' (vLLM 0.32) or "
        "'reasoning_content' (older vLLM, SGLang).",
    )
    no_reasoning_usage: bool = Field(
        default=False,
        description="usage.completion_tokens_details stays null instead of counting reasoning_tokens "
        "(servers that do not itemise them).",
    )
    no_reasoning_parser: bool = Field(
        default=False, description="Served without --reasoning-parser: <think>...</think> lands in content."
    )
    no_tool_parser: bool = Field(
        default=False,
        description="Tools are accepted but no parser extracts calls: the call stays text in content, "
        "finish_reason stop.",
    )
    ignore_response_format: bool = Field(
        default=False, description="response_format is ignored: the reply is prose, not JSON."
    )
    reasoning_budget_exhaust: bool = Field(
        default=False,
        description="The model never stops thinking: reasoning fills max_tokens, finish_reason length, no content.",
    )
