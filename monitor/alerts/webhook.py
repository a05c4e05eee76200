"""One webhook request: build it for a receiver (format, signing, headers) and send it once.

Webhook URLs often carry the credential (Slack, WeCom and DingTalk tokens), so neither the URL
nor its query ever reaches a log line or an error message.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from yarl import URL

from monitor import __version__
from monitor.alerts.formats import build_payload
from monitor.alerts.model import Notification
from monitor.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, dingtalk_sign, feishu_sign, sign
from monitor.config import ReceiverSettings

__all__ = ["Delivery", "WebhookRequest", "build_request", "send"]

# Enough to read a platform's error code; nobody needs a whole HTML error page.
RESPONSE_MAX_BYTES = 4096
# Statuses worth retrying although they are 4xx (timeouts, too early, rate limits).
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    url: URL
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one attempt."""

    ok: bool
    http_status: int | None
    error: str | None
    duration_ms: float
    # Retrying cannot help (a 4xx other than 408/425/429): give up at once.
    permanent: bool = False


def build_request(
    receiver: ReceiverSettings, notification: Notification, *, secret: str | None, now: datetime
) -> WebhookRequest:
    """The signed request for `receiver`; `now` stamps the signatures (platforms reject stale ones)."""
    payload = build_payload(receiver.format, notification)
    url = URL(receiver.url)
    timestamp_s = int(now.timestamp())
    if secret and receiver.format == "feishu":
        payload = {**payload, "timestamp": str(timestamp_s), "sign": feishu_sign(secret, timestamp_s)}
    if secret and receiver.format == "dingtalk":
        timestamp_ms = int(now.timestamp() * 1000)
        url = url.update_query({"timestamp": str(timestamp_ms), "sign": dingtalk_sign(secret, timestamp_ms)})
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {
        **receiver.headers,
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": f"llm-monitor/{__version__}",
        "Idempotency-Key": notification.idempotency_key,
    }
    if secret:
        headers[TIMESTAMP_HEADER] = str(timestamp_s)
        headers[SIGNATURE_HEADER] = sign(secret, str(timestamp_s), body)
    return WebhookRequest(url, body, headers)


def platform_error(fmt: str, status: int, text: str) -> str | None:
    """Robot webhooks answer 200 with an error code in the body; None means accepted."""
    if fmt not in ("feishu", "dingtalk", "wecom"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for code_key, msg_key in (("code", "msg"), ("StatusCode", "StatusMessage"), ("errcode", "errmsg")):
        code = data.get(code_key)
        if code not in (None, 0, "0"):
            return f"HTTP {status} with {fmt} error {code}: {str(data.get(msg_key, ''))[:200]}"
    return None


async def send(session: aiohttp.ClientSession, request: WebhookRequest, *, fmt: str, timeout_s: float) -> Delivery:
    """POST once; never raises for network or HTTP failures (they are the returned Delivery)."""
    started = time.perf_counter()

    def elapsed_ms() -> float:
        return (time.perf_counter() - started) * 1000.0

    try:
        async with session.post(
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            raw = await response.content.read(RESPONSE_MAX_BYTES)
            status = response.status
    except TimeoutError:
        return Delivery(False, None, f"timeout: no answer within {timeout_s:g} s", elapsed_ms())
    except aiohttp.InvalidURL:
        return Delivery(False, None, "invalid receiver URL", elapsed_ms(), permanent=True)
    except (aiohttp.ClientError, OSError) as exc:
        return Delivery(False, None, _describe(exc, request.url), elapsed_ms())
    text = raw.decode("utf-8", errors="replace")
    if 200 <= status < 300:
        error = platform_error(fmt, status, text)
        return Delivery(error is None, status, error, elapsed_ms())
    excerpt = " ".join(text.split())[:200]
    permanent = 400 <= status < 500 and status not in _RETRYABLE_4XX
    return Delivery(False, status, f"HTTP {status}" + (f": {excerpt}" if excerpt else ""), elapsed_ms(), permanent)


def _describe(exc: BaseException, url: URL) -> str:
    message = str(exc) or type(exc).__name__
    for secret_part in {str(url), url.path_qs, url.query_string}:
        if secret_part and secret_part not in ("/", ""):
            message = message.replace(secret_part, "<url>")
    return f"{type(exc).__name__}: {message}"[:500]
