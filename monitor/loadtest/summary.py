"""Load-run output: the summary table, the regression table against a baseline, and the JSON document.

The HTML report with its charts lives in ``monitor.loadtest.html``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from monitor.loadtest import report
from monitor.loadtest.cost import quality_cost_notes
from monitor.loadtest.repo import LoadRun
from monitor.loadtest.runner import RunOutcome

__all__ = [
    "hidden_metrics", "outcome_json", "print_outcome", "reasoning_notes", "regressions", "server_fmt", "server_rows",
]  # fmt: skip

# Metrics compared against a baseline, and which direction is better.
_HIGHER_IS_BETTER = {"rps", "tokens_per_s"}
REGRESSION_METRICS = (
    "rps", "tokens_per_s", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "ttfa_p50_ms", "ttfa_p95_ms",
    "itl_p50_ms", "itl_p95_ms", "e2e_p95_ms", "error_rate", "truncation_rate",
)  # fmt: skip
# Changes smaller than this (relative) are noise, not a regression or an improvement.
SAME_WITHIN = 0.05
_LABELS = {
    "requests": "requests", "failures": "failures", "error_rate": "error rate", "truncation_rate": "truncation rate",
    "rps": "finished req/s", "tokens_per_s": "output tokens/s", "reasoning_tokens_per_s": "reasoning tokens/s",
    "goodput_rate": "goodput rate", "goodput_rps": "good req/s", "read_lag_p50_ms": "read lag p50",
    "read_lag_p99_ms": "read lag p99", "ttft_err_p99_ms": "TTFT error bound p99",
    "itl_err_p99_ms": "ITL error bound p99", "lag_p95_ms": "send lag p95", "lag_p99_ms": "send lag p99",
    "wait_p95_ms": "slot wait p95",
}  # fmt: skip
# Shown only when some reply reasoned: otherwise TTFA is TTFT's number and there are no reasoning tokens.
_SPLIT_METRICS = frozenset({"reasoning_tokens_per_s", "ttfa_p50_ms", "ttfa_p90_ms", "ttfa_p95_ms", "ttfa_p99_ms"})


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name.endswith("_rate"):
        return f"{100 * float(value):.2f}%"
    if name.startswith("cost"):
        return f"{float(value):.6g}"
    if name in ("requests", "failures"):
        return f"{int(value):,}"
    if name.endswith("_ms"):
        return f"{float(value):,.1f} ms"
    return f"{float(value):,.1f}"


def _label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    kind, _, rest = name.partition("_")
    return f"{kind.upper()} {rest.removesuffix('_ms')}"


def hidden_metrics(summary: dict[str, Any]) -> frozenset[str]:
    """Metrics the tables leave out: the reasoning/answer split of a run in which no reply reasoned.

    The summary still stores them (TTFA equal to TTFT, reasoning tokens/s None), so an SLO on
    ``ttfa_p95_ms`` means the same for a model that does not reason. Summaries stored before
    TTFA was measured have no ``reasoning`` entry and hide nothing. ``quality_rate`` is hidden
    when no reply was graded against a golden answer, goodput when no request was judged by ``--goodput``.
    """
    reasoning = summary.get("reasoning")
    hidden = _SPLIT_METRICS if reasoning is not None and not reasoning.get("split") else frozenset()
    # quality_rate only means something when the prompts carried golden answers (older summaries lack both).
    if "golden" in summary and not summary["golden"]:
        hidden |= {"quality_rate"}
    # Goodput only with --goodput clauses that judged a request (a summary stored before goodput has no key).
    metrics = summary.get("metrics") or {}
    if "goodput_rate" in metrics and metrics["goodput_rate"] is None:
        hidden |= {"goodput_rate", "goodput_rps"}
    return hidden


def reasoning_notes(summary: dict[str, Any]) -> list[str]:
    """Plain-text lines on the reasoning/answer split, for the printed and the HTML report."""
    reasoning = summary.get("reasoning")
    if reasoning is None:
        return []
    notes = []
    replies, answerless = int(reasoning.get("replies") or 0), int(reasoning.get("answerless") or 0)
    if not reasoning.get("split"):
        notes.append("no reply reasoned: TTFA = TTFT, no reasoning tokens (their rows are left out)")
    elif reasoning.get("estimated"):
        notes.append(
            f"reasoning tokens estimated for {reasoning['estimated']:,} of {replies:,} reasoning replies "
            "(the server did not itemise usage.completion_tokens_details)"
        )
    if answerless:
        notes.append(
            f"{answerless:,} replies never reached an answer token (reasoning cut by max_tokens, or only tool "
            "calls): in TTFT, not in TTFA"
        )
    return notes


def server_fmt(name: str, value: Any) -> str:
    """A server metric for display: ratios as percentages, counts whole, the rest as `_fmt` does."""
    if value is None:
        return "not exposed"
    if name.endswith(("_usage_max", "_hit_rate")):
        return f"{100 * float(value):.1f}%"
    if name.endswith(("_max", "preemptions")):
        return f"{float(value):,.0f}"
    return _fmt(name, value)


def server_rows(summary: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """The server's saturation signals of a run: (where they came from, [(metric, value), ...]).

    The rows are empty when nothing was scraped; the text then says why (not exposed, turned off,
    scrapes failed). Summaries stored before the runner scraped /metrics have no `server` entry.
    """
    server = summary.get("server")
    if server is None:
        return "", []
    rows = list(server.get("metrics", {}).items()) if server.get("status") == "measured" else []
    return str(server.get("source") or ""), rows


def regressions(baseline: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: baseline, this run, relative change, and better/worse/same."""
    rows = []
    for name in REGRESSION_METRICS:
        old, new = baseline.get(name), current.get(name)
        change: float | None = None
        judgement = "n/a"
        if old is not None and new is not None:
            if old == 0:
                judgement = "same" if new == 0 else ("better" if name in _HIGHER_IS_BETTER else "worse")
            else:
                change = (new - old) / abs(old)
                if abs(change) < SAME_WITHIN:
                    judgement = "same"
                else:
                    improved = (change > 0) == (name in _HIGHER_IS_BETTER)
                    judgement = "better" if improved else "worse"
        rows.append({"metric": name, "baseline": old, "current": new, "change": change, "judgement": judgement})
    return rows


def _summary_table(outcome: RunOutcome) -> Table:
    summary = outcome.summary
    endpoints: dict[str, dict[str, Any]] = summary.get("endpoints", {})
    table = Table(title=f"load run {outcome.run_id}: {outcome.status}", title_justify="left")
    table.add_column("metric")
    table.add_column("all", justify="right")
    for endpoint in endpoints:
        table.add_column(endpoint, justify="right")
    hidden = hidden_metrics(summary)
    for name, value in summary["metrics"].items():
        if name in hidden:
            continue
        table.add_row(_label(name), _fmt(name, value), *(_fmt(name, ep.get(name)) for ep in endpoints.values()))
    return table


def _slo_table(outcome: RunOutcome) -> Table:
    table = Table(title=f"SLO: {outcome.verdict}", title_justify="left")
    for column in ("objective", "measured", "result"):
        table.add_column(column)
    for result in outcome.slo:
        mark = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
        measured = _fmt(result.objective.metric, result.value) if result.value is not None else "not measured"
        table.add_row(str(result.objective), measured, mark)
    return table


def _sweep_table(sweep: dict[str, Any], ttfa: bool) -> Table:
    table = Table(title="sweep", title_justify="left")
    # The golden-answer pass rate per step, when the prompts carry golden answers.
    golden = any(step["metrics"].get("quality_rate") is not None for step in sweep["steps"])
    good = any(step["metrics"].get("goodput_rate") is not None for step in sweep["steps"])
    columns = ("offered req/s", "finished req/s", "TTFT p95", *(("TTFA p95",) if ttfa else ()),
               *(("golden pass",) if golden else ()), *(("goodput",) if good else ()), "kept up", "SLO")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    knee = report.knee_index(sweep)
    for index, step in enumerate(sweep["steps"]):
        m = step["metrics"]
        latencies = [_fmt("ttft_p95_ms", m.get("ttft_p95_ms"))]
        if ttfa:
            latencies.append(_fmt("ttfa_p95_ms", m.get("ttfa_p95_ms")))
        if golden:
            latencies.append(_fmt("quality_rate", m.get("quality_rate")))
        if good:
            latencies.append(_fmt("goodput_rate", m.get("goodput_rate")))
        offered = f"{step['rate']:g}" + (" knee" if index == knee else "")
        table.add_row(
            offered, _fmt("rps", m.get("rps")), *latencies, "yes" if step["kept_up"] else "[red]no[/]",
            {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", None: "-"}[report.step_mark(step)],
        )  # fmt: skip
    return table


def _regression_table(baseline: LoadRun, rows: list[dict[str, Any]], hidden: frozenset[str]) -> Table:
    table = Table(title=f"against baseline run {baseline.id} ({baseline.started_at:%Y-%m-%d %H:%M} UTC)")
    for column in ("metric", "baseline", "this run", "change", ""):
        table.add_column(column, justify="right" if column in ("baseline", "this run", "change") else "left")
    colours = {"worse": "red", "better": "green", "same": "dim", "n/a": "dim"}
    for row in rows:
        if row["metric"] in hidden:
            continue
        change = row["change"]
        shown = "-" if change is None else f"{100 * change:+.1f}%"
        name = row["metric"]
        judgement = f"[{colours[row['judgement']]}]{row['judgement']}[/]"
        table.add_row(_label(name), _fmt(name, row["baseline"]), _fmt(name, row["current"]), shown, judgement)
    return table


def _print_server(console: Console, summary: dict[str, Any]) -> None:
    source, rows = server_rows(summary)
    if rows:
        table = Table(title="server (its own /metrics)", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in rows:
            table.add_row(name, server_fmt(name, value))
        console.print(table)
    if source:
        console.print(f"server metrics: {source}", highlight=False, markup=False)


def _print_sweep(console: Console, summary: dict[str, Any]) -> None:
    sweep = summary.get("sweep")
    if sweep is None:
        return
    console.print(_sweep_table(sweep, "ttfa_p95_ms" not in hidden_metrics(summary)))
    best = sweep.get("goodput_rps")
    if any(step.get("slo") for step in sweep["steps"]):
        console.print(f"highest sustainable rate (goodput): {f'{best:g} req/s' if best is not None else 'none'}")
    knee = report.knee_index(sweep)
    if knee is not None:
        console.print(f"knee: {sweep['steps'][knee]['rate']:g} req/s offered")
    saturated = report.saturation_text(sweep)
    if saturated is not None:
        console.print(saturated, highlight=False, markup=False)


def _print_workload(console: Console, summary: dict[str, Any]) -> None:
    """The workload's shape, its prompt and output lengths, and TTFT by session turn."""
    for line in report.workload_lines(summary):
        console.print(line, highlight=False, markup=False)
    for name, stats in report.lengths(summary).items():
        console.print(report.length_text(name, stats), highlight=False, markup=False)
    turns = report.turn_rows(summary)
    if turns:
        table = Table(title="TTFT by session turn", title_justify="left")
        for column in ("turn", "requests", "TTFT p50", "TTFT p95", "TTFT p99"):
            table.add_column(column, justify="right")
        for row in turns:
            table.add_row(str(row["turn"]), _fmt("requests", row.get("requests")),
                          *(_fmt("ttft_ms", row.get(f"ttft_p{p}_ms")) for p in (50, 95, 99)))  # fmt: skip
        console.print(table)


def _print_trust(console: Console, summary: dict[str, Any]) -> None:
    """How far to trust the numbers: the generator's timing error and CPU (its refusal is printed first)."""
    trust = report.trust(summary)
    if trust.bounds:
        console.print("how far to trust these numbers (the generator's own timing error):", highlight=False)
    for label, values in trust.bounds:
        console.print(report.bound_text(label, values), highlight=False, markup=False)
    for name, role, cpu_s, busy in trust.processes:
        shown = "-" if busy is None else f"{100 * busy:.0f}% of a core"
        cpu = "-" if cpu_s is None else f"{cpu_s:,.2f} s"
        console.print(f"generator CPU {name} ({role}): {cpu}, {shown}", highlight=False, markup=False)
    for note in trust.notes:
        console.print(note, style="yellow" if "bottleneck" in note else None, highlight=False, markup=False)


def print_outcome(console: Console, outcome: RunOutcome) -> None:
    """The summary, SLO, sweep, canary, error and regression tables of one run."""
    summary = outcome.summary
    refused = report.trust(summary).refusal
    if refused:
        # An inconclusive run must not read like a pass: the refusal comes first, and again at the end.
        console.print(f"[bold red]INCONCLUSIVE: {refused}[/]", highlight=False)
    console.print(_summary_table(outcome))
    goodput = report.goodput_text(summary, outcome.params)
    if goodput:
        console.print(goodput, highlight=False, markup=False)
    for note in (*reasoning_notes(summary), *quality_cost_notes(summary)):
        console.print(note, highlight=False)
    _print_workload(console, summary)
    _print_sweep(console, summary)
    if outcome.slo:
        console.print(_slo_table(outcome))
    _print_server(console, summary)
    canary = summary.get("canary") or {}
    if canary.get("count"):
        console.print(
            f"canaries under load: {canary['ok']}/{canary['count']} ok, TTFT p95 "
            f"{_fmt('ttft_p95_ms', canary.get('ttft_p95_ms'))}"
        )
    reconnects = summary.get("reconnects") or 0
    if reconnects:
        console.print(
            f"{reconnects:,} requests met a connection the server had closed and were retried once on a new one "
            "(not failures)"
        )
    errors = summary.get("errors") or {}
    samples = summary.get("error_samples") or {}
    for kind, count in sorted(errors.items(), key=lambda kv: -kv[1]):
        # The samples are the server's words (cleaned, redacted): never markup. Each distinct one is shown.
        first, *others = samples.get(kind) or [""]
        console.print(f"[red]{count:,} {escape(kind)}[/]" + (f": {escape(first)}" if first else ""), highlight=False)
        for other in others:
            console.print(f"    also: {other}", highlight=False, markup=False)
    _print_trust(console, summary)
    if outcome.baseline is not None and outcome.baseline.summary:
        rows = regressions(outcome.baseline.summary.get("metrics", {}), summary["metrics"])
        hidden = hidden_metrics(summary) & hidden_metrics(outcome.baseline.summary)
        console.print(_regression_table(outcome.baseline, rows, hidden))
    if outcome.abort_reason:
        console.print(f"[yellow]aborted: {escape(outcome.abort_reason)}[/]", highlight=False)
    if refused:
        console.print(f"[bold red]INCONCLUSIVE: {refused}[/]", highlight=False)


def outcome_json(outcome: RunOutcome) -> dict[str, Any]:
    """The ``loadtest --json`` document (documented in the README)."""
    baseline = outcome.baseline
    doc: dict[str, Any] = {
        "run_id": outcome.run_id,
        "status": outcome.status,
        "verdict": outcome.verdict,
        "started_at": outcome.started_at.isoformat(),
        "ended_at": outcome.ended_at.isoformat(),
        "abort_reason": outcome.abort_reason,
        "params": outcome.params,
        "summary": outcome.summary,
        "slo": [r.to_json() for r in outcome.slo],
        "series": [p.to_json() for p in outcome.series],
        "baseline": None,
    }
    if baseline is not None:
        doc["baseline"] = {
            "run_id": baseline.id,
            "regressions": regressions((baseline.summary or {}).get("metrics", {}), outcome.summary["metrics"]),
        }
    return doc


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
