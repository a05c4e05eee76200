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
from typing import Any, ParamSpec

import aiohttp
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.pool import NullPool

from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource, RollupWindowSource, ServerWindowSource, TieredWindowSource
from monitor.api import check_bind, create_app
from monitor.clock import SystemClock
from monitor.config import Settings, load_settings
from monitor.doctor_jobs import DoctorJobs
from monitor.errors import ConfigError, StoreError
from monitor.exposition import CounterFamily, GaugeFamily, ProbeMetrics, ScrapeQueries, alert_families, writer_families
from monitor.leader import (
    DaemonLock,
    LeaderElection,
    Leadership,
    LeaseStore,
    SoleLeader,
    default_replica_id,
    sqlite_database,
)
from monitor.loop_lag import LoopLag
from monitor.probes import Prober
from monitor.retention import Retention
from monitor.scheduler import ProbeScheduler, SchedulerStats
from monitor.scrape_jobs import ServerScrapes
from monitor.store.db import censor_url, connect, create_engine, ensure_schema
from monitor.store.repo import Store
from monitor.store.rollups import Rollups
from monitor.store.server_metrics_repo import ServerMetricsStore
from monitor.store.writer import ResultWriter
from monitor.target_http import target_session
from monitor.tasks import wait_then_cancel

__all__ = ["Daemon", "DaemonSummary", "Services", "check_runnable", "run_daemon"]

logger = logging.getLogger(__name__)
_P = ParamSpec("_P")

# How far back each rollup run recomputes, beyond the slowest target's timeout.
ROLLUP_SETTLE_EXTRA_S = 30.0
# A new leader that cannot load the alert states (database trouble) tries again this often; it must
# not evaluate rules from stale states, which could repeat what the previous leader already sent.
TAKEOVER_RETRY_S = 1.0
# A task asked to stop at shutdown gets at least this long, even when the grace is used up.
STOP_MIN_S = 0.5


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
    stalled: int

    def line(self) -> str:
        stalled = f", {self.stalled} voided (this daemon stalled)" if self.stalled else ""
        return (
            f"daemon stopped after {self.uptime_s:.1f} s: {self.runs} probe runs ({self.ok} ok, {self.failed} failed), "
            f"{self.stored} results stored, {self.dropped} dropped, {self.skipped_busy} runs skipped (busy), "
            f"{self.missed} missed, {self.cancelled} cancelled{stalled}"
        )


@dataclass(frozen=True, slots=True)
class Services:
    """What startup creates, for the daemon's whole life; what they hold closes on the exit stack.

    The duties of a leadership term (a `ProbeScheduler`, the dispatcher's task) are not here: they
    start and stop with the term, over these.
    """

    engine: AsyncEngine
    store: Store
    prober: Prober
    writer: ResultWriter
    alerts: AlertEngine
    outbox: Outbox
    dispatcher: Dispatcher
    rollups: Rollups
    retention: Retention
    leadership: Leadership
    scrapes: ServerScrapes
    doctor: DoctorJobs


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
        # The settings in force: `reload` replaces them; the API and dashboard read them per request.
        self.settings = settings
        self._config_path = config_path
        self._db_url = db_url
        self._install_signals = install_signals
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self.started = asyncio.Event()
        self.metrics = ProbeMetrics()
        # This process's own loop lag: a probe run during a stall measured the daemon, not its target.
        self.loop_lag = LoopLag(on_lag=self.metrics.observe_loop_lag)
        self.summary: DaemonSummary | None = None  # set when `serve` returns
        self.reloads = 0
        self._started_mono = 0.0
        self._deadline = 0.0  # loop time at which the shutdown grace ends
        # Set once by `serve`, before anything reads it.
        self._services: Services | None = None
        self._bound_port: int | None = None
        # What changes with leadership. The duties of the current term (None while following): a new
        # scheduler and dispatcher task every term; every term's scheduler is kept for the summary.
        self._active: ProbeScheduler | None = None
        self._dispatching: tuple[asyncio.Task[None], asyncio.Event] | None = None
        self._schedulers: list[ProbeScheduler] = []
        self._retry: asyncio.TimerHandle | None = None  # a takeover that failed, tried again soon
        self._reload_task: asyncio.Task[None] | None = None

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

    @property
    def leadership(self) -> Leadership | None:
        return self._services.leadership if self._services is not None else None

    @property
    def api_url(self) -> str | None:
        """Where the API listens (None until it does); with `api.port: 0`, the port actually bound."""
        if self._bound_port is None:
            return None
        host = self.settings.api.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._bound_port}"

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
            services = self._services = await self._startup(stack)
            stack.push_async_callback(self._stop_duties)
            await self._reconcile()
            follower = asyncio.create_task(self._follow(services.leadership), name="leadership")
            stack.push_async_callback(self._stop_task, "leadership", follower, timeout_s=0.0)
            await self._serve_api(stack, services)
            self.started.set()
            await self._stop.wait()
            self._deadline = asyncio.get_running_loop().time() + self.settings.daemon.shutdown_grace_s
            # Step 1 of the shutdown; the stack unwinds the rest in reverse order of creation.
            if self._active is not None:
                self._active.pause()
        self.summary = self._summary()
        logger.info("%s", self.summary.line())
        return 0

    def _running(self) -> Services:
        if self._services is None:
            raise RuntimeError("the daemon is not running")
        return self._services

    async def _startup(self, stack: AsyncExitStack) -> Services:
        """Create the resources, each with its close on `stack`; elect; start the result writer."""
        settings = self.settings
        if self._install_signals:
            self._add_signal_handlers(stack)
        lag_stop = asyncio.Event()
        lag_task = asyncio.create_task(self.loop_lag.run(lag_stop), name="loop-lag")
        stack.push_async_callback(self._stop_task, "loop-lag", lag_task, lag_stop, timeout_s=1.0)
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

        # Probes and notifications get separate pools: hung targets must not starve webhook sends.
        probe_session = target_session(limit=0)
        stack.push_async_callback(probe_session.close)
        notify_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        stack.push_async_callback(notify_session.close)

        max_timeout_s = max((t.timeout_s for t in settings.targets), default=60.0)
        rollups = Rollups(
            sessionmaker, settle_s=max_timeout_s + settings.retention.rollup_interval_s + ROLLUP_SETTLE_EXTRA_S
        )
        clock = SystemClock()
        outbox = Outbox(sessionmaker)
        # Long windows (regression baselines over days) read rollups instead of millions of raw rows.
        tiered = TieredWindowSource(RawWindowSource(sessionmaker), RollupWindowSource(rollups))
        # Rules over server metrics (server_*) read the probe's target's scrapes.
        source = ServerWindowSource(tiered, ServerMetricsStore(sessionmaker), lambda: self.settings)
        alerts = AlertEngine(settings, sessionmaker, source=source, clock=clock, outbox=outbox)
        dispatcher = Dispatcher(
            settings, sessionmaker, notify_session, clock=clock, secrets=settings.plain_receiver_secrets()
        )
        outbox.add_waker(dispatcher.wake)

        leadership = await self._elect(stack, shared=database is None)
        # Registered before the writer's stop: results written at shutdown may still notify.
        stack.push_async_callback(self._stop_dispatcher)
        store = Store(sessionmaker)
        # Each stored result reaches the alert engine, on the leader only.
        on_stored = _if_leading(leadership, alerts.on_result)
        writer = ResultWriter(store, on_stored=on_stored, buffer_max=settings.daemon.outage_buffer_max)
        writer_task = asyncio.create_task(writer.run(), name="result-writer")
        stack.push_async_callback(self._stop_writer, writer, writer_task)
        retention = Retention(sessionmaker, settings.retention, rollups=rollups)
        return Services(
            engine=engine, store=store, prober=Prober(probe_session), writer=writer, alerts=alerts, outbox=outbox,
            dispatcher=dispatcher, rollups=rollups, retention=retention, leadership=leadership,
            scrapes=ServerScrapes(probe_session, ServerMetricsStore(sessionmaker), settings, loop_lag=self.loop_lag),
            doctor=DoctorJobs(
                probe_session, sessionmaker, settings, sink=alerts, clock=clock, loop_lag=self.loop_lag
            ),
        )  # fmt: skip

    async def _serve_api(self, stack: AsyncExitStack, services: Services) -> None:
        app = create_app(
            lambda: self.settings, store=services.store, db=services.engine, metrics=self.metrics,
            alerts=services.alerts, rollups=services.rollups, scheduler_running=self._scheduler_running,
            gauges=self._gauges, leadership=services.leadership,
        )  # fmt: skip
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        settings = self.settings
        host, port = settings.api.host, settings.api.port
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(f"api.port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._bound_port = int(runner.addresses[0][1]) if runner.addresses else port
        if self._bound_port != port:
            # Links in notifications point at the port actually bound (port 0 picks one).
            services.dispatcher.reload(self._with_bound_port(settings))
        leadership = services.leadership
        # The API URL stays last: scripts (and tests) take it from the end of this line.
        logger.info(
            "llm-monitor daemon running: %d probes on %d targets, %d rules, %d receivers, database %s, "
            "replica %s (%s), API %s",
            len(settings.probes), len(settings.targets), len(settings.rules), len(settings.receivers),
            censor_url(services.engine.url), leadership.replica_id,
            "leader" if leadership.is_leader else f"follower of {leadership.leader or 'nobody yet'}", self.api_url,
        )  # fmt: skip

    def _with_bound_port(self, settings: Settings) -> Settings:
        if self._bound_port is None or settings.api.port == self._bound_port:
            return settings
        return settings.model_copy(update={"api": settings.api.model_copy(update={"port": self._bound_port})})

    # --- leadership -------------------------------------------------------------------------------

    async def _elect(self, stack: AsyncExitStack, *, shared: bool) -> Leadership:
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
        services = self._running()
        if services.leadership.is_leader and self._active is None:
            await self._take_duties(services)
        elif not services.leadership.is_leader and self._active is not None:
            await self._drop_duties()

    async def _take_duties(self, services: Services) -> None:
        settings, leadership = self.settings, services.leadership
        try:
            # The previous leader may have changed every alert state since this replica last looked.
            await services.alerts.start()
            freed = await services.outbox.free_claims()
        except (StoreError, SQLAlchemyError, OSError) as exc:
            logger.error("cannot take over the duties yet (%s); retrying in %.0f s", exc, TAKEOVER_RETRY_S)
            self._retry = asyncio.get_running_loop().call_later(TAKEOVER_RETRY_S, leadership.changed.set)
            return
        if freed:
            logger.info("freed %d outbox messages claimed by a previous leader; they are sent now", freed)
        if not leadership.is_leader:  # lost while loading: the next reconcile sees it
            return
        stop = asyncio.Event()
        self._dispatching = (asyncio.create_task(services.dispatcher.run(stop), name="dispatcher"), stop)

        scheduler = ProbeScheduler(
            settings, prober=services.prober, writer=services.writer, metrics=self.metrics, loop_lag=self.loop_lag
        )
        scheduler.start()
        periodic = (
            ("rollups", services.rollups.run, settings.retention.rollup_interval_s),
            ("retention", services.retention.run, settings.retention.interval_s),
            ("alerts", services.alerts.evaluate_all, settings.daemon.absence_eval_interval_s),
        )
        for name, job, interval_s in periodic:
            scheduler.add_periodic(name, _if_leading(leadership, job), interval_s)
        for name, scrape, interval_s in services.scrapes.jobs():  # one per target with `metrics:`
            scheduler.add_periodic(name, _if_leading(leadership, scrape), interval_s)
        for name, run, interval_s, trigger in services.doctor.jobs():  # one per target with `doctor:`
            scheduler.add_periodic(name, _if_leading(leadership, run), interval_s, trigger=trigger)
        self._active = scheduler
        self._schedulers.append(scheduler)
        logger.info("%s leads: probing, evaluating rules and sending notifications", leadership.replica_id)

    async def _drop_duties(self) -> None:
        """Stop at once: the lease may pass to another replica soon, and two must never work together."""
        cancelled = await self._stop_scheduler(0.0)
        if cancelled:
            logger.warning("stepping down: cancelled %d in-flight jobs", cancelled)
        await self._stop_dispatcher(0.0)
        logger.warning(
            "%s follows: probes, rules and notifications stopped here", self._running().leadership.replica_id
        )

    def _scheduler_running(self) -> bool:
        return self._active is not None and self._active.running

    async def _gauges(self) -> list[GaugeFamily | CounterFamily]:
        services, scheduler = self._running(), self._active
        queries = ScrapeQueries()
        states: Counter[str] = Counter()
        if scheduler is not None:
            for (_, state), count in services.alerts.state_counts().items():
                states[state] += count
        else:
            # A follower's engine does not run; the leader's states are in the database.
            views = await queries.run("alert_states", lambda: services.alerts.alerts(include_inactive=True))
            states.update(view.state for view in views or ())
        pending = await queries.run("outbox_depth", services.outbox.depth)
        inflight = scheduler.inflight if scheduler is not None else 0
        return [*writer_families(inflight, services.writer), *alert_families(states, pending), queries.failed]

    # --- shutdown ---------------------------------------------------------------------------------

    def _remaining_s(self) -> float:
        if self._force.is_set():
            return 0.0
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def _stop_duties(self) -> None:
        """Shutdown: the scheduler of a leader gets the grace; the dispatcher stops later (`_stop_dispatcher`)."""
        if self._retry is not None:
            self._retry.cancel()
        cancelled = await self._stop_scheduler(self._remaining_s())
        if cancelled and self._force.is_set():
            logger.warning("cancelled %d in-flight jobs (forced stop, no grace)", cancelled)
        elif cancelled:
            logger.warning(
                "cancelled %d in-flight jobs after the %.0f s grace", cancelled, self.settings.daemon.shutdown_grace_s
            )

    async def _stop_scheduler(self, grace_s: float) -> int:
        """End the current term's scheduler: runs get `grace_s`, then are cancelled; returns how many were."""
        scheduler = self._active
        if scheduler is None:
            return 0
        scheduler.pause()
        cancelled = await scheduler.drain(grace_s, self._force)
        await scheduler.shutdown()
        self._active = None
        return cancelled

    async def _stop_dispatcher(self, timeout_s: float | None = None) -> None:
        dispatching, self._dispatching = self._dispatching, None
        if dispatching is not None:
            await self._stop_task("dispatcher", *dispatching, timeout_s)

    async def _stop_writer(self, writer: ResultWriter, task: asyncio.Task[None]) -> None:
        if not task.done():
            close = asyncio.create_task(writer.close())
            await self._stop_task("result writer", task)
            await wait_then_cancel([close], 0.0)
        if writer.qsize():
            logger.warning("%d results were not written", writer.qsize())

    async def _stop_task(
        self, name: str, task: asyncio.Task[Any], stop: asyncio.Event | None = None, timeout_s: float | None = None
    ) -> None:
        """Set `stop`, wait up to `timeout_s` (default: what is left of the grace) for `task`, else cancel it."""
        if stop is not None:
            stop.set()
        wait_s = max(self._remaining_s(), STOP_MIN_S) if timeout_s is None else timeout_s
        if await wait_then_cancel([task], wait_s, interrupt=self._force) and timeout_s is None:
            logger.warning("%s did not stop in time; cancelled it", name)
        if not task.cancelled() and task.exception() is not None:
            # The task's own failure was already the end of it: report it, and keep shutting down.
            logger.error("%s failed", name, exc_info=task.exception())

    # --- signals and reload -----------------------------------------------------------------------

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
        """Re-read the config file and apply it; on any error keep the running config. Returns success.

        The scheduler, the alert engine and the dispatcher are handed the new settings; the API and
        the dashboard read `self.settings` on every request.
        """
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
        if self._services is not None:
            self._services.alerts.reload(new)
            self._services.dispatcher.reload(self._with_bound_port(new), new.plain_receiver_secrets())
            for name, job, interval_s in self._services.scrapes.apply(new):
                if self._active is not None:
                    self._active.add_periodic(name, _if_leading(self._services.leadership, job), interval_s)
            for name, run, interval_s, trigger in self._services.doctor.apply(new):
                if self._active is not None:
                    leading = _if_leading(self._services.leadership, run)
                    self._active.add_periodic(name, leading, interval_s, trigger=trigger)
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
        # Every leadership term had its own scheduler: the counts are their sums.
        totals = {f.name: sum(getattr(s.stats, f.name) for s in self._schedulers) for f in fields(SchedulerStats)}
        writer = self._services.writer if self._services is not None else None
        return DaemonSummary(
            uptime_s=time.monotonic() - self._started_mono, stored=writer.stored if writer else 0,
            dropped=writer.dropped if writer else 0, **totals,
        )  # fmt: skip


def _if_leading(leadership: Leadership, job: Callable[_P, Awaitable[object]]) -> Callable[_P, Awaitable[None]]:
    # Checked when the job starts: the lease deadline counts, even before the step-down has run.
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> None:
        if leadership.is_leader:
            await job(*args, **kwargs)

    return guarded


def check_runnable(settings: Settings) -> None:
    """What `run` needs beyond a valid config, checked at startup, on reload and by `check-config`.

    Raises ConfigError (one line naming the field): a bind that needs a token, or no probes at all
    (the daemon would do nothing and look healthy). Schedules need no check here: the config's
    `Crontab` and `Seconds` types already hold what APScheduler can build.
    """
    check_bind(settings)
    if not settings.probes:
        raise ConfigError("probes: none configured; `run` needs at least one probe")


def run_daemon(settings: Settings, *, config_path: Path | None = None, db_url: str | None = None) -> int:
    """`llm-monitor run`: serve until SIGTERM/SIGINT; returns the exit code (startup errors raise)."""
    daemon = Daemon(settings, config_path=config_path, db_url=db_url, install_signals=True)
    return asyncio.run(daemon.serve())
