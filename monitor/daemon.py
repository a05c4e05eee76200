"""The long-lived daemon: lifecycle, signals, config reload and the ordered shutdown.

`Daemon.serve()` creates every async resource inside the running loop and registers its close on
one `AsyncExitStack`, so teardown runs in reverse order even after a failed startup:

    database engine -> HTTP sessions -> alert engine + dispatcher -> result writer
        -> scheduler (probes, rollups, retention, absence checks) -> API

Shutdown (SIGTERM/SIGINT, or `request_stop()`): the scheduler stops starting runs, the API stops
accepting connections, in-flight probes get `daemon.shutdown_grace_s` to finish (then are
cancelled), queued results are written and evaluated, the dispatcher stops, then the HTTP sessions
and the engine close. A second signal skips the waiting. SIGHUP reloads the config file; a config
that does not validate is rejected with a log line and the running one stays.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from monitor.alerts.clock import SystemClock
from monitor.alerts.config import plain_secrets
from monitor.alerts.dispatch import Dispatcher
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.api import check_bind, create_app
from monitor.errors import ConfigError, StoreError
from monitor.metrics import GaugeFamily, ProbeMetrics
from monitor.probes import Prober
from monitor.retention import Retention
from monitor.scheduler import ProbeScheduler, ResultWriter, validate_schedules
from monitor.settings import Settings, load_settings
from monitor.store.db import censor_url, connect, ensure_schema
from monitor.store.repo import Store
from monitor.store.rollups import Rollups, RollupWindowSource, TieredWindowSource

__all__ = ["Daemon", "DaemonSummary", "run_daemon"]

logger = logging.getLogger(__name__)

ALERT_STATES = ("pending", "firing")
# How far back each rollup run recomputes, beyond the slowest target's timeout.
ROLLUP_SETTLE_EXTRA_S = 30.0


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
        self._scheduler: ProbeScheduler | None = None
        self._writer: ResultWriter | None = None
        self._alerts: AlertEngine | None = None
        self._outbox: Outbox | None = None
        self._dispatcher: Dispatcher | None = None
        self._deadline = 0.0
        self._started_mono = 0.0
        self._reload_task: asyncio.Task[bool] | None = None
        self._bound_port: int | None = None

    @property
    def scheduler(self) -> ProbeScheduler:
        if self._scheduler is None:
            raise RuntimeError("the daemon is not running")
        return self._scheduler

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
        check_bind(self.settings)
        validate_schedules(self.settings)
        async with AsyncExitStack() as stack:
            await self._startup(stack)
            self.started.set()
            await self._stop.wait()
            self._deadline = asyncio.get_running_loop().time() + self.settings.daemon.shutdown_grace_s
            # Step 1 of the shutdown; the stack unwinds the rest in reverse order of creation.
            self.scheduler.pause()
        self.summary = self._summary()
        logger.info("%s", self.summary.line())
        return 0

    async def _startup(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        if self._install_signals:
            self._add_signal_handlers(stack)
        engine = await connect(settings.storage.url)
        stack.push_async_callback(engine.dispose)
        await ensure_schema(engine)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        store = Store(sessionmaker)

        # Probes and notifications get separate pools: hung targets must not starve webhook sends.
        probe_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None), connector=aiohttp.TCPConnector(limit=0)
        )
        stack.push_async_callback(probe_session.close)
        notify_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        stack.push_async_callback(notify_session.close)

        max_timeout_s = max((t.timeout_s for t in settings.targets), default=60.0)
        rollups = Rollups(
            sessionmaker, settle_s=max_timeout_s + settings.retention.rollup_interval_s + ROLLUP_SETTLE_EXTRA_S
        )
        retention = Retention(sessionmaker, settings.retention, rollups=rollups)

        clock = SystemClock()
        outbox = Outbox(sessionmaker)
        # Long windows (regression baselines over days) read rollups instead of millions of raw rows.
        source = TieredWindowSource(RawWindowSource(sessionmaker), RollupWindowSource(rollups))
        alerts = AlertEngine(settings, sessionmaker, source=source, clock=clock, outbox=outbox)
        await alerts.start()
        dispatcher = Dispatcher(settings, sessionmaker, notify_session, clock=clock, secrets=plain_secrets(settings))
        outbox.add_waker(dispatcher.wake)
        self._alerts, self._outbox, self._dispatcher = alerts, outbox, dispatcher
        dispatcher_stop = asyncio.Event()
        dispatcher_task = asyncio.create_task(dispatcher.run(dispatcher_stop), name="dispatcher")
        stack.push_async_callback(self._stop_task, "dispatcher", dispatcher_task, dispatcher_stop)

        writer = ResultWriter(store, on_stored=alerts.on_result)
        self._writer = writer
        writer_task = asyncio.create_task(writer.run(), name="result-writer")
        stack.push_async_callback(self._stop_writer, writer, writer_task)

        scheduler = ProbeScheduler(settings, prober=Prober(probe_session), writer=writer, metrics=self.metrics)
        self._scheduler = scheduler
        scheduler.start()
        stack.push_async_callback(self._stop_scheduler, scheduler)
        scheduler.add_periodic("rollups", rollups.run, settings.retention.rollup_interval_s)
        scheduler.add_periodic("retention", retention.run, settings.retention.interval_s)
        scheduler.add_periodic("alerts", alerts.evaluate_all, settings.daemon.absence_eval_interval_s)

        app = create_app(
            settings, store=store, db=engine, metrics=self.metrics, alerts=alerts, rollups=rollups,
            scheduler_running=lambda: scheduler.running, gauges=self._gauges,
        )  # fmt: skip
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await self._start_site(runner)
        logger.info(
            "llm-monitor daemon running: %d probes on %d targets, %d rules, %d receivers, database %s, API %s",
            len(settings.probes), len(settings.targets), len(settings.rules), len(settings.receivers),
            censor_url(engine.url), self.api_url,
        )  # fmt: skip

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

    async def _gauges(self) -> list[GaugeFamily]:
        families = [
            GaugeFamily(
                "llm_monitor_probes_in_flight",
                "Probe runs (and maintenance jobs) now running.",
                values={(): float(self.scheduler.inflight)},
            ),  # fmt: skip
            GaugeFamily(
                "llm_monitor_write_queue_depth",
                "Results waiting to be written.",
                values={(): float(self._writer.qsize() if self._writer else 0)},
            ),  # fmt: skip
        ]
        if self._alerts is None or self._outbox is None:
            return families
        states: Counter[str] = Counter()
        for (_, state), count in self._alerts.state_counts().items():
            states[state] += count
        by_state: dict[tuple[str, ...], float] = {(s,): float(states.get(s, 0)) for s in (*ALERT_STATES, *states)}
        families.append(GaugeFamily("llm_monitor_alerts", "Alert instances by state.", ("state",), by_state))
        try:
            pending = await self._outbox.depth()
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("outbox depth unavailable: %s", exc)
            return families
        families.append(
            GaugeFamily(
                "llm_monitor_outbox_pending", "Notifications waiting in the outbox.", values={(): float(pending)}
            )
        )
        return families

    def _remaining_s(self) -> float:
        if self._force.is_set():
            return 0.0
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def _stop_scheduler(self, scheduler: ProbeScheduler) -> None:
        scheduler.pause()
        cancelled = await scheduler.drain(self._remaining_s(), self._force)
        if cancelled:
            logger.warning("cancelled %d in-flight jobs after the %.0f s grace", cancelled, self._grace_s)
        await scheduler.shutdown()

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
        self._reload_task = asyncio.create_task(self.reload(), name="reload")

    async def reload(self) -> bool:
        """Re-read the config file and apply it; on any error keep the running config. Returns success."""
        if self._config_path is None:
            logger.error("reload rejected: the daemon was not started from a config file")
            return False
        try:
            new = await asyncio.to_thread(load_settings, self._config_path, db_url=self._db_url)
            validate_schedules(new)
            new = self._keep_restart_only(new)
        except (ConfigError, StoreError) as exc:
            logger.error("reload rejected, keeping the running config: %s", exc)
            return False
        self.scheduler.apply(new)
        if self._alerts is not None:
            self._alerts.reload(new)
        if self._dispatcher is not None:
            self._dispatcher.reload(self._with_bound_port(new), plain_secrets(new))
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
        stats = self._scheduler.stats if self._scheduler is not None else None
        writer = self._writer
        return DaemonSummary(
            uptime_s=time.monotonic() - self._started_mono,
            runs=stats.runs if stats else 0, ok=stats.ok if stats else 0, failed=stats.failed if stats else 0,
            stored=writer.stored if writer else 0, dropped=writer.dropped if writer else 0,
            skipped_busy=stats.skipped_busy if stats else 0, missed=stats.missed if stats else 0,
            cancelled=stats.cancelled if stats else 0,
        )  # fmt: skip


def run_daemon(settings: Settings, *, config_path: Path | None = None, db_url: str | None = None) -> int:
    """`llm-monitor run`: serve until SIGTERM/SIGINT; returns the exit code (startup errors raise)."""
    daemon = Daemon(settings, config_path=config_path, db_url=db_url, install_signals=True)
    return asyncio.run(daemon.serve())
