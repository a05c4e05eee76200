"""Webhook signatures: llm-monitor's own, and the robot-webhook signing of Feishu and DingTalk.

llm-monitor (every format, when the receiver has `secret_env`):

    X-LLM-Monitor-Timestamp: 1764064800                      # Unix seconds when the request was made
    X-LLM-Monitor-Signature: sha256=<hex>                    # HMAC-SHA256(key=secret, msg=f"{timestamp}.{body}")

`body` is the exact request body bytes. A receiver recomputes the HMAC, compares in constant time
(`verify_signature`) and should reject timestamps too far from its own clock (replays).

Feishu (custom bot "signature verification"): the body carries `timestamp` (Unix seconds, a string)
and `sign` = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")).

DingTalk (custom robot "加签"): the URL carries `timestamp` (Unix milliseconds) and `sign` =
base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), URL-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "dingtalk_sign",
    "feishu_sign",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-LLM-Monitor-Signature"
TIMESTAMP_HEADER = "X-LLM-Monitor-Timestamp"


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def sign(secret: str, timestamp: str, body: str | bytes) -> str:
    """The `X-LLM-Monitor-Signature` value: `sha256=` + hex HMAC-SHA256 of `{timestamp}.{body}`."""
    message = timestamp.encode("ascii") + b"." + _as_bytes(body)
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_signature(secret: str, timestamp: str, body: str | bytes, header: str) -> bool:
    """Whether `header` is the signature of `timestamp` and `body` under `secret` (constant-time compare)."""
    try:
        expected = sign(secret, timestamp, body)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8", errors="replace"))


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's `sign` for `timestamp_s` (the HMAC key is the timestamp and secret; the message is empty)."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's `sign` for `timestamp_ms`, before URL encoding."""
    message = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()).decode("ascii")
