"""What `llm-monitor alerts`, `silence ...` and `notify test` do. They use the database directly, so
they work the same whether or not a daemon is running (the daemon reads silences on every evaluation).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts import repo
from monitor.alerts.clock import SystemClock
from monitor.alerts.dispatch import external_url
from monitor.alerts.model import AlertSnapshot, AlertView, Notification, SilenceView, deployment_key, fingerprint
from monitor.alerts.rules import format_value
from monitor.alerts.webhook import Delivery, build_request, send
from monitor.errors import ConfigError
from monitor.probe_table import fits
from monitor.store.db import with_database

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["run_alerts", "run_notify_test", "run_silence_add", "run_silence_expire", "run_silence_list"]

_T = TypeVar("_T")
_STYLES = {"firing": "bold red", "pending": "yellow", "resolved": "green", "inactive": "dim"}


def _with_db(settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[_T]]) -> _T:
    return with_database(settings.storage.url, work)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


# --- alerts ---------------------------------------------------------------------------------------


def run_alerts(settings: Settings, *, as_json: bool, include_inactive: bool = False) -> int:
    """Print the current alert states (table or JSON); always 0."""

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> list[AlertView]:
        with repo.store_errors("read alert states"):
            async with sessionmaker() as session:
                return await repo.alert_views(
                    session, now=SystemClock().now(), windows=settings.maintenance, include_inactive=include_inactive
                )

    views = _with_db(settings, work)
    if as_json:
        print(json.dumps([v.to_json() for v in views], ensure_ascii=False, indent=2))
        return 0
    console = Console()
    if not views:
        console.print("no alerts", highlight=False)
        return 0
    table = Table(show_edge=False, header_style="bold")
    for column in ("STATE", "RULE", "PROBE", "TARGET", "SEVERITY", "VALUE", "THRESHOLD", "SINCE", "MUTED"):
        table.add_column(column, justify="right" if column in ("VALUE", "THRESHOLD") else "left", no_wrap=True)
    for view in views:
        table.add_row(
            f"[{_STYLES.get(view.state, '')}]{view.state}[/]",
            escape(view.rule), escape(_probe(view)), escape(view.labels.get("target", "-")),
            escape(view.severity), format_value(view.value), format_value(view.threshold), _when(_since(view)),
            escape(view.muted_by or ""),
        )  # fmt: skip
    if fits(console, table):
        console.print(table)
        return 0
    # Too narrow for the table (or piped at 80 columns): two lines per alert, nothing cut short.
    for view in views:
        console.print(
            f"[{_STYLES.get(view.state, '')}]{view.state:<8}[/] [bold]{escape(view.rule)}[/]  "
            f"probe {escape(_probe(view))}, target {escape(view.labels.get('target', '-'))}, "
            f"{escape(view.severity)}",
            highlight=False,
        )
        muted = f", muted by {escape(view.muted_by)}" if view.muted_by else ""
        console.print(
            f"         value {format_value(view.value)}, threshold {format_value(view.threshold)}, "
            f"since {_when(_since(view))}{muted}",
            highlight=False,
        )
    return 0


def _probe(view: AlertView) -> str:
    """The probe, or what a doctor or drift alert is about (`check stop_tokens`)."""
    key = deployment_key(view.labels)
    return f"{key[0]} {key[1]}" if key is not None else view.probe or "-"


def _since(view: AlertView) -> datetime | None:
    return {"firing": view.fired_at, "pending": view.active_since, "resolved": view.resolved_at}.get(view.state)


# --- silences -------------------------------------------------------------------------------------


def run_silence_add(
    settings: Settings, *, matchers: dict[str, str], duration_s: float, comment: str, author: str
) -> int:
    """Add a silence and print its id."""
    rule = matchers.get("rule") or matchers.get("alertname")
    names = {r.name for r in settings.rules}
    if rule is not None and settings.rules and rule not in names:
        raise ConfigError(f"--rule: unknown rule {rule!r} (known: {', '.join(sorted(names))})")

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> SilenceView:
        with repo.store_errors("add a silence"):
            async with sessionmaker() as session, session.begin():
                try:
                    return await repo.add_silence(
                        session, matchers=matchers, duration_s=duration_s, comment=comment, created_by=author,
                        now=SystemClock().now(),
                    )  # fmt: skip
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None

    silence = _with_db(settings, work)
    print(silence.id)
    return 0


def run_silence_list(settings: Settings, *, as_json: bool, include_expired: bool) -> int:
    now = SystemClock().now()

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> list[SilenceView]:
        with repo.store_errors("read silences"):
            async with sessionmaker() as session:
                return await repo.list_silences(session, now=now, include_expired=include_expired)

    silences = _with_db(settings, work)
    if as_json:
        print(json.dumps([s.to_json(now) for s in silences], ensure_ascii=False, indent=2))
        return 0
    console = Console()
    if not silences:
        console.print("no silences", highlight=False)
        return 0
    table = Table(show_edge=False, header_style="bold")
    for column in ("ID", "MATCHERS", "STARTS", "ENDS", "STATUS", "BY", "COMMENT"):
        table.add_column(column, no_wrap=True)
    rows = [
        (s, _silence_status(s, now), ", ".join(f"{k}={v}" for k, v in sorted(s.matchers.items()))) for s in silences
    ]
    for s, status, matchers in rows:
        table.add_row(
            str(s.id), escape(matchers), _when(s.starts_at), _when(s.expired_at or s.ends_at), status,
            escape(s.created_by), escape(s.comment),
        )  # fmt: skip
    if fits(console, table):
        console.print(table)
        return 0
    # Too narrow for the table: a heading line per silence, then when, who and why (wrapped, never cut).
    indent = " " * (max(len(str(s.id)) for s in silences) + 2)
    for s, status, matchers in rows:
        console.print(f"[bold]{s.id:<{len(indent) - 2}}[/]  {status:<9}  {escape(matchers)}", highlight=False)
        console.print(
            f"{indent}{_when(s.starts_at)} to {_when(s.expired_at or s.ends_at)}, by {escape(s.created_by)}",
            highlight=False,
        )
        for part in Text(s.comment).wrap(console, console.width - len(indent)):
            part.rstrip()
            console.print(Text(indent) + part, highlight=False)
    return 0


def _silence_status(s: SilenceView, now: datetime) -> str:
    if s.active(now):
        return "active"
    return "expired" if s.expired_at or s.ends_at <= now else "scheduled"


def run_silence_expire(settings: Settings, silence_id: int) -> int:
    """Expire a silence now; 1 if there is no active or scheduled silence with that id."""

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
        with repo.store_errors("expire a silence"):
            async with sessionmaker() as session, session.begin():
                return await repo.expire_silence(session, silence_id, now=SystemClock().now())

    if _with_db(settings, work):
        print(f"silence {silence_id} expired")
        return 0
    Console(stderr=True).print(f"no active silence with id {silence_id}", highlight=False)
    return 1


# --- notify test ----------------------------------------------------------------------------------


def sample_alert(receiver: str) -> AlertSnapshot:
    """The alert a `notify test` message carries."""
    labels = {"alertname": "llm-monitor-test", "severity": "info"}
    return AlertSnapshot(
        name="llm-monitor-test", status="firing", state="firing", labels=labels,
        annotations={"summary": f"Test notification from llm-monitor to receiver {receiver}"}, severity="info",
        value=None, threshold=None, started_at=SystemClock().now(), ended_at=None, fingerprint=fingerprint(labels),
    )  # fmt: skip


def run_notify_test(settings: Settings, name: str) -> int:
    """Send one test message in the receiver's format; print the HTTP status; 0 if accepted, else 1."""
    receivers = {r.name: r for r in settings.receivers}
    if name not in receivers:
        known = ", ".join(sorted(receivers)) or "none defined"
        raise ConfigError(f"unknown receiver {name!r} (receivers: {known})")
    receiver = receivers[name]
    now = SystemClock().now()
    notification = Notification(
        idempotency_key=f"test-{uuid.uuid4().hex}", receiver=name, alert=sample_alert(name), created_at=now,
        external_url=external_url(settings.api.host, settings.api.port, settings.api.external_url),
    )  # fmt: skip
    request = build_request(receiver, notification, secret=settings.plain_receiver_secrets().get(name), now=now)

    async def main() -> Delivery:
        async with aiohttp.ClientSession() as http:
            return await send(http, request, fmt=receiver.format, timeout_s=receiver.timeout_s)

    outcome = asyncio.run(main())
    status = f"HTTP {outcome.http_status}" if outcome.http_status is not None else "no response"
    if outcome.ok:
        print(f"{name}: {status} ({receiver.format}, {outcome.duration_ms:.0f} ms)")
        return 0
    Console(stderr=True).print(f"{escape(name)}: {status}: {escape(outcome.error or 'failed')}", highlight=False)
    return 1
