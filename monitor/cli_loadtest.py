"""CLI of the loadtest feature: ``llm-monitor loadtest`` (parse flags -> LoadParams -> run_loadtest)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from monitor.cli_options import config_option, db_option, target_options
from monitor.config import ProbeSettings, Settings, TargetSettings, load_settings, to_seconds
from monitor.errors import ConfigError
from monitor.loadtest.params import Arrival, EndpointChoice, LoadParams, Sweep
from monitor.loadtest.workload import WorkloadSpec

__all__ = ["LoadFlags", "build_params", "register", "run_loadtest", "run_worker"]


def _host_port(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        from monitor.loadtest.process import DEFAULT_MASTER_PORT

        return value, DEFAULT_MASTER_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option}: {value!r} is not HOST or HOST:PORT")
    return host or "127.0.0.1", int(port)


def _target(settings: Settings, name: str | None, base_url: str | None, model: str | None) -> TargetSettings:
    if base_url is not None:
        target = settings.target("default")
    elif name is not None:
        try:
            target = settings.target(name)
        except KeyError:
            names = ", ".join(t.name for t in settings.targets) or "none defined"
            raise ConfigError(f"--target: unknown target {name!r} (targets: {names})") from None
    elif len(settings.targets) == 1:
        target = settings.targets[0]
    else:
        names = ", ".join(t.name for t in settings.targets) or "none defined"
        raise ConfigError(f"--target: the config has several targets, pick one ({names})")
    return target.model_copy(update={"model": model}) if model is not None and base_url is None else target


@click.command("loadtest")
@config_option()
@target_options
@click.option("--target", "target_name", help="Target of the config to load (needed when it has several).")
@click.option("--api-key-env", help="Environment variable holding the API key (default: the target's api_key_env).")
@db_option
@click.option(
    "--endpoint",
    type=click.Choice(["chat", "completion", "both"]),
    default="both",
    show_default=True,
    help="Endpoint(s) to load; both alternates them.",
)
@click.option("--users", type=int, help="Closed loop: concurrent users, each sending its next request on reply.")
@click.option("--rate", type=float, help="Open loop: arrivals per second (latency counts from the intended send).")
@click.option(
    "--arrival",
    type=click.Choice(["constant", "poisson"]),
    default="poisson",
    show_default=True,
    help="Open loop: arrival process.",
)
@click.option("--spawn-rate", type=float, help="Closed loop: users started per second (default: all at once).")
@click.option("--duration", default="1m", show_default=True, help="Run time (30s, 2m, 1h); per step with --sweep.")
@click.option("--shape", help="ramp, step or spike up to --users/--rate, or stages like 8@30s,~64@1m.")
@click.option(
    "--sweep",
    is_flag=True,
    help="Open loop: raise the rate step by step until --slo breaks or the server saturates; report the knee.",
)
@click.option("--sweep-step", type=float, help="Rate increase per sweep step (default: the first rate).")
@click.option("--sweep-steps", type=int, default=10, show_default=True, help="Most sweep steps.")
@click.option("--slo", help='Objectives, e.g. "ttft_p95_ms<=500,itl_p95_ms<=50,error_rate<=0.01". Exit 1 if missed.')
@click.option(
    "--workers", type=int, default=0, show_default=True, help="Local Locust worker processes (0: one process)."
)
@click.option(
    "--remote-workers",
    type=int,
    default=0,
    show_default=True,
    help="Also wait for this many workers joining from other machines (see --master-host).",
)
@click.option(
    "--master-host", help="HOST[:PORT]: with --worker, the master to join; otherwise where the master listens."
)
@click.option("--worker", "worker_mode", is_flag=True, help="Run only a Locust worker for a master elsewhere.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write a self-contained HTML report.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON instead of tables.")
@click.option("--baseline", type=int, help="Compare with this earlier run id (regression table).")
@click.option("--max-tokens", type=int, default=128, show_default=True, help="max_tokens of every request.")
@click.option("--prompts", type=click.Path(path_type=Path), help="JSONL prompts (messages, prompt or ShareGPT).")
@click.option("--no-stream", is_flag=True, help="Send non-streaming requests (no TTFT, no ITL).")
@click.option("--no-continuous-usage", is_flag=True, help="Do not ask for per-chunk usage (continuous_usage_stats).")
@click.option("--extra-body", help="JSON object merged into every request, e.g. '{\"ignore_eos\": true}'.")
@click.option(
    "--max-inflight",
    type=int,
    default=512,
    show_default=True,
    help="Open loop: requests in flight per generator process before arrivals queue.",
)
@click.option("--timeout", "timeout_s", type=float, help="Socket silence timeout, seconds (default: target's).")
@click.option("--csv", "csv_prefix", help="Also write Locust's own CSV statistics with this prefix.")
@click.option("--canary-interval", default="10s", show_default=True, help="How often the config's probes run.")
@click.option("--no-canaries", is_flag=True, help="Do not run the config's probes during the load.")
@click.option(
    "--no-server-metrics", is_flag=True, help="Do not scrape the target's /metrics every second (queue, KV cache)."
)
@click.option(
    "--goodput", "goodput_spec",
    help='Per-request clauses, e.g. "ttft_ms<=500,tpot_ms<=50" (or vLLM\'s "ttft:500 tpot:50"): goodput_rate/rps.',
)  # fmt: skip
@click.option("--input-tokens", help="Prompt lengths in server tokens: 512, uniform:128:1024, normal:512:64.")
@click.option("--output-tokens", help="Output lengths (max_tokens per request), same forms as --input-tokens.")
@click.option("--tokenizer", help="Local Hugging Face tokenizer to count tokens when the server has no /tokenize.")
@click.option("--ignore-eos", is_flag=True, help="Ask the server to generate exactly the drawn output length.")
@click.option("--turns", help="Multi-turn sessions: turns per conversation (2, uniform:2:6); the history is resent.")
@click.option("--shared-prefixes", type=int, default=0, show_default=True, help="N system prompts shared by requests.")
@click.option("--prefix-tokens", type=int, default=0, show_default=True, help="Length of each shared prefix, tokens.")
@click.option("--trace", "trace_path", type=click.Path(path_type=Path), help="Replay a Mooncake/BurstGPT trace.")
@click.option(
    "--trace-format", type=click.Choice(["auto", "mooncake", "burstgpt"]), default="auto", show_default=True,
    help="Format of --trace.",
)  # fmt: skip
@click.option("--trace-speedup", type=float, default=1.0, show_default=True, help="Replay the trace this much faster.")
@click.option("--seed", type=int, help="Seed for drawn lengths and prompts (the same plan every run).")
def loadtest(**kw: Any) -> None:
    """Load-test a target with Locust: LLM metrics, an SLO gate, history in the DB.

    Exit 0: the SLO passed (without --slo: some request succeeded). 1: it failed, or the run
    aborted. 2: bad input. 3: no verdict, the load generator itself was the bottleneck.
    """
    flags = LoadFlags(**kw)
    if flags.worker_mode:
        run_worker(flags.master_host, flags.api_key_env, flags.timeout_s)
    if flags.config is None and flags.base_url is None:
        raise ConfigError("give --base-url URL or -c FILE")
    settings = load_settings(
        flags.config, base_url=flags.base_url, model=flags.model if flags.base_url else None, db_url=flags.db
    )
    target = _target(settings, flags.target_name, flags.base_url, flags.model)
    params = build_params(settings, target, flags)
    sys.exit(run_loadtest(settings, params, html=flags.html_path, as_json=flags.as_json))


@dataclass(frozen=True, slots=True)
class LoadFlags:
    """The flags of `llm-monitor loadtest`, as click parsed them (one field per option)."""

    config: Path | None
    base_url: str | None
    model: str | None
    target_name: str | None
    api_key_env: str | None
    db: str | None
    endpoint: EndpointChoice
    users: int | None
    rate: float | None
    arrival: Arrival
    spawn_rate: float | None
    duration: str
    shape: str | None
    sweep: bool
    sweep_step: float | None
    sweep_steps: int
    slo: str | None
    workers: int
    remote_workers: int
    master_host: str | None
    worker_mode: bool
    html_path: Path | None
    as_json: bool
    baseline: int | None
    max_tokens: int
    prompts: Path | None
    no_stream: bool
    no_continuous_usage: bool
    extra_body: str | None
    max_inflight: int
    timeout_s: float | None
    csv_prefix: str | None
    canary_interval: str
    no_canaries: bool
    no_server_metrics: bool
    goodput_spec: str | None
    input_tokens: str | None
    output_tokens: str | None
    tokenizer: str | None
    ignore_eos: bool
    turns: str | None
    shared_prefixes: int
    prefix_tokens: int
    trace_path: Path | None
    trace_format: str
    trace_speedup: float
    seed: int | None


def _workload(flags: LoadFlags) -> WorkloadSpec | None:
    """The workload flags as one spec, checked (a bad distribution or trace is a usage error here)."""
    from monitor.loadtest.workload import checked_spec

    spec = WorkloadSpec(
        input_tokens=flags.input_tokens, output_tokens=flags.output_tokens, tokenizer=flags.tokenizer,
        ignore_eos=flags.ignore_eos, turns=flags.turns, shared_prefixes=flags.shared_prefixes,
        prefix_tokens=flags.prefix_tokens, trace=flags.trace_path, trace_format=flags.trace_format,
        trace_speedup=flags.trace_speedup, seed=flags.seed,
    )  # fmt: skip
    if spec == WorkloadSpec(trace_format=flags.trace_format, trace_speedup=flags.trace_speedup):
        return None
    return checked_spec(spec)


def build_params(settings: Settings, target: TargetSettings, flags: LoadFlags) -> LoadParams:
    """Validate the flags into LoadParams (ConfigError names the flag)."""
    from monitor.loadtest.goodput import parse_goodput
    from monitor.loadtest.slo import parse_slo

    duration_s = to_seconds(flags.duration)
    sweep = None
    if flags.sweep:
        start = flags.rate if flags.rate is not None else 1.0
        step = flags.sweep_step if flags.sweep_step is not None else start
        if step <= 0 or flags.sweep_steps < 1:
            raise ConfigError("--sweep-step and --sweep-steps must be positive")
        sweep = Sweep(start, step, flags.sweep_steps, duration_s, warmup_s=min(5.0, duration_s / 4))
    master_bind = _host_port(flags.master_host, "--master-host") if flags.master_host else None
    # Canaries are the config's probes for this target; --base-url alone has none worth running.
    canaries: tuple[ProbeSettings, ...] = ()
    if flags.config is not None and not flags.no_canaries:
        canaries = tuple(p for p in settings.probes if p.target == target.name)
    workload = _workload(flags)
    if workload is not None:
        from monitor.loadtest.workload import check_params

        check_params(workload, endpoint=flags.endpoint, users=flags.users, rate=flags.rate, sweep=flags.sweep,
                     shape=flags.shape)  # fmt: skip
    return LoadParams(
        target=target,
        api_key_env=flags.api_key_env or target.api_key_env,
        endpoint=flags.endpoint,
        users=flags.users,
        rate=None if sweep is not None else flags.rate,
        arrival=flags.arrival,
        spawn_rate=flags.spawn_rate,
        duration_s=duration_s,
        shape=flags.shape,
        sweep=sweep,
        objectives=parse_slo(flags.slo) if flags.slo is not None else (),
        workers=flags.workers,
        remote_workers=flags.remote_workers,
        master_bind=master_bind,
        max_tokens=flags.max_tokens,
        prompts=_checked_prompts(flags.prompts),
        stream=not flags.no_stream,
        continuous_usage=not flags.no_continuous_usage,
        max_inflight=flags.max_inflight,
        extra_body=_checked_extra_body(flags.extra_body),
        timeout_s=flags.timeout_s if flags.timeout_s is not None else target.chunk_timeout_s,
        csv_prefix=flags.csv_prefix,
        canaries=canaries,
        canary_interval_s=max(1.0, to_seconds(flags.canary_interval)),
        baseline_id=flags.baseline,
        server_metrics=not flags.no_server_metrics,
        goodput=parse_goodput(flags.goodput_spec) if flags.goodput_spec is not None else (),
        workload=workload,
    )


def _checked_extra_body(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--extra-body: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("--extra-body: must be a JSON object, for example '{\"ignore_eos\": true}'")
    return text


def _checked_prompts(path: Path | None) -> Path | None:
    """Read the prompts file once here, so a bad line is a usage error and not a Locust crash."""
    if path is not None:
        from monitor.loadtest.prompts import load_prompts

        load_prompts(path)
    return path


def run_loadtest(settings: Settings, params: LoadParams, *, html: Path | None, as_json: bool) -> int:
    """Run and store one load test, print the result; the exit code is the SLO verdict."""
    from monitor.loadtest.html import render_html
    from monitor.loadtest.runner import run_loadtest_async
    from monitor.loadtest.summary import outcome_json, print_outcome

    outcome = asyncio.run(run_loadtest_async(settings, params, sys.stderr))
    if as_json:
        print(json.dumps(outcome_json(outcome), ensure_ascii=False, indent=2))
    else:
        print_outcome(Console(), outcome)
    if html is not None:
        html.write_text(render_html(outcome), encoding="utf-8")
        print(f"HTML report: {html}", file=sys.stderr)
    return outcome.exit_code


def run_worker(master_host: str | None, api_key_env: str | None, timeout_s: float | None) -> NoReturn:
    """A Locust worker for a master elsewhere; it gets every other option from the master.

    This process becomes the worker (exec): a SIGTERM from systemd, docker or kubectl, or a kill of
    this pid, reaches Locust itself. Run as a child, it outlived a killed parent, still connecting.
    """
    from monitor.loadtest.process import require_locust, worker_args

    require_locust()
    if not master_host:
        raise ConfigError("--worker needs --master-host HOST[:PORT] (where `llm-monitor loadtest` runs)")
    host, port = _host_port(master_host, "--master-host")
    args = worker_args(host, port, api_key_env=api_key_env, timeout_s=timeout_s or 60.0)
    # The worker exits when the master quits.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(args[0], args)


def register(group: click.Group) -> None:
    """Add this feature's commands to the root `llm-monitor` group."""
    group.add_command(loadtest)
