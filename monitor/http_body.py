"""Reading a response body from an untrusted server, up to a cap of decoded bytes (aiohttp only).

Below `monitor.probes` and everything that sends requests (the golden answers' embeddings call
imports it, and `monitor.probes` imports them), so any module can take its one capped read here.
"""

from __future__ import annotations

import aiohttp

__all__ = ["read_capped"]


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes | None:
    """The whole decoded body, or None once it passes `max_bytes` (the rest is not read)."""
    parts: list[bytes] = []
    size = 0
    # iter_any yields what aiohttp inflated from each read, so the cap bounds decoded bytes.
    async for data in resp.content.iter_any():
        size += len(data)
        if size > max_bytes:
            resp.close()
            return None
        parts.append(data)
    return b"".join(parts)
