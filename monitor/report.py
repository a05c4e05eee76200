"""Terminal rendering of probe results (rich). Presentation only: no I/O besides the console."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monitor.results import ProbeResult

_REPLY_CHARS = 70


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _tokens(r: ProbeResult) -> str:
    m = r.measurement
    if m is None:
        return "-"
    prompt = "?" if m.prompt_tokens is None else str(m.prompt_tokens)
    completion = "?" if m.completion_tokens is None else str(m.completion_tokens)
    return f"{prompt}/{completion}{'~' if m.tokens_estimated else ''}"


def _status(r: ProbeResult) -> Text:
    if r.error_kind is not None:
        return Text(r.error_kind.upper().replace("_", " "), style="bold red")
    if not r.ok:
        return Text("FAIL", style="bold yellow")
    return Text("OK", style="bold green")


def _reply(r: ProbeResult) -> str:
    if r.measurement is None:
        return ""
    flat = r.measurement.text.replace("\n", "⏎")
    return flat if len(flat) <= _REPLY_CHARS else flat[: _REPLY_CHARS - 1] + "…"


def results_table(results: Sequence[ProbeResult]) -> Table:
    table = Table(title="llm-monitor probe results", title_justify="left", show_lines=False)
    table.add_column("probe", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("endpoint")
    table.add_column("status", no_wrap=True)
    table.add_column("HTTP", justify="right")
    table.add_column("TTFT ms", justify="right")
    table.add_column("latency ms", justify="right")
    table.add_column("ITL ms mean/p95", justify="right")
    table.add_column("tokens in/out", justify="right")
    table.add_column("finish")
    table.add_column("reply", overflow="fold")
    for r in results:
        itl = "-" if r.itl_ms_mean is None else f"{r.itl_ms_mean:.1f}/{r.itl_ms_p95 or 0:.1f}"
        finish = "-" if r.measurement is None else str(r.measurement.finish_reason)
        table.add_row(
            r.probe,
            r.target,
            f"{r.endpoint}{' (stream)' if r.stream else ''}",
            _status(r),
            "-" if r.http_status is None else str(r.http_status),
            _ms(r.measurement.ttft_ms if r.measurement else None),
            _ms(r.latency_ms),
            itl,
            _tokens(r),
            finish,
            _reply(r),
        )
    return table


def print_results(console: Console, results: Sequence[ProbeResult]) -> None:
    """The table, then one line per error or failed check, then a summary line."""
    console.print(results_table(results))
    for r in results:
        if r.error_kind is not None:
            phase = f" ({r.timeout_phase})" if r.timeout_phase else ""
            # Details quote server and model text, which may contain "[...]": escape it for rich markup.
            detail = escape(f"{r.error_kind}{phase}: {r.error_detail}")
            console.print(f"[red]✗ {escape(r.probe)}[/red] {detail}", highlight=False)
        for c in r.failed_checks():
            console.print(f"[yellow]✗ {escape(r.probe)}[/yellow] {escape(f'{c.name}: {c.detail}')}", highlight=False)
    ok = sum(1 for r in results if r.ok)
    estimated = any(r.measurement is not None and r.measurement.tokens_estimated for r in results)
    note = "  (~ = token count estimated: the server sent no usage)" if estimated else ""
    style = "green" if ok == len(results) else "red"
    console.print(f"[{style}]{ok}/{len(results)} probes ok[/{style}]{note}", highlight=False)


def print_unreachable(console: Console, results: Sequence[ProbeResult]) -> bool:
    """When every probe failed to connect the same way, say so in one line instead of a table."""
    details = {r.error_detail for r in results}
    if not results or any(r.error_kind != "connect_error" for r in results) or len(details) != 1:
        return False
    console.print(f"llm-monitor: error: {escape(details.pop() or 'cannot connect')}", highlight=False, soft_wrap=True)
    return True
