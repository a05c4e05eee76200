"""Mutable per-app state of the mock: current config, fault dice, metrics and token timings."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from monitor.mock.config import MockConfig
from monitor.mock.vllm_metrics import MockMetrics

__all__ = ["STATE_KEY", "Batch", "MockState", "TimingRecord", "TimingStore"]

MAX_TIMING_RECORDS = 10_000


@dataclass(slots=True)
class TimingRecord:
    """Wall-clock send times (`time.time()` seconds) of one request's tokens.

    ``token_times_s`` is read just before each write, ``token_written_s`` just after it returned: the
    bytes left between the two. A mock preempted in between (a busy core) shows as a wide pair.
    """

    request_id: str
    stream: bool
    received_s: float
    token_times_s: list[float] = field(default_factory=list)
    token_written_s: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "stream": self.stream,
            "received_s": self.received_s,
            "token_times_s": self.token_times_s,
            "token_written_s": self.token_written_s,
        }


class TimingStore:
    """A bounded ring of `TimingRecord`s keyed by request id (the `X-Request-Id` suffix)."""

    def __init__(self, capacity: int = MAX_TIMING_RECORDS) -> None:
        self._capacity = capacity
        self._records: OrderedDict[str, TimingRecord] = OrderedDict()

    def start(self, request_id: str, *, stream: bool, received_s: float) -> TimingRecord:
        record = TimingRecord(request_id, stream, received_s)
        self._records[request_id] = record
        self._records.move_to_end(request_id)
        while len(self._records) > self._capacity:
            self._records.popitem(last=False)
        return record

    def get(self, request_id: str) -> TimingRecord | None:
        record = self._records.get(request_id)
        if record is None:
            # Accept the full response id too ("chatcmpl-<id>" / "cmpl-<id>").
            _, _, suffix = request_id.partition("-")
            record = self._records.get(suffix)
        return record

    def all(self) -> list[TimingRecord]:
        return list(self._records.values())

    def clear(self) -> int:
        count = len(self._records)
        self._records.clear()
        return count


class Batch:
    """vLLM's scheduler in one knob: at most ``limit`` requests generate at once, the others wait their turn.

    ``waiting`` is what ``vllm:num_requests_waiting`` reports. The limit is read per request, so a
    reconfigured mock applies it to the requests that arrive after the change.
    """

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self._turn = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self, limit: int | None) -> AsyncIterator[None]:
        async with self._turn:
            self.waiting += 1
            try:
                await self._turn.wait_for(lambda: limit is None or self.running < limit)
            finally:
                self.waiting -= 1
            self.running += 1
        try:
            yield
        finally:
            async with self._turn:
                self.running -= 1
                self._turn.notify_all()  # a woken waiter may be cancelled: let every one recheck


class MockState:
    """Everything the handlers share; one per `create_mock_app()` call."""

    def __init__(self, config: MockConfig) -> None:
        self.startup_config = config.model_copy()
        self.config = config.model_copy()
        self.dice = random.Random(config.seed)
        # Logprob jitter (batching's): its own generator, so it never shifts the fault dice.
        self.noise = random.Random(config.seed + 1)
        self.metrics = MockMetrics()
        self.timings = TimingStore()
        self.batch = Batch()
        self.request_counter = 0
        # Set when the app shuts down, so stalled ("hanging") handlers can return.
        self.closing = asyncio.Event()

    def replace_config(self, config: MockConfig) -> None:
        self.config = config
        # Re-seeding on every change makes fault sequences reproducible from any config change.
        self.dice = random.Random(config.seed)

    def roll(self) -> tuple[float, float]:
        """Two dice per generation request, drawn unconditionally so sequences stay stable."""
        return self.dice.random(), self.dice.random()


STATE_KEY = web.AppKey("mock_state", MockState)
