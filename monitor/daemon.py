"""The long-lived daemon: lifecycle, leadership, signals, config reload and the ordered shutdown.

`Daemon.serve()` creates every async resource inside the running loop and registers its close on
one `AsyncExitStack`, so teardown runs in reverse order even after a failed startup:

    SQLite file lock -> database engine -> HTTP sessions -> lease (election) -> dispatcher
        -> result writer -> leader duties (scheduler: probes, rollups, retention, absence checks) -> API

Leadership (monitor/leader.py): on PostgreSQL several replicas may share the database; only the one
holding the lease runs the duties (the scheduler and the dispatcher; stored results reach the alert
engine only there). Every replica serves the API. A replica that gains the lease reloads the alert
states and frees the outbox claims its predecessor left, then starts the duties; one that loses it
cancels them at once. On SQLite the daemon holds an exclusive lock on the database file and leads.

Shutdown (SIGTERM/SIGINT, or `request_stop()`): the scheduler stops starting runs, the API stops
accepting connections, in-flight probes get `daemon.shutdown_grace_s` to finish (then are
cancelled), queued results are written and evaluated, the dispatcher stops, the lease is released
(a follower takes over at once), then the HTTP sessions and the engine close. A second signal
skips the waiting. SIGHUP reloads the config file; a config that does not validate is rejected
with a log line and the running one stays.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from monitor.alerts.clock import SystemClock
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.api import check_bind, create_app
from monitor.config import Settings, load_settings
from monitor.errors import ConfigError, StoreError
from monitor.leader import (
    DaemonLock,
    LeaderElection,
    Leadership,
    LeaseStore,
    SoleLeader,
    default_replica_id,
    sqlite_database,
)
from monitor.metrics import CounterFamily, GaugeFamily, ProbeMetrics
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.retention import Retention
from monitor.scheduler import ProbeScheduler, ResultWriter, SchedulerStats
from monitor.store.db import censor_url, connect, create_engine, ensure_schema
from monitor.store.models_alerts import OutboxRow
from monitor.store.repo import Store
from monitor.store.rollups import Rollups, RollupWindowSource, TieredWindowSource

__all__ = ["Daemon", "DaemonSummary", "check_runnable", "run_daemon"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

ALERT_STATES = ("pending", "firing")
# How far back each rollup run recomputes, beyond the slowest target's timeout.
ROLLUP_SETTLE_EXTRA_S = 30.0
# A new leader that cannot load the alert states (database trouble) tries again this often; it must
# not evaluate rules from stale states, which could repeat what the previous leader already sent.
TAKEOVER_RETRY_S = 1.0
# /metrics reads the outbox depth (and, on a follower, the alert states) from the database; a hung
# database must not hang the scrape (the same bound as /readyz).
METRICS_DB_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class DaemonSummary:
    uptime_s: float
    runs: int
    ok: int
    failed: int
    stored: int
    dropped: int
    skipped_busy: int
    missed: int
    cancelled: int

    def line(self) -> str:
        return (
            f"daemon stopped after {self.uptime_s:.1f} s: {self.runs} probe runs ({self.ok} ok, {self.failed} failed), "
            f"{self.stored} results stored, {self.dropped} dropped, {self.skipped_busy} runs skipped (busy), "
            f"{self.missed} missed, {self.cancelled} cancelled"
        )


class Daemon:
    """Runs probes on schedule, stores results, evaluates alerts, serves the API, until stopped.

    `config_path` (and `db_url`, the --db override) are what SIGHUP re-reads. `install_signals`
    is for the main thread of a process (`run_daemon`); in-process tests call `request_stop()`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        db_url: str | None = None,
        install_signals: bool = False,
    ) -> None:
        self.settings = settings
        self._config_path = config_path
        self._db_url = db_url
        self._install_signals = install_signals
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self.started = asyncio.Event()
        self.api_url: str | None = None
        self.metrics = ProbeMetrics()
        self.summary: DaemonSummary | None = None
        self.reloads = 0
        self.leadership: Leadership | None = None
        # The scheduler of the current leadership term (None while following); every term gets a new one.
        self._active: ProbeScheduler | None = None
        self._schedulers: list[ProbeScheduler] = []
        self._dispatching: tuple[asyncio.Task[None], asyncio.Event] | None = None
        self._writer: ResultWriter | None = None
        self._alerts: AlertEngine | None = None
        self._outbox: Outbox | None = None
        self._dispatcher: Dispatcher | None = None
        self._prober: Prober | None = None
        self._rollups: Rollups | None = None
        self._retention: Retention | None = None
        self._sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self._deadline = 0.0
        self._started_mono = 0.0
        self._reload_task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._bound_port: int | None = None

    @property
    def scheduler(self) -> ProbeScheduler:
        """The scheduler of the current (or, on a follower, the last) leadership term."""
        if not self._schedulers:
            raise RuntimeError("the daemon is not running or has never led")
        return self._schedulers[-1]

    @property
    def leading(self) -> bool:
        """Whether this replica runs the duties now (probes, rules, notifications)."""
        return self._active is not None

    def request_stop(self, reason: str = "requested") -> None:
        """Begin the graceful shutdown; a second call skips the waiting (like a second Ctrl-C)."""
        if self._stop.is_set():
            logger.warning("second stop request (%s): not waiting for in-flight work", reason)
            self._force.set()
            return
        logger.info("stopping (%s)", reason)
        self._stop.set()

    async def serve(self) -> int:
        """Run until stopped; returns 0. Startup failures raise (MonitorError with a one-line message)."""
        self._started_mono = time.monotonic()
        check_runnable(self.settings)
        for line in self.settings.advice():
            logger.warning("%s", line)
        async with AsyncExitStack() as stack:
            await self._startup(stack)
            self.started.set()
            await self._stop.wait()
            self._deadline = asyncio.get_running_loop().time() + self.settings.daemon.shutdown_grace_s
            # Step 1 of the shutdown; the stack unwinds the rest in reverse order of creation.
            if self._active is not None:
                self._active.pause()
        self.summary = self._summary()
        logger.info("%s", self.summary.line())
        return 0

    async def _startup(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        if self._install_signals:
            self._add_signal_handlers(stack)
        database = sqlite_database(settings.storage.url)
        if database is not None:
            # Before anything touches the file: a second daemon on it would double every probe and alert.
            lock = DaemonLock(database)
            lock.acquire()
            stack.callback(lock.release)
        engine = await connect(settings.storage.url)
        stack.push_async_callback(engine.dispose)
        await ensure_schema(engine)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        self._sessionmaker = sessionmaker
        store = Store(sessionmaker)

        # Probes and notifications get separate pools: hung targets must not starve webhook sends.
        probe_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None), connector=aiohttp.TCPConnector(limit=0)
        )
        stack.push_async_callback(probe_session.close)
        notify_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        stack.push_async_callback(notify_session.close)
        self._prober = Prober(probe_session)

        max_timeout_s = max((t.timeout_s for t in settings.targets), default=60.0)
        rollups = Rollups(
            sessionmaker, settle_s=max_timeout_s + settings.retention.rollup_interval_s + ROLLUP_SETTLE_EXTRA_S
        )
        self._rollups = rollups
        self._retention = Retention(sessionmaker, settings.retention, rollups=rollups)

        clock = SystemClock()
        outbox = Outbox(sessionmaker)
        # Long windows (regression baselines over days) read rollups instead of millions of raw rows.
        source = TieredWindowSource(RawWindowSource(sessionmaker), RollupWindowSource(rollups))
        alerts = AlertEngine(settings, sessionmaker, source=source, clock=clock, outbox=outbox)
        dispatcher = Dispatcher(
            settings, sessionmaker, notify_session, clock=clock, secrets=settings.plain_receiver_secrets()
        )
        outbox.add_waker(dispatcher.wake)
        self._alerts, self._outbox, self._dispatcher = alerts, outbox, dispatcher

        leadership = await self._elect(stack, database is None)
        stack.push_async_callback(self._stop_dispatcher)

        writer = ResultWriter(store, on_stored=self._on_stored, buffer_max=settings.daemon.outage_buffer_max)
        self._writer = writer
        writer_task = asyncio.create_task(writer.run(), name="result-writer")
        stack.push_async_callback(self._stop_writer, writer, writer_task)

        stack.push_async_callback(self._stop_duties)
        await self._reconcile()
        follower = asyncio.create_task(self._follow(leadership), name="leadership")
        stack.push_async_callback(self._cancel, follower)

        # A callable, not a snapshot: a reload reaches the API and the dashboard (probe lists, rules).
        app = create_app(
            lambda: self.settings, store=store, db=engine, metrics=self.metrics, alerts=alerts, rollups=rollups,
            scheduler_running=lambda: self._active is not None and self._active.running, gauges=self._gauges,
            leadership=leadership,
        )  # fmt: skip
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await self._start_site(runner)
        # The API URL stays last: scripts (and tests) take it from the end of this line.
        logger.info(
            "llm-monitor daemon running: %d probes on %d targets, %d rules, %d receivers, database %s, "
            "replica %s (%s), API %s",
            len(settings.probes), len(settings.targets), len(settings.rules), len(settings.receivers),
            censor_url(engine.url), leadership.replica_id,
            "leader" if leadership.is_leader else f"follower of {leadership.leader or 'nobody yet'}", self.api_url,
        )  # fmt: skip

    # --- leadership -------------------------------------------------------------------------------

    async def _elect(self, stack: AsyncExitStack, shared: bool) -> Leadership:
        """The lease on a shared database (PostgreSQL), else sole leadership; one first attempt is made."""
        settings = self.settings
        replica_id = settings.daemon.replica_id or default_replica_id()
        leadership: Leadership
        if not shared:
            leadership = SoleLeader(replica_id)
        else:
            # Its own connections: renewals never queue behind probe writes or dashboard reads.
            lease_engine: AsyncEngine = create_engine(settings.storage.url, poolclass=NullPool)
            stack.push_async_callback(lease_engine.dispose)
            lease_store = LeaseStore(async_sessionmaker(lease_engine, expire_on_commit=False))
            leadership = LeaderElection(lease_store, replica_id=replica_id, ttl_s=settings.daemon.lease_ttl_s)
            stack.push_async_callback(leadership.release)
        self.leadership = leadership
        # One attempt now, so the replica knows its role before it serves anything.
        first_wait_s = await leadership.attempt()
        stop = asyncio.Event()
        task = asyncio.create_task(leadership.run(stop, first_wait_s=first_wait_s), name="lease")
        stack.push_async_callback(self._stop_task, "lease", task, stop)
        return leadership

    async def _follow(self, leadership: Leadership) -> None:
        """Start or stop the duties whenever the leadership changes."""
        while True:
            await leadership.changed.wait()
            leadership.changed.clear()
            try:
                await self._reconcile()
            except Exception:  # this task must outlive any one failure, or roles would stop following the lease
                logger.exception("changing roles failed; retrying in %.0f s", TAKEOVER_RETRY_S)
                self._retry = asyncio.get_running_loop().call_later(TAKEOVER_RETRY_S, leadership.changed.set)

    async def _reconcile(self) -> None:
        leadership = self.leadership
        assert leadership is not None
        if leadership.is_leader and self._active is None:
            await self._take_duties()
        elif not leadership.is_leader and self._active is not None:
            await self._drop_duties()

    async def _take_duties(self) -> None:
        assert self._alerts is not None and self._dispatcher is not None and self._sessionmaker is not None
        assert self._prober is not None and self._writer is not None and self.leadership is not None
        assert self._rollups is not None and self._retention is not None
        settings = self.settings
        try:
            # The previous leader may have changed every alert state since this replica last looked.
            await self._alerts.start()
            freed = await _free_outbox_claims(self._sessionmaker)
        except (StoreError, SQLAlchemyError, OSError) as exc:
            logger.error("cannot take over the duties yet (%s); retrying in %.0f s", exc, TAKEOVER_RETRY_S)
            self._retry = asyncio.get_running_loop().call_later(TAKEOVER_RETRY_S, self.leadership.changed.set)
            return
        if freed:
            logger.info("freed %d outbox messages claimed by a previous leader; they are sent now", freed)
        if not self.leadership.is_leader:  # lost while loading: the next reconcile sees it
            return
        stop = asyncio.Event()
        task = asyncio.create_task(self._dispatcher.run(stop), name="dispatcher")
        self._dispatching = (task, stop)

        scheduler = ProbeScheduler(settings, prober=self._prober, writer=self._writer, metrics=self.metrics)
        scheduler.start()
        scheduler.add_periodic("rollups", self._if_leading(self._rollups.run), settings.retention.rollup_interval_s)
        scheduler.add_periodic("retention", self._if_leading(self._retention.run), settings.retention.interval_s)
        scheduler.add_periodic(
            "alerts", self._if_leading(self._alerts.evaluate_all), settings.daemon.absence_eval_interval_s
        )
        self._active = scheduler
        self._schedulers.append(scheduler)
        logger.info("%s leads: probing, evaluating rules and sending notifications", self.leadership.replica_id)

    async def _drop_duties(self) -> None:
        """Stop at once: the lease may pass to another replica soon, and two must never work together."""
        scheduler = self._active
        if scheduler is not None:
            scheduler.pause()
            cancelled = await scheduler.drain(0.0, self._force)
            await scheduler.shutdown()
            self._active = None
            if cancelled:
                logger.warning("stepping down: cancelled %d in-flight jobs", cancelled)
        dispatching, self._dispatching = self._dispatching, None
        if dispatching is not None:
            task, stop = dispatching
            stop.set()
            await self._cancel(task)
        logger.warning("%s follows: probes, rules and notifications stopped here", self._replica_id)

    @property
    def _replica_id(self) -> str:
        return self.leadership.replica_id if self.leadership is not None else "?"

    def _if_leading(self, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        # Checked when the job starts: the lease deadline counts, even before the step-down has run.
        async def guarded() -> None:
            if self.leadership is not None and self.leadership.is_leader:
                await job()

        return guarded

    async def _on_stored(self, result: ProbeResult) -> None:
        if self._alerts is not None and self.leadership is not None and self.leadership.is_leader:
            await self._alerts.on_result(result)

    async def _cancel(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # its failure was already the end of it; keep shutting down
            logger.exception("%s failed", task.get_name())

    async def _start_site(self, runner: web.AppRunner) -> None:
        host, port = self.settings.api.host, self.settings.api.port
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"api.port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        self.api_url = f"http://{shown}:{bound}"
        self._bound_port = int(bound)
        if self._dispatcher is not None and bound != port:
            # Links in notifications point at the port actually bound (port 0 picks one).
            self._dispatcher.reload(self._with_bound_port(self.settings))

    def _with_bound_port(self, settings: Settings) -> Settings:
        if self._bound_port is None or settings.api.port == self._bound_port:
            return settings
        return settings.model_copy(update={"api": settings.api.model_copy(update={"port": self._bound_port})})

    async def _gauges(self) -> list[GaugeFamily | CounterFamily]:
        writer = self._writer
        families: list[GaugeFamily | CounterFamily] = [
            GaugeFamily(
                "llm_monitor_probes_in_flight",
                "Probe runs (and maintenance jobs) now running.",
                values={(): float(self._active.inflight if self._active is not None else 0)},
            ),  # fmt: skip
            GaugeFamily(
                "llm_monitor_write_queue_depth",
                "Results waiting to be written (queued, and held in the outage buffer).",
                values={(): float(writer.qsize() if writer else 0)},
            ),  # fmt: skip
            GaugeFamily(
                "llm_monitor_results_buffered",
                "Results held while the database is unreachable (at most daemon.outage_buffer_max).",
                values={(): float(writer.buffered if writer else 0)},
            ),  # fmt: skip
            GaugeFamily(
                "llm_monitor_database_outage_seconds",
                "How long the result writer has found the database unreachable (0 while it answers).",
                values={(): writer.outage_s() if writer else 0.0},
            ),  # fmt: skip
        ]
        if writer is not None:
            dropped = CounterFamily(
                "llm_monitor_results_dropped_total",
                "Results never stored: the outage buffer was full, the database refused them, or shutdown came "
                "during an outage.",
                ("reason",),
            )
            dropped.values = {
                ("overflow",): float(writer.overflowed), ("rejected",): float(writer.rejected),
                ("shutdown",): float(writer.dropped - writer.overflowed - writer.rejected),
            }  # fmt: skip
            families.append(dropped)
        if self._alerts is None or self._outbox is None:
            return families
        alerts, outbox = self._alerts, self._outbox
        failed = GaugeFamily(
            "llm_monitor_metrics_query_failed",
            f"1 when this scrape's database query failed or took over {METRICS_DB_TIMEOUT_S:g} s "
            "(its gauge is left out).",
            ("query",),
        )
        states: Counter[str] = Counter()
        if self.leading:
            for (_, state), count in alerts.state_counts().items():
                states[state] += count
        else:
            # A follower's engine does not run; the leader's states are in the database.
            views = await _bounded_query("alert_states", failed, lambda: alerts.alerts(include_inactive=True))
            states.update(view.state for view in views or ())
        by_state: dict[tuple[str, ...], float] = {(s,): float(states.get(s, 0)) for s in (*ALERT_STATES, *states)}
        families.append(GaugeFamily("llm_monitor_alerts", "Alert instances by state.", ("state",), by_state))
        pending = await _bounded_query("outbox_depth", failed, outbox.depth)
        if pending is not None:
            families.append(
                GaugeFamily(
                    "llm_monitor_outbox_pending", "Notifications waiting in the outbox.", values={(): float(pending)}
                )
            )
        families.append(failed)
        return families

    def _remaining_s(self) -> float:
        if self._force.is_set():
            return 0.0
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def _stop_duties(self) -> None:
        """Shutdown: the scheduler of a leader gets the grace; the dispatcher stops later (`_stop_dispatcher`)."""
        if self._retry is not None:
            self._retry.cancel()
        scheduler = self._active
        if scheduler is None:
            return
        scheduler.pause()
        cancelled = await scheduler.drain(self._remaining_s(), self._force)
        if cancelled and self._force.is_set():
            logger.warning("cancelled %d in-flight jobs (forced stop, no grace)", cancelled)
        elif cancelled:
            logger.warning("cancelled %d in-flight jobs after the %.0f s grace", cancelled, self._grace_s)
        await scheduler.shutdown()
        self._active = None

    async def _stop_dispatcher(self) -> None:
        dispatching, self._dispatching = self._dispatching, None
        if dispatching is not None:
            task, stop = dispatching
            await self._stop_task("dispatcher", task, stop)

    @property
    def _grace_s(self) -> float:
        return self.settings.daemon.shutdown_grace_s

    async def _stop_writer(self, writer: ResultWriter, task: asyncio.Task[None]) -> None:
        if not task.done():
            close = asyncio.create_task(writer.close())
            await self._wait_or_cancel("result writer", task)
            close.cancel()
        if writer.qsize():
            logger.warning("%d results were not written", writer.qsize())

    async def _stop_task(self, name: str, task: asyncio.Task[Any], stop: asyncio.Event) -> None:
        stop.set()
        await self._wait_or_cancel(name, task)

    async def _wait_or_cancel(self, name: str, task: asyncio.Task[Any]) -> None:
        forced = asyncio.create_task(self._force.wait())
        try:
            await asyncio.wait(
                {task, forced}, timeout=max(self._remaining_s(), 0.5), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            forced.cancel()
        if not task.done():
            logger.warning("%s did not stop in time; cancelling it", name)
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # the task's own failure was already the end of it; report, keep shutting down
            logger.exception("%s failed", name)

    def _add_signal_handlers(self, stack: AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
            stack.callback(loop.remove_signal_handler, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)

    def _on_sighup(self) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            logger.warning("SIGHUP ignored: a reload is already running")
            return
        self._reload_task = asyncio.create_task(self._reload_on_signal(), name="reload")

    async def _reload_on_signal(self) -> None:
        # Nobody awaits this task: an escaped exception would only surface as "Task exception was never retrieved".
        try:
            await self.reload()
        except Exception:
            logger.exception("reload failed; the running config may be partly replaced")

    async def reload(self) -> bool:
        """Re-read the config file and apply it; on any error keep the running config. Returns success."""
        if self._config_path is None:
            logger.error("reload rejected: the daemon was not started from a config file")
            return False
        try:
            new = await asyncio.to_thread(load_settings, self._config_path, db_url=self._db_url)
            # The same checks as a start: a reload must not accept what `run` would refuse.
            check_runnable(new)
            new = self._keep_restart_only(new)
        except (ConfigError, StoreError) as exc:
            logger.error("reload rejected, keeping the running config: %s", exc)
            return False
        if self._active is not None:
            self._active.apply(new)
        if self._alerts is not None:
            self._alerts.reload(new)
        if self._dispatcher is not None:
            self._dispatcher.reload(self._with_bound_port(new), new.plain_receiver_secrets())
        self.settings = new
        self.reloads += 1
        logger.info(
            "reloaded %s: %d probes on %d targets, %d rules", self._config_path, len(new.probes), len(new.targets),
            len(new.rules),
        )  # fmt: skip
        return True

    def _keep_restart_only(self, new: Settings) -> Settings:
        """Storage, API and daemon settings only change on restart; say so and keep the running ones."""
        old = self.settings
        kept: dict[str, Any] = {}
        for section in ("storage", "api", "daemon", "retention"):
            if getattr(new, section) != getattr(old, section):
                logger.warning("reload: %s changes take effect after a restart", section)
                kept[section] = getattr(old, section)
        if new.api_token != old.api_token:
            kept["api_token"] = old.api_token
        return new.model_copy(update=kept) if kept else new

    def _summary(self) -> DaemonSummary:
        stats = SchedulerStats()
        for scheduler in self._schedulers:  # one per leadership term
            for field in fields(SchedulerStats):
                setattr(stats, field.name, getattr(stats, field.name) + getattr(scheduler.stats, field.name))
        writer = self._writer
        return DaemonSummary(
            uptime_s=time.monotonic() - self._started_mono,
            runs=stats.runs, ok=stats.ok, failed=stats.failed,
            stored=writer.stored if writer else 0, dropped=writer.dropped if writer else 0,
            skipped_busy=stats.skipped_busy, missed=stats.missed, cancelled=stats.cancelled,
        )  # fmt: skip


async def _bounded_query(name: str, failed: GaugeFamily, query: Callable[[], Awaitable[_T]]) -> _T | None:
    """Run one /metrics database query within METRICS_DB_TIMEOUT_S; None (logged, and 1 in `failed`) if not."""
    try:
        async with asyncio.timeout(METRICS_DB_TIMEOUT_S):
            value = await query()
    except TimeoutError:
        logger.warning("/metrics: %s query took over %g s; left out of this scrape", name, METRICS_DB_TIMEOUT_S)
    except (StoreError, SQLAlchemyError, OSError) as exc:
        logger.warning("/metrics: %s unavailable: %s", name, exc)
    else:
        failed.set((name,), 0.0)
        return value
    failed.set((name,), 1.0)
    return None


def check_runnable(settings: Settings) -> None:
    """What `run` needs beyond a valid config, checked at startup, on reload and by `check-config`.

    Raises ConfigError (one line naming the field): a bind that needs a token, or no probes at all
    (the daemon would do nothing and look healthy). Schedules need no check here: the config's
    `Crontab` and `Seconds` types already hold what APScheduler can build.
    """
    check_bind(settings)
    if not settings.probes:
        raise ConfigError("probes: none configured; `run` needs at least one probe")


async def _free_outbox_claims(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Clear claims on pending messages: only a leader sends, and the one that claimed them has stopped.

    A leader stops before its lease can expire, and this runs only after this replica won the lease,
    so no other dispatcher can be sending now. Without this, a message claimed by a leader killed
    mid-send would wait for its claim to run out (a minute or more).
    """
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            update(OutboxRow)
            .where(OutboxRow.state == "pending", OutboxRow.claimed_until.is_not(None))
            .values(claimed_until=None)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


def run_daemon(settings: Settings, *, config_path: Path | None = None, db_url: str | None = None) -> int:
    """`llm-monitor run`: serve until SIGTERM/SIGINT; returns the exit code (startup errors raise)."""
    daemon = Daemon(settings, config_path=config_path, db_url=db_url, install_signals=True)
    return asyncio.run(daemon.serve())
