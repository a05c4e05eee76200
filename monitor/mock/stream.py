"""Writing responses: SSE event batching, slow drip, stalls, disconnects and token timings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from monitor.mock import wire
from monitor.mock.config import MockConfig
from monitor.mock.engine import Generation
from monitor.mock.parsers import Parsed
from monitor.mock.state import MockState, TimingRecord
from monitor.mock.vllm_metrics import MockMetrics

__all__ = ["StreamPlan", "abort_connection", "hang", "send_error_stream", "send_stream", "write_body"]

logger = logging.getLogger(__name__)

BATCH_EVENTS = 64  # with itl_ms=0 events are coalesced into fewer writes (still separate `data:` events)
DRIP_SLICES_PER_S = 20
KEEPALIVE = b": keep-alive\r\n\r\n"


async def hang(request: web.Request, state: MockState) -> None:
    """Keep the connection open and silent until the client leaves or the app shuts down."""
    while not state.closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await state.closing.wait()


def abort_connection(request: web.Request) -> None:
    """Close the socket under a response: the client sees a truncated body or no response at all."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def write_body(resp: web.StreamResponse, data: bytes, drip_bytes_per_s: float | None) -> None:
    if drip_bytes_per_s is None:
        await resp.write(data)
        return
    step = max(1, int(drip_bytes_per_s / DRIP_SLICES_PER_S))
    for start in range(0, len(data), step):
        piece = data[start : start + step]
        await resp.write(piece)
        await asyncio.sleep(len(piece) / drip_bytes_per_s)


class _Sender:
    """Collects events and writes them in batches; stamps each token step with its send time."""

    def __init__(
        self, resp: web.StreamResponse, config: MockConfig, metrics: MockMetrics, record: TimingRecord | None
    ) -> None:
        self._resp = resp
        self._drip = config.drip_bytes_per_s
        self._keepalive = config.flavor == "openai"
        self._metrics = metrics
        self._record = record
        self._events: list[bytes] = []
        self._event_count = 0
        self._steps = 0
        self._last_send_s: float | None = None
        self.first_token_s: float | None = None

    def add(self, event: bytes) -> None:
        self._events.append(event)
        self._event_count += 1
        # The OpenAI flavour sprinkles SSE comments between events to test client tolerance.
        if self._keepalive and self._event_count % 16 == 1:
            self._events.append(KEEPALIVE)

    def step_done(self) -> None:
        self._steps += 1

    @property
    def pending(self) -> int:
        return len(self._events)

    async def flush(self) -> None:
        if not self._events:
            return
        data = b"".join(self._events)
        self._events.clear()
        steps, self._steps = self._steps, 0
        if steps:
            sent_wall_s, sent_s = time.time(), time.monotonic()
            if self._record is not None:
                self._record.token_times_s.extend([sent_wall_s] * steps)
            if self._last_send_s is None:
                self.first_token_s = sent_s
            else:
                self._metrics.itl.observe(sent_s - self._last_send_s)
            if steps > 1:
                self._metrics.itl.observe_many(0.0, steps - 1)
            self._last_send_s = sent_s
        await write_body(self._resp, data, self._drip)
        if steps and self._record is not None:
            self._record.token_written_s.extend([time.time()] * steps)


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """What one streamed request sends, decided before the first byte."""

    renderer: wire.ChunkRenderer
    generations: Sequence[Generation]
    include_usage: bool
    continuous_usage: bool
    malformed: bool
    parsed: Sequence[Parsed] | None = None  # the reasoning/tool parsers' deltas, one list per choice

    def step_events(self, step: int) -> list[bytes]:
        """The events of one engine step: one chunk per unfinished choice (n>1 interleaves)."""
        renderer = self.renderer
        events: list[bytes] = []
        for index, gen in enumerate(self.generations):
            last = len(gen.deltas) - 1
            if step > last:
                continue
            usage = step + 1 if self.continuous_usage else None
            if step == 0 and renderer.chat:
                # The role chunk goes out with the first token, not at request receipt (§1.4).
                events.append(renderer.role(index, 0 if self.continuous_usage else None))
            if self.parsed is not None:
                events.extend(self._parsed_events(index, step, last, usage))
            elif step < last:
                events.append(renderer.content(index, gen.deltas[step], usage))
            else:
                events.extend(renderer.final(index, gen.deltas[step], gen, usage))
        if self.malformed and step == 0:
            events[-1] = wire.malformed(events[-1])
        return events

    def _parsed_events(self, index: int, step: int, last: int, usage: int | None) -> list[bytes]:
        assert self.parsed is not None
        view, gen = self.parsed[index], self.generations[index]
        delta, reasoning_tokens = view.steps[step], view.reasoning_tokens[step]
        if step < last:
            # No chunk while the parser holds text back (markers, whitespace, an unfinished tool name).
            return [] if delta is None else [self.renderer.parsed(index, delta, usage, reasoning_tokens)]
        finish = (view.stream_finish_reason, gen.stop_reason)
        return self.renderer.parsed_final(index, delta or {}, finish, usage, reasoning_tokens)

    def reasoning_tokens(self) -> int:
        return sum(view.reasoning_tokens[-1] for view in self.parsed or () if view.reasoning_tokens)


def _fault_at(step: int, config: MockConfig) -> str | None:
    for name in ("stall_after", "disconnect_after", "error_event_after"):
        if getattr(config, name) == step:
            return name
    return None


async def _fire(
    fault: str, step: int, request: web.Request, state: MockState, sender: _Sender, renderer: wire.ChunkRenderer
) -> None:
    logger.debug("%s: %s fires after %d tokens", renderer.request_id, fault, step)
    if fault == "error_event_after":
        # vLLM's except-branch: error event, then [DONE]; no finish or usage chunk (§3.4).
        sender.add(renderer.error(f"Mock engine error after {step} tokens (error_event_after)."))
        sender.add(renderer.done())
    await sender.flush()
    if fault == "stall_after":
        await hang(request, state)
    elif fault == "disconnect_after":
        abort_connection(request)


async def send_stream(
    request: web.Request, state: MockState, plan: StreamPlan, record: TimingRecord | None
) -> tuple[web.StreamResponse, float | None, bool]:
    """Stream the chunks of §1.4/§2 with the configured faults; returns (response, first token time, completed)."""
    config = state.config
    renderer = plan.renderer
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await resp.prepare(request)
    sender = _Sender(resp, config, state.metrics, record)
    try:
        itl_s = config.itl_ms / 1000
        if config.ttft_ms:
            await asyncio.sleep(config.ttft_ms / 1000)
        for step in range(max(len(gen.deltas) for gen in plan.generations)):
            fault = _fault_at(step, config)
            if fault is not None:
                await _fire(fault, step, request, state, sender, renderer)
                return resp, sender.first_token_s, False
            if step and itl_s:
                await sender.flush()
                await asyncio.sleep(itl_s)
            for event in plan.step_events(step):
                sender.add(event)
            sender.step_done()
            if sender.pending >= BATCH_EVENTS:
                await sender.flush()
        if plan.include_usage:
            sender.add(renderer.usage(sum(len(gen.token_ids) for gen in plan.generations), plan.reasoning_tokens()))
        sender.add(renderer.done())
        await sender.flush()
        return resp, sender.first_token_s, True
    except ConnectionResetError:
        # The client left mid-stream; vLLM aborts such a request. Nothing to log above debug.
        logger.debug("%s: client disconnected", renderer.request_id)
        return resp, sender.first_token_s, False


async def send_error_stream(request: web.Request, renderer: wire.ChunkRenderer, message: str) -> web.StreamResponse:
    """A request the engine rejects after the stream began: 200, one error event, then [DONE].

    vLLM 0.32 validates structured-output grammars when the request reaches the engine, which the
    streaming generator's first iteration does, so the error arrives inside the stream (no role chunk).
    """
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await resp.prepare(request)
    await resp.write(renderer.error(message) + renderer.done())
    return resp
