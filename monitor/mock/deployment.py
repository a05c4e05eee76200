"""The mock's deployment knobs: chat-template, tokenizer and weights variants, and vLLM-shaped logprobs.

Each knob changes what one fingerprint component sees and nothing else, so a test can flip one at
run time (`POST /_mock/config`) and expect exactly that drift. Logprobs follow vLLM 0.32's
`ChatCompletionLogProbs` (choices[i].logprobs.content[j] = {token, logprob, bytes, top_logprobs});
their distribution is a function of the generated token and `weights_variant`, and every value gets
`logprob_noise` relative noise, as batching gives a real server, so drift thresholds are exercised.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from monitor.mock import glm
from monitor.mock.config import MockConfig
from monitor.mock.engine import Generation

__all__ = ["chat_logprobs", "template_messages", "tokenizer_ids", "weights_key"]

_TOKENIZER_SHIFT = 7


def template_messages(config: MockConfig, messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The messages the chat template renders: 'no_system' drops system messages (a real template bug)."""
    if config.chat_template_variant == "no_system":
        return [m for m in messages if m.get("role") != "system"]
    return list(messages)


def tokenizer_ids(config: MockConfig, tokens: list[int]) -> list[int]:
    """Token ids as /tokenize reports them: another tokenizer version numbers its vocabulary differently."""
    shift = config.tokenizer_variant * _TOKENIZER_SHIFT
    return [t + shift for t in tokens] if shift else tokens


def weights_key(config: MockConfig) -> str:
    """Part of the reply key: other weights choose another canned reply."""
    return f":w{config.weights_variant}" if config.weights_variant else ""


def _unit(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _position(token_id: int, k: int, weights: int) -> list[tuple[int, float]]:
    """The top-k (token id, probability) after `token_id` under these weights, the token itself first."""
    top = 0.55 + 0.4 * _unit("top", weights, token_id)
    rest = 1.0 - top
    others = [
        (token_id + 1 + i, rest * (0.5 ** (i + 1)) * (0.5 + _unit("alt", weights, token_id, i))) for i in range(k - 1)
    ]
    return [(token_id, top), *others]


def _entry(token_id: int, logprob: float) -> dict[str, Any]:
    text = glm.token_str(token_id)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(gen: Generation, top_k: int, config: MockConfig, rng: random.Random) -> dict[str, Any]:
    """`choices[i].logprobs` for a generated reply, each logprob jittered by `logprob_noise`."""
    content = []
    for token_id in gen.token_ids:
        tops = [
            _entry(t, math.log(p) * (1.0 + rng.uniform(-config.logprob_noise, config.logprob_noise)))
            for t, p in _position(token_id, max(1, top_k), config.weights_variant)
        ]
        content.append({**tops[0], "top_logprobs": tops[:top_k]})
    return {"content": content}
