"""aiohttp probe client: one request per probe, bytes fed to the meter, a classified ProbeResult out.

The `Prober` is handed a `ClientSession` and never closes it (its caller owns it). Every failure is
returned as a `ProbeResult` with an `error_kind`; nothing here raises for a misbehaving target.

Nothing a server sends is trusted: its text goes through one `Untrusted` per request (in the meter,
the error envelope and the details below), redirects are reported instead of followed, and a body
is read only up to the target's `max_body_bytes` of decoded bytes (`body_too_large` beyond).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from monitor.checks import run_checks
from monitor.checks_pipelines import check_stream_parity
from monitor.config import ProbeSettings, TargetSettings
from monitor.config.probes import GoldenExpect
from monitor.envelope import (
    MAX_ERROR_BODY_BYTES,
    closed_mid_stream_detail,
    http_error_detail,
    new_request_id,
    redirect_detail,
)
from monitor.golden.grade import grade
from monitor.meter import StreamMeter
from monitor.results import CheckResult, ErrorKind, ProbeResult, TimeoutPhase
from monitor.untrusted import Untrusted, one_line

logger = logging.getLogger(__name__)

# Probes share one event loop: parsing a read must not hold it long, or every other probe's clock
# (TTFT, deadlines) runs late. A read is fed to the meter in slices, and after holding the loop for
# _HOLD_S a probe yields to it. Many tiny events cost ~1 us per byte, so a slice stays near 1 ms.
_SLICE_BYTES = 2048
_HOLD_S = 0.001
_LONG_TEXT_CHARS = 128 * 1024


def build_request(target: TargetSettings, probe: ProbeSettings) -> tuple[str, dict[str, Any]]:
    """The URL and JSON body a probe sends (sampling params and extra_body passed through as-is)."""
    body: dict[str, Any] = {}
    if target.model is not None:
        body["model"] = target.model
    if probe.endpoint == "chat":
        path = "/chat/completions"
        body["messages"] = [m.model_dump() for m in probe.messages or []]
    else:
        path = "/completions"
        body["prompt"] = probe.prompt
    if probe.max_tokens is not None:
        body["max_tokens"] = probe.max_tokens
    if probe.temperature is not None:
        body["temperature"] = probe.temperature
    body["stream"] = probe.stream
    if probe.stream:
        # Ask for usage so token counts are measured, not estimated; servers that ignore it still work.
        body["stream_options"] = {"include_usage": True}
    body.update(probe.sampling)
    body.update(probe.extra_body)
    return target.base_url + path, body


def request_headers(target: TargetSettings, api_key: str | None) -> dict[str, str]:
    # The same request id form as the Locust users (monitor.envelope), so server logs can be searched alike.
    headers = {"Content-Type": "application/json", "X-Request-Id": new_request_id(), **target.headers}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class _Deadlines:
    """Tracks which phase a request is in, so a timeout can name it."""

    def __init__(self, target: TargetSettings, start_s: float) -> None:
        self.total_at = start_s + target.timeout_s
        self.first_byte_at = start_s + (target.first_byte_timeout_s or target.timeout_s)
        self.chunk_timeout_s = target.chunk_timeout_s
        self.phase: TimeoutPhase = "first_byte"
        self.phase_at = self.first_byte_at

    def next_deadline(self) -> float:
        return min(self.total_at, self.phase_at)

    def expired_phase(self) -> TimeoutPhase:
        return "total" if self.total_at <= self.phase_at else self.phase

    def got_chunk(self, now_s: float) -> None:
        self.phase = "gap"
        self.phase_at = now_s + self.chunk_timeout_s


class Prober:
    """Runs probes through a session it does not own."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def run(self, target: TargetSettings, probe: ProbeSettings, api_key: str | None = None) -> ProbeResult:
        """One request; the API key never leaves in the result, even when the server quotes it back."""
        untrusted = Untrusted(api_key)
        result = await self._run(target, probe, api_key, untrusted)
        if probe.stream_parity and result.measurement is not None:
            result = await self._add_stream_parity(target, probe, api_key, untrusted, result)
        if probe.expect.golden is not None and result.error_kind is None and result.measurement is not None:
            result = await self._add_golden(target, probe.expect.golden, api_key, result)
        result = _with_cost(target, result)
        return replace(result, sanitised=True) if untrusted.sanitised else result

    async def _add_stream_parity(
        self,
        target: TargetSettings,
        probe: ProbeSettings,
        api_key: str | None,
        untrusted: Untrusted,
        result: ProbeResult,
    ) -> ProbeResult:
        """Send the same request with `stream` flipped and add the `stream_parity` check to `result`.

        The twin's own measurement is not stored: the probe's result stays the one it configured.
        """
        twin = probe.model_copy(update={"stream": not probe.stream, "stream_parity": False})
        other = await self._run(target, twin, api_key, untrusted)
        if other.measurement is None:
            parity = CheckResult("stream_parity", False, f"the twin request failed: {other.error_detail}")
        else:
            mine, theirs = result.measurement, other.measurement
            assert mine is not None  # checked by the caller
            streamed, unstreamed = (mine, theirs) if probe.stream else (theirs, mine)
            parity = check_stream_parity(streamed, unstreamed)
        return replace(result, checks=(*result.checks, parity))

    async def _add_golden(
        self, target: TargetSettings, golden: GoldenExpect, api_key: str | None, result: ProbeResult
    ) -> ProbeResult:
        """Grade the reply against the golden answer (after it, since the embeddings method is a request)."""
        assert result.measurement is not None  # checked by the caller
        reply = result.measurement.text
        graded = await grade(
            golden, reply, session=self._session, target=target, headers=request_headers(target, api_key),
            api_key=api_key,
        )  # fmt: skip
        return replace(
            result, checks=(*result.checks, graded.check(reply)), golden_similarity=graded.similarity,
            golden_method=graded.method, golden_passed=graded.passed,
        )  # fmt: skip

    async def _run(  # noqa: C901 (one request, each failure classified where it happens)
        self, target: TargetSettings, probe: ProbeSettings, api_key: str | None, untrusted: Untrusted
    ) -> ProbeResult:
        url, body = build_request(target, probe)
        base = _base(target, probe, datetime.now(UTC))
        start_s = time.perf_counter()
        # asyncio's timeout runs on the loop clock; perf_counter is the meter's clock.
        loop_start = asyncio.get_running_loop().time()
        deadlines = _Deadlines(target, loop_start)
        meter = StreamMeter(probe.endpoint, stream=probe.stream, start_s=start_s, untrusted=untrusted)
        status: int | None = None
        timeout = aiohttp.ClientTimeout(total=None, connect=target.connect_timeout_s)
        line = untrusted.line
        try:
            async with asyncio.timeout_at(deadlines.next_deadline()) as cm:
                # A redirect is not followed: aiohttp would turn the POST into a GET and store its answer.
                async with self._session.post(
                    url, data=json.dumps(body, ensure_ascii=False).encode(), headers=request_headers(target, api_key),
                    timeout=timeout, allow_redirects=False,
                ) as resp:  # fmt: skip
                    status = resp.status
                    if 300 <= status < 400:
                        detail = redirect_detail(status, resp.headers.get("Location"), untrusted)
                        return _failed(base, start_s, "http_error", detail, status=status)
                    if status >= 400:
                        detail = await _error_detail(resp, untrusted)
                        return _failed(base, start_s, "http_error", detail, status=status)
                    received, cap = 0, target.max_body_bytes
                    yield_at = time.perf_counter() + _HOLD_S
                    # iter_any yields decoded bytes as aiohttp inflates each read (bounded per read), so
                    # stopping here never inflates a compressed body much past the cap.
                    async for data in resp.content.iter_any():
                        now_s = time.perf_counter()
                        received += len(data)
                        if received > cap:
                            resp.close()
                            detail = f"reply body exceeds max_body_bytes={cap}"
                            return _failed(base, start_s, "body_too_large", detail, status=status)
                        for start in range(0, len(data), _SLICE_BYTES):
                            # Every slice of one read gets the read's time, as one feed would.
                            meter.feed(data[start : start + _SLICE_BYTES] if len(data) > _SLICE_BYTES else data, now_s)
                            if time.perf_counter() > yield_at:
                                await asyncio.sleep(0)  # the timeout can fire here too
                                yield_at = time.perf_counter() + _HOLD_S
                        deadlines.got_chunk(asyncio.get_running_loop().time())
                        cm.reschedule(deadlines.next_deadline())
        except aiohttp.ConnectionTimeoutError:
            return _failed(base, start_s, "timeout", f"connect timeout after {target.connect_timeout_s:g} s",
                           phase="connect", status=status)  # fmt: skip
        except TimeoutError:
            elapsed_ms = (time.perf_counter() - start_s) * 1000.0
            return timeout_result(
                target, probe, started_at=base.started_at, elapsed_ms=elapsed_ms, phase=deadlines.expired_phase(),
                status=status,
            )  # fmt: skip
        except aiohttp.ClientConnectorError as exc:
            return _failed(base, start_s, "connect_error", connect_detail(exc))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            if status is None:
                return _failed(base, start_s, "connect_error", f"server closed the connection: {line(str(exc))}")
            detail = closed_mid_stream_detail(line(str(exc)), ended_without_finish=meter.ended_without_finish)
            return _partial(base, meter, status, detail)
        except aiohttp.ClientResponseError as exc:
            return _failed(base, start_s, "bad_response", f"invalid HTTP response: {line(exc.message)}")
        except aiohttp.ClientError as exc:
            # str() of some aiohttp errors is empty; the class name alone still says what happened.
            text = line(str(exc))
            return _failed(
                base, start_s, "connect_error", f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            )
        m = meter.finish(time.perf_counter())
        if m.error_kind is not None:
            return replace(
                base, http_status=status, error_kind=m.error_kind, error_detail=m.error_detail, measurement=m
            )
        if len(m.text) > _LONG_TEXT_CHARS:
            await asyncio.sleep(0)  # finishing a long reply held the loop; its checks scan it again
        return replace(base, http_status=status, measurement=m, checks=run_checks(probe, m))


def _with_cost(target: TargetSettings, result: ProbeResult) -> ProbeResult:
    """The result with its cost from its token counts (estimated when they are), if the target has a price."""
    m = result.measurement
    if target.price is None or m is None:
        return result
    cost = target.price.cost(m.prompt_tokens, m.completion_tokens)
    return result if cost is None else replace(result, cost=cost, cost_currency=target.price.currency)


def _base(target: TargetSettings, probe: ProbeSettings, started_at: datetime) -> ProbeResult:
    return ProbeResult(
        probe=probe.name, target=target.name, endpoint=probe.endpoint, stream=probe.stream,
        started_at=started_at, max_tokens=probe.max_tokens,
    )  # fmt: skip


def timeout_result(
    target: TargetSettings,
    probe: ProbeSettings,
    *,
    started_at: datetime,
    elapsed_ms: float,
    phase: TimeoutPhase = "total",
    status: int | None = None,
) -> ProbeResult:
    """The result of a request that ran out of time in `phase`; the scheduler's outer bound reports with it too."""
    detail = _timeout_detail(phase, target)
    return replace(
        _base(target, probe, started_at), http_status=status, error_kind="timeout", error_detail=detail,
        timeout_phase=phase, elapsed_ms=elapsed_ms,
    )  # fmt: skip


def _failed(
    base: ProbeResult,
    start_s: float,
    kind: ErrorKind,
    detail: str,
    *,
    status: int | None = None,
    phase: TimeoutPhase | None = None,
) -> ProbeResult:
    elapsed_ms = (time.perf_counter() - start_s) * 1000.0
    return replace(
        base, http_status=status, error_kind=kind, error_detail=detail, timeout_phase=phase, elapsed_ms=elapsed_ms
    )


def _partial(base: ProbeResult, meter: StreamMeter, status: int, detail: str) -> ProbeResult:
    """A stream that broke off: keep what was measured, classify as stream_error."""
    m = meter.finish(time.perf_counter())
    return replace(base, http_status=status, error_kind="stream_error", error_detail=detail, measurement=m)


def _timeout_detail(phase: TimeoutPhase, target: TargetSettings) -> str:
    if phase == "first_byte":
        return f"no response within {target.first_byte_timeout_s or target.timeout_s:g} s (first byte)"
    if phase == "gap":
        return f"stream stalled: no data for {target.chunk_timeout_s:g} s between chunks"
    return f"request exceeded timeout_s={target.timeout_s:g}"


def connect_detail(exc: aiohttp.ClientConnectorError, *, address: bool = True) -> str:
    """One line on why a connection failed: `cannot resolve host 'x': ...` or `cannot connect to h:p: ...`.

    Shared with the doctor's plain requests, so both name a DNS failure the same way; ``address=False``
    leaves out `cannot connect to h:p: ` for a caller whose message names the URL already.
    """
    err = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # The resolver's errno is a negative EAI_* code: os.strerror would say "Unknown error -2".
        return f"cannot resolve host {exc.host!r}" + (f": {one_line(err.strerror)}" if err.strerror else "")
    # asyncio puts "Connect call failed (...)" in strerror; the errno text is the useful part.
    cause = os.strerror(err.errno) if err.errno and err.errno > 0 else (err.strerror or str(err))
    return f"cannot connect to {exc.host}:{exc.port}: {one_line(cause)}" if address else one_line(cause)


async def _error_detail(resp: aiohttp.ClientResponse, untrusted: Untrusted) -> str:
    """`HTTP 404: <message>` from vLLM's flat or nested envelope, FastAPI's detail, or raw text."""
    return http_error_detail(resp.status, await resp.content.read(MAX_ERROR_BODY_BYTES), untrusted)
