"""The one way this project opens an aiohttp session toward the servers it watches.

Idle keep-alive connections are dropped after `KEEPALIVE_S`, well under the idle timeouts of the
servers we talk to: llama.cpp's server (cpp-httplib) and vLLM/SGLang (uvicorn) close an idle
connection after 5 s, gunicorn after 2 s; aiohttp's own default keeps one for 15 s. With the
default, a request sent on a connection the server is closing at that moment fails with
`ServerDisconnectedError` although the server is healthy (seen against llama-server with requests
5.0 s apart): a false alarm. Reusing only connections idle for less than a second keeps the
doctor's and the load runner's bursts on warm connections and never races a server's timeout.
"""

from __future__ import annotations

import aiohttp

__all__ = ["KEEPALIVE_S", "target_session"]

KEEPALIVE_S = 1.0


def target_session(*, timeout: aiohttp.ClientTimeout | None = None, limit: int = 100) -> aiohttp.ClientSession:
    """A session for requests to targets; the caller owns it (and closes it). `limit=0`: no pool cap."""
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=KEEPALIVE_S)
    return aiohttp.ClientSession(timeout=timeout or aiohttp.ClientTimeout(total=None), connector=connector)
