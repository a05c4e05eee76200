"""The sweep's saturation judge (monitor/loadtest/saturation.py), pure: a steady server never trips it,
however its seconds are ordered within their noise; a growing queue always does."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from monitor.loadtest.saturation import MIN_TREND_SECONDS, NOTHING_OFFERED_EXPECTED, TREND_Z, Second, judge, trend_z

# Any value within 20 % of a level, in any order: hypothesis is free to arrange a ramp inside the band.
_band = st.floats(min_value=-0.2, max_value=0.2, allow_nan=False)


@st.composite
def _steady(draw: st.DrawFn) -> tuple[list[Second], float]:
    """A server that keeps up: every request sent is finished; in flight and TTFT stay within 20 % of a level."""
    n = draw(st.integers(MIN_TREND_SECONDS, 120))
    rate = draw(st.floats(0.1, 500))
    in_flight_level = draw(st.floats(1, 2000))
    ttft_level_ms = draw(st.floats(0.5, 60_000))
    sent = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    seconds = [
        Second(
            sent=s,
            finished=s,
            in_flight=math.floor(in_flight_level * (1 + draw(_band))),
            ttft_p50_ms=None if draw(st.booleans()) and i % 5 == 0 else ttft_level_ms * (1 + draw(_band)),
        )
        for i, s in enumerate(sent)
    ]
    return seconds, rate


@settings(max_examples=400, deadline=None)
@given(_steady())
def test_a_steady_server_never_saturates(case: tuple[list[Second], float]) -> None:
    seconds, rate = case
    if sum(s.sent for s in seconds) == 0 and rate * len(seconds) >= NOTHING_OFFERED_EXPECTED:
        seconds[0] = Second(1, 1, seconds[0].in_flight, seconds[0].ttft_p50_ms)
    assert judge(seconds, rate) is None


def _jitter(i: int) -> float:
    """5 % up and down, in a pattern that works against the trend test (every third second high)."""
    return 1.05 if i % 3 == 0 else 0.97


@settings(max_examples=200, deadline=None)
@given(n=st.integers(MIN_TREND_SECONDS, 90), start=st.integers(1, 500), factor=st.floats(2.5, 50))
def test_a_growing_queue_always_saturates(n: int, start: int, factor: float) -> None:
    """Requests in flight rising steadily from ``start`` to ``factor`` times it (the server keeps finishing
    what it is sent, only later and later), jittered."""
    rising = [round(start * (1 + (factor - 1) * i / (n - 1)) * _jitter(i)) for i in range(n)]
    seconds = [Second(10, 10, r, 100.0) for r in rising]
    found = judge(seconds, 10.0)
    if rising[-1] - rising[0] > 2 * max(4, 10):  # more than twice the absolute floor (4, a second of arrivals)
        assert found is not None and found.kind == "in_flight", (rising, found)
        assert found.detail.startswith("requests in flight grew from ")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(MIN_TREND_SECONDS, 90), start_ms=st.floats(30, 5000), factor=st.floats(2.5, 20))
def test_ttft_growing_through_the_step_is_queueing(n: int, start_ms: float, factor: float) -> None:
    ttfts = [start_ms * (1 + (factor - 1) * i / (n - 1)) * _jitter(i) for i in range(n)]
    seconds = [Second(5, 5, 3, t) for t in ttfts]
    found = judge(seconds, 5.0)
    assert found is not None and found.kind == "queueing" and "TTFT p50 grew" in found.detail


def test_finished_falling_behind_sent_is_saturation_whatever_the_trends() -> None:
    seconds = [Second(20, 12, 40, 100.0) for _ in range(10)]  # 60 % finished, flat otherwise
    found = judge(seconds, 20.0)
    assert found is not None and found.kind == "behind"
    assert found.detail.startswith("12.0 finished/s of 20.0 offered/s")
    # A second's worth of arrivals is slack: sent counts by intended second, finished by completion second.
    assert judge([Second(20, 18, 40, 100.0)] * 9 + [Second(20, 0, 40, 100.0)], 20.0) is None
    # What a server that keeps up holds at the step's end grows with its latency (rate x E2E).
    slow = [Second(20, 14, 40, 100.0) for _ in range(10)]
    assert judge(slow, 20.0) is not None and judge(slow, 20.0, e2e_p50_ms=3000.0) is None
    # ... but never past the generator's in-flight cap: a server that keeps up has no more outstanding, and
    # the E2E of one that does not (from the intended send time) grows with the backlog being judged.
    capped = judge(slow, 20.0, e2e_p50_ms=3000.0, inflight_cap=8)
    assert capped is not None and capped.kind == "behind"


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(0.1, 3.0), n=st.integers(MIN_TREND_SECONDS, 30), short=st.integers(0, 3))
def test_a_few_requests_at_a_low_rate_are_never_behind_by_chance(rate: float, n: int, short: int) -> None:
    """At 1 req/s over 8 s, 3 of 5 finished (the rest still running at the step's end) is not saturation:
    the real-server sweep in CI tripped on exactly that before the count noise was allowed for."""
    sent = max(1, round(rate * n))
    seconds = [Second(0, 0, 0, 100.0) for _ in range(n)]
    assert judge(seconds, rate, (sent, max(0, sent - short), float(n))) is None


def test_a_step_that_sent_nothing_is_behind_only_when_chance_cannot_explain_it() -> None:
    found = judge([Second(0, 0, 0, None)] * 10, 5.0)
    assert found is not None and found.kind == "behind"
    assert found.detail == "nothing was offered in 10 s at 5 req/s: the generator fell behind its schedule"
    # CI's 2 req/s sweep step, judged on its one whole second, offered nothing (Poisson: p = e^-2, 13.5 %).
    assert judge([Second(0, 0, 0, None)], 2.0) is None
    assert judge([], 2.0, (0, 1, 1.0)) is None
    # Where a Poisson schedule offers nothing with p < 0.1 %, nothing offered is the generator's doing.
    assert judge([], NOTHING_OFFERED_EXPECTED, (0, 0, 1.0)) is not None
    assert judge([], NOTHING_OFFERED_EXPECTED * 0.99, (0, 0, 1.0)) is None
    assert math.exp(-NOTHING_OFFERED_EXPECTED) == pytest.approx(0.001)


def test_short_steps_are_judged_on_finished_alone() -> None:
    rising = [Second(10, 10, 10 * (i + 1), 100.0 * (i + 1)) for i in range(MIN_TREND_SECONDS - 1)]
    assert judge(rising, 10.0) is None


def test_trend_z_of_a_rising_series_reaches_the_threshold_at_the_minimum_length() -> None:
    assert trend_z([float(i) for i in range(MIN_TREND_SECONDS)]) >= TREND_Z
    assert trend_z([float(i) for i in range(MIN_TREND_SECONDS - 1)]) < TREND_Z
    assert trend_z([5.0] * 20) == 0.0
    assert trend_z([float(-i) for i in range(20)]) == 0.0
