"""The Doctor page: per target, the latest scheduled report (check, verdict, summary, fix) and its history.

History is one row per run, newest first, one status cell per check. Every server-sent string
goes through `el` (escaped).
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.dashboard.layout import badge, section, time_el
from monitor.dashboard.markup import Markup, el
from monitor.doctor.findings import CHECK_IDS, TITLES
from monitor.store.doctor_repo import DoctorRun

__all__ = ["DOCTOR_HISTORY_RUNS", "doctor_body"]

DOCTOR_HISTORY_RUNS = 30  # runs of history per target on the page


def _badge(status: str) -> Markup:
    return badge("warning", "warn") if status == "warn" else badge(status)


def _table(head: Sequence[str], rows: Sequence[Markup]) -> Markup:
    return el(
        "div",
        {"class": "table-scroll"},
        el(
            "table",
            {"class": "grid"},
            el("thead", None, el("tr", None, [el("th", None, h) for h in head])),
            el("tbody", None, list(rows)),
        ),
    )


def _latest(run: DoctorRun) -> Markup:
    if run.error is not None:
        return el("p", {"class": "notice"}, "The last run gave no verdicts: ", run.error)
    rows = [
        el(
            "tr",
            None,
            el("td", None, TITLES.get(f.check_id, f.check_id), el("span", {"class": "sub"}, f.check_id)),
            el("td", None, _badge(f.status), " worse than before" if f.active else None),
            el("td", None, f.summary),
            el("td", None, f.fix or ""),
        )
        for f in run.findings
    ]
    return _table(["Check", "Verdict", "Summary", "Fix"], rows)


def _history(runs: Sequence[DoctorRun]) -> Markup:
    checks = [c for c in CHECK_IDS if any(f.check_id == c for r in runs for f in r.findings)]
    rows = []
    for run in runs:
        by_id = {f.check_id: f for f in run.findings}
        cells = [
            el("td", {"title": by_id[c].summary}, _badge(by_id[c].status)) if c in by_id else el("td", None, "")
            for c in checks
        ]
        if run.error is not None:
            cells = [el("td", {"colspan": max(1, len(checks)), "title": run.error}, badge("error"))]
        rows.append(el("tr", None, el("td", None, time_el(run.started_at)), cells))
    return _table(["Run", *checks], rows)


def doctor_body(histories: Sequence[Sequence[DoctorRun]]) -> Markup:
    """`histories`: per target, its runs newest first (the first is the latest report)."""
    if not histories:
        empty = el(
            "p",
            {"class": "muted"},
            "No scheduled doctor reports yet. Give a target ",
            el("code", None, "doctor: {}"),
            " and the daemon runs the checks on its schedule.",
        )
        return el("div", None, el("h1", None, "Doctor"), section("Reports", empty))
    parts = []
    for runs in histories:
        latest = runs[0]
        model = f" · {latest.model}" if latest.model else ""
        parts.append(
            section(
                f"{latest.target}{model}",
                el("p", {"class": "muted"}, "Latest run ", time_el(latest.started_at, relative=True)),
                _latest(latest),
                el("h3", None, f"History ({len(runs)} runs, newest first)"),
                _history(runs),
            )
        )
    return el("div", None, el("h1", None, "Doctor"), parts)
