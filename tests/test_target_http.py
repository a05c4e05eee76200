"""`target_session` never makes a false alarm of a server closing a kept-alive connection.

llama-server and uvicorn (vLLM) close idle connections after 5 s; with aiohttp's default 15 s
keep-alive, a request sent as the server closes fails with ServerDisconnectedError (reproduced
against the conformance tier's llama-server with requests 5.0 s apart). Here a real loopback server
records which client connection carried each request.

llama-server also closes the connection after every streamed reply, unannounced: a probe whose
pooled connection was closed before a byte of the response is sent once more and passes (a raw
server that closes kept-alive connections when the next request comes); a fresh connection closed
unanswered, or one closed after the response began, is the server's failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from monitor.probes import Prober
from monitor.target_http import KEEPALIVE_S, target_session
from tests.conftest import chat_probe, completion_probe, one_probe
from tests.mockserver import ReuseClosingServer, serve_raw


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


async def _probe(session: aiohttp.ClientSession, root: str, probe: dict[str, object]) -> tuple[str | None, str | None]:
    result = await Prober(session).run(*one_probe(f"{root}/v1", probe, timeout_s=10))
    return result.error_kind, result.error_detail


async def test_a_post_on_a_kept_alive_connection_closed_unanswered_is_sent_once_more(
    probe_session: aiohttp.ClientSession,
) -> None:
    server = ReuseClosingServer()
    async with serve_raw(server.handle) as root:
        outcomes = [await _probe(probe_session, root, chat_probe(name=f"c{i}")) for i in range(4)]
    assert outcomes == [(None, None)] * 4
    # Probes 2 to 4 each went out on the connection the one before had kept alive; the server closed it.
    assert server.closed_unanswered == 3 and server.requests == 4 + 3 and server.connections == 4
    assert server.bad_ids == []


async def test_a_fresh_connection_closed_unanswered_is_the_servers_failure_and_is_not_resent(
    probe_session: aiohttp.ClientSession,
) -> None:
    server = ReuseClosingServer(answer_first=False)
    async with serve_raw(server.handle) as root:
        kind, detail = await _probe(probe_session, root, chat_probe())
    assert kind == "connect_error" and detail is not None and "server closed the connection" in detail, detail
    assert server.requests == 1 and server.connections == 1


async def test_a_connection_closed_after_the_response_began_is_not_resent(probe_session: aiohttp.ClientSession) -> None:
    server = ReuseClosingServer()
    async with serve_raw(server.handle) as root:
        kind, detail = await _probe(probe_session, root, completion_probe(max_tokens=16))
    assert kind == "stream_error" and detail is not None, detail
    assert server.requests == 1 and server.connections == 1
