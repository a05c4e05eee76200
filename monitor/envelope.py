"""What servers send around a reply: error bodies, redirects, request ids. Pure, no I/O.

Shared by the aiohttp probes and the Locust users (which cannot import aiohttp code), so an HTTP
error reads the same in canary results and in load-test failures, and both send the same
``X-Request-Id``. Every server string goes through ``monitor.untrusted.Untrusted`` on its whole
length before it is cut to one line.
"""

from __future__ import annotations

import json
import uuid

from monitor.untrusted import MAX_DETAIL_CHARS, Untrusted, one_line

__all__ = [
    "ABORTED_STREAM_DETAIL", "MAX_DETAIL_CHARS", "MAX_ERROR_BODY_BYTES", "closed_mid_stream_detail",
    "envelope_message", "error_message", "http_error_detail", "new_request_id", "one_line", "redirect_detail",
]  # fmt: skip

# Error bodies are read only this far: enough for any server's message, bounded for a hostile one.
MAX_ERROR_BODY_BYTES = 64 * 1024


def new_request_id() -> str:
    """An ``X-Request-Id`` every server accepts: llama-cpp-python answers 400 to one that is not a UUID."""
    return str(uuid.uuid4())


def error_message(raw: bytes) -> str:
    """The human message inside an error body, whatever envelope the server uses."""
    return _message(raw.decode("utf-8", errors="replace"))


def envelope_message(obj: object) -> str | None:
    """The message of a parsed error envelope; None if ``obj`` is not one.

    The one test of "this JSON document is an error", used on HTTP error bodies and, by the stream
    meter, on every SSE event and 200 body (vLLM and proxies send an error envelope with a 200).
    A document with a non-null ``error`` is one whatever its shape; so is ``"object": "error"``.
    """
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if err is not None:
        if isinstance(err, dict) and err.get("message") is not None:
            return str(err["message"])  # vLLM >= 0.10.1, OpenAI
        if isinstance(err, str) and err:
            return err  # vLLM --api-key: {"error": "Unauthorized"}
        return json.dumps(err, ensure_ascii=False)  # no message: the error object itself says most
    if obj.get("object") == "error":
        # vLLM <= 0.10.0: {"object": "error", "message": ...}
        return str(obj.get("message") or json.dumps(obj, ensure_ascii=False))
    return None


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text
    message = envelope_message(data)
    if message is not None:
        return message
    if isinstance(data, dict):
        # Only an error status says these are errors, so only HTTP error bodies read them.
        if "message" in data:
            return str(data["message"])
        if "detail" in data:
            return str(data["detail"])  # FastAPI / Starlette defaults
    return text


def http_error_detail(status: int, raw: bytes, untrusted: Untrusted | None = None) -> str:
    """`HTTP 404: <message>`, or `HTTP 500 with an empty body` (vLLM's engine failures send none)."""
    if not raw.strip():
        return f"HTTP {status} with an empty body"
    u = untrusted or Untrusted()
    return f"HTTP {status}: {u.line(_message(u.decode(raw)))}"


def redirect_detail(status: int, location: str | None, untrusted: Untrusted | None = None) -> str:
    """`HTTP 302: redirect to <Location>`: probes never follow one (a POST would come back as a GET)."""
    if not location:
        return f"HTTP {status}: redirect without a Location"
    return f"HTTP {status}: redirect to {(untrusted or Untrusted()).line(location)}"


# llama-cpp-python ends a running stream this way whenever another request arrives (its default).
_ABORT_FIX = "llama-cpp-python does this when another request arrives: start it with --interrupt_requests False"
ABORTED_STREAM_DETAIL = f"the server aborted the stream: [DONE] with no finish_reason ({_ABORT_FIX})"


def closed_mid_stream_detail(cause: str, *, ended_without_finish: bool) -> str:
    """Why a stream broke off. A [DONE] with no finish_reason, then a dropped connection, is an abort by the
    server; llama-cpp-python does this to a running stream whenever another request arrives."""
    if ended_without_finish:
        return (
            f"the server aborted the stream: [DONE] with no finish_reason, then the connection dropped ({_ABORT_FIX})"
        )
    return f"connection closed mid-stream: {cause}"
