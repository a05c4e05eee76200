"""Drift soak: fingerprint a real server, change one thing at a time, then watch it unchanged for an hour.

Starts llama.cpp's llama-server (or vLLM) from tests/realservers/servers.py on 127.0.0.1 with the
tiny Qwen2 model, takes the first fingerprint as the baseline, then:

1. restarts it once unchanged and once per change (chat template, tokenizer, model weights twice,
   stop tokens, context size), fingerprints each `--runs-per-change` times against the baseline and
   reports which components drifted: the expected one must, a plain restart must not;
2. restarts it unchanged and fingerprints it every `--interval-s` for `--soak-s`, counting every
   component reported as drift (each one is a false alarm) and every transient read error.

The comparison is monitor.fingerprint's own (collect + compare.judge), with the default
FingerprintSettings (TV over the top-5 of the first 4 tokens, threshold 0.2). Variant models are
written into a temporary directory by make_model.py with the llama venv's python; the cached model
is never touched. Bounded in time, loopback only, not run in CI.

Run: python benchmarks/drift_soak.py [--server llama-server --soak-s 3600 --interval-s 15]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _drift_variants import CHANGES, Change, vllm_model_link
from _machine import cpu_model

from monitor.config import TargetSettings
from monitor.config.deployment import FingerprintSettings
from monitor.doctor.client import DoctorClient
from monitor.fingerprint.collect import Reading, collect
from monitor.fingerprint.compare import judge
from tests.realservers.servers import SERVERS, RealServer, ServerSpec, servers_root


def _spec_for(base: ServerSpec, change: Change, workdir: Path) -> ServerSpec:
    def argv(root: Path, port: int) -> list[str]:
        args = base.argv(root, port)
        if base.name == "vllm":  # served from workdir/model, the symlink the changes repoint
            args[args.index("--model") + 1] = str(workdir / "model")
        return change.argv(args, workdir)

    return dataclasses.replace(base, argv=argv)


class Watcher:
    """The baseline per component and what each fingerprint said about it."""

    def __init__(self, settings: FingerprintSettings) -> None:
        self.settings = settings
        self.baseline: dict[str, tuple[str, Any]] = {}

    async def fingerprint(self, base_url: str) -> tuple[list[str], list[str], dict[str, str]]:
        """(drifted components, components that failed to read, drift details)."""
        target = TargetSettings(name="soak", base_url=base_url, timeout_s=120)
        async with aiohttp.ClientSession() as session:
            readings = await collect(DoctorClient(session, target, None), self.settings)
        return self.judge(readings)

    def judge(self, readings: list[Reading]) -> tuple[list[str], list[str], dict[str, str]]:
        drifted, errors, details = [], [], {}
        for r in readings:
            if r.status == "error":
                errors.append(r.component)
                continue
            if r.component not in self.baseline:
                self.baseline[r.component] = (r.status, r.value)
                continue
            v = judge(
                r.component, self.baseline[r.component], (r.status, r.value),
                metric=self.settings.logprob_metric, threshold=self.settings.logprob_threshold,
            )  # fmt: skip
            if v.changed:
                drifted.append(r.component)
                details[r.component] = f"{v.before} -> {v.after} {v.detail}".strip()
        return drifted, errors, details


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


async def run(args: argparse.Namespace) -> None:
    base = SERVERS[args.server]
    why = base.missing()
    if why is not None:
        raise SystemExit(why)
    watcher = Watcher(FingerprintSettings())
    log(f"machine: {cpu_model()}; server {base.version(servers_root())}")
    with tempfile.TemporaryDirectory(prefix="drift-soak-") as tmp:
        workdir = Path(tmp)
        unchanged = _spec_for(base, Change("unchanged", "-"), workdir)
        if base.name == "vllm":
            vllm_model_link(workdir)
        with RealServer(unchanged, workdir) as server:
            drifted, errors, _ = await watcher.fingerprint(server.base_url)
            log(f"baseline taken ({len(watcher.baseline)} components; errors {errors})")
        rows = []
        for change in CHANGES[base.name]:
            change.prepare(workdir)
            spec = _spec_for(base, change, workdir)
            fired: Counter[str] = Counter()
            details: dict[str, str] = {}
            with RealServer(spec, workdir) as server:
                for _ in range(args.runs_per_change):
                    drifted, errors, det = await watcher.fingerprint(server.base_url)
                    fired.update(drifted)
                    details.update(det)
            caught = not fired if change.expected == "-" else fired.get(change.expected, 0) == args.runs_per_change
            rows.append((change, fired, caught))
            log(f"{change.name}: fired {dict(fired)} caught={caught}")
            for comp, text in details.items():
                log(f"    {comp}: {text[:300]}")
        print(f"\n| change | must drift | caught | components that drifted (runs of {args.runs_per_change}) |")
        print("|---|---|---|---|")
        for change, fired, caught in rows:
            shown = ", ".join(f"{c} {n}" for c, n in sorted(fired.items())) or "none"
            print(f"| {change.name} | {change.expected} | {'yes' if caught else 'NO'} | {shown} |")
        print(flush=True)
        if base.name == "vllm":
            vllm_model_link(workdir)
        await soak(args, watcher, unchanged, workdir)


async def soak(args: argparse.Namespace, watcher: Watcher, base: ServerSpec, workdir: Path) -> None:
    runs, false_alarms, errors = 0, Counter[str](), Counter[str]()
    started = time.monotonic()
    with RealServer(base, workdir) as server:
        log(f"soak: unchanged server, a fingerprint every {args.interval_s:g} s for {args.soak_s:g} s")
        while time.monotonic() - started < args.soak_s:
            t0 = time.monotonic()
            drifted, errs, details = await watcher.fingerprint(server.base_url)
            runs += 1
            false_alarms.update(drifted)
            errors.update(errs)
            for comp, text in details.items():
                log(f"FALSE ALARM {comp}: {text[:300]}")
            if runs % 20 == 0:
                log(f"soak: {runs} fingerprints, false alarms {sum(false_alarms.values())}, read errors {dict(errors)}")
            await asyncio.sleep(max(0.0, args.interval_s - (time.monotonic() - t0)))
    minutes = (time.monotonic() - started) / 60
    alarms = sum(false_alarms.values())
    print(
        f"\nsoak: {runs} fingerprints of an unchanged {base.name} over {minutes:.0f} min "
        f"({runs * len(watcher.baseline)} component comparisons): "
        f"false alarms {alarms} {dict(false_alarms)}, read errors {dict(errors)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=sorted(CHANGES), default="llama-server")
    parser.add_argument("--soak-s", type=float, default=3600.0, help="how long the unchanged server is watched")
    parser.add_argument("--interval-s", type=float, default=15.0, help="between two fingerprints in the soak")
    parser.add_argument("--runs-per-change", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
