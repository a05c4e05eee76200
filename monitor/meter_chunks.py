"""What one OpenAI-compatible JSON document says, as a ``Chunk``: an SSE event or a whole reply. Pure, no I/O.

Only choice index 0 is read (``index`` absent means the position in ``choices``); other choices
are ignored. Error envelopes are recognised by ``monitor.envelope.envelope_message``, the one
parser of them. A document that is not a chunk gets a short string saying why, which the meter
turns into a ``bad_response`` detail.

Besides ``content`` a chat delta (or message) may carry reasoning and tool calls:

* Reasoning is ``reasoning`` (vLLM since the rename of PR #27752; PR #33402, January 2026, removed
  the old name; the recorded vLLM 0.32 messages have ``"reasoning": null``) or ``reasoning_content``
  (earlier vLLM, SGLang, DeepSeek). ``reasoning`` wins whenever it is a string, even an empty one:
  some servers (vllm-mlx) send both keys with the same text, which must not count twice.
* Tool calls are ``tool_calls``: streamed as fragments (vLLM's ``DeltaToolCall``: ``index``, then
  ``id``, ``type`` and ``function.name`` in the first fragment of a call, ``function.arguments``
  pieces in it and later ones), non-streamed as whole calls without ``index``. Each entry becomes
  a ``ToolCallFragment``; an entry that is not an object, or whose ``index`` is not a whole number
  from 0 to ``MAX_TOKEN_COUNT``, is skipped. Non-string ids, types, names and arguments count as
  absent.
* ``usage.completion_tokens_details.reasoning_tokens`` is the server's reasoning count; vLLM sends
  it only with a ``--reasoning-parser`` (``null`` otherwise, as in the 0.32 recording).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from monitor.envelope import envelope_message
from monitor.meter_measurement import MAX_TOKEN_COUNT, Endpoint, MeterErrorKind
from monitor.untrusted import Untrusted

__all__ = [
    "NO_USAGE", "Chunk", "Failure", "ToolCallFragment", "Usage", "parse_body", "parse_chunk", "plausible", "read_body",
    "read_event",
]  # fmt: skip

# (prompt_tokens, completion_tokens, completion_tokens_details.reasoning_tokens) as the server sent them.
Usage = tuple[int | None, int | None, int | None]
NO_USAGE: Usage = (None, None, None)
# (index, id, type, function.name, function.arguments or ""): one entry of a delta's tool_calls.
ToolCallFragment = tuple[int, str | None, str | None, str | None, str]
_NO_TOOL_CALLS: tuple[ToolCallFragment, ...] = ()


_PREVIEW_CHARS = 80
Failure = tuple[MeterErrorKind, str]  # what went wrong, for the meter's first failure


class Chunk(NamedTuple):
    content: str  # chat: choice 0's delta (or message) content; completions: its text
    finish_reason: str | None
    stop_reason: str | int | None
    usage: Usage | None
    reasoning: str = ""  # chat only
    tool_calls: tuple[ToolCallFragment, ...] = ()  # chat only


def read_event(payload: bytes, endpoint: Endpoint, number: int, untrusted: Untrusted) -> Chunk | Failure:
    """The chunk of SSE event ``number`` (its data, ``[DONE]`` excluded), or why it is none."""
    try:
        obj = json.loads(payload.decode())
    except UnicodeDecodeError:
        return "bad_response", f"invalid UTF-8 in SSE event {number}"
    except (ValueError, RecursionError) as exc:
        preview = untrusted.preview(payload, _PREVIEW_CHARS)
        return "bad_response", f"malformed JSON in SSE event {number}: {exc}; data: {preview}"
    message = envelope_message(obj)
    if message is not None:
        return "stream_error", message
    chunk = parse_chunk(obj, endpoint)
    return chunk if isinstance(chunk, Chunk) else ("bad_response", f"SSE event {number} {chunk}")


def read_body(body: bytes, endpoint: Endpoint) -> Chunk | Failure:
    """The chunk of a whole JSON reply, or why it is none."""
    if not body.strip():
        return "bad_response", "empty response body"
    try:
        obj = json.loads(body.decode())
    except UnicodeDecodeError:
        return "bad_response", "invalid UTF-8 in response body"
    except (ValueError, RecursionError) as exc:
        return "bad_response", f"malformed JSON response body: {exc}"
    chunk = parse_body(obj, endpoint)
    return chunk if isinstance(chunk, Chunk) else ("bad_response", chunk)


def parse_chunk(obj: object, endpoint: Endpoint) -> Chunk | str:
    """Interpret one streamed JSON event (not an error envelope); a string names what is wrong with it."""
    if not isinstance(obj, dict):
        return "is not a JSON object"
    usage = _usage(obj.get("usage"))
    choices = obj.get("choices")
    if not isinstance(choices, list):
        # The usage-only chunk after the finish chunks has "choices": [], some servers leave the key out.
        return Chunk("", None, None, usage) if usage is not None else "has no choices list"
    choice = _choice0(choices)
    if choice is None:
        return Chunk("", None, None, usage)
    finish, stop = _str_or_none(choice.get("finish_reason")), _stop_reason(choice.get("stop_reason"))
    if endpoint != "chat":
        text = choice.get("text")
        return Chunk(text if isinstance(text, str) else "", finish, stop, usage)
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = choice.get("message")  # a whole response sent as one event
    if not isinstance(delta, dict):
        return Chunk("", finish, stop, usage)
    content = delta.get("content")
    content = content if isinstance(content, str) else ""
    # Both lookups are one dict miss on a plain content delta: this runs for every event off the fast path.
    reasoning = delta.get("reasoning")
    if not isinstance(reasoning, str):
        reasoning = _reasoning_content(delta)
    tool_calls = delta.get("tool_calls")
    return Chunk(content, finish, stop, usage, reasoning, _tool_fragments(tool_calls) if tool_calls else _NO_TOOL_CALLS)


def parse_body(obj: object, endpoint: Endpoint) -> Chunk | str:
    """Interpret a whole JSON response; a string says what is wrong with it."""
    message = envelope_message(obj)
    if message is not None:  # vLLM and proxies can send an error envelope with a 200
        return f"error in response body: {message}"
    if not isinstance(obj, dict):
        return "response body is not a JSON object"
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        return "response has no choices"
    choice = _choice0(choices)
    if choice is None:
        return "response has no choice with index 0"
    reasoning, tool_calls = "", _NO_TOOL_CALLS
    if endpoint == "chat":
        message_obj = choice.get("message")
        if not isinstance(message_obj, dict):
            return "choices[0] has no message object"
        text = message_obj.get("content")  # null when the reply is only tool calls
        reasoning, tool_calls = _reasoning(message_obj), _tool_fragments(message_obj.get("tool_calls"))
    elif "text" in choice:
        text = choice["text"]
    else:
        return "choices[0] has no text"
    if text is not None and not isinstance(text, str):
        return f"choices[0] content is a {type(text).__name__}, not a string"
    finish, stop = _str_or_none(choice.get("finish_reason")), _stop_reason(choice.get("stop_reason"))
    return Chunk(text or "", finish, stop, _usage(obj.get("usage")), reasoning, tool_calls)


def plausible(count: int | None) -> int | None:
    """A server's token count, or None when it cannot be one (negative, or past a 32-bit counter)."""
    return count if count is not None and 0 <= count <= MAX_TOKEN_COUNT else None


def _choice0(choices: list[Any]) -> dict[str, Any] | None:
    for pos, choice in enumerate(choices):
        if isinstance(choice, dict):
            index = choice.get("index", pos)
            if index == 0 and not isinstance(index, bool):
                return choice
    return None


def _usage(value: object) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = _int_or_none(value.get("prompt_tokens")), _int_or_none(value.get("completion_tokens"))
    details = value.get("completion_tokens_details")
    reasoning = _int_or_none(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    usage = (prompt, completion, reasoning)
    return None if usage == NO_USAGE else usage


def _reasoning(delta: dict[str, Any]) -> str:
    reasoning = delta.get("reasoning")
    return reasoning if isinstance(reasoning, str) else _reasoning_content(delta)


def _reasoning_content(delta: dict[str, Any]) -> str:
    reasoning = delta.get("reasoning_content")
    return reasoning if isinstance(reasoning, str) else ""


def _tool_fragments(value: object) -> tuple[ToolCallFragment, ...]:
    if not isinstance(value, list) or not value:
        return _NO_TOOL_CALLS
    fragments: list[ToolCallFragment] = []
    for pos, entry in enumerate(value):
        if not isinstance(entry, dict):
            continue
        index = entry.get("index", pos)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_TOKEN_COUNT:
            continue
        function = entry.get("function")
        name = arguments = None
        if isinstance(function, dict):
            name, arguments = _str_or_none(function.get("name")), _str_or_none(function.get("arguments"))
        fragments.append((index, _str_or_none(entry.get("id")), _str_or_none(entry.get("type")), name, arguments or ""))
    return tuple(fragments)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _stop_reason(value: object) -> str | int | None:
    # vLLM reports a matched stop token id as an int and a matched stop string as a str.
    return _str_or_none(value) if not isinstance(value, int) else _int_or_none(value)
