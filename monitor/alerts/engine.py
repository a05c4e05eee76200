"""The AlertEngine: evaluates rules per probe, runs the state machine, persists states, queues notifications.

Each rule applies to every probe in its scope; each (rule, probe) pair is one alert instance with
the labels {alertname, probe, target, severity, **rule.labels} and a fingerprint of those labels.
`doctor` and `drift` rules have no probe: one instance per (rule, doctored target, check or
component), labelled {alertname, target, severity, check | component, **rule.labels}.

When it runs:
- `on_result(result)`, right after a result is stored: every rule covering that probe.
- `on_deployment(observations)`, after a scheduled doctor or fingerprint run: the doctor and
  drift rules watching each observation's target and check or component.
- `evaluate_all()`, on a timer: absence rules for every probe in scope, and every pending or
  firing alert (so `for_s`, `keep_firing_for_s`, `repeat_interval_s` and the end of a silence or
  maintenance window take effect without a new result). Threshold, regression and
  consecutive-failure alerts only *become* pending on a new result.

Persistence: the state row and the outbox rows of one evaluation are written in one transaction;
the in-memory copy is updated only after it commits. `start()` loads the rows, so a restarted
daemon knows which alerts fire and that their firing was notified.

Config reloads: alerts whose rule, labels, probe (or doctored target) left the config are retired on the next
`evaluate_all()`: a firing alert is resolved (a resolved notification goes to the receivers that
got its firing), anything else is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from monitor.alerts import deployment, repo, rules
from monitor.alerts.model import AlertSnapshot, AlertView, NotifyStatus, SilenceView, fingerprint
from monitor.alerts.muting import mute_reason
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import Aggregate, ResultHistory, WindowSource
from monitor.alerts.state import AlertRecord, Step, Timing, advance, retire
from monitor.clock import Clock
from monitor.config import RuleSettings
from monitor.config.alerts import DEPLOYMENT_KEY_LABELS, DEPLOYMENT_KINDS, deployment_keys
from monitor.deployment import DeploymentObservation
from monitor.errors import StoreError
from monitor.results import ProbeResult
from monitor.store.models_alerts import OutboxRow

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["AlertEngine", "AlertsBackend"]

logger = logging.getLogger(__name__)

_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


class AlertsBackend(Protocol):
    """What the API and the dashboard read and write through; `AlertEngine` is the implementation."""

    async def alerts(self) -> Sequence[AlertView]: ...

    async def silences(self, *, include_expired: bool = False) -> Sequence[SilenceView]: ...

    async def add_silence(
        self, *, matchers: dict[str, str], duration_s: float, comment: str, created_by: str
    ) -> SilenceView: ...

    async def expire_silence(self, silence_id: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Instance:
    rule: RuleSettings
    probe: str  # "" for doctor and drift alerts
    target: str
    labels: dict[str, str]
    fingerprint: str
    receivers: tuple[str, ...]
    key: str = ""  # the doctor check or fingerprint component

    @property
    def where(self) -> str:
        return self.probe or f"{self.target} ({self.key})"


class AlertEngine:
    """Rule evaluation and alert states over a session factory it does not own."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        source: WindowSource,
        clock: Clock,
        outbox: Outbox,
        baseline_cache_s: float = 60.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._source = source
        self._clock = clock
        self._outbox = outbox
        self._history = ResultHistory(sessionmaker)
        # Regression baselines span days; recomputing them on every result would dominate the cost.
        self._baseline_cache_s = baseline_cache_s
        self._baselines: dict[str, tuple[datetime, Aggregate]] = {}
        self._records: dict[str, AlertRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._started_at: datetime | None = None
        self.reload(settings)

    # --- configuration ----------------------------------------------------------------------------

    def reload(self, settings: Settings) -> None:
        """Use new rules from now on (SIGHUP); states of alerts no longer configured are retired later."""
        self._settings = settings
        self._baselines.clear()
        all_receivers = tuple(r.name for r in settings.receivers)
        instances: list[_Instance] = []
        for rule in settings.rules:
            receivers = tuple(rule.receivers) if rule.receivers is not None else all_receivers
            if rule.kind in DEPLOYMENT_KINDS:
                instances += _deployment_instances(settings, rule, receivers)
                continue
            for probe in settings.probes:
                if not rule.scope.covers(probe.name, probe.target):
                    continue
                labels = {
                    **rule.labels, "alertname": rule.name, "probe": probe.name, "target": probe.target,
                    "severity": rule.severity,
                }  # fmt: skip
                instances.append(_Instance(rule, probe.name, probe.target, labels, fingerprint(labels), receivers))
        self._instances = instances
        self._by_probe: dict[str, list[_Instance]] = {}
        self._by_deployment: dict[tuple[str, str, str], list[_Instance]] = {}
        for instance in instances:
            if instance.rule.kind in DEPLOYMENT_KINDS:
                key = (instance.rule.kind, instance.target, instance.key)
                self._by_deployment.setdefault(key, []).append(instance)
            else:
                self._by_probe.setdefault(instance.probe, []).append(instance)

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load persisted alert states (a restart neither re-notifies a firing alert nor forgets it)."""
        with repo.store_errors("load alert states"):
            async with self._sessionmaker() as session:
                self._records = await repo.load_records(session)
        self._started_at = self._clock.now()
        firing = sum(1 for r in self._records.values() if r.state == "firing")
        logger.info("alert engine: %d rules, %d alert states loaded (%d firing)", len(self._settings.rules),
                    len(self._records), firing)  # fmt: skip

    async def on_result(self, result: ProbeResult) -> None:
        """Evaluate the rules covering `result.probe` (call right after the result was stored).

        Database failures are logged, not raised: the next evaluation tries again.
        """
        instances = self._by_probe.get(result.probe)
        if not instances:
            return
        await self._ensure_started()
        silences = await self._active_silences()
        if silences is None:
            return
        for instance in instances:
            await self._evaluate(instance, silences)

    async def on_deployment(self, observations: Sequence[DeploymentObservation]) -> None:
        """Run the doctor and drift rules watching each observation (one scheduled run's checks or components).

        The condition is `observation.active`; an inactive one resolves. Database failures are
        logged, not raised: the state stays as it was until the next run.
        """
        matched = [
            (instance, obs)
            for obs in observations
            for instance in self._by_deployment.get((obs.kind, obs.target, obs.key), ())
        ]
        if not matched:
            return
        await self._ensure_started()
        silences = await self._active_silences()
        if silences is None:
            return
        for instance, obs in matched:
            await self._evaluate(instance, silences, deployment.observe(obs))

    async def evaluate_all(self) -> None:
        """The timer path: absence rules, active alerts (for/keep_firing/repeat/unmute), retired alerts."""
        await self._ensure_started()
        silences = await self._active_silences()
        if silences is None:
            return
        await self._retire_orphans()
        for instance in self._instances:
            record = self._records.get(instance.fingerprint)
            if instance.rule.kind == "absence" or (record is not None and record.active):
                await self._evaluate(instance, silences)

    # --- queries for the API and CLI ----------------------------------------------------------------

    async def alerts(self, *, include_inactive: bool = False) -> list[AlertView]:
        """Current alert states, firing first, each with whether it is muted now."""
        with repo.store_errors("read alert states"):
            async with self._sessionmaker() as session:
                return await repo.alert_views(
                    session, now=self._clock.now(), windows=self._settings.maintenance,
                    include_inactive=include_inactive,
                )  # fmt: skip

    def state_counts(self) -> dict[tuple[str, str], int]:
        """(rule, state) -> number of alerts, from memory (cheap enough for every /metrics scrape)."""
        counts: dict[tuple[str, str], int] = {}
        for record in self._records.values():
            key = (record.rule, record.state)
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def add_silence(
        self,
        *,
        matchers: dict[str, str],
        duration_s: float,
        comment: str,
        created_by: str,
        starts_at: datetime | None = None,
    ) -> SilenceView:
        """Mute matching alerts from `starts_at` (default now) for `duration_s`.

        `matchers` map label names to exact values (`rule` is an alias of `alertname`). Raises
        ValueError for no matchers, an empty comment or a duration <= 0 (an API maps it to 400).
        """
        with repo.store_errors("add a silence"):
            async with self._sessionmaker() as session, session.begin():
                silence = await repo.add_silence(
                    session, matchers=matchers, duration_s=duration_s, comment=comment, created_by=created_by,
                    now=self._clock.now(), starts_at=starts_at,
                )  # fmt: skip
        logger.info("silence %d added by %s for %.0f s: %s", silence.id, created_by, duration_s, silence.matchers)
        return silence

    async def expire_silence(self, silence_id: int) -> bool:
        with repo.store_errors("expire a silence"):
            async with self._sessionmaker() as session, session.begin():
                expired = await repo.expire_silence(session, silence_id, now=self._clock.now())
        if expired:
            logger.info("silence %d expired", silence_id)
        return expired

    async def silences(self, *, include_expired: bool = False) -> list[SilenceView]:
        with repo.store_errors("read silences"):
            async with self._sessionmaker() as session:
                return await repo.list_silences(session, now=self._clock.now(), include_expired=include_expired)

    # --- evaluation -------------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._started_at is None:
            await self.start()

    async def _active_silences(self) -> list[SilenceView] | None:
        try:
            return await self.silences()
        except StoreError as exc:
            # Without the silences we cannot know what is muted; evaluating anyway could notify
            # a silenced alert, so this round is skipped (the next one retries).
            logger.error("%s; skipping alert evaluation", exc)
            return None

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _evaluate(
        self, instance: _Instance, silences: Sequence[SilenceView], observed: rules.Observation | None = None
    ) -> None:
        """One step of one instance; `observed` is given by on_deployment, else the rule's inputs are read."""
        rule = instance.rule
        async with self._lock(instance.fingerprint):
            now = self._clock.now()
            known = self._records.get(instance.fingerprint)
            prev = known or AlertRecord(instance.fingerprint, rule.name, dict(instance.labels))
            try:
                observation = observed if observed is not None else await self._observe(instance, prev, now)
            except (SQLAlchemyError, OSError) as exc:
                logger.error("cannot evaluate %s on %s: %s", rule.name, instance.where, exc)
                return
            annotations = rules.render_annotations(rule, observation, instance.probe, instance.target)
            if rule.kind in DEPLOYMENT_KINDS and observed is None:
                annotations = dict(prev.annotations)  # the timer has no new run: keep what the last one said
            reason = mute_reason(instance.labels, now=now, silences=silences, windows=self._settings.maintenance)
            timing = Timing(rule.for_s, rule.keep_firing_for_s, rule.repeat_interval_s)
            step = advance(prev, observation.met, now=now, timing=timing, muted=reason is not None)
            record = replace(
                step.record,
                labels=dict(instance.labels),
                last_value=observation.value,
                threshold=observation.threshold,
                last_eval_at=now,
                annotations=annotations,
            )
            if not (record.active or record.state != prev.state or step.notify):
                return  # nothing worth a write (inactive stays inactive, resolved stays resolved)
            receivers = instance.receivers
            if step.notify == "resolved":
                receivers = self._resolved_receivers(receivers)
            await self._persist(Step(record, step.notify), receivers, now)
            if record.state != prev.state:
                logger.info(
                    "alert %s on %s: %s -> %s (value %s, threshold %s)%s", rule.name, instance.where, prev.state,
                    record.state, rules.format_value(observation.value), rules.format_value(observation.threshold),
                    f" [muted: {reason}]" if reason and record.state == "firing" else "",
                )  # fmt: skip

    async def _observe(self, instance: _Instance, prev: AlertRecord, now: datetime) -> rules.Observation:
        rule = instance.rule
        if rule.kind in DEPLOYMENT_KINDS:
            return deployment.held(prev)
        if rule.kind == "threshold":
            assert rule.metric is not None and rule.window_s is not None
            agg = await self._source.aggregate(
                metric=rule.metric, agg=rule.effective_agg, probe=instance.probe,
                since=now - timedelta(seconds=rule.window_s), until=now, check=rule.check,
            )  # fmt: skip
            return rules.threshold(rule, agg)
        if rule.kind == "regression":
            assert rule.metric is not None and rule.window_s is not None
            recent_since = now - timedelta(seconds=rule.window_s)
            recent = await self._source.aggregate(
                metric=rule.metric, agg=rule.effective_agg, probe=instance.probe, since=recent_since, until=now,
                check=rule.check,
            )  # fmt: skip
            baseline = await self._baseline(instance, recent_since, now)
            return rules.regression(rule, recent, baseline)
        if rule.kind == "absence":
            last_ok = await self._history.last_ok_at(instance.probe, until=now)
            # A fresh start waits a full period; an alert that is already active keeps its reference.
            since = _LONG_AGO if prev.active else (self._started_at or now)
            return rules.absence(rule, last_ok, since, now)
        assert rule.count is not None
        latest = await self._history.latest(instance.probe, rule.count, until=now)
        return rules.consecutive_failures(rule, latest)

    async def _baseline(self, instance: _Instance, recent_since: datetime, now: datetime) -> Aggregate:
        rule = instance.rule
        assert rule.metric is not None and rule.baseline_window_s is not None
        cached = self._baselines.get(instance.fingerprint)
        if cached is not None and timedelta(0) <= now - cached[0] < timedelta(seconds=self._baseline_cache_s):
            return cached[1]
        baseline = await self._source.aggregate(
            metric=rule.metric, agg=rule.effective_agg, probe=instance.probe,
            since=recent_since - timedelta(seconds=rule.baseline_window_s), until=recent_since, check=rule.check,
        )  # fmt: skip
        self._baselines[instance.fingerprint] = (now, baseline)
        return baseline

    def _resolved_receivers(self, names: Sequence[str]) -> tuple[str, ...]:
        wanted = {r.name for r in self._settings.receivers if r.send_resolved}
        return tuple(n for n in names if n in wanted)

    async def _persist(self, step: Step, receivers: Sequence[str], now: datetime) -> None:
        """Write the state and its notifications in one transaction, then update memory and wake delivery."""
        record = step.record
        try:
            async with self._sessionmaker() as session, session.begin():
                await repo.save_record(session, record, now)
                if step.notify is not None and receivers:
                    await self._outbox.enqueue(session, _snapshot(record, step.notify), receivers, now=now)
        except (SQLAlchemyError, OSError) as exc:
            logger.error("cannot store alert %s (%s): %s", record.rule, record.fingerprint, exc)
            return
        self._records[record.fingerprint] = record
        if step.notify is not None and receivers:
            self._outbox.notify_committed()

    async def _retire_orphans(self) -> None:
        configured = {i.fingerprint for i in self._instances}
        for fp in [fp for fp in self._records if fp not in configured]:
            async with self._lock(fp):
                prev = self._records.get(fp)
                if prev is None:
                    continue
                now = self._clock.now()
                step = retire(prev, now=now)
                try:
                    if step is None:
                        async with self._sessionmaker() as session, session.begin():
                            await repo.delete_record(session, fp)
                        del self._records[fp]
                        logger.info("forgot alert %s (%s): no longer configured", prev.rule, fp)
                        continue
                    receivers = await self._receivers_of(prev) if step.notify else ()
                except (SQLAlchemyError, OSError) as exc:
                    logger.error("cannot retire alert %s (%s): %s", prev.rule, fp, exc)
                    continue
                await self._persist(step, receivers, now)
                logger.info("resolved alert %s (%s): no longer configured", prev.rule, fp)

    async def _receivers_of(self, record: AlertRecord) -> tuple[str, ...]:
        """Who got this alert's firing message (its rule is gone, so the outbox is the only record)."""
        query = (
            select(OutboxRow.receiver)
            .distinct()
            .where(OutboxRow.fingerprint == record.fingerprint, OutboxRow.status == "firing")
        )
        if record.fired_at is not None:
            query = query.where(OutboxRow.created_at >= record.fired_at)
        async with self._sessionmaker() as session:
            names = set((await session.scalars(query)).all())
        return self._resolved_receivers(sorted(names))


def _deployment_instances(settings: Settings, rule: RuleSettings, receivers: tuple[str, ...]) -> list[_Instance]:
    """One instance per doctored target in scope and per check or component it records that the rule watches."""
    out: list[_Instance] = []
    key_label = DEPLOYMENT_KEY_LABELS[rule.kind]
    for target in settings.targets:
        if target.doctor is None or not rule.scope.covers("", target.name):
            continue
        for key in deployment_keys(rule.kind, target.doctor):
            if not rule.watches(key):
                continue
            labels = {
                **rule.labels, "alertname": rule.name, "target": target.name, "severity": rule.severity, key_label: key,
            }  # fmt: skip
            out.append(_Instance(rule, "", target.name, labels, fingerprint(labels), receivers, key))
    return out


def _snapshot(record: AlertRecord, status: NotifyStatus) -> AlertSnapshot:
    return AlertSnapshot(
        name=record.rule,
        status=status,
        state=record.state,
        labels=dict(record.labels),
        annotations=dict(record.annotations),
        severity=record.labels.get("severity", ""),
        value=record.last_value,
        threshold=record.threshold,
        started_at=record.fired_at,
        ended_at=record.resolved_at if status == "resolved" else None,
        fingerprint=record.fingerprint,
    )
