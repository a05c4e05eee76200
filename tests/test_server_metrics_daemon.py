"""The daemon scrapes targets' /metrics, stores the intervals, serves them and alerts on them (real mock, real DB).

A rule over a server metric must not fire on an idle mock and must fire (and reach a webhook)
once the mock is loaded; a target whose /metrics is missing is stored as errors, never as zeros.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from monitor.config import parse_settings
from monitor.errors import ConfigError
from monitor.metric_catalog import SERVER_METRICS
from monitor.scrape_jobs import ServerScrapes
from monitor.server_metrics import FIELDS
from monitor.server_metrics.scrape import NO_METRICS_ENDPOINT
from monitor.store import connect
from monitor.store.server_metrics_repo import ServerMetricsStore, ServerPoint
from tests.conftest import chat_probe
from tests.mockserver import MockProcess
from tests.receivers import WebhookReceiver
from tests.test_daemon import run_daemon_in_task, wait_for

BUSY = {
    "name": "server-busy", "kind": "threshold", "metric": "server_requests_running", "agg": "max", "op": ">",
    "value": 2, "window_s": 8, "min_samples": 1, "scope": {"target": "mock"},
    "annotations": {"summary": "{value} requests running on the server"},
}  # fmt: skip


def _config(mock: MockProcess, db_url: str, hook: WebhookReceiver) -> dict[str, Any]:
    return {
        "storage": {"url": db_url},
        "targets": [
            # A CI core shared with a real server under load can hold this process off its core for seconds;
            # the idle scrapes below must not fail on the scrape timeout then (once, at 5 s, they did).
            {"name": "mock", "base_url": mock.base_url, "timeout_s": 20, "metrics": {"interval_s": 1, "timeout_s": 20}},
            # The same server, but a /metrics that is not there.
            {"name": "bare", "base_url": mock.base_url, "metrics": {"interval_s": 1, "url": mock.root_url + "/nope"}},
        ],
        "probes": [chat_probe(interval_s=1, max_tokens=4)],
        "rules": [BUSY],
        "receivers": [{"name": "hook", "url": hook.url}],
        "api": {"port": 0},
        "daemon": {"shutdown_grace_s": 5, "absence_eval_interval_s": 1},
    }


async def _points(db_url: str, target: str) -> list[ServerPoint]:
    engine = await connect(db_url)
    try:
        store = ServerMetricsStore.from_engine(engine)
        return await store.points(target, since=datetime.now(UTC) - timedelta(hours=1))
    finally:
        await engine.dispose()


async def _load(base_url: str, requests: int) -> None:
    """`requests` concurrent streamed chats that each take a few seconds on the slowed mock."""
    body = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 60, "stream": True}
    async with aiohttp.ClientSession() as http:

        async def one() -> None:
            async with http.post(base_url + "/chat/completions", json=body) as resp:
                await resp.read()

        await asyncio.gather(*(one() for _ in range(requests)))


async def test_scrapes_are_stored_served_and_alerted_on(mock: MockProcess, sqlite_db_url: str) -> None:
    async with WebhookReceiver() as hook:
        settings = parse_settings(_config(mock, sqlite_db_url, hook))
        async with run_daemon_in_task(settings) as daemon, aiohttp.ClientSession() as http:
            assert daemon.api_url is not None
            # Idle: several scrapes and probe results, and the rule stays quiet.
            await wait_for(lambda: _scraped(sqlite_db_url, "mock", 4), what="four scrapes")
            points = await _points(sqlite_db_url, "mock")
            assert all(p.error is None for p in points)
            assert points[0].interval_s is None and points[-1].interval_s is not None
            assert points[-1].sources["requests_running"] == "vllm:num_requests_running"
            assert points[-1].values["requests_waiting"] == 0.0 and points[-1].values["preemptions"] is None
            assert points[-1].values["generation_tokens_per_s"] is not None
            assert hook.received == []

            bare = await _points(sqlite_db_url, "bare")
            assert bare and {p.error for p in bare} == {NO_METRICS_ENDPOINT}
            assert all(v is None for p in bare for v in p.values.values())

            async with http.get(daemon.api_url + "/api/v1/server-metrics?target=mock&since=10m") as resp:
                assert resp.status == 200
                served = await resp.json()
            assert served[-1]["sources"]["kv_cache_usage"] == "vllm:kv_cache_usage_perc"
            assert set(served[-1]["values"]) == set(FIELDS)
            async with http.get(daemon.api_url + "/api/v1/server-metrics") as resp:
                latest = await resp.json()
            assert set(latest) == {"mock", "bare"} and latest["bare"]["error"] == NO_METRICS_ENDPOINT
            async with http.get(daemon.api_url + "/api/v1/server-metrics?target=nosuch") as resp:
                assert resp.status == 404

            await wait_for(
                lambda: _answered(sqlite_db_url),
                what="a scrape interval with the probe's request in the TTFT histogram",
            )
            # The probe page draws the target's queue, KV-cache and TTFT charts beside the probe's seven; the mock
            # exposes no prefix cache, so that chart is left out rather than drawn empty.
            async with http.get(daemon.api_url + "/probes/mock/chat?window=1h") as resp:
                page = await resp.text()
            assert page.count('<svg class="chart"') == 10, re.findall(r"<figcaption>([^<]*)", page)
            for title in ("Server queue", "Server KV-cache usage", "Server time to first token"):
                assert title in page
            assert "Server prefix-cache hit rate" not in page
            async with http.get(daemon.api_url + "/api/v1/probes/mock/chat?window=1h") as resp:
                detail = await resp.json()
            assert detail["server"] and detail["server"][-1]["mean"]["requests_waiting"] == 0.0

            # Loaded: six slow requests at once; the server reports them running and the rule fires.
            mock.configure(itl_ms=80)
            load = asyncio.create_task(_load(mock.base_url, 6))
            (firing,) = await hook.wait_for(1, timeout_s=20)
            alert = firing.json["alert"]
            assert firing.json["status"] == "firing" and alert["name"] == "server-busy"
            assert alert["target"] == "mock" and "requests running on the server" in alert["annotations"]["summary"]
            await load
            mock.reset()
            resolved = await wait_for(lambda: len(hook.delivered()) >= 2 and hook.delivered(), timeout_s=60)
            assert resolved[1].json["status"] == "resolved"


async def _answered(db_url: str) -> bool:
    return any(p.values["server_ttft_ms_p95"] is not None for p in await _points(db_url, "mock"))


async def _scraped(db_url: str, target: str, n: int) -> bool:
    return len(await _points(db_url, target)) >= n


def test_server_metric_rows_are_the_stored_fields() -> None:
    assert [m.column for m in SERVER_METRICS] == list(FIELDS)
    assert all(m.name.startswith("server_") and m.kind == "server" for m in SERVER_METRICS)


def _rule_config(scope: dict[str, str] | None, metrics: bool) -> dict[str, Any]:
    target: dict[str, Any] = {"name": "mock", "base_url": "http://127.0.0.1:1/v1"}
    if metrics:
        target["metrics"] = {}
    rule = {**BUSY, "scope": scope} if scope is not None else {k: v for k, v in BUSY.items() if k != "scope"}
    return {"targets": [target], "probes": [chat_probe()], "rules": [rule]}


@pytest.mark.parametrize(
    ("scope", "metrics", "error"),
    [
        (None, False, "rules[0].scope: server_requests_running is read from a target's /metrics, and no probed"),
        ({"target": "mock"}, False, "rules[0].scope.target: target 'mock' is not scraped; add targets[].metrics"),
        ({"probe": "chat"}, False, "rules[0].scope.probe: target 'mock' is not scraped; add targets[].metrics"),
        (None, True, None),
        ({"probe": "chat"}, True, None),
        ({"target": "mock"}, True, None),
    ],
)
def test_a_server_metric_rule_needs_a_scraped_target(
    scope: dict[str, str] | None, metrics: bool, error: str | None
) -> None:
    # Checked when the config is read, so check-config and run agree.
    if error is None:
        parse_settings(_rule_config(scope, metrics))
        return
    with pytest.raises(ConfigError) as info:
        parse_settings(_rule_config(scope, metrics))
    assert str(info.value).startswith(error), str(info.value)


async def test_a_reload_reschedules_only_new_and_changed_targets(sqlite_db_url: str) -> None:
    def settings(**metrics: dict[str, Any] | None) -> Any:
        targets = [
            {"name": name, "base_url": "http://127.0.0.1:1/v1", **({"metrics": m} if m is not None else {})}
            for name, m in metrics.items()
        ]
        return parse_settings({"targets": targets, "probes": [chat_probe(target="a")]})

    engine = await connect(sqlite_db_url)
    try:
        async with aiohttp.ClientSession() as http:
            scrapes = ServerScrapes(http, ServerMetricsStore.from_engine(engine), settings(a={}, b={}, c=None))
            assert [(name, interval_s) for name, _, interval_s in scrapes.jobs()] == [
                ("scrape:a", 15.0),
                ("scrape:b", 15.0),
            ]
            changed = scrapes.apply(settings(a={}, b={"interval_s": 5}, c={}, d=None))
            assert [(name, interval_s) for name, _, interval_s in changed] == [("scrape:b", 5.0), ("scrape:c", 15.0)]
            # `a` lost its metrics: its job stays scheduled and does nothing.
            scrapes.apply(settings(a=None, b={"interval_s": 5}, c={}))
            assert await scrapes.scrape("a") is None and scrapes.scrapes == 0
    finally:
        await engine.dispose()
