"""A SIGHUP reload reaches every consumer: the scheduler, the alert engine, the dispatcher, the API, the dashboard.

The daemon runs in this process with its signal handlers installed, serves real loopback HTTP, and
probes the bundled mock; the test edits its config file and sends the process a real SIGHUP.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from monitor.config import parse_settings
from monitor.daemon import Daemon
from tests.conftest import chat_probe, completion_probe
from tests.mockserver import MockProcess
from tests.receivers import WebhookReceiver
from tests.test_daemon import daemon_config, run_daemon_in_task, wait_for

# Once a year: the probe is configured but never runs during the test, so it has no results.
YEARLY = "0 0 1 1 *"


async def _sighup(daemon: Daemon, caplog: pytest.LogCaptureFixture, needle: str) -> None:
    before = caplog.text.count(needle)
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_for(lambda: caplog.text.count(needle) > before, what=f"{needle!r} after SIGHUP")


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_sighup_reload_reaches_the_api_and_the_dashboard(
    mock: MockProcess, sqlite_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor")
    config = tmp_path / "monitor.yaml"
    raw = daemon_config(mock.base_url, sqlite_db_url, chat_probe(cron=YEARLY, max_tokens=8))
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    async with (
        WebhookReceiver() as hook,
        run_daemon_in_task(parse_settings(raw), config_path=config, install_signals=True) as daemon,
        aiohttp.ClientSession() as http,
    ):
        api = str(daemon.api_url)
        status, overview = await _get(http, f"{api}/api/v1/overview")
        assert status == 200 and [row["probe"] for row in overview["rows"]] == ["chat"]

        # A config that does not validate changes nothing, anywhere.
        config.write_text("probes: [{name: chat, target: nowhere}]\n", encoding="utf-8")
        await _sighup(daemon, caplog, "reload rejected")
        assert daemon.reloads == 0
        status, overview = await _get(http, f"{api}/api/v1/overview")
        assert [row["probe"] for row in overview["rows"]] == ["chat"]

        # The chat probe goes, a completion probe, a rule and a receiver come.
        raw["probes"] = [completion_probe(name="added", interval_s=1, max_tokens=4)]
        raw["rules"] = [
            {"name": "added-failing", "kind": "consecutive_failures", "count": 1, "scope": {"probe": "added"}}
        ]
        raw["receivers"] = [{"name": "added-hook", "format": "generic", "url": hook.url}]
        config.write_text(yaml.safe_dump(raw), encoding="utf-8")
        await _sighup(daemon, caplog, "reloaded")
        assert daemon.reloads == 1

        # The API: the overview lists the new probe only (the old one never stored a result).
        status, overview = await _get(http, f"{api}/api/v1/overview")
        assert status == 200
        assert [(row["probe"], row["configured"]) for row in overview["rows"]] == [("added", True)]
        assert (await _get(http, f"{api}/api/v1/probes/mock/added"))[0] == 200
        assert (await _get(http, f"{api}/api/v1/probes/mock/chat"))[0] == 404

        # The dashboard's pages: the same probes, and the new rule where silences are made.
        status, page = await _get(http, f"{api}/")
        assert status == 200 and "/probes/mock/added" in page and "/probes/mock/chat" not in page
        assert (await _get(http, f"{api}/probes/mock/added"))[0] == 200
        assert (await _get(http, f"{api}/probes/mock/chat"))[0] == 404
        status, page = await _get(http, f"{api}/alerts")
        assert status == 200 and "added-failing" in page

        # The new probe runs, its new rule fires, and the new receiver is notified.
        await wait_for(lambda: _results(http, api, "added"), what="a result of the added probe")
        mock.configure(status=503)
        (firing,) = await hook.wait_for(1, timeout_s=20)
        assert firing.json["status"] == "firing" and firing.json["receiver"] == "added-hook"
        assert firing.json["alert"]["name"] == "added-failing"
        status, alerts = await _get(http, f"{api}/api/v1/alerts")
        assert [(a["rule"], a["state"]) for a in alerts] == [("added-failing", "firing")]


async def _results(http: aiohttp.ClientSession, api: str, probe: str) -> int:
    status, rows = await _get(http, f"{api}/api/v1/results?probe={probe}")
    assert status == 200
    return len(rows)
