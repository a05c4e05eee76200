"""`target_session` never reuses a connection a server may be closing (a false alarm otherwise).

llama-server and uvicorn (vLLM) close idle connections after 5 s; with aiohttp's default 15 s
keep-alive, a request sent as the server closes fails with ServerDisconnectedError (reproduced
against the conformance tier's llama-server with requests 5.0 s apart). Here a real loopback server
records which client connection carried each request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from monitor.target_http import KEEPALIVE_S, target_session


@pytest.fixture(name="server")
async def fix_server() -> AsyncIterator[tuple[str, list[object]]]:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, keepalive_timeout=3600)  # the server would keep it: only our side may drop it
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/", peers
    finally:
        await runner.cleanup()


async def test_back_to_back_requests_share_a_connection_and_idle_ones_do_not(
    server: tuple[str, list[object]],
) -> None:
    url, peers = server
    async with target_session() as session:
        for _ in range(2):
            async with session.get(url) as resp:
                await resp.read()
        await asyncio.sleep(KEEPALIVE_S + 0.5)
        async with session.get(url) as resp:
            await resp.read()
    assert peers[0] == peers[1], peers  # a burst stays on one warm connection
    assert peers[2] != peers[1], peers  # idle past KEEPALIVE_S: a new connection


def test_the_keepalive_is_under_the_servers_idle_timeouts() -> None:
    # cpp-httplib (llama-server) and uvicorn (vLLM, SGLang) close after 5 s, gunicorn after 2 s.
    assert KEEPALIVE_S < 2.0
