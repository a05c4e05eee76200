"""The /metrics scraper against the real mock and against hostile servers next to a healthy one.

Hostile servers are small real aiohttp apps on loopback: no /metrics (404), a redirect, garbage,
HTML, a gzip bomb, a 1 GB body, a server that never finishes, and one that quotes the API key back.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from monitor.config import TargetSettings
from monitor.server_metrics.scrape import NO_METRICS_ENDPOINT, Scraper
from tests.mockserver import MockProcess

MIB = 1024 * 1024
API_KEY = "sk-scrape-secret-123456"
HEALTHY = (
    "# TYPE vllm:num_requests_waiting gauge\n"
    'vllm:num_requests_waiting{engine="0"} 3.0\n'
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    'vllm:kv_cache_usage_perc{engine="0"} 0.25\n'
)


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _target(root: str, path: str = "/metrics", **metrics: object) -> TargetSettings:
    return TargetSettings.model_validate(
        {"name": "t", "base_url": f"{root}/v1", "metrics": {"url": f"{root}{path}", **metrics}}
    )


def _gzip_bomb(decoded_bytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MIB)
    return b"".join(packer.compress(block) for _ in range(decoded_bytes // MIB)) + packer.flush()


def _hostile_routes(seen: list[dict[str, str]]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/metrics")
    async def healthy(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text=HEALTHY, content_type="text/plain")

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:9/metrics")

    @routes.get("/garbage")
    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b'vllm:num_requests_waiting{engine="0 3\n\xff\xfe{{{', content_type="text/plain")

    @routes.get("/html")
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Login required</body></html>", content_type="text/html")

    @routes.get("/echo")
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=403, text=f"denied for {request.headers.get('Authorization')}")

    return routes


def _unbounded_routes(bomb: bytes) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/bomb")
    async def gzip_bomb(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})
        await resp.prepare(request)
        try:
            for i in range(0, len(bomb), 16384):
                await resp.write(bomb[i : i + 16384])
        except (ConnectionError, RuntimeError):
            pass
        return resp

    @routes.get("/huge")
    async def huge(request: web.Request) -> web.StreamResponse:
        # 1 GB of valid-looking comment lines, if the client read it all (it must stop at its cap).
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        line = b"# " + b"x" * (MIB - 3) + b"\n"
        try:
            for _ in range(1024):
                await resp.write(line)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    @routes.get("/slow")
    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            for _ in range(600):  # a byte a second: never done before the timeout
                await resp.write(b"#")
                await asyncio.sleep(1.0)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    return routes


@pytest.fixture(name="hostile")
async def fix_hostile(aiohttp_server: AiohttpServer) -> tuple[str, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    app = web.Application()
    app.add_routes(_hostile_routes(seen))
    app.add_routes(_unbounded_routes(_gzip_bomb(64 * MIB)))
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}", seen


async def test_the_mock_exposition_is_read(session: aiohttp.ClientSession, mock: MockProcess) -> None:
    target = TargetSettings.model_validate({"name": "mock", "base_url": mock.base_url, "metrics": {}})
    scraper = Scraper(session, target, None)
    assert scraper.url == mock.root_url + "/metrics"
    result = await scraper.scrape()
    assert result.error is None and result.sample is not None, result.error
    sample = result.sample
    assert sample.sources["requests_waiting"] == "vllm:num_requests_waiting"
    assert sample.sources["kv_cache_usage"] == "vllm:kv_cache_usage_perc"
    assert sample.sources["prompt_tokens"] == "vllm:prompt_tokens_total"
    assert sample.value("requests_waiting") == 0.0
    assert sample.histograms["ttft_s"] is not None


async def test_a_server_without_metrics_is_named(session: aiohttp.ClientSession, mock: MockProcess) -> None:
    mock.configure(flavor="openai")  # the plain OpenAI flavour serves no /metrics
    target = TargetSettings.model_validate({"name": "mock", "base_url": mock.base_url, "metrics": {}})
    result = await Scraper(session, target, None).scrape()
    assert result.sample is None and result.error == NO_METRICS_ENDPOINT


async def test_healthy_server_gets_the_key_and_no_body_headers(
    session: aiohttp.ClientSession, hostile: tuple[str, list[dict[str, str]]]
) -> None:
    root, seen = hostile
    result = await Scraper(session, _target(root), API_KEY).scrape()
    assert result.sample is not None and result.sample.value("requests_waiting") == 3.0
    assert seen[-1]["Authorization"] == f"Bearer {API_KEY}" and "Content-Type" not in seen[-1]
    assert seen[-1]["Accept"].startswith("text/plain")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/nothing-here", NO_METRICS_ENDPOINT),
        ("/redirect", "HTTP 302: redirect to http://127.0.0.1:9/metrics"),
        ("/garbage", "not Prometheus text exposition"),
        ("/html", "not Prometheus text exposition"),
        ("/bomb", "the exposition exceeds max_body_bytes=1048576"),
        ("/huge", "the exposition exceeds max_body_bytes=1048576"),
        ("/echo", "HTTP 403: denied for Bearer [redacted]"),
    ],
)
async def test_hostile_servers_give_one_line_errors(
    session: aiohttp.ClientSession, hostile: tuple[str, list[dict[str, str]]], path: str, expected: str
) -> None:
    root, _ = hostile
    result = await Scraper(session, _target(root, path, max_body_bytes=MIB), API_KEY).scrape()
    assert result.sample is None and result.error is not None
    assert result.error.startswith(expected) or expected in result.error, result.error
    assert "\n" not in result.error and API_KEY not in result.error and len(result.error) <= 300
    # The healthy route beside it still answers.
    healthy = await Scraper(session, _target(root), API_KEY).scrape()
    assert healthy.sample is not None


async def test_a_server_that_never_finishes_times_out(
    session: aiohttp.ClientSession, hostile: tuple[str, list[dict[str, str]]]
) -> None:
    root, _ = hostile
    result = await Scraper(session, _target(root, "/slow", timeout_s=1), None).scrape()
    assert result.sample is None and result.error == f"no complete answer from {root}/slow within 1 s"


async def test_a_refused_connection_is_named(session: aiohttp.ClientSession, unused_tcp_port: int) -> None:
    result = await Scraper(session, _target(f"http://127.0.0.1:{unused_tcp_port}"), None).scrape()
    assert result.sample is None and result.error is not None
    assert result.error.startswith(f"cannot reach http://127.0.0.1:{unused_tcp_port}/metrics: "), result.error


async def test_an_exposition_without_known_names_is_an_error(
    session: aiohttp.ClientSession, aiohttp_server: AiohttpServer
) -> None:
    async def renamed(request: web.Request) -> web.Response:
        return web.Response(text="# TYPE myserver_queue gauge\nmyserver_queue 4\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", renamed)
    server = await aiohttp_server(app)
    result = await Scraper(session, _target(f"http://127.0.0.1:{server.port}"), None).scrape()
    assert result.sample is None and result.error is not None and "no known server metric" in result.error
