"""`MockProcess`: the mock vLLM server as a real separate process, for tests.

    with MockProcess(itl_ms=5) as mock:
        client = AsyncOpenAI(base_url=mock.base_url, api_key="x")
        mock.configure(stall_after=3)
        ...

It runs `python -m monitor.mock.server --port 0 ...`, waits for the "listening on" line and
reads the bound port from it. `configure`/`reset`/`timings` are synchronous (urllib), so they
also work from async tests (the server lives in another process, so blocking briefly is fine).
No pytest fixtures here: the fixture wiring lives in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["MockProcess", "ReuseClosingServer", "read_request", "serve_raw"]

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_LISTENING = re.compile(r"listening on (http://\S+)/v1")


def _flag(name: str, value: object) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, str(value)]


class MockProcess:
    """A `python -m monitor.mock.server` child process; startup knobs are MockConfig fields."""

    def __init__(self, host: str = "127.0.0.1", **knobs: Any) -> None:
        self.host = host
        self.knobs = knobs
        self.root_url = ""
        self.base_url = ""
        self.output: list[str] = []  # everything the child printed (stdout + stderr)
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> MockProcess:
        args = [sys.executable, "-m", "monitor.mock.server", "--host", self.host, "--port", "0"]
        for name, value in self.knobs.items():
            if value is not None:
                args += _flag(name, value)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        self._process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        lines: queue.Queue[str | None] = queue.Queue()
        # A reader thread keeps draining the pipe so the child can never block on a full pipe.
        self._reader = threading.Thread(target=self._drain, args=(lines,), daemon=True)
        self._reader.start()
        try:
            while True:
                line = lines.get(timeout=STARTUP_TIMEOUT_S)
                if line is None:
                    raise RuntimeError("mock server exited during startup:\n" + "".join(self.output))
                match = _LISTENING.search(line)
                if match:
                    self.root_url = match.group(1)
                    self.base_url = self.root_url + "/v1"
                    return self
        except queue.Empty:
            self.stop()
            raise RuntimeError("mock server did not start in time:\n" + "".join(self.output)) from None

    def _drain(self, lines: queue.Queue[str | None]) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put(None)

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL as a fallback; returns the exit code."""
        process = self._process
        if process is None:
            return None
        self._process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def __enter__(self) -> MockProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _request(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.root_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            raise ValueError(f"{method} {path} -> {exc.code}: {detail}") from None

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Partial run-time update (`POST /_mock/config`); returns the full config."""
        result: dict[str, Any] = self._request("POST", "/_mock/config", knobs)
        return result

    def reset(self) -> dict[str, Any]:
        """Back to the startup config."""
        result: dict[str, Any] = self._request("POST", "/_mock/config", {"reset": True})
        return result

    def timings(self, request_id: str | None = None) -> Any:
        """One request's token send times, or all recent ones (`GET /_mock/timings`)."""
        query = "" if request_id is None else "?" + urllib.parse.urlencode({"request_id": request_id})
        return self._request("GET", "/_mock/timings" + query)

    def clear_timings(self) -> None:
        self._request("DELETE", "/_mock/timings")


@asynccontextmanager
async def serve_raw(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw asyncio TCP server on a free loopback port (each connection to ``handle``); its root URL."""
    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()
        await listener.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """One HTTP/1.1 request off a raw connection (head and a Content-Length body): its path, its headers lower-cased.

    Raises ``asyncio.IncompleteReadError`` when the client closes the connection between requests.
    """
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in head[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in fields.items()}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0].split(" ")[1], headers


SSE_CHAT_REPLY = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":" there."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


class ReuseClosingServer:
    """Serves one reply per connection (keep-alive advertised), then closes it when the next request comes
    (llama.cpp's llama-server closes the connection after every streamed reply, unannounced, and a
    client's reuse races its FIN; others close idle keep-alive connections). ``answer_first=False``:
    every request is closed unanswered, a fresh connection's first one too.

    ``/v1/chat/completions`` gets a whole SSE reply. ``/v1/completions`` gets its headers and one
    event, then the connection breaks: a failure after the response began, which is no reconnect.
    An ``X-Request-Id`` that is not a UUID gets a 400 with an empty body.
    """

    def __init__(self, *, answer_first: bool = True) -> None:
        self.answer_first = answer_first
        self.connections = 0
        self.requests = 0
        self.closed_unanswered = 0
        self.bad_ids: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = not self.answer_first
        self.connections += 1
        try:
            while True:
                path, headers = await read_request(reader)
                self.requests += 1
                if served:
                    self.closed_unanswered += 1
                    return
                served = True
                try:
                    uuid.UUID(headers.get("x-request-id", ""))
                except ValueError:
                    self.bad_ids.append(headers.get("x-request-id", ""))
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
                    await writer.drain()
                    continue
                if path.endswith("/chat/completions"):
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(SSE_CHAT_REPLY), SSE_CHAT_REPLY)
                    )
                    await writer.drain()
                    continue
                event = b'data: {"choices":[{"index":0,"text":"Once","finish_reason":null}]}\n\n'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: keep-alive\r\n\r\n%x\r\n%s\r\n" % (len(event), event)
                )
                await writer.drain()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
