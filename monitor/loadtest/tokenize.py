"""Token counts in the server's own tokens, and prompts of an exact length built from them.

``open_counter`` probes, in order, vLLM's ``POST /tokenize`` (``{"model", "prompt"}`` -> ``{"count"}``,
at the server root), llama-server's ``POST /tokenize`` (``{"content"}`` -> ``{"tokens"}``) and
llama-cpp-python's ``POST /extras/tokenize`` (``{"input"}`` -> ``{"tokens"}``). A server without
any of them is counted with a local Hugging Face tokenizer named by ``--tokenizer`` (offline), else
with ``estimate_tokens``. ``Counter.source`` says which ("server /tokenize", "tokenizer NAME",
"estimate"), and ``Counter.reason`` why the server's own was not used.

Replies are untrusted (``DoctorClient``: capped bodies, no redirects, cleaned text). A reply that
stops making sense during the build falls back to the estimate for that text, and says so.

``PromptBuilder.text(n, key)`` grows or trims a text of words until the counter says ``n``
(a few counts per prompt, bounded); ``key`` makes texts of the same length differ, so a prefix
cache sees no sharing that the workload did not ask for.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.doctor.client import DoctorClient
from monitor.errors import ConfigError, MonitorError
from monitor.meter_measurement import estimate_tokens

__all__ = ["Counter", "PromptBuilder", "open_counter"]

# Common English words: most are one token in BPE vocabularies, so lengths can be hit exactly.
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more what its can time "
    "who out them about some into only other then than new also two these may first any like now my such "
    "over year people man made well very work way even back good many most where much day make through long "
    "before great little world just old state same under last know life found here while high each might "
    "place part take small water light house city story music river garden window morning letter paper "
    "market school family number country table mountain summer winter animal station bridge"
).split()
MAX_COUNTS_PER_PROMPT = 5
MAX_PROMPT_TOKENS = 1_000_000
CONCURRENCY = 8
_PROBE_TEXT = "Hello world, this is a token count."

CountFn = Callable[[str], Awaitable[int | None]]


@dataclass(slots=True)
class Counter:
    source: str  # "server /tokenize", "server /extras/tokenize", "tokenizer NAME", "estimate"
    _count: CountFn
    reason: str | None = None  # why the server's own count is not the source
    overhead: dict[str, int] = field(default_factory=dict)  # tokens the server adds per endpoint (vLLM only)
    fallbacks: int = 0  # texts the server stopped counting (then estimated)
    calls: int = 0

    async def count(self, text: str) -> int:
        self.calls += 1
        n = await self._count(text)
        if n is None:
            self.fallbacks += 1
            return estimate_tokens(text)
        return n


async def open_counter(client: DoctorClient, model: str | None, tokenizer: str | None) -> Counter:
    """The best counter this server allows (see the module docstring)."""
    reasons: list[str] = []
    for path, body_of, parse in _SERVER_STYLES:
        try:
            reply = await client.post_root_json(path, body_of(_PROBE_TEXT, model))
        except MonitorError as exc:
            reasons.append(f"{path}: {exc}")
            continue
        probe = parse(reply.data) if reply.status == 200 else None
        if probe is not None and probe > 0:
            counter = Counter(f"server {path}", _server_count(client, path, body_of, parse, model))
            if body_of is _vllm_body:
                counter.overhead = await _vllm_overhead(client, model, probe)
            return counter
        reasons.append(f"{path}: {reply.detail if reply.status != 200 else 'no token count in the reply'}")
    reason = "the server has no usable /tokenize (" + "; ".join(dict.fromkeys(reasons)) + ")"
    if tokenizer is not None:
        return Counter(f"tokenizer {tokenizer}", _hf_count(tokenizer), reason)
    return Counter("estimate", _estimate, reason)


async def _vllm_overhead(client: DoctorClient, model: str | None, bare: int) -> dict[str, int]:
    """Tokens vLLM adds around a prompt text: special tokens (completion), the chat template (chat)."""
    out: dict[str, int] = {}
    model_field = {"model": model} if model else {}
    bodies: dict[str, dict[str, Any]] = {
        "completion": {"prompt": _PROBE_TEXT, "add_special_tokens": True, **model_field},
        "chat": {"messages": [{"role": "user", "content": _PROBE_TEXT}], **model_field},
    }
    for endpoint, body in bodies.items():
        try:
            reply = await client.post_root_json("/tokenize", body)
        except MonitorError:
            continue
        total = _vllm_parse(reply.data) if reply.status == 200 else None
        if total is not None and total >= bare:
            out[endpoint] = total - bare
    return out


def _vllm_body(text: str, model: str | None) -> dict[str, Any]:
    # No special tokens: the count of the text itself (a completion adds its BOS, a chat its template).
    body: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
    if model:
        body["model"] = model
    return body


def _vllm_parse(data: Any) -> int | None:
    if isinstance(data, dict):
        count = data.get("count")
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count
        return _tokens_parse(data)
    return None


def _tokens_parse(data: Any) -> int | None:
    tokens = data.get("tokens") if isinstance(data, dict) else None
    return len(tokens) if isinstance(tokens, list) else None


_SERVER_STYLES: tuple[tuple[str, Callable[[str, str | None], dict[str, Any]], Callable[[Any], int | None]], ...] = (
    ("/tokenize", _vllm_body, _vllm_parse),  # vLLM; llama-server takes "content" instead (next)
    ("/tokenize", lambda text, model: {"content": text}, _tokens_parse),
    ("/extras/tokenize", lambda text, model: {"input": text, **({"model": model} if model else {})}, _tokens_parse),
)


def _server_count(
    client: DoctorClient,
    path: str,
    body_of: Callable[[str, str | None], dict[str, Any]],
    parse: Callable[[Any], int | None],
    model: str | None,
) -> CountFn:
    async def count(text: str) -> int | None:
        try:
            reply = await client.post_root_json(path, body_of(text, model))
        except MonitorError:
            return None
        return parse(reply.data) if reply.status == 200 else None

    return count


async def _estimate(text: str) -> int | None:
    return estimate_tokens(text)


def _hf_count(name: str) -> CountFn:
    """A local Hugging Face tokenizer, loaded offline (no hub download at run time)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("--tokenizer: needs the transformers package (pip install transformers)") from None
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--tokenizer: cannot load {name!r} offline: {first[:200]}") from None

    async def count(text: str) -> int | None:
        return len(tok.encode(text, add_special_tokens=False))

    return count


@dataclass(slots=True)
class PromptBuilder:
    """Texts of an exact token count (as ``counter`` counts), reproducible from ``seed``."""

    counter: Counter
    seed: int = 0
    ratio: float = 1.0  # tokens per word, learnt from the counts so far
    exact: int = 0
    inexact: int = 0
    _gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))

    def words(self, key: str, n: int) -> list[str]:
        rng = random.Random(f"{self.seed}:{key}")
        return [rng.choice(_WORDS) for _ in range(n)]

    async def text(self, n_tokens: int, key: str) -> tuple[str, int]:
        """A text of ``n_tokens`` tokens (or the nearest below it that the bounded search found), and its count."""
        if not 1 <= n_tokens <= MAX_PROMPT_TOKENS:
            raise ConfigError(f"--input-tokens: {n_tokens} is out of range 1..{MAX_PROMPT_TOKENS}")
        async with self._gate:
            pool = self.words(key, int(n_tokens / max(self.ratio, 0.05)) * 2 + 16)
            return await self._fit(pool, n_tokens)

    async def _fit(self, pool: list[str], n_tokens: int) -> tuple[str, int]:
        words = max(1, round(n_tokens / max(self.ratio, 0.05)))
        best: tuple[str, int] | None = None  # the longest text at or under n_tokens
        over: tuple[str, int] | None = None  # the shortest text above it
        for _ in range(MAX_COUNTS_PER_PROMPT):
            words = max(1, min(words, len(pool)))
            text = " ".join(pool[:words])
            got = await self.counter.count(text)
            if got == n_tokens:
                self.exact += 1
                self._learn(words, got)
                return text, got
            if got < n_tokens and (best is None or got > best[1]):
                best = (text, got)
            if got > n_tokens and (over is None or got < over[1]):
                over = (text, got)
            self._learn(words, got)
            step = round((n_tokens - got) / max(self.ratio, 0.05))
            words += step if step != 0 else (1 if got < n_tokens else -1)
            if words > len(pool):
                pool = pool + pool[: words - len(pool)]
        if best is not None:
            # Words move the count in steps of 2+: pad with short pieces that are one token each in most vocabularies.
            for pad in (" a", ".", " ,"):
                text = best[0] + pad * (n_tokens - best[1])
                if await self.counter.count(text) == n_tokens:
                    self.exact += 1
                    return text, n_tokens
        self.inexact += 1
        chosen = best if best is not None else over
        assert chosen is not None
        return chosen

    def _learn(self, words: int, tokens: int) -> None:
        if words >= 8 and tokens > 0:
            self.ratio = tokens / words
