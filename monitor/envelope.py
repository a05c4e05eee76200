"""Error bodies as servers send them: one message out of any envelope. Pure, no I/O.

Shared by the aiohttp probes and the Locust users (which cannot import aiohttp code), so an HTTP
error reads the same in canary results and in load-test failures.
"""

from __future__ import annotations

import json

# Error bodies are read only this far: enough for any server's message, bounded for a hostile one.
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 300


def error_message(raw: bytes) -> str:
    """The human message inside an error body, whatever envelope the server uses."""
    text = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])  # vLLM >= 0.10.1, OpenAI
        if isinstance(err, str):
            return err  # vLLM --api-key: {"error": "Unauthorized"}
        if "message" in data:
            return str(data["message"])  # vLLM <= 0.10.0: {"object": "error", "message": ...}
        if "detail" in data:
            return str(data["detail"])  # FastAPI / Starlette defaults
    return text


def http_error_detail(status: int, raw: bytes) -> str:
    """`HTTP 404: <message>`, or `HTTP 500 with an empty body` (vLLM's engine failures send none)."""
    if not raw.strip():
        return f"HTTP {status} with an empty body"
    return f"HTTP {status}: {one_line(error_message(raw))}"


def one_line(text: str, max_chars: int = MAX_DETAIL_CHARS) -> str:
    """Whitespace folded to single spaces, cut with an ellipsis at `max_chars`."""
    flat = " ".join(text.split())
    return flat if len(flat) <= max_chars else flat[: max_chars - 1] + "…"
