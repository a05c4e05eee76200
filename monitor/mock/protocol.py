"""Request models and vLLM's request validation, with vLLM's error wording (wire reference §3).

Like vLLM's `OpenAIBaseModel`, every model accepts and ignores unknown keys (§1.1).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from monitor.mock import glm

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "DetokenizeRequest",
    "RequestError",
    "ServerFailure",
    "StreamOptions",
    "TokenizeRequest",
    "parse_body",
]


class ServerFailure(Exception):
    """The engine "failed": answered 500 with an empty body, like vLLM's launcher (§3.2)."""


class RequestError(Exception):
    """A request vLLM would reject; carries the HTTP status and the envelope's `type`."""

    def __init__(self, message: str, *, status: int = 400, error_type: str = "BadRequestError") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Lenient):
    # vLLM's StreamOptions defaults include_usage to True (§1.4), unlike OpenAI.
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class _SamplingRequest(_Lenient):
    model: str | None = None
    max_tokens: int | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("Stream options can only be defined when `stream=True`.")
        return self

    @property
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatMessage(_Lenient):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_SamplingRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    add_generation_prompt: bool = True

    def message_dicts(self) -> list[dict[str, object]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class CompletionRequest(_SamplingRequest):
    prompt: list[list[int]] | list[int] | list[str] | str | None = None
    # vLLM's CompletionRequest defaults max_tokens to 16, unlike chat (§2).
    max_tokens: int | None = 16
    suffix: str | None = None

    @model_validator(mode="after")
    def _prompt_required(self) -> CompletionRequest:
        if self.prompt is None or self.prompt == []:
            raise ValueError("At least one of `prompt` or `prompt_embeds` must be set.")
        return self

    def prompts(self) -> list[tuple[str, list[int]]]:
        """(text, token ids) per prompt; text prompts get `[gMASK]<sop>` like add_special_tokens=True."""
        raw = self.prompt
        items: list[str | list[int]]
        if isinstance(raw, str):
            items = [raw]
        elif raw and all(isinstance(x, int) for x in raw):
            items = [[int(x) for x in raw if isinstance(x, int)]]
        else:
            items = list(raw or [])  # type: ignore[arg-type]  # list[str] | list[list[int]]
        result: list[tuple[str, list[int]]] = []
        for item in items:
            if isinstance(item, str):
                result.append((item, glm.encode(item, add_special_tokens=True)))
            else:
                result.append((glm.decode(item, skip_special_tokens=True), list(item)))
        return result


class TokenizeRequest(_Lenient):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False


M = TypeVar("M", bound=BaseModel)


class DetokenizeRequest(_Lenient):
    model: str | None = None
    tokens: list[int]


def check_json_content_type(content_type: str) -> None:
    """vLLM's `validate_json_request` dependency: anything but application/json is 415 (§3.2)."""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise RequestError(
            "Unsupported Media Type: Only 'application/json' is allowed",
            status=415,
            error_type="Unsupported Media Type",
        )


def check_model(model: str | None, served_model: str) -> None:
    """An absent model means the base model; any other name is 404 (`_check_model()`, §3.2)."""
    if model and model != served_model:
        raise RequestError(f"The model `{model}` does not exist.", status=404, error_type="NotFoundError")


def parse_body(body: bytes, model: type[M]) -> M:
    """Parse a JSON body; failures become 400 `"Bad Request"` like vLLM >= 0.10.1 (never 422)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid UTF-8"
        # FastAPI's RequestValidationError for a body that is not JSON (§3.2, inferred).
        detail = [{"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error", "input": {}}]
        detail[0]["ctx"] = {"error": reason}
        raise RequestError(str(detail), error_type="Bad Request") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestError(str(errors), error_type="Bad Request") from exc


def check_sampling(request: _SamplingRequest, max_tokens: int | None) -> None:
    """`SamplingParams._verify_args()` messages (vllm/sampling_params.py), all 400 BadRequestError."""
    if request.n < 1:
        raise RequestError(f"n must be at least 1, got {request.n}.")
    if request.temperature is not None and request.temperature < 0:
        raise RequestError(f"temperature must be non-negative, got {request.temperature}.")
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {request.top_p}.")
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(f"max_tokens must be at least 1, got {max_tokens}.")
    if request.min_tokens < 0:
        raise RequestError(f"min_tokens must be greater than or equal to 0, got {request.min_tokens}.")
    if max_tokens is not None and request.min_tokens > max_tokens:
        raise RequestError(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {request.min_tokens}."
        )
    if any(stop == "" for stop in request.stop_strings):
        raise RequestError("stop cannot contain an empty string.")


def check_context(prompt_tokens: int, max_tokens: int | None, max_model_len: int, *, chat: bool) -> None:
    """`_validate_input()` of vLLM 0.10.x-0.11 (§3.3); chat messages get the stray " None" (§3.2)."""
    suffix = " None" if chat else ""
    if prompt_tokens >= max_model_len:
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, your request has "
            f"{prompt_tokens} input tokens. Please reduce the length of the input messages.{suffix}"
        )
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise RequestError(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum context "
            f"length is {max_model_len} tokens and your request has {prompt_tokens} input tokens "
            f"({max_tokens} > {max_model_len} - {prompt_tokens}).{suffix}"
        )
