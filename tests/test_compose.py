"""compose.yaml and the Dockerfile, checked by reading them (no Docker engine runs here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from monitor.cli import build_cli
from monitor.config import ENV_VARS, load_settings, named_env_vars

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = [name for name, svc in SERVICES.items() if svc.get("image") == "llm-monitor:latest"]
_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?]([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with the defaults (and a stand-in for required `${VAR:?msg}`)."""
    return _VAR.sub(lambda m: "x" if "?" in m.group(0) else (m.group(2) or ""), value)


def command_of(name: str) -> list[str]:
    command = SERVICES[name]["command"]
    assert isinstance(command, list), f"{name}: use the exec (list) form"
    return [interpolate(str(part)) for part in command]


def parse_llm_monitor(args: list[str]) -> list[str]:
    """Parse with the real click parser, subcommand by subcommand; return the command path."""
    command: click.Command = build_cli()
    ctx = click.Context(command, info_name="llm-monitor")
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        name, *rest = rest  # compose commands put no group options before the subcommand
        sub = command.get_command(ctx, name)
        assert sub is not None, f"unknown command {name!r}"
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)  # raises click.UsageError on a bad option
        command = sub
    return path


def test_expected_services_and_profiles() -> None:
    assert {"postgres", "migrate", "monitor", "locust-master", "locust-worker", "mock", "vllm"} <= set(SERVICES)
    assert SERVICES["mock"]["profiles"] == ["demo"] and SERVICES["vllm"]["profiles"] == ["gpu"]
    # In the demo profile the mock answers under the name the config probes: vllm.
    assert "vllm" in SERVICES["mock"]["networks"]["default"]["aliases"]
    assert "pgdata" in COMPOSE["volumes"] and "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]


@pytest.mark.parametrize("name", OURS)
def test_every_project_command_parses_with_the_real_cli(name: str) -> None:
    path = parse_llm_monitor(command_of(name))
    assert path[0] in {"db", "run", "loadtest", "mock"}


def test_locust_worker_and_master_agree() -> None:
    master = command_of("locust-master")
    worker = command_of("locust-worker")
    port = master[master.index("--master-host") + 1].rsplit(":", 1)[1]
    assert worker[worker.index("--master-host") + 1] == f"locust-master:{port}"
    assert "--worker" in worker and "--remote-workers" in master


def test_vllm_flags_follow_the_incident() -> None:
    command = command_of("vllm")
    assert "--trust-remote-code" in command
    assert int(command[command.index("--max-model-len") + 1]) <= 131072
    gen_dir = command[command.index("--generation-config") + 1]
    mount = next(v for v in SERVICES["vllm"]["volumes"] if v.endswith(f":{gen_dir}:ro"))
    config = yaml.safe_load((ROOT / mount.split(":")[0] / "generation_config.json").read_text(encoding="utf-8"))
    assert {151329, 151336, 151338} <= set(config["eos_token_id"])
    devices = SERVICES["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def _mounted_config(name: str) -> Path:
    for volume in SERVICES[name].get("volumes", []):
        host, _, container = str(volume).partition(":")
        if container.startswith("/etc/llm-monitor/monitor.yaml"):
            return ROOT / host
    raise AssertionError(f"{name} mounts no config")


@pytest.mark.parametrize("name", OURS)
def test_environment_variables_are_ones_the_settings_read(name: str) -> None:
    env = SERVICES[name].get("environment") or {}
    named: set[str] = set()
    if any("/etc/llm-monitor/monitor.yaml" in v for v in SERVICES[name].get("volumes", [])):
        secrets = {k: "x" for k in ("MONITOR_API_TOKEN",)}
        named = named_env_vars(load_settings(_mounted_config(name), environ=secrets))
    for key in env:
        assert key in ENV_VARS or key in named, f"{name}: {key} is read by nothing"
    # The secret the mounted config names is provided (a missing one would stop the daemon at start).
    assert named <= set(env), f"{name}: config names {named - set(env)} but compose does not set it"


def test_healthchecks_and_start_order() -> None:
    for name in ("postgres", "monitor", "mock", "vllm"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["monitor"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["locust-master"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    health = SERVICES["monitor"]["healthcheck"]["test"]
    assert health[:2] == ["CMD", "llm-monitor"] and parse_llm_monitor(health[2:]) == ["check"]
    # The monitor's healthcheck asks /readyz (llm-monitor check) of the port the config binds.
    settings = load_settings(_mounted_config("monitor"), environ={"MONITOR_API_TOKEN": "x"})
    assert any(str(p).endswith(f":{settings.api.port}") for p in SERVICES["monitor"]["ports"])


def test_host_ports_do_not_collide() -> None:
    seen: dict[int, str] = {}
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            parts = str(port).split(":")
            low, _, high = parts[-2].partition("-")  # a range lets `--scale` run replicas side by side
            for host_port in range(int(low), int(high or low) + 1):
                assert host_port not in seen, f"{name} and {seen.get(host_port)} both publish {host_port}"
                seen[host_port] = name
            # Published on loopback only: the API and the model server are not for the whole network.
            assert parts[0] == "127.0.0.1", f"{name} publishes {port} on every interface"


def test_mounted_config_passes_check_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")} | {"MONITOR_API_TOKEN": "x"}
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", "-c", str(_mounted_config("monitor"))],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert ": ok (" in out.stdout


def test_dockerfile_is_multi_stage_non_root_without_compilers() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"(?m)^FROM ", text)[1:]
    assert len(stages) >= 2, "multi-stage build"
    final = stages[-1]
    assert "slim" in final.splitlines()[0]
    assert re.search(r"(?m)^USER (?!root)\S+", final), "the final stage runs as a non-root user"
    assert not re.search(r"gcc|build-essential|apt-get install", final), "no compilers in the final stage"
    assert "COPY --from=" in final
    assert re.search(r'ENTRYPOINT \["llm-monitor"\]', final)
