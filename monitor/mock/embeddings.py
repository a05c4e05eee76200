"""`POST /v1/embeddings` for the mock: vLLM's OpenAI embeddings wire, with deterministic toy vectors.

A vector is the hashed character 1-3-gram counts of the text, normalised: texts sharing surface
text point the same way, so a golden answer and a reply that repeats it score near 1 and unrelated
texts near 0, the shape a real embedding model gives (not its numbers). Same text, same vector.
Served for the configured model only (another name is vLLM's 404), behind the mock's API key.

Routed by `create_mock_app`: `web.post("/v1/embeddings", embeddings.create_embeddings)`.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from monitor.mock import glm, wire
from monitor.mock.protocol import RequestError, check_json_content_type, check_model, parse_body
from monitor.mock.state import STATE_KEY

__all__ = ["DIMENSIONS", "EmbeddingsRequest", "create_embeddings", "toy_embedding"]

DIMENSIONS = 256
_MAX_INPUTS = 2048


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # vLLM ignores fields it does not know

    model: str | None = None
    input: str | list[str] = Field(...)


def toy_embedding(text: str) -> list[float]:
    """A unit vector of the hashed character 1-3-grams of `text` (casefolded); zeros for an empty text."""
    folded = " ".join(text.casefold().split())
    vector = [0.0] * DIMENSIONS
    for n in (1, 2, 3):
        for i in range(len(folded) - n + 1):
            digest = hashlib.blake2b(folded[i : i + n].encode("utf-8", "replace"), digest_size=4).digest()
            vector[int.from_bytes(digest, "big") % DIMENSIONS] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


async def create_embeddings(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    check_json_content_type(request.headers.get("Content-Type", ""))
    body = parse_body(await request.read(), EmbeddingsRequest)
    check_model(body.model, config.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > _MAX_INPUTS:
        raise RequestError(f"input must hold 1 to {_MAX_INPUTS} texts", param="input")
    tokens = sum(len(glm.encode(text)) for text in texts)
    reply = {
        "id": f"embd-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": config.model,
        "data": [{"index": i, "object": "embedding", "embedding": toy_embedding(t)} for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }
    return web.Response(body=wire.dumps(reply, config.flavor), content_type="application/json")
