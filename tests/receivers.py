"""`WebhookReceiver`: a real aiohttp webhook endpoint on 127.0.0.1 that records what it gets.

    async with WebhookReceiver() as hook:
        settings = ... receivers: [{name: ops, url: hook.url}] ...
        ... trigger an alert ...
        (request,) = await hook.wait_for(1)
        assert request.json["status"] == "firing"

        hook.fail_with = 500        # answer 500 to everything (still recorded)
        await hook.stop()           # not listening at all (connection refused)
        await hook.start()          # back, on the same port

Every request is recorded (method, path, query, headers, body, parsed JSON) in `received`, also
while failing. It answers 200 with `reply` as JSON (default `{"ok": true}`; a robot-webhook error
such as `{"errcode": 310000}` can be set). No fixtures here: tests wire it themselves.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

__all__ = ["ReceivedRequest", "WebhookReceiver"]


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    # What was answered (200, or `fail_with`).
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A recording webhook server; an async context manager that starts and stops it."""

    def __init__(self, *, port: int = 0, path: str = "/hook") -> None:
        self._port = port
        self._path = path
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()
        self.received: list[ReceivedRequest] = []
        self.fail_with: int | None = None
        self.reply: Any = {"ok": True}

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1; after a stop, on the same port."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            if self._port == 0:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", 0))
                self._port = int(sock.getsockname()[1])
                sock.close()
            site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening: further requests get connection refused."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_for(self, count: int, *, timeout_s: float = 10.0) -> list[ReceivedRequest]:
        """Wait until at least `count` requests were answered 200; return those (in arrival order)."""

        def ok() -> list[ReceivedRequest]:
            return [r for r in self.received if r.answered == 200]

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(ok()) >= count)
        return ok()

    def delivered(self) -> list[ReceivedRequest]:
        """Requests answered 200 so far."""
        return [r for r in self.received if r.answered == 200]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.fail_with or 200
        self.received.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDict(request.headers),
                body=body,
                answered=status,
            )
        )
        async with self._arrived:
            self._arrived.notify_all()
        if status != 200:
            return web.Response(status=status, text="receiver failing on purpose")
        return web.json_response(self.reply)
