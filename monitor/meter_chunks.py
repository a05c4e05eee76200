"""What one OpenAI-compatible JSON document says, as a ``Chunk``: an SSE event or a whole reply. Pure, no I/O.

Only choice index 0 is read (``index`` absent means the position in ``choices``); other choices
are ignored. Error envelopes are recognised by ``monitor.envelope.envelope_message``, the one
parser of them. A document that is not a chunk gets a short string saying why, which the meter
turns into a ``bad_response`` detail.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from monitor.envelope import envelope_message
from monitor.meter_measurement import MAX_TOKEN_COUNT, Endpoint

__all__ = ["Chunk", "Usage", "parse_body", "parse_chunk", "plausible"]

# (prompt_tokens, completion_tokens) as the server sent them; either may be missing.
Usage = tuple[int | None, int | None]


class Chunk(NamedTuple):
    content: str  # chat: choice 0's delta (or message) content; completions: its text
    finish_reason: str | None
    stop_reason: str | int | None
    usage: Usage | None


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
    if endpoint == "chat":
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice.get("message")  # a whole response sent as one event
        content = delta.get("content") if isinstance(delta, dict) else None
    else:
        content = choice.get("text")
    return Chunk(
        content if isinstance(content, str) else "",
        _str_or_none(choice.get("finish_reason")),
        _stop_reason(choice.get("stop_reason")),
        usage,
    )


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
    if endpoint == "chat":
        message_obj = choice.get("message")
        if not isinstance(message_obj, dict):
            return "choices[0] has no message object"
        text = message_obj.get("content")  # null when the reply is only tool calls
    elif "text" in choice:
        text = choice["text"]
    else:
        return "choices[0] has no text"
    if text is not None and not isinstance(text, str):
        return f"choices[0] content is a {type(text).__name__}, not a string"
    finish, stop = _str_or_none(choice.get("finish_reason")), _stop_reason(choice.get("stop_reason"))
    return Chunk(text or "", finish, stop, _usage(obj.get("usage")))


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
    return None if prompt is None and completion is None else (prompt, completion)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _stop_reason(value: object) -> str | int | None:
    # vLLM reports a matched stop token id as an int and a matched stop string as a str.
    return _str_or_none(value) if not isinstance(value, int) else _int_or_none(value)
