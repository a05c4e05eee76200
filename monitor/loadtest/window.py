"""Aggregates of load-test samples: latency histograms and counters per second, mergeable and JSON-safe.

Pure data, no I/O: the Locust side (``locustfiles/_collect.py``) fills a ``Window`` per second and
endpoint, ships it as JSON (JSONL on the master, ``report_to_master`` from workers), and the runner
merges windows for per-second rows, sweep steps and the whole-run summary. Because histograms
merge exactly, percentiles over any span are computed from every sample, not averaged.

Histogram keys are latencies in 10 µs units. The hot path counts ``int(ms * 100)`` directly;
``compact`` rounds keys above 10 ms to three significant digits before they leave the process,
so a key set stays small while the error stays below 0.5 %.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KEYS_PER_MS", "Hist", "Window", "compact", "decode_hist", "encode_hist", "hist_mean", "hist_percentile"]

KEYS_PER_MS = 100  # histogram keys are 10 µs steps
Hist = Counter[int]


def compact(hist: Hist) -> Hist:
    """The same histogram with keys of 1000 and more (>= 10 ms) rounded to three significant digits."""
    out: Hist = Counter()
    for key, count in hist.items():
        if key >= 1000:
            scale = 10 ** (len(str(key)) - 3)
            key = (key + scale // 2) // scale * scale
        out[key] += count
    return out


def encode_hist(hist: Hist) -> list[list[int]]:
    """``[[key, count], ...]`` sorted by key (msgpack and JSON both keep int lists; not int dict keys)."""
    return [[key, count] for key, count in sorted(compact(hist).items()) if count]


def decode_hist(pairs: Iterable[Iterable[int]]) -> Hist:
    hist: Hist = Counter()
    for key, count in pairs:
        hist[int(key)] += int(count)
    return hist


def hist_percentile(hist: Mapping[int, int], pct: float) -> float | None:
    """Linear-interpolated percentile in ms (numpy's default definition over the bucketed values)."""
    items = sorted((key, count) for key, count in hist.items() if count > 0)
    total = sum(count for _, count in items)
    if total == 0:
        return None
    rank = (total - 1) * min(max(pct, 0.0), 100.0) / 100.0
    low_rank = int(rank)
    low = _key_at(items, low_rank)
    frac = rank - low_rank
    high = _key_at(items, low_rank + 1) if frac > 0 else low
    return (low + (high - low) * frac) / KEYS_PER_MS


def _key_at(items: list[tuple[int, int]], index: int) -> int:
    seen = 0
    for key, count in items:
        seen += count
        if seen > index:
            return key
    return items[-1][0]


def hist_mean(hist: Mapping[int, int]) -> float | None:
    total = sum(hist.values())
    if total <= 0:
        return None
    return sum(key * count for key, count in hist.items()) / total / KEYS_PER_MS


def _counter() -> Counter[str]:
    return Counter()


def _hist() -> Hist:
    return Counter()


@dataclass(slots=True)
class Window:
    """Counters and histograms of the requests that finished in one span (a second, a step, a run).

    ``requests`` counts finished requests, ok or not; ``failures`` those with an error or a failed
    check (``errors`` breaks them down by kind). ``finished`` counts replies that ended normally,
    the denominator of the truncation rate. Latency histograms hold successful requests only.
    Open loop, by intended send time: ``sent`` counts the arrivals that came due (the offered load,
    whether they left then, later or not before the run ended); ``lag`` holds each departed arrival's
    send lag, the generator's own lateness from when it could leave (its intended time, or when a
    slot of ``--max-inflight`` freed) to when it left, and ``late`` counts those past 20 ms;
    ``wait`` holds each one's slot wait (0 when a slot was free), and ``waited``, derived from it,
    counts those that found every slot taken. ``ttfa`` holds each reply's first answer token (``ttft`` when the model
    went straight to the answer); ``reasoned`` counts replies that carried reasoning, and
    ``reasoning_estimated`` those of them whose reasoning count the server did not itemise;
    ``answerless`` counts replies with a first token but no answer (reasoning cut by max_tokens,
    or only tool calls). ``reasoning_tokens`` is part of ``output_tokens``. ``input_tokens`` are
    the successful replies' prompt tokens (for cost). ``golden_graded`` counts successful replies
    to prompts with a golden answer, ``golden_passed`` those similar enough to it.

    Goodput (``--goodput``, vLLM ``--goodput`` semantics): ``goodput_judged`` counts the requests
    judged against the per-request clauses (every request, failed ones included, when clauses were
    given), ``good`` the successful ones that met every clause.

    Workloads: ``in_len``/``out_len`` are histograms of successful requests' prompt and output
    token counts (keys are *tokens*, not 10 µs steps); ``turn_ttft`` maps a multi-turn session's
    turn number (1-based) to the TTFT histogram of its requests.

    The generator's own timing error: ``read_lag`` holds, per socket read, how long after the
    kernel received the data the generator got to stamp it (10 µs keys); ``ttft_err`` per request
    the bound on that request's TTFT error; ``itl_err`` per inter-token gap the bound on its error.
    """

    requests: int = 0
    failures: int = 0
    finished: int = 0
    truncated: int = 0
    output_tokens: int = 0
    estimated_tokens: int = 0
    sent: int = 0
    late: int = 0
    reasoning_tokens: int = 0
    reasoned: int = 0
    reasoning_estimated: int = 0
    answerless: int = 0
    input_tokens: int = 0
    golden_graded: int = 0
    golden_passed: int = 0
    good: int = 0
    goodput_judged: int = 0
    errors: Counter[str] = field(default_factory=_counter)
    ttft: Hist = field(default_factory=_hist)
    ttfa: Hist = field(default_factory=_hist)
    itl: Hist = field(default_factory=_hist)
    e2e: Hist = field(default_factory=_hist)
    lag: Hist = field(default_factory=_hist)
    wait: Hist = field(default_factory=_hist)
    read_lag: Hist = field(default_factory=_hist)
    ttft_err: Hist = field(default_factory=_hist)
    itl_err: Hist = field(default_factory=_hist)
    in_len: Hist = field(default_factory=_hist)
    out_len: Hist = field(default_factory=_hist)
    turn_ttft: dict[int, Hist] = field(default_factory=dict)

    _COUNTS = (
        "requests", "failures", "finished", "truncated", "output_tokens", "estimated_tokens", "sent", "late",
        "reasoning_tokens", "reasoned", "reasoning_estimated", "answerless", "input_tokens", "golden_graded",
        "golden_passed", "good", "goodput_judged",
    )  # fmt: skip
    _HISTS = ("ttft", "ttfa", "itl", "e2e", "lag", "wait", "read_lag", "ttft_err", "itl_err", "in_len", "out_len")

    def merge(self, other: Window) -> Window:
        """Add ``other`` into this window (in place) and return self."""
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        for name in self._HISTS:
            getattr(self, name).update(getattr(other, name))
        for turn, hist in other.turn_ttft.items():
            self.turn_hist(turn).update(hist)
        return self

    def turn_hist(self, turn: int) -> Hist:
        """The TTFT histogram of session turn ``turn`` (created empty)."""
        hist = self.turn_ttft.get(turn)
        if hist is None:
            hist = self.turn_ttft[turn] = Counter()
        return hist

    @property
    def waited(self) -> int:
        """Open-loop arrivals that left after waiting for a slot (a wait of at least one 10 µs key)."""
        return sum(n for key, n in self.wait.items() if key > 0)

    @property
    def empty(self) -> bool:
        return not (self.requests or self.sent)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self._COUNTS if getattr(self, name)}
        if self.errors:
            out["errors"] = dict(self.errors)
        for name in self._HISTS:
            hist = getattr(self, name)
            if hist:
                out[name] = encode_hist(hist)
        if self.turn_ttft:
            out["turn_ttft"] = {str(turn): encode_hist(h) for turn, h in sorted(self.turn_ttft.items()) if h}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Window:
        window = cls()
        for name in cls._COUNTS:
            setattr(window, name, int(data.get(name, 0)))
        window.errors.update({str(k): int(v) for k, v in (data.get("errors") or {}).items()})
        for name in cls._HISTS:
            if name in data:
                setattr(window, name, decode_hist(data[name]))
        for turn, pairs in (data.get("turn_ttft") or {}).items():
            window.turn_hist(int(turn)).update(decode_hist(pairs))
        return window

    @classmethod
    def merged(cls, windows: Iterable[Window]) -> Window:
        total = cls()
        for window in windows:
            total.merge(window)
        return total
