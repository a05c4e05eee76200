"""Locust as child processes: command lines, start, stop, and their logs.

Locust (gevent) and asyncio never share a process, so the runner starts ``python -m locust``
headless: one process, or a master plus N ``--worker`` processes. Their output goes to log files
in the run's work directory; only the master (or the single process) writes the JSONL stream.
On Linux every child gets SIGTERM if the runner dies, so a killed runner leaves no load behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from monitor.errors import MonitorError
from monitor.loadtest.goodput import format_goodput
from monitor.loadtest.params import LoadParams, locust_stages

__all__ = ["LoadTestError", "LocustProcesses", "locust_args", "locustfiles_dir", "require_locust", "worker_args"]

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Seconds the master waits for workers to connect before giving up.
WORKERS_MAX_WAIT_S = 30
STOP_GRACE_S = 15.0
# Shapes and open-loop stages end the test themselves; -t is a backstop this much later.
STAGES_MARGIN_S = 3
DEFAULT_MASTER_PORT = 5557  # Locust's default, what `llm-monitor loadtest --worker` joins


class LoadTestError(MonitorError):
    """The load generator could not run (Locust failed to start, workers never connected, ...)."""


LOCUST_MISSING = "loadtest needs Locust, which is not installed: pip install 'llm-monitor[load]'"


def require_locust() -> None:
    """Raise LoadTestError naming the `load` extra when ``python -m locust`` cannot run here.

    ``find_spec`` locates the package without importing it, so gevent never monkey-patches this
    (asyncio) process. The children run on this interpreter, so what it finds is what they get.
    """
    if importlib.util.find_spec("locust") is None:
        raise LoadTestError(LOCUST_MISSING)


def locustfiles_dir() -> Path:
    """``monitor/_locustfiles`` in a wheel, ``locustfiles/`` in a checkout."""
    for candidate in (_PACKAGE_DIR / "_locustfiles", _PACKAGE_DIR.parent / "locustfiles"):
        if (candidate / "_common.py").is_file():
            return candidate
    raise LoadTestError(f"locustfiles not found next to {_PACKAGE_DIR} (reinstall llm-monitor)")


def scenario_files(params: LoadParams) -> list[Path]:
    """The locustfiles the master loads: open-loop scheduler, or users (plus a shape)."""
    base = locustfiles_dir()
    if params.open_loop:
        return [base / "llm_open.py"]
    files = [base / "llm.py"]
    if params.stages is not None:
        files.append(base / "llm_shape.py")
    return files


def worker_files() -> list[Path]:
    # Workers load both user classes; the master decides which ones they spawn.
    base = locustfiles_dir()
    return [base / "llm.py", base / "llm_open.py"]


def _llm_options(params: LoadParams) -> list[str]:
    args = [
        "--llm-endpoint", params.endpoint,
        "--llm-max-tokens", str(params.max_tokens),
        "--llm-timeout", f"{params.timeout_s:g}",
        "--llm-arrival", params.arrival,
        "--llm-max-inflight", str(params.max_inflight),
        "--llm-max-body-bytes", str(params.target.max_body_bytes),
    ]  # fmt: skip
    if params.target.model:
        args += ["--llm-model", params.target.model]
    if params.api_key_env:
        args += ["--llm-api-key-env", params.api_key_env]
    if params.prompts is not None:
        args += ["--llm-prompts", str(params.prompts.resolve())]
    if not params.stream:
        args.append("--llm-no-stream")
    if not params.continuous_usage:
        args.append("--llm-no-continuous-usage")
    if params.extra_body:
        args += ["--llm-extra-body", params.extra_body]
    if params.rate is not None:
        args += ["--llm-rate", f"{params.rate:g}"]
    stages = locust_stages(params)
    if stages is not None:
        args += ["--llm-stages", stages]
    if params.goodput:
        args += ["--llm-goodput", format_goodput(params.goodput)]
    return args


def locust_args(
    params: LoadParams,
    out: Path,
    *,
    master_port: int | None = None,
    trace: Path | None = None,
    plan: Path | None = None,
) -> list[str]:
    """The command line of the single Locust process, or of the master when ``master_port`` is set."""
    users = params.users_or_schedulers
    spawn_rate = params.spawn_rate if params.spawn_rate is not None and not params.open_loop else users
    args = [
        sys.executable, "-m", "locust",
        "-f", ",".join(str(f) for f in scenario_files(params)),
        "--headless", "--only-summary",
        "--host", params.target.base_url,
        "-u", str(users), "-r", f"{spawn_rate:g}",
        # A margin so a shape or a sweep ends by itself; the runner stops it on time anyway.
        "-t", f"{math.ceil(params.run_s + (STAGES_MARGIN_S if params.stages is not None or params.replay else 0))}s",
        "--exit-code-on-error", "0",
        "--llm-out", str(out),
        *_llm_options(params),
    ]  # fmt: skip
    if params.csv_prefix:
        args += ["--csv", params.csv_prefix]
    if trace is not None:
        args += ["--llm-trace", str(trace)]
    if plan is not None:
        args += ["--llm-plan", str(plan)]
    if master_port is not None:
        # Remote workers need the master on a reachable interface; local ones only on loopback.
        bind_host = params.master_bind[0] if params.master_bind else ("*" if params.remote_workers else "127.0.0.1")
        args += [
            "--master", "--master-bind-host", bind_host, "--master-bind-port", str(master_port),
            "--expect-workers", str(params.workers + params.remote_workers),
            "--expect-workers-max-wait", str(WORKERS_MAX_WAIT_S),
        ]  # fmt: skip
    return args


def worker_args(master_host: str, master_port: int, *, api_key_env: str | None, timeout_s: float = 60.0) -> list[str]:
    """A worker: it gets every other ``--llm-*`` value from the master when the test starts."""
    args = [
        sys.executable, "-m", "locust",
        "-f", ",".join(str(f) for f in worker_files()),
        "--worker", "--master-host", master_host, "--master-port", str(master_port),
        "--llm-timeout", f"{timeout_s:g}",
    ]  # fmt: skip
    if api_key_env:
        args += ["--llm-api-key-env", api_key_env]
    return args


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the runner dies (even by kill -9)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


class LocustProcesses:
    """Owns the Locust children of one run: starts them, forwards stop requests, reaps them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.master: asyncio.subprocess.Process | None = None
        self.workers: list[asyncio.subprocess.Process] = []
        self._logs: list[IO[bytes]] = []

    async def _spawn(self, args: Sequence[str], log_name: str) -> asyncio.subprocess.Process:
        log = _open_log(self.workdir / log_name)
        self._logs.append(log)
        logger.debug("starting %s", " ".join(args))
        return await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip

    async def start(
        self, params: LoadParams, out: Path, *, trace: Path | None = None, plan: Path | None = None
    ) -> None:
        if not params.distributed:
            self.master = await self._spawn(locust_args(params, out, trace=trace, plan=plan), "locust.log")
            return
        if params.master_bind is not None:
            port = params.master_bind[1]
        else:
            port = DEFAULT_MASTER_PORT if params.remote_workers else free_port()
        master = locust_args(params, out, master_port=port, trace=trace, plan=plan)
        self.master = await self._spawn(master, "locust.log")
        for i in range(params.workers):
            args = worker_args("127.0.0.1", port, api_key_env=params.api_key_env, timeout_s=params.timeout_s)
            self.workers.append(await self._spawn(args, f"worker-{i + 1}.log"))

    @property
    def running(self) -> bool:
        return self.master is not None and self.master.returncode is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the master first (it tells the workers to stop), then to the workers."""
        for proc in [self.master, *self.workers]:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    async def wait(self) -> int:
        assert self.master is not None
        return await self.master.wait()

    async def close(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop whatever still runs (SIGTERM, then SIGKILL after ``grace_s``) and close the logs."""
        procs = [p for p in [self.master, *self.workers] if p is not None]
        try:
            if any(p.returncode is None for p in procs):
                self.signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(grace_s):
                        await asyncio.gather(*(p.wait() for p in procs))
                except TimeoutError:
                    logger.warning("Locust did not stop within %.0f s; killing it", grace_s)
                    self.signal(signal.SIGKILL)
                    await asyncio.gather(*(p.wait() for p in procs))
            else:
                await asyncio.gather(*(p.wait() for p in procs))
        finally:
            for log in self._logs:
                log.close()

    def last_log_line(self) -> str:
        """The last line Locust logged (usually the error), for a one-line message."""
        try:
            text = (self.workdir / "locust.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no output"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else "no output"
