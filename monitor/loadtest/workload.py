"""Workloads that look like production: synthetic length distributions, sessions, shared prefixes, traces.

(Skeleton: the contract every part of the load test relies on. Filled in by the workload work.)

``WorkloadSpec`` is what the ``loadtest`` flags asked for. Before Locust starts, the runner turns
it into a *plan* (``monitor.loadtest.plan.build_plan``): a JSONL file of requests, each with its prompt, its own
``max_tokens`` and, where it applies, session, turn and arrival time. Lengths are counted in the
server's own tokens (its ``/tokenize``), else a tokenizer the user named, else an estimate; the
plan's ``info`` says which, and lands in the run's summary as ``workload``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError
from monitor.loadtest.traces import Trace, read_trace
from monitor.textfile import read_text_file

__all__ = ["Distribution", "Plan", "WorkloadSpec", "check_params", "checked_spec", "parse_distribution"]

MAX_TOKENS_LEN = 1_000_000
MAX_TURNS = 100
MAX_HIST_BINS = 10_000
MAX_HIST_BYTES = 4 * 1024 * 1024
PLAN_ITEMS = 128  # distinct synthetic requests; the users cycle through them
PLAN_SESSIONS = 32
MAX_PLAN_ITEMS = 20_000  # trace rows turned into requests (within the run)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    input_tokens: str | None = None  # a distribution (see parse_distribution): prompt lengths
    output_tokens: str | None = None  # a distribution: max_tokens per request
    tokenizer: str | None = None  # a local Hugging Face tokenizer, when the server has no /tokenize
    ignore_eos: bool = False  # ask the server to generate exactly the drawn output length
    turns: str | None = None  # a distribution of turns per session; None: no sessions
    shared_prefixes: int = 0  # N system prompts ...
    prefix_tokens: int = 0  # ... of L tokens each, shared across requests
    trace: Path | None = None  # a Mooncake or BurstGPT trace, replayed open-loop
    trace_format: str = "auto"
    trace_speedup: float = 1.0
    seed: int | None = None
    # The trace as checked_spec read it, once (the plan is built from it); not part of what was asked.
    loaded_trace: Trace | None = field(default=None, compare=False, repr=False)

    @property
    def trace_span_s(self) -> float | None:
        """The trace's span in its own time; None until checked_spec has read it."""
        return self.loaded_trace.span_s if self.loaded_trace is not None else None

    @property
    def sessions(self) -> bool:
        return self.turns is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "tokenizer": self.tokenizer,
            "ignore_eos": self.ignore_eos, "turns": self.turns, "shared_prefixes": self.shared_prefixes,
            "prefix_tokens": self.prefix_tokens, "trace": str(self.trace) if self.trace else None,
            "trace_format": self.trace_format, "trace_speedup": self.trace_speedup, "seed": self.seed,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    path: Path  # the JSONL the Locust processes read (--llm-plan)
    info: dict[str, Any] = field(default_factory=dict)  # summary["workload"]: kind, token_source, ...


@dataclass(frozen=True, slots=True)
class Distribution:
    """Lengths to draw: ``N``/``fixed:N``, ``uniform:LO:HI``, ``normal:MEAN:SD`` (>= 1), a histogram."""

    text: str
    kind: str  # fixed | uniform | normal | hist
    a: float = 0.0
    b: float = 0.0
    values: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()

    def draw(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        if self.kind == "normal":
            return max(1, min(MAX_TOKENS_LEN, round(rng.gauss(self.a, self.b))))
        return rng.choices(self.values, self.weights)[0]


def parse_distribution(text: str, flag: str, *, high: int = MAX_TOKENS_LEN) -> Distribution:
    """One distribution flag; ConfigError names ``flag`` (``--input-tokens: ...``)."""
    raw = text.strip()
    kind, _, rest = raw.partition(":")
    kind = kind.lower()
    if not rest and kind.isdigit():
        kind, rest = "fixed", raw
    try:
        if kind == "fixed":
            n = _length(rest, flag, high)
            return Distribution(raw, "fixed", n)
        if kind == "uniform":
            lo_s, _, hi_s = rest.partition(":")
            lo, hi = _length(lo_s, flag, high), _length(hi_s, flag, high)
            if lo > hi:
                raise ConfigError(f"{flag}: uniform:LO:HI needs LO <= HI, got {lo} > {hi}")
            return Distribution(raw, "uniform", lo, hi)
        if kind == "normal":
            mean_s, _, sd_s = rest.partition(":")
            mean, sd = float(mean_s), float(sd_s)
            if not (1 <= mean <= high) or not (0 <= sd <= high):
                raise ConfigError(f"{flag}: normal:MEAN:SD needs 1 <= MEAN <= {high} and 0 <= SD")
            return Distribution(raw, "normal", mean, sd)
        if kind == "empirical":
            pairs = [part.partition("=") for part in rest.split(",") if part.strip()]
            return _hist(raw, [(a, c) for a, _, c in pairs], flag, high)
        if kind == "hist":
            return _hist(raw, _read_hist(Path(rest), flag), flag, high)
    except ValueError:
        raise ConfigError(f"{flag}: {raw!r} has a value that is not a number") from None
    raise ConfigError(
        f"{flag}: {raw!r} is not N, fixed:N, uniform:LO:HI, normal:MEAN:SD, hist:FILE or empirical:L=W,..."
    )


def _length(text: str, flag: str, high: int) -> int:
    n = int(text.strip())
    if not 1 <= n <= high:
        raise ConfigError(f"{flag}: {n} is out of range 1..{high}")
    return n


def _hist(raw: str, pairs: list[tuple[Any, Any]], flag: str, high: int) -> Distribution:
    if not pairs or len(pairs) > MAX_HIST_BINS:
        raise ConfigError(f"{flag}: a histogram needs 1 to {MAX_HIST_BINS} length,weight pairs")
    values, weights = [], []
    for length, weight in pairs:
        values.append(_length(str(length), flag, high))
        w = float(weight)
        if not w >= 0 or w == float("inf"):
            raise ConfigError(f"{flag}: weight {weight!r} must be a finite number >= 0")
        weights.append(w)
    if sum(weights) <= 0:
        raise ConfigError(f"{flag}: the histogram's weights add up to 0")
    return Distribution(raw, "hist", values=tuple(values), weights=tuple(weights))


def _read_hist(path: Path, flag: str) -> list[tuple[Any, Any]]:
    """JSON ({"LEN": W}, [[LEN, W]], [{"length", "weight"}]) or CSV lines ``length,weight`` (a header is skipped)."""
    text = read_text_file(path, flag, MAX_HIST_BYTES)
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {path}: not JSON ({exc})") from None
        if isinstance(data, dict):
            return list(data.items())
        if isinstance(data, list):
            out: list[tuple[Any, Any]] = []
            for item in data:
                if isinstance(item, dict) and "length" in item:
                    out.append((item["length"], item.get("weight", 1)))
                elif isinstance(item, list) and len(item) == 2:
                    out.append((item[0], item[1]))
                else:
                    raise ConfigError(f"{flag}: {path}: each item must be [length, weight] or {{length, weight}}")
            return out
        raise ConfigError(f"{flag}: {path}: expected an object or a list")
    rows = [r for r in csv.reader(io.StringIO(text)) if r and "".join(r).strip()]
    if rows and not rows[0][0].strip().isdigit():
        rows = rows[1:]
    if any(len(r) < 2 for r in rows):
        raise ConfigError(f"{flag}: {path}: each CSV line must be length,weight")
    return [(r[0], r[1]) for r in rows]


def checked_spec(spec: WorkloadSpec) -> WorkloadSpec:
    """Validate the flags (ConfigError names the flag); reads a trace once to set ``trace_span_s``."""
    if spec.input_tokens is not None:
        parse_distribution(spec.input_tokens, "--input-tokens")
    if spec.output_tokens is not None:
        parse_distribution(spec.output_tokens, "--output-tokens")
    if spec.turns is not None:
        parse_distribution(spec.turns, "--turns", high=MAX_TURNS)
    _check_prefixes(spec)
    if not spec.trace_speedup > 0 or spec.trace_speedup == float("inf"):
        raise ConfigError("--trace-speedup: must be a finite number > 0")
    if spec.trace is None:
        if spec.trace_speedup != 1.0:
            raise ConfigError("--trace-speedup: needs --trace")
        return spec
    for flag, value in (("--turns", spec.turns), ("--input-tokens", spec.input_tokens),
                        ("--output-tokens", spec.output_tokens)):  # fmt: skip
        if value is not None:
            raise ConfigError(f"{flag}: cannot be combined with --trace (the trace gives lengths and arrivals)")
    if spec.shared_prefixes:
        raise ConfigError("--shared-prefixes: cannot be combined with --trace (Mooncake's hash_ids share blocks)")
    return replace(spec, loaded_trace=read_trace(spec.trace, spec.trace_format))


def _check_prefixes(spec: WorkloadSpec) -> None:
    if spec.shared_prefixes < 0 or spec.prefix_tokens < 0:
        raise ConfigError("--shared-prefixes/--prefix-tokens: must be >= 0")
    if spec.prefix_tokens and not spec.shared_prefixes:
        raise ConfigError("--prefix-tokens: needs --shared-prefixes N (how many system prompts share it)")
    if spec.shared_prefixes and not spec.prefix_tokens:
        raise ConfigError("--shared-prefixes: needs --prefix-tokens L (the length of each shared prompt)")
    if spec.shared_prefixes > 10_000 or spec.prefix_tokens > MAX_TOKENS_LEN:
        raise ConfigError("--shared-prefixes: at most 10000 prefixes of at most 1000000 tokens")


def check_params(spec: WorkloadSpec, *, endpoint: str, users: int | None, rate: float | None, sweep: bool,
                 shape: str | None) -> None:  # fmt: skip
    """Cross-field checks between the workload and the load model (called from build_params)."""
    if spec.trace is not None:
        for flag, given in (("--users", users is not None), ("--rate", rate is not None), ("--sweep", sweep),
                            ("--shape", shape is not None)):  # fmt: skip
            if given:
                raise ConfigError(f"{flag}: a --trace replay runs on the trace's own clock; drop {flag}")
    if spec.turns is not None:
        if endpoint == "completion":
            raise ConfigError("--turns: sessions are conversations; use --endpoint chat")
        if rate is not None or sweep:
            raise ConfigError("--turns: sessions run closed loop; use --users (each user keeps its conversation)")
