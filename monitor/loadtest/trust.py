"""How far to trust a run's numbers: the load generator's own CPU and timing error, and the refusal.

``generator_report`` sums up what the Locust processes measured about themselves: CPU per process
(the summary line's ``processes``), the lag between the kernel receiving a read and the meter
stamping it, the event loop's own lag, the open-loop send lag and slot wait, and the per-request bounds on the
TTFT and ITL error (see docs/accuracy.md for why a bound is an upper bound). ``refusal`` says why no
verdict can be given when the generator itself was the bottleneck; the SLO gate then exits 3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from monitor.loadtest.params import LoadParams
from monitor.loadtest.slo import Objective
from monitor.loadtest.window import Hist, Window, decode_hist, hist_percentile

__all__ = ["ERROR_SHARE", "GENERATOR_BUSY_FRACTION", "SLOT_WAIT_SHARE", "generator_report", "refusal"]

GENERATOR_BUSY_FRACTION = 0.9  # a generator process this busy may have delayed what it measured
ERROR_SHARE = 0.1  # an error bound (p99) past this share of the tightest threshold drowns the verdict
SLOT_WAIT_SHARE = 0.01  # arrivals held back by the generator's own in-flight cap, past which it set the pace

_TTFT = re.compile(r"^(ttft|ttfa)_(p[\d.]+|mean)_ms$")
_ITL = re.compile(r"^itl_(p[\d.]+|mean)_ms$")
_SEND = re.compile(r"^(ttft|ttfa|e2e)_(p[\d.]+|mean)_ms$")


def generator_report(line: dict[str, Any], duration_s: float, params: LoadParams, window: Window) -> dict[str, Any]:
    """summary["generator"]: CPU of every generator process, its timing error, and whether it was saturated."""
    cpu_s = float(line.get("cpu_s") or 0.0)
    busy = _fraction(cpu_s, duration_s)
    out: dict[str, Any] = {"cpu_s": cpu_s, "cpu_fraction": busy}
    # Each process's share of a core over the wall-clock time its CPU was measured (the run's, for older lines).
    out["processes"] = [
        {**p, "cpu_fraction": _fraction(float(p.get("cpu_s") or 0.0), float(p.get("wall_s") or duration_s))}
        for p in line.get("processes") or ()
    ]
    if params.distributed:
        # The workers' CPU is theirs summed; their share, the mean worker's of its own core over its own clock.
        workers = [p for p in out["processes"] if p.get("role") == "worker"]
        out["worker_cpu_s"] = round(sum(float(p.get("cpu_s") or 0.0) for p in workers), 3)
        shares = [p["cpu_fraction"] for p in workers if p["cpu_fraction"] is not None]
        out["worker_cpu_fraction"] = round(sum(shares) / len(shares), 3) if shares else _fraction(0.0, duration_s)
    busiest = max((p["cpu_fraction"] or 0.0 for p in out["processes"]), default=busy or 0.0)
    out["saturated"] = busiest >= GENERATOR_BUSY_FRACTION
    reads, kernel_reads = int(line.get("reads") or 0), int(line.get("kernel_reads") or 0)
    out["kernel_timestamps"] = round(kernel_reads / reads, 4) if reads else None
    out["read_lag_ms"] = _dist(window.read_lag)
    out["loop_lag_ms"] = _dist(decode_hist(line.get("loop_lag") or ()))
    out["send_lag_ms"] = _dist(window.lag) if params.open_loop else None
    out["slot_wait"] = _slot_wait(window, params.max_inflight) if params.open_loop else None
    out["ttft_error_bound_ms"] = _dist(window.ttft_err)
    out["itl_error_bound_ms"] = _dist(window.itl_err)
    out["refusal"] = None
    return out


def refusal(report: Mapping[str, Any], params: LoadParams, server_queue_max: float | None = None) -> str | None:
    """One line on why the run cannot be judged (the generator was the bottleneck), or None.

    ``server_queue_max``: the most requests the server's own /metrics showed waiting (None: not known).
    Arrivals that waited for a free ``--max-inflight`` slot while the server queued none were held back
    by the generator's cap, not by the server; a server that queued too is the bottleneck itself.
    """
    prefix = "no verdict: the load generator was the bottleneck"
    for process in report.get("processes") or ():
        busy = process.get("cpu_fraction") or 0.0
        if busy >= GENERATOR_BUSY_FRACTION:
            return (
                f"{prefix}: {process.get('name', '?')} CPU {100 * busy:.0f}% >= {100 * GENERATOR_BUSY_FRACTION:.0f}%; "
                "add --workers or run it on a quieter machine"
            )
    if not report.get("processes") and report.get("saturated"):  # a summary line without per-process CPU
        busy = report.get("worker_cpu_fraction", report.get("cpu_fraction")) or 0.0
        return f"{prefix}: CPU {100 * busy:.0f}% >= {100 * GENERATOR_BUSY_FRACTION:.0f}%; add --workers"
    slots = report.get("slot_wait") or {}
    waited, arrivals = int(slots.get("waited") or 0), int(slots.get("arrivals") or 0)
    if server_queue_max == 0 and arrivals and waited >= SLOT_WAIT_SHARE * arrivals:
        return (
            f"{prefix}: {waited} of {arrivals} arrivals waited for one of --max-inflight {slots.get('max_inflight')} "
            "slots while the server queued none; raise --max-inflight"
        )
    checks = [("TTFT error bound", "ttft_error_bound_ms", _TTFT), ("ITL error bound", "itl_error_bound_ms", _ITL)]
    if params.open_loop and params.sweep is None:
        # A sweep raises the rate until requests queue: lag at its last step is what it measures (kept_up).
        checks.append(("send lag", "send_lag_ms", _SEND))
    for label, key, family in checks:
        p99 = (report.get(key) or {}).get("p99")
        tightest = _tightest(params.objectives, family)
        if p99 is not None and tightest is not None and p99 > ERROR_SHARE * tightest.threshold:
            return (
                f"{prefix}: {label} p99 {p99:g} ms > {100 * ERROR_SHARE:.0f}% of the SLO's {tightest}; "
                "add --workers or run it on a quieter machine"
            )
    return None


def _slot_wait(window: Window, max_inflight: int) -> dict[str, Any]:
    """Open loop: the arrivals that found every slot taken, those that left after waiting and those still
    waiting when the run ended (due, never sent); ``wait_ms`` is over the arrivals that left."""
    unsent = max(0, window.sent - sum(window.lag.values()))
    return {"arrivals": window.sent, "waited": window.waited + unsent, "unsent": unsent,
            "max_inflight": max_inflight, "wait_ms": _dist(window.wait)}  # fmt: skip


def _tightest(objectives: tuple[Objective, ...], family: re.Pattern[str]) -> Objective | None:
    """The upper-bound objective with the smallest threshold among ``family``'s latency metrics."""
    caps = [o for o in objectives if family.match(o.metric) and o.op in ("<=", "<") and o.threshold > 0]
    return min(caps, key=lambda o: o.threshold, default=None)


def _fraction(cpu_s: float, duration_s: float) -> float | None:
    return round(cpu_s / duration_s, 3) if duration_s > 0 else None


def _dist(hist: Hist) -> dict[str, float | None] | None:
    if not any(hist.values()):
        return None
    values = {
        "p50": hist_percentile(hist, 50.0),
        "p99": hist_percentile(hist, 99.0),
        "max": hist_percentile(hist, 100.0),
    }
    return {name: None if v is None else round(v, 3) for name, v in values.items()}
