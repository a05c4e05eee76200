"""Terminal rendering of a doctor report (rich): one line per check, evidence and fix under findings.

Server and model text is untrusted and may contain `[...]`, so everything goes through `Text`
objects, never through console markup. Lines are wrapped here with a hanging indent (rich's
tables would pad every line with trailing spaces, which spoils copied reports).
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from monitor.doctor.findings import DoctorReport, Finding, Status

_STYLES: dict[Status, str] = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red", "skip": "dim"}
_HEAD_INDENT = 10  # "FAIL   4. " — continuation lines of a headline start under the title
_LABEL_INDENT = 7
_LABEL_WIDTH = 9
_MIN_WRAP = 30


def print_report(console: Console, report: DoctorReport) -> None:
    """The header, one line per check (with evidence under the ones that need it), and the summary."""
    limit = f", max_model_len {report.max_model_len}" if report.max_model_len else ""
    model = report.model or "(server default)"
    lead, served = "llm-monitor doctor: ", f"model {model}{limit}"
    header = Text(f"{lead}{report.base_url}  {served}", style="bold")
    if header.cell_len > console.width:  # the model goes under the URL rather than split mid-phrase
        header = Text(f"{lead}{report.base_url}\n{' ' * len(lead)}{served}", style="bold")
    console.print(header, soft_wrap=True)
    console.print()
    for finding in report.findings:
        console.print(_headline(console, finding), soft_wrap=True)
        if finding.status in ("warn", "fail") or finding.informational:
            console.print(_evidence(console, finding), soft_wrap=True)
    console.print()
    console.print(_summary(report), soft_wrap=True)


def _headline(console: Console, finding: Finding) -> Text:
    first = Text()
    first.append(f"{finding.status.upper():<5}", style=_STYLES[finding.status])
    first.append(f" {finding.number:>2}. ")
    body = Text()
    body.append(finding.title, style="bold")
    body.append(f": {finding.summary}")
    return _hang(console, first, body, _HEAD_INDENT)


def _evidence(console: Console, finding: Finding) -> Text:
    rows: list[tuple[str, str, str]] = []
    if finding.request:
        rows.append(("request", finding.request, "dim"))
    if finding.response_excerpt:
        rows.append(("response", finding.response_excerpt, "dim"))
    for i, detail in enumerate(finding.details):
        rows.append(("note" if i == 0 else "", detail, "dim"))
    if finding.fix:
        rows.append(("fix" if finding.status in ("warn", "fail") else "advice", finding.fix, "bold cyan"))
    out = Text()
    for label, value, style in rows:
        prefix = Text(" " * _LABEL_INDENT)
        prefix.append(f"{label:<{_LABEL_WIDTH}}", style=style)
        out.append_text(_hang(console, prefix, Text(value), _LABEL_INDENT + _LABEL_WIDTH))
        out.append("\n")
    out.rstrip()
    return out


def _hang(console: Console, prefix: Text, body: Text, indent: int) -> Text:
    """`prefix` then `body` wrapped to the console width, continuation lines indented by `indent`."""
    width = max(_MIN_WRAP, console.width - indent)
    out = Text()
    for i, line in enumerate(body.wrap(console, width, overflow="fold")):
        line.rstrip()
        out.append_text(prefix if i == 0 else Text(" " * indent))
        out.append_text(line)
        out.append("\n")
    out.rstrip()
    return out


def _summary(report: DoctorReport) -> Text:
    warnings = report.count("warn")
    counts = [
        (report.count("pass"), "passed", "green"),
        (warnings, "warning" if warnings == 1 else "warnings", "yellow"),
        (report.count("fail"), "failed", "red"),
        (report.count("skip"), "skipped", "dim"),
    ]
    text = Text()
    for i, (n, label, style) in enumerate(counts):
        if i:
            text.append(", ")
        text.append(f"{n} {label}", style=style if n else "")
    text.append(f"  (exit code {report.exit_code})")
    return text
