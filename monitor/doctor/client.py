"""The doctor's requests: chat and completion through the `Prober`, plain JSON for the other endpoints.

Every chat/completion request goes through `Prober.run`, so it is measured and classified exactly
like a probe, and its `ProbeResult` (probe name `doctor.<check-id>`) is kept for the store. The
session is handed in by the runner, which owns it.

The plain JSON requests follow the probes' rules for untrusted servers: a redirect is reported, not
followed; a body is read up to the target's `max_body_bytes`; server text is cleaned and the API key
redacted (one `Untrusted` per request) before anything is cut.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from monitor.config import ProbeSettings, TargetSettings
from monitor.envelope import http_error_detail, redirect_detail
from monitor.errors import ProbeConnectError, ProbeTimeout
from monitor.http_body import read_capped
from monitor.probes import Prober, build_request, connect_detail, request_headers
from monitor.results import ProbeResult
from monitor.untrusted import Untrusted

logger = logging.getLogger(__name__)

_LONG_VALUE_CHARS = 100


@dataclass(frozen=True, slots=True)
class Exchange:
    """One chat/completion request as the report shows it, and what it produced."""

    request: str
    result: ProbeResult

    @property
    def ok(self) -> bool:
        """The request got a complete response (checks aside)."""
        return self.result.error_kind is None and self.result.measurement is not None

    @property
    def text(self) -> str:
        m = self.result.measurement
        return m.text if m is not None else ""


@dataclass(frozen=True, slots=True)
class JsonReply:
    status: int
    data: Any  # the decoded body (its strings cleaned and redacted), None when it is not JSON
    # One line, redacted: `HTTP 404: <the server's message>`, `HTTP 302: redirect to <Location>`, ...
    detail: str


class DoctorClient:
    """Sends the doctor's requests to one target; collects every `ProbeResult` in `results`."""

    def __init__(self, session: aiohttp.ClientSession, target: TargetSettings, api_key: str | None) -> None:
        self._session = session
        self._prober = Prober(session)
        self.target = target
        self._api_key = api_key
        self.results: list[ProbeResult] = []

    @property
    def root_url(self) -> str:
        """The server root: vLLM serves /tokenize, /health and /metrics beside /v1, not under it."""
        base = self.target.base_url
        return base[: -len("/v1")] if base.endswith("/v1") else base

    async def chat(
        self,
        check_id: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = 0.0,
        stream: bool = False,
        sampling: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Exchange:
        """One chat request; `sampling` holds known request fields (tools, tool_choice, ...), validated as a probe's."""
        payload = {"messages": messages, **(sampling or {})}
        probe = self._probe(check_id, "chat", payload, max_tokens, temperature, stream, extra_body)
        return await self._run(probe, timeout_s)

    async def completion(
        self,
        check_id: str,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = 0.0,
        extra_body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Exchange:
        probe = self._probe(check_id, "completion", {"prompt": prompt}, max_tokens, temperature, False, extra_body)
        return await self._run(probe, timeout_s)

    def _probe(
        self,
        check_id: str,
        endpoint: str,
        payload: dict[str, Any],
        max_tokens: int | None,
        temperature: float | None,
        stream: bool,
        extra_body: dict[str, Any] | None,
    ) -> ProbeSettings:
        raw: dict[str, Any] = {
            "name": f"doctor.{check_id}", "target": self.target.name, "endpoint": endpoint, "stream": stream,
            "max_tokens": max_tokens, "temperature": temperature, "extra_body": extra_body or {}, **payload,
        }  # fmt: skip
        return ProbeSettings.model_validate(raw)

    async def _run(self, probe: ProbeSettings, timeout_s: float | None) -> Exchange:
        target = self.target
        if timeout_s is not None and timeout_s < target.timeout_s:
            target = target.model_copy(
                update={"timeout_s": timeout_s, "chunk_timeout_s": min(target.chunk_timeout_s, timeout_s)}
            )
        url, body = build_request(target, probe)
        result = await self._prober.run(target, probe, self._api_key)
        self.results.append(result)
        logger.info("doctor %s: %s", probe.name, result.error_kind or "ok")
        return Exchange(describe(url, body), result)

    async def get_json(self, path: str) -> JsonReply:
        """GET base_url + path (for example /models)."""
        return await self._json("GET", self.target.base_url + path, None)

    async def post_json(self, path: str, body: dict[str, Any]) -> JsonReply:
        """POST base_url + path, the raw reply (for example /chat/completions with logprobs)."""
        return await self._json("POST", self.target.base_url + path, body)

    async def get_root_json(self, path: str) -> JsonReply:
        """GET root_url + path (for example /version)."""
        return await self._json("GET", self.root_url + path, None)

    async def post_root_json(self, path: str, body: dict[str, Any]) -> JsonReply:
        """POST root_url + path (for example /tokenize)."""
        return await self._json("POST", self.root_url + path, body)

    async def _json(self, method: str, url: str, body: dict[str, Any] | None) -> JsonReply:
        """One plain request; a refused connection or a timeout raises, anything else is a reply."""
        target, untrusted = self.target, Untrusted(self._api_key)
        timeout = aiohttp.ClientTimeout(total=target.timeout_s, connect=target.connect_timeout_s)
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        try:
            # Not followed: a POST would come back as a GET, and the answer would be another server's.
            async with self._session.request(
                method, url, data=data, headers=request_headers(target, self._api_key), timeout=timeout,
                allow_redirects=False,
            ) as resp:  # fmt: skip
                status = resp.status
                if 300 <= status < 400:
                    return JsonReply(status, None, redirect_detail(status, resp.headers.get("Location"), untrusted))
                raw = await read_capped(resp, target.max_body_bytes)
        except aiohttp.ClientConnectorError as exc:
            raise ProbeConnectError(f"cannot reach {url}: {connect_detail(exc, address=False)}") from None
        except TimeoutError:
            raise ProbeTimeout(f"cannot reach {url}: no answer within {target.timeout_s:g} s", phase="total") from None
        except aiohttp.ClientError as exc:
            text = untrusted.line(str(exc))
            raise ProbeConnectError(
                f"cannot reach {url}: {type(exc).__name__}" + (f": {text}" if text else "")
            ) from None
        if raw is None:
            return JsonReply(status, None, f"HTTP {status}: reply body exceeds max_body_bytes={target.max_body_bytes}")
        try:
            decoded = _clean(json.loads(raw), untrusted)
        except (ValueError, RecursionError):
            decoded = None
        return JsonReply(status, decoded, http_error_detail(status, raw, untrusted))


def _clean(value: Any, untrusted: Untrusted) -> Any:
    """A decoded JSON value with every string (keys too) storable and redacted."""
    if isinstance(value, str):
        return untrusted.text(value)
    if isinstance(value, list):
        return [_clean(v, untrusted) for v in value]
    if isinstance(value, dict):
        return {untrusted.text(k): _clean(v, untrusted) for k, v in value.items()}
    return value


def describe(url: str, body: dict[str, Any]) -> str:
    """`POST /v1/chat/completions {...}`: the request as sent, minus the model, long strings shortened."""
    shown = {key: _shorten(value) for key, value in body.items() if key != "model"}
    return f"POST {URL(url).path} {json.dumps(shown, ensure_ascii=False)}"


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _LONG_VALUE_CHARS:
        return f"{value[:40]}… ({len(value)} chars)"
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    return value
