"""`llm-monitor fingerprint show|accept`: the stored fingerprint of a target against its baseline.

Both work from the database alone (with or without a running daemon). `show` judges the latest
reading of each component exactly as the scheduled run does (the target's `doctor.fingerprint`
settings, or the defaults); `accept` makes the latest readings the new baseline, after an upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.markup import escape
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.config.deployment import FINGERPRINT_COMPONENTS, FingerprintSettings
from monitor.fingerprint.compare import judge
from monitor.store.db import with_database
from monitor.store.fingerprint_repo import FingerprintStore

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["fingerprint_report", "run_fingerprint_accept", "run_fingerprint_show"]

_T = TypeVar("_T")


def _with_db(settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[_T]]) -> _T:
    return with_database(settings.storage.url, work)


def _unknown(settings: Settings, target: str) -> str:
    """A hint when the name is not a configured target (stored fingerprints may outlive a target)."""
    names = [t.name for t in settings.targets]
    return "" if target in names else f" (not a configured target; targets: {escape(', '.join(names))})"


def _settings_for(settings: Settings, target: str) -> FingerprintSettings:
    for t in settings.targets:
        if t.name == target and t.doctor is not None:
            return t.doctor.fingerprint
    return FingerprintSettings()


async def fingerprint_report(store: FingerprintStore, target: str, settings: FingerprintSettings) -> dict[str, Any]:
    """Per component: the baseline, the latest reading, and whether they differ (the API's body too)."""
    baselines, latest = await store.baselines(target), await store.latest(target)
    components = []
    for component in FINGERPRINT_COMPONENTS:
        base, last = baselines.get(component), latest.get(component)
        if base is None and last is None:
            continue
        entry: dict[str, Any] = {
            "component": component,
            "baseline": None if base is None else base.to_json(),
            "latest": None if last is None else last.to_json(),
            "drift": False,
        }
        if base is not None and last is not None:
            verdict = judge(
                component, (base.status, base.value), (last.status, last.value),
                metric=settings.logprob_metric, threshold=settings.logprob_threshold,
            )  # fmt: skip
            entry.update(drift=verdict.changed, before=verdict.before, after=verdict.after, detail=verdict.detail)
        components.append(entry)
    return {"target": target, "components": components}


def run_fingerprint_show(settings: Settings, target: str, *, as_json: bool) -> int:
    """Print the target's fingerprint against its baseline; 1 when nothing was ever recorded."""

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        return await fingerprint_report(FingerprintStore(sessionmaker), target, _settings_for(settings, target))

    report = _with_db(settings, work)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0 if report["components"] else 1
    console = Console()
    if not report["components"]:
        console.print(
            f"no fingerprint of target {escape(target)!r} is stored{_unknown(settings, target)}",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    for entry in report["components"]:
        latest, base = entry["latest"], entry["baseline"]
        state = "[bold red]drift[/]" if entry["drift"] else "[green]same[/]"
        when = latest["at"][:19] if latest else "-"
        console.print(
            f"{state:<20} [bold]{entry['component']}[/]  {_status(latest)} at {when}, baseline {_status(base)}"
            + (f" ({escape(entry['detail'])})" if entry.get("detail") else ""),
            highlight=False,
            soft_wrap=True,
        )
        if entry["drift"]:
            console.print(f"    before: {escape(entry['before'])}", highlight=False)
            console.print(f"    after:  {escape(entry['after'])}", highlight=False)
    return 0


def _status(reading: dict[str, Any] | None) -> str:
    if reading is None:
        return "none"
    return f"{reading['status']} {reading['digest'][:12]}"


def run_fingerprint_accept(settings: Settings, target: str, components: list[str] | None, *, by: str) -> int:
    """Accept the latest readings as the baseline; 1 when there is nothing to accept."""

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> list[str]:
        return await FingerprintStore(sessionmaker).accept_latest(target, components, by=by, now=datetime.now(UTC))

    chosen = _with_db(settings, work)
    console = Console()
    if not chosen:
        console.print(
            f"nothing to accept: no stored reading of target {escape(target)!r}{_unknown(settings, target)}",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    console.print(f"accepted as the baseline of {escape(target)}: {', '.join(chosen)}", highlight=False)
    return 0
