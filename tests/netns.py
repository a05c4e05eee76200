"""Real hosts for multi-host tests: Linux network namespaces joined by veth pairs to one switch.

``Hosts(n)`` builds ``llmm-<pid>-a``, ``-b``, ... each with ``lo`` and an ``eth0`` at ``10.231.0.<i>/24``, plus a
``llmm-<pid>-sw`` namespace holding the bridge every ``eth0`` is plugged into. The bridge lives in its own
namespace, not the root one, so the machine's firewall (a Docker-style FORWARD DROP, br_netfilter) never sees the
traffic, and the addresses cannot collide with anything: no interface of this run is in the root namespace.
Everything is removed in ``__exit__``, also on failure; namespaces left by a killed run (its pid is gone) are
removed when the next one starts. Needs root and iproute2.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

PREFIX = "llmm-"
SUBNET = "10.231.0"
_OURS = re.compile(rf"^{PREFIX}(\d+)-[a-z]+$")


def unavailable() -> str | None:
    """Why namespaces cannot be built here (one line), or None."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def clean_stale() -> list[str]:
    """Delete namespaces of earlier runs whose process is gone; returns their names."""
    stale = [ns for ns in namespaces() if (m := _OURS.match(ns)) and not _alive(int(m.group(1)))]
    for ns in stale:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=10)
    return stale


@dataclass
class Host:
    ns: str
    addr: str

    def cmd(self, args: Sequence[str]) -> list[str]:
        """``args`` run inside this host's namespace, with the namespace's name as host name (its own UTS
        namespace, so Locust's worker ids and messages name the host). Every step execs: the pid is ``args``'s."""
        rename = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c", rename, self.ns, *args]


@dataclass
class Hosts:
    """``n`` hosts on one switch: ``with Hosts(4) as hosts: hosts[0].addr`` ..."""

    n: int
    hosts: list[Host] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 26:
            raise ValueError(f"Hosts(n): 1..26 hosts, got {self.n}")
        self.tag = f"{PREFIX}{os.getpid()}"

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __enter__(self) -> Hosts:
        clean_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _new_ns(self, name: str) -> str:
        if name in namespaces():  # ours from an earlier Hosts in this same process
            _ip("netns", "delete", name)
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def _build(self) -> None:
        switch = self._new_ns(f"{self.tag}-sw")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for i, letter in enumerate(string.ascii_lowercase[: self.n]):
            ns = self._new_ns(f"{self.tag}-{letter}")
            # Made inside the switch namespace, so no interface of this run ever shows up in the root one.
            _ip("-n", switch, "link", "add", f"p{letter}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", switch, "link", "set", f"p{letter}", "master", "br0", "up")
            addr = f"{SUBNET}.{i + 1}"
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            self.hosts.append(Host(ns, addr))

    def close(self) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=10)
        self._made.clear()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def run_in(host: Host, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """``ip netns exec NS args...``, waited for, text output captured."""
    return subprocess.run(host.cmd(args), capture_output=True, text=True, **kw)


def popen_in(host: Host, args: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
    """``ip netns exec NS args...`` started in the background (``ip netns exec`` execs, so the pid is the child's)."""
    return subprocess.Popen(host.cmd(args), text=True, **kw)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (``/proc/PID/task/*/children``); gone processes are skipped."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids += process_tree(int(child))
    return pids


@contextmanager
def mock_on(host: Host, port: int, *, ttft_ms: float, itl_ms: float) -> Iterator[subprocess.Popen[str]]:
    """The bundled mock on ``host`` at ``host.addr:port``, from the moment it listens until the block ends."""
    args = [sys.executable, "-m", "monitor.mock.server", "--host", host.addr, "--port", str(port),
            "--ttft-ms", f"{ttft_ms:g}", "--itl-ms", f"{itl_ms:g}"]  # fmt: skip
    proc = popen_in(host, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the mock prints one line once it listens
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
