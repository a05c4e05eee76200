"""The doctor's requests: chat and completion through the `Prober`, plain JSON for the other endpoints.

Every chat/completion request goes through `Prober.run`, so it is measured and classified exactly
like a probe, and its `ProbeResult` (probe name `doctor.<check-id>`) is kept for the store. The
session is handed in by the runner, which owns it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from monitor.envelope import error_message
from monitor.errors import ProbeConnectError, ProbeTimeout
from monitor.probes import Prober, build_request, request_headers
from monitor.results import ProbeResult
from monitor.settings import ProbeSettings, TargetSettings

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 4 * 1024 * 1024
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
    data: Any  # the decoded body, None when it is not JSON
    message: str  # the server's error message, or the raw body text, one line


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
        extra_body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Exchange:
        probe = self._probe(check_id, "chat", {"messages": messages}, max_tokens, temperature, stream, extra_body)
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

    async def post_root_json(self, path: str, body: dict[str, Any]) -> JsonReply:
        """POST root_url + path (for example /tokenize)."""
        return await self._json("POST", self.root_url + path, body)

    async def _json(self, method: str, url: str, body: dict[str, Any] | None) -> JsonReply:
        """One plain request; a refused connection or a timeout raises, anything else is a reply."""
        target = self.target
        timeout = aiohttp.ClientTimeout(total=target.timeout_s, connect=target.connect_timeout_s)
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        try:
            async with self._session.request(
                method, url, data=data, headers=request_headers(target, self._api_key), timeout=timeout
            ) as resp:
                raw = await resp.content.read(MAX_JSON_BYTES)
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error
            cause = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
            raise ProbeConnectError(f"cannot reach {url}: {cause}") from None
        except TimeoutError:
            raise ProbeTimeout(f"cannot reach {url}: no answer within {target.timeout_s:g} s", phase="total") from None
        except aiohttp.ClientError as exc:
            raise ProbeConnectError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        message = " ".join(error_message(raw).split())[:300] if raw.strip() else "(empty body)"
        return JsonReply(status, decoded, message)


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
