"""Terminal rendering of probe results (rich). Presentation only: no I/O besides the console."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monitor.results import ProbeResult

_REPLY_CHARS = 70


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _tokens(r: ProbeResult) -> str:
    m = r.measurement
    if m is None:
        return "-"
    prompt = "?" if m.prompt_tokens is None else str(m.prompt_tokens)
    completion = "?" if m.completion_tokens is None else str(m.completion_tokens)
    return f"{prompt}/{completion}{'~' if m.tokens_estimated else ''}"


_SHORT_KIND = {"connect_error": "connect", "http_error": "HTTP", "bad_response": "bad resp", "stream_error": "stream"}


def _status(r: ProbeResult) -> Text:
    if r.error_kind is not None:
        label = _SHORT_KIND.get(r.error_kind, r.error_kind)
        if r.error_kind == "http_error":
            label = f"HTTP {r.http_status}"
        return Text(label, style="bold red")
    if not r.ok:
        return Text("FAIL", style="bold yellow")
    return Text("OK", style="bold green")


def _reply(r: ProbeResult) -> str:
    if r.measurement is None:
        return ""
    flat = r.measurement.text.replace("\n", "⏎")
    return flat if len(flat) <= _REPLY_CHARS else flat[: _REPLY_CHARS - 1] + "…"


def _golden(r: ProbeResult) -> str:
    if r.golden_method is None:
        return "-"
    if r.golden_similarity is None:
        return "ungraded"
    return f"{r.golden_similarity:.2f} {'✓' if r.golden_passed else '✗'}"


def _cost(r: ProbeResult) -> str:
    if r.cost is None:
        return "-"
    estimated = r.measurement is not None and r.measurement.tokens_estimated
    return f"{r.cost:.6g} {r.cost_currency}{'~' if estimated else ''}"


def results_table(results: Sequence[ProbeResult], *, width: int = 200) -> Table:
    """One row per result; the target and reply columns appear only when there is room for them."""
    wide = width >= 150
    several_targets = len({r.target for r in results}) > 1
    table = Table(title="llm-monitor probe results (times in ms)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("probe", no_wrap=True, overflow="ellipsis", max_width=28)
    if several_targets or wide:
        table.add_column("target", no_wrap=True)
    table.add_column("endpoint", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("TTFT", justify="right", no_wrap=True)
    table.add_column("E2E", justify="right", no_wrap=True)
    table.add_column("ITL mean/p95", justify="right", no_wrap=True)
    table.add_column("tok in/out", justify="right", no_wrap=True)
    table.add_column("finish", no_wrap=True)
    # Shown only when some probe has a golden answer or some target a price.
    golden = any(r.golden_method is not None for r in results)
    priced = any(r.cost is not None for r in results)
    if golden:
        table.add_column("golden", justify="right", no_wrap=True)
    if priced:
        table.add_column("cost", justify="right", no_wrap=True)
    if wide:
        table.add_column("reply", overflow="ellipsis", no_wrap=True, max_width=_REPLY_CHARS)
    for r in results:
        itl = "-" if r.itl_ms_mean is None else f"{_ms(r.itl_ms_mean)}/{_ms(r.itl_ms_p95)}"
        finish = "-" if r.measurement is None else str(r.measurement.finish_reason)
        # Names and the server's words go in as Text: a "[bold]" of theirs is shown, never applied as markup.
        row: list[str | Text] = [Text(r.probe)]
        if several_targets or wide:
            row.append(Text(r.target))
        row += [
            f"{'chat' if r.endpoint == 'chat' else 'compl'}{' ⇢' if r.stream else ''}",
            _status(r),
            _ms(r.measurement.ttft_ms if r.measurement else None),
            _ms(r.latency_ms),
            itl,
            _tokens(r),
            Text(finish),
        ]
        if golden:
            row.append(_golden(r))
        if priced:
            row.append(_cost(r))
        if wide:
            row.append(Text(_reply(r)))
        table.add_row(*row)
    return table


def fits(console: Console, table: Table) -> bool:
    """Whether `table` fits the console without squeezing a column (rich would cut values to "…")."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum <= console.width


def _stacked(console: Console, results: Sequence[ProbeResult]) -> None:
    """A narrow terminal or a pipe: each result as a heading line, its numbers, and its reply."""
    several_targets = len({r.target for r in results}) > 1
    indent = " " * (max(len(_status(r)) for r in results) + 2)
    console.print("llm-monitor probe results (times in ms)\n", highlight=False)
    for r in results:
        endpoint = "chat" if r.endpoint == "chat" else "completion"
        where = f", target {r.target}" if several_targets else ""
        heading = _status(r)
        heading.pad_right(len(indent) - len(heading))
        heading.append(r.probe, style="bold")
        heading.append(f"  {endpoint}{', streamed' if r.stream else ''}{where}", style="dim")
        console.print(heading, highlight=False)
        m = r.measurement
        itl = "-" if r.itl_ms_mean is None else f"{_ms(r.itl_ms_mean)}/{_ms(r.itl_ms_p95)}"
        numbers = [
            f"TTFT {_ms(m.ttft_ms if m else None)}", f"E2E {_ms(r.latency_ms)}", f"ITL {itl}",
            f"tokens {_tokens(r)}", f"finish {'-' if m is None else m.finish_reason}",
        ]  # fmt: skip
        if r.golden_method is not None:
            numbers.append(f"golden {_golden(r)}")
        if r.cost is not None:
            numbers.append(f"cost {_cost(r)}")
        console.print(indent + "  ".join(numbers), highlight=False, markup=False)  # finish_reason is theirs
        if m is not None:
            reply = Text(indent + _reply(r), style="dim")
            reply.truncate(console.width, overflow="ellipsis")  # cells, not characters: CJK is double width
            console.print(reply, highlight=False, no_wrap=True)


def print_results(console: Console, results: Sequence[ProbeResult]) -> None:
    """The table (or, when it does not fit, a stacked layout), one line per error or failed check, a summary."""
    table = results_table(results, width=console.width)
    tabular = not results or fits(console, table)
    if tabular:
        console.print(table)
        if console.width < 150:  # no room for the reply column: list the replies under the table
            for r in results:
                if r.measurement is not None:
                    console.print(
                        f"  {escape(r.probe)}: {escape(_reply(r))}", highlight=False, no_wrap=True,
                        overflow="ellipsis",
                    )  # fmt: skip
    else:
        _stacked(console, results)
    for r in results:
        if r.error_kind is not None:
            phase = f" ({r.timeout_phase})" if r.timeout_phase else ""
            # Details quote server and model text, which may contain "[...]": escape it for rich markup.
            detail = escape(f"{r.error_kind}{phase}: {r.error_detail}")
            console.print(f"[red]✗ {escape(r.probe)}[/red] {detail}", highlight=False)
        for c in r.failed_checks():
            console.print(f"[yellow]✗ {escape(r.probe)}[/yellow] {escape(f'{c.name}: {c.detail}')}", highlight=False)
    ok = sum(1 for r in results if r.ok)
    legend = ["⇢ = streamed"] if tabular else []
    if any(r.measurement is not None and r.measurement.tokens_estimated for r in results):
        legend.append("~ = token count estimated (the server sent no usage)")
    style = "green" if ok == len(results) else "red"
    key = f"  ({'; '.join(legend)})" if legend else ""
    console.print(f"[{style}]{ok}/{len(results)} probes ok[/{style}]{key}", highlight=False)


def print_unreachable(console: Console, results: Sequence[ProbeResult]) -> bool:
    """When every probe failed to connect the same way, say so in one line instead of a table."""
    details = {r.error_detail for r in results}
    if not results or any(r.error_kind != "connect_error" for r in results) or len(details) != 1:
        return False
    console.print(f"llm-monitor: error: {escape(details.pop() or 'cannot connect')}", highlight=False, soft_wrap=True)
    return True
