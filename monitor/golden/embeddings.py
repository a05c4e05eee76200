"""The target's own `/v1/embeddings` (OpenAI wire; vLLM serves it for embedding models).

The request follows the probes' rules for untrusted servers: the target's headers and API key, no
redirects followed, the body read up to `max_body_bytes`, the target's timeouts; every failure is a
one-line `GoldenError` (server text cleaned and redacted), never an exception of aiohttp's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from monitor.config import TargetSettings
from monitor.envelope import http_error_detail, redirect_detail
from monitor.errors import MonitorError
from monitor.http_body import read_capped
from monitor.untrusted import Untrusted

__all__ = ["GoldenError", "cosine", "fetch_embeddings"]

# all-MiniLM has 384 dimensions, the large OpenAI models 3072; past this a reply is not an embedding.
_MAX_DIMENSIONS = 65_536


class GoldenError(MonitorError):
    """A golden answer could not be graded (the embeddings call failed, the model did not load)."""


async def fetch_embeddings(
    session: aiohttp.ClientSession,
    target: TargetSettings,
    model: str,
    texts: Sequence[str],
    *,
    headers: Mapping[str, str],
    api_key: str | None,
) -> list[list[float]]:
    """One POST base_url/embeddings for `texts`; their vectors in order, or GoldenError naming what failed.

    `headers` are the probe's (`monitor.probes.request_headers`: the target's headers and API key).
    """
    untrusted = Untrusted(api_key)
    url = target.base_url + "/embeddings"
    body = json.dumps({"model": model, "input": list(texts)}, ensure_ascii=False).encode()
    timeout = aiohttp.ClientTimeout(total=target.timeout_s, connect=target.connect_timeout_s)
    try:
        async with session.post(url, data=body, headers=dict(headers), timeout=timeout, allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                raise GoldenError(
                    "embeddings: " + redirect_detail(resp.status, resp.headers.get("Location"), untrusted)
                )
            raw = await read_capped(resp, target.max_body_bytes)
            if raw is None:
                raise GoldenError(f"embeddings: reply body exceeds max_body_bytes={target.max_body_bytes}")
            if resp.status >= 400:
                raise GoldenError("embeddings: " + http_error_detail(resp.status, raw, untrusted))
    except TimeoutError:
        raise GoldenError(f"embeddings: no answer within {target.timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        text = untrusted.line(str(exc))
        raise GoldenError(f"embeddings: {type(exc).__name__}" + (f": {text}" if text else "")) from None
    return _vectors(raw, len(texts))


def _vectors(raw: bytes, expected: int) -> list[list[float]]:
    try:
        data: Any = json.loads(raw)
        items = sorted(data["data"], key=lambda item: int(item.get("index", 0)))
        vectors = [[float(x) for x in item["embedding"]] for item in items]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise GoldenError("embeddings: the reply is not an OpenAI embeddings list (data[].embedding)") from None
    if len(vectors) != expected:
        raise GoldenError(f"embeddings: {len(vectors)} vectors for {expected} inputs")
    sizes = {len(v) for v in vectors}
    if len(sizes) != 1 or not 0 < sizes.pop() <= _MAX_DIMENSIONS:
        raise GoldenError("embeddings: the vectors are empty, too long or of different lengths")
    if not all(math.isfinite(x) for v in vectors for x in v):
        raise GoldenError("embeddings: a vector holds NaN or infinity")
    return vectors


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity clamped to [0, 1] (an opposite meaning scores 0, like an unrelated one)."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return max(0.0, min(1.0, dot / norm)) if norm > 0 else 0.0
