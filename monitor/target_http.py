"""The one way this project opens an aiohttp session toward the servers it watches.

Two races between a kept-alive connection and a server that closes it are handled here, since
either turns a healthy server into a false alarm:

- **Idle close.** Idle keep-alive connections are dropped after `KEEPALIVE_S`, well under the idle
  timeouts of the servers we talk to: llama.cpp's server (cpp-httplib) and vLLM/SGLang (uvicorn)
  close an idle connection after 5 s, gunicorn after 2 s; aiohttp's own default keeps one for
  15 s. With the default, a request sent on a connection the server is closing at that moment
  fails with `ServerDisconnectedError` (seen against llama-server with requests 5.0 s apart).
  Reusing only connections idle for less than a second keeps the doctor's and the load runner's
  bursts on warm connections and never races a server's timeout.
- **Close after a reply.** llama-server closes the connection after every streamed (chunked)
  reply without saying so (no `Connection: close`). The reply's last chunk hands the connection
  back to the pool a moment before its FIN is read, and a request that takes it in that moment
  fails before the server gets it: `ClientOSError: Can not write request body`, or
  `ServerDisconnectedError` with no response (seen from the daemon, whose four probes start
  together, after its loop had stalled 0.3 s under CI load). aiohttp resends such a request once
  itself, but only for idempotent methods; a completion is a POST. Ours have no effect beyond the
  reply (RFC 9112 section 9.3.1 lets a client resend a request it knows to be idempotent), so
  `_resend_on_a_reused_connection` sends a POST once more, on another connection, when the pooled
  connection it went out on was closed before a byte of the response came. A connection opened
  for the request and closed unanswered is the server's own failure, and is reported as such.
  The resent request's timings include the failed attempt (about a millisecond in the case seen:
  nothing was received on it).
"""

from __future__ import annotations

import contextvars
import logging
from types import SimpleNamespace

import aiohttp

__all__ = ["KEEPALIVE_S", "target_session"]

logger = logging.getLogger(__name__)

KEEPALIVE_S = 1.0

# Set by the middleware around each attempt; the trace callback marks it when the pool lends a connection.
_REUSED: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("llm_monitor_reused", default=None)


async def _on_reuse(
    _session: aiohttp.ClientSession, _ctx: SimpleNamespace, _params: aiohttp.TraceConnectionReuseconnParams
) -> None:
    attempt = _REUSED.get()
    if attempt is not None:
        attempt[0] = True


async def _resend_on_a_reused_connection(
    req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """``handler(req)``, sent once more when a POST's pooled connection closed before any response."""
    if req.method != "POST":
        return await handler(req)  # aiohttp resends the idempotent methods itself
    reused = [False]
    token = _REUSED.set(reused)
    try:
        return await handler(req)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise  # no connection at all: nothing was reused
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        if not reused[0]:
            raise
        logger.debug("resending %s %s: its kept-alive connection was closed first (%s)", req.method, req.url, exc)
    finally:
        _REUSED.reset(token)
    return await handler(req)


def target_session(*, timeout: aiohttp.ClientTimeout | None = None, limit: int = 100) -> aiohttp.ClientSession:
    """A session for requests to targets; the caller owns it (and closes it). `limit=0`: no pool cap."""
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=KEEPALIVE_S)
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_on_reuse)
    return aiohttp.ClientSession(
        timeout=timeout or aiohttp.ClientTimeout(total=None),
        connector=connector,
        trace_configs=[trace],
        middlewares=(_resend_on_a_reused_connection,),
    )
