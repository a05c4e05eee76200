"""Request models and vLLM's request validation, with vLLM 0.32's error wording (wire reference §3, §9).

Like vLLM's `OpenAIBaseModel`, every model accepts and ignores unknown keys (§1.1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from monitor.mock import glm

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "DetokenizeRequest",
    "NamedToolChoice",
    "RequestError",
    "ResponseFormat",
    "ServerFailure",
    "StreamOptions",
    "TokenizeRequest",
    "ToolParam",
    "check_context",
    "clamp_max_tokens",
    "parse_body",
    "validation_error",
]


class ServerFailure(Exception):
    """The engine "failed": answered 500 with an empty body, like vLLM's launcher (§3.2)."""


class RequestError(Exception):
    """A request vLLM would reject; carries the HTTP status and the envelope's `type`."""

    def __init__(
        self, message: str, *, status: int = 400, error_type: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.param = param


def validation_error(message: str, param: str, value: object = None) -> RequestError:
    """vLLM's `VLLMValidationError`: the message gets "(parameter=P, value=V)" and `param` is set (§9)."""
    extras = f"parameter={param}" + ("" if value is None else f", value={value}")
    return RequestError(f"{message} ({extras})", param=param)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Lenient):
    # vLLM 0.32 defaults include_usage to False, as OpenAI does (0.10 had True; §9).
    include_usage: bool | None = False
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

    @model_validator(mode="before")
    @classmethod
    def _stream_options_need_stream(cls, data: Any) -> Any:
        # A non-empty stream_options without stream. RequestError is no ValueError, so pydantic lets it
        # through as vLLM's VLLMValidationError: a BadRequestError, not a "Bad Request" list (§9).
        if isinstance(data, dict) and data.get("stream_options") and not data.get("stream"):
            raise validation_error("Stream options can only be defined when `stream=True`.", "stream_options")
        return data

    @property
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatMessage(_Lenient):
    role: str
    content: str | list[dict[str, Any]] | None = None


class FunctionDefinition(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolParam(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    function: NamedFunction
    type: Literal["function"] = "function"


class JsonSchemaFormat(_Lenient):
    name: str
    description: str | None = None
    # OpenAI's key is "schema", which shadows a BaseModel attribute; vLLM aliases it the same way.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice | None
_TOOL_CHOICE_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


def _check_tool_usage(data: dict[str, Any]) -> None:
    """`ChatCompletionRequest.check_tool_usage` of vLLM 0.32; it also makes tools default to "auto"."""
    tools = data.get("tools")
    if tools == []:
        raise validation_error(
            "`tools` must not be an empty array. Either provide at least one tool or omit the field entirely.",
            "tools",
        )
    if "tool_choice" not in data and tools:
        data["tool_choice"] = "auto"
    choice = data.get("tool_choice", "none")
    if choice is None or choice == "none":
        return
    if tools is None:
        raise validation_error("When using `tool_choice`, `tools` must be set.", "tool_choice")
    if choice not in ("auto", "required") and not isinstance(choice, dict):
        raise validation_error(
            f'Invalid value for `tool_choice`: {choice}! Only named tools, "none", "auto" or "required" are supported.',
            "tool_choice",
        )
    if isinstance(choice, dict):
        function = choice.get("function")
        if not isinstance(function, dict):
            message = f"Invalid value for `function`: `{function}` in `tool_choice`! {_TOOL_CHOICE_USAGE}"
            raise validation_error(message, "tool_choice.function")
        if "name" not in function:
            message = f"Expected field `name` in `function` in `tool_choice`! {_TOOL_CHOICE_USAGE}"
            raise validation_error(message, "tool_choice.function.name")
        name = function["name"]
        if not isinstance(name, str) or not name:
            message = f"Invalid `name` in `function`: `{name}` in `tool_choice`! {_TOOL_CHOICE_USAGE}"
            raise validation_error(message, "tool_choice.function.name")
        if not any(isinstance(t, dict) and (t.get("function") or {}).get("name") == name for t in tools):
            raise validation_error(
                "The tool specified in `tool_choice` does not match any of the specified `tools`", "tool_choice"
            )


class ChatRequest(_SamplingRequest):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice = "none"
    parallel_tool_calls: bool | None = True
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    include_reasoning: bool = True
    add_generation_prompt: bool = True
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="before")
    @classmethod
    def _tools_and_formats(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        response_format = data.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            if response_format.get("json_schema") is None:
                raise validation_error(
                    "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
                    "response_format",
                )
        _check_tool_usage(data)
        return data

    def message_dicts(self) -> list[dict[str, object]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    @property
    def named_tool(self) -> str | None:
        return self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else None

    def template_kwargs(self) -> dict[str, Any]:
        """The chat template's kwargs: `reasoning_effort` sets `enable_thinking` unless given (vLLM 0.32)."""
        kwargs = dict(self.chat_template_kwargs or {})
        if self.reasoning_effort is not None and "enable_thinking" not in kwargs:
            kwargs["enable_thinking"] = self.reasoning_effort != "none"
        return kwargs


class CompletionRequest(_SamplingRequest):
    prompt: list[list[int]] | list[int] | list[str] | str | None = None
    # vLLM's CompletionRequest defaults max_tokens to 16, unlike chat (§2).
    max_tokens: int | None = 16
    suffix: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _prompt_required(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prompt") in (None, "") and not data.get("prompt_embeds"):
            raise validation_error("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
        return data

    @property
    def has_text_prompt(self) -> bool:
        return isinstance(self.prompt, str) or any(isinstance(item, str) for item in self.prompt or [])

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

GREEDY_EPS = 1e-5  # vLLM's _SAMPLING_EPS: a temperature below it is greedy


class DetokenizeRequest(_Lenient):
    model: str | None = None
    tokens: list[int]


def _summarise_input(value: object) -> object:
    """vLLM's bound on the `input` echoed in a validation error: containers are described, not shown."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "...[truncated]"
    if isinstance(value, list | tuple | set | frozenset | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    return str(value)


# pydantic's union-branch and wrapper names in `loc` (a subset of vLLM's list): not field names.
_LOC_MARKERS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "union", "function-after"})


def _clean_loc(loc: Sequence[object]) -> str:
    """vLLM's `clean_loc_for_param`: ('body', 'prompt', 'list[int]') -> "body.prompt"."""
    parts = [str(part) for part in loc]
    kept = [part for part in parts if not re.search(r"[\[\]{}()]", part) and part.lower() not in _LOC_MARKERS]
    return ".".join(kept or parts)


def _validation_failure(errors: list[dict[str, Any]]) -> RequestError:
    """vLLM's `validation_exception_handler`: "N validation error(s):" and one line per error (§9)."""
    if not errors:
        return RequestError("Validation error", error_type="Bad Request")
    label = "error" if len(errors) == 1 else "errors"
    lines = []
    for error in errors[:10]:
        shown = {**error, "loc": _clean_loc(error["loc"])}
        if "input" in shown:
            shown["input"] = _summarise_input(shown["input"])
        text = str(shown)
        lines.append(text if len(text) <= 1000 else text[:1000] + "...[truncated]")
    if len(errors) > 10:
        lines.append(f"...and {len(errors) - 10} more {label}")
    message = f"{len(errors)} validation {label}:\n" + "".join(f"  {line}\n" for line in lines)
    param = _clean_loc(errors[0]["loc"])
    return RequestError(message.rstrip(), error_type="Bad Request", param=param)


def check_json_content_type(content_type: str) -> None:
    """vLLM's `validate_json_request`: anything but application/json is a 400 validation error (§9)."""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise RequestError(
            "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
            error_type="Bad Request",
        )


def check_model(model: str | None, served_model: str) -> None:
    """An absent model means the base model; any other name is 404 naming the served ones (§3.2, §9)."""
    if model and model != served_model:
        raise RequestError(
            f"The model `{model}` does not exist. Valid aliases: {served_model}.",
            status=404,
            error_type="NotFoundError",
            param="model",
        )


def parse_body(body: bytes, model: type[M]) -> M:
    """Parse a JSON body; failures become 400 `"Bad Request"` like vLLM (never 422)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid UTF-8"
        # FastAPI's RequestValidationError for a body that is not JSON.
        error = {"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error", "input": {}}
        raise _validation_failure([{**error, "ctx": {"error": reason}}]) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details: list[ErrorDetails] = exc.errors(include_url=False)
        raise _validation_failure([{**error, "loc": ("body", *error["loc"])} for error in details]) from exc


def check_sampling(request: _SamplingRequest, max_tokens: int | None) -> None:
    """`SamplingParams._verify_args()` messages (vllm/sampling_params.py, 0.32), all 400 BadRequestError."""
    if request.n < 1:
        raise RequestError(f"n must be at least 1, got {request.n}.")
    temperature = request.temperature
    if temperature is not None and temperature < 0:
        raise validation_error(f"temperature must be non-negative, got {temperature}.", "temperature", temperature)
    if temperature is not None and temperature > 2:
        raise validation_error(f"temperature must be in [0, 2], got {temperature}.", "temperature", temperature)
    if request.top_p is not None and not 0 < request.top_p <= 1:
        raise validation_error(f"top_p must be in (0, 1], got {request.top_p}.", "top_p", request.top_p)
    if max_tokens is not None and max_tokens < 1:
        raise validation_error(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
    if request.min_tokens < 0:
        raise RequestError(f"min_tokens must be greater than or equal to 0, got {request.min_tokens}.")
    if max_tokens is not None and request.min_tokens > max_tokens:
        raise RequestError(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {request.min_tokens}."
        )
    if any(stop == "" for stop in request.stop_strings):
        raise RequestError("stop cannot contain an empty string.")
    if temperature is not None and temperature < GREEDY_EPS and request.n > 1:
        raise RequestError(f"n must be 1 when using greedy sampling, got {request.n}.")


def check_context(prompt_tokens: int, max_model_len: int, *, text_prompt: bool) -> None:
    """The renderer's prompt check of vLLM 0.32 (§9): only a prompt over the context is an error.

    prompt + max_tokens over the context is not: `get_max_tokens()` clamps max_tokens to the rest.
    A text prompt is tokenized with truncation to max_model_len + 1, hence "at least" that many.
    """
    if prompt_tokens > max_model_len:
        count = max_model_len + 1 if text_prompt else prompt_tokens
        qualifier = "at least " if text_prompt else ""
        raise validation_error(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
            f"{qualifier}{count} input tokens, which exceeds this limit even without any output tokens. "
            "Please reduce the length of the input prompt.",
            "input_tokens",
            count,
        )


def clamp_max_tokens(max_tokens: int | None, prompt_tokens: int, max_model_len: int) -> int:
    """`get_max_tokens()`: the request's max_tokens, at most the rest of the context (its default)."""
    rest = max_model_len - prompt_tokens
    return rest if max_tokens is None else min(rest, max_tokens)
