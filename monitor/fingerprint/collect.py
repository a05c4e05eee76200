"""The fingerprint's requests: one `Reading` per component, from fixed prompts sent the same way each run.

Every request goes through `DoctorClient`'s plain JSON calls, so the probes' rules hold: redirects
are not followed, bodies are capped at `max_body_bytes`, server strings are cleaned and the API key
redacted. What a reading keeps is already reduced to what identifies the deployment (ids, counts,
token ids, text), never a timestamp or a request id, so two readings of an unchanged server are equal.

A component the server does not serve (HTTP 404, a 4xx refusing the field, no logprobs in the reply)
reads `not_served`, which is a value like any other. A request that failed for a passing reason
(timeout, refused connection, 5xx, 408, 429) reads `error`: the runner skips it for that run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

from monitor.config.deployment import FingerprintSettings
from monitor.doctor.client import DoctorClient, JsonReply
from monitor.errors import ProbeConnectError, ProbeTimeout

__all__ = ["CHAT", "TOKENIZER_PROMPTS", "Reading", "ReadingStatus", "collect"]

logger = logging.getLogger(__name__)

ReadingStatus = Literal["ok", "not_served", "error"]

# Fixed inputs: changing them changes every stored fingerprint, so they are part of the format.
TOKENIZER_PROMPTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "你好，世界！今天天气很好。",
    "def f(x):\n    return x ** 2  # 12345 67.89",
)
CHAT: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Say hello."},
)
_STOP_MAX_TOKENS = 256  # a reply to "Say hello." ends by itself well before this
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_MAX_TEXT_CHARS = 2000
# A hostile or huge server must not make a huge row: lists and values are cut, and a value still over
# _MAX_VALUE_CHARS is kept as its digest (it still drifts when it changes).
_MAX_MODELS = 50
_MAX_TOKENS = 512
_MAX_FIELD_CHARS = 200
_MAX_VALUE_CHARS = 64 * 1024
# llama.cpp's /props default_generation_settings.params: the sampling a request gets when it omits them.
_LLAMA_DEFAULTS = (
    "temperature", "top_k", "top_p", "min_p", "n_predict", "max_tokens", "repeat_penalty",
    "presence_penalty", "frequency_penalty", "ignore_eos",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reading:
    component: str
    status: ReadingStatus
    value: Any = None  # JSON-serialisable, canonical: equal for an unchanged deployment
    error: str = ""  # one line, for `error` (and why a component is `not_served`)


class _Transient(Exception):
    """A request failed for a reason that says nothing about the deployment."""


class _NotServed(Exception):
    pass


async def collect(client: DoctorClient, settings: FingerprintSettings) -> list[Reading]:
    """One reading per configured component, in `FINGERPRINT_COMPONENTS` order."""
    wanted = settings.effective_components
    readings: dict[str, Reading] = {}
    models = await _reading("models", lambda: _models(client))
    readings["models"] = models
    model = client.target.model or _first_id(models)
    props = await _props(client)  # llama.cpp: build info and sampling defaults, fetched once
    steps = {
        "version": lambda: _version(client, props),
        "tokenizer": lambda: _tokenizer(client, model),
        "chat_template": lambda: _chat_template(client, model),
        "sampling_defaults": lambda: _sampling_defaults(client, model, settings, props),
        "stop_behaviour": lambda: _stop_behaviour(client, model, settings),
    }
    for component, step in steps.items():
        if component in wanted:
            readings[component] = await _reading(component, step)
    if "reply" in wanted or "logprobs" in wanted:
        readings.update(await _reply_and_logprobs(client, model, settings))
    return [readings[c] for c in wanted if c in readings]


async def _reading(component: str, step: Any) -> Reading:
    try:
        return Reading(component, "ok", _bounded(await step()))
    except _NotServed as exc:
        return Reading(component, "not_served", None, str(exc))
    except (_Transient, ProbeConnectError, ProbeTimeout) as exc:
        logger.info("fingerprint %s: %s", component, exc)
        return Reading(component, "error", None, str(exc))


def _bounded(value: Any) -> Any:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if len(text) <= _MAX_VALUE_CHARS:
        return value
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "chars": len(text)}


def _scalar(value: Any) -> Any:
    """A JSON scalar as it came, a string cut; anything nested becomes its type name."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and Infinity are no JSON a database stores
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:_MAX_FIELD_CHARS]
    return type(value).__name__


def _ok(reply: JsonReply) -> dict[str, Any]:
    """The decoded body of a 2xx JSON reply; raises `_NotServed` or `_Transient` otherwise."""
    if reply.status >= 500 or reply.status in _TRANSIENT_STATUSES:
        raise _Transient(reply.detail)
    if reply.status >= 300 or not isinstance(reply.data, dict):
        raise _NotServed(reply.detail if reply.status >= 300 else f"HTTP {reply.status}: not a JSON object")
    data: dict[str, Any] = reply.data
    return data


def _first_id(models: Reading) -> str | None:
    if models.status == "ok" and models.value:
        first: str | None = models.value[0].get("id")
        return first
    return None


async def _models(client: DoctorClient) -> list[dict[str, Any]]:
    data = _ok(await client.get_json("/models"))
    entries = data.get("data")
    if not isinstance(entries, list):
        raise _NotServed("/models has no data list")
    out = []
    for entry in entries[:_MAX_MODELS]:
        if not isinstance(entry, dict):
            continue
        raw_meta = entry.get("meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        item: dict[str, Any] = {
            "id": _scalar(entry.get("id")),
            "root": _scalar(entry.get("root")),
            "parent": _scalar(entry.get("parent")),
            # vLLM's max_model_len; llama.cpp reports the context and the weights' shape under meta.
            "max_model_len": _scalar(entry.get("max_model_len", meta.get("n_ctx"))),
            **{k: _scalar(meta[k]) for k in ("n_ctx_train", "n_vocab", "n_params", "size", "ftype") if k in meta},
        }
        out.append({k: v for k, v in item.items() if v is not None})
    return sorted(out, key=lambda item: str(item.get("id")))


async def _props(client: DoctorClient) -> dict[str, Any] | None | _Transient:
    """llama.cpp's /props; None where it is not served; `_Transient` when it failed for a passing reason.

    A failed /props must not read as "not served": version and sampling_defaults would drift.
    """
    try:
        reply = await client.get_root_json("/props")
    except (ProbeConnectError, ProbeTimeout) as exc:
        return _Transient(str(exc))
    if reply.status >= 500 or reply.status in _TRANSIENT_STATUSES:
        return _Transient(reply.detail)
    if reply.status != 200 or not isinstance(reply.data, dict):
        return None
    return reply.data


def _served(props: dict[str, Any] | None | _Transient) -> dict[str, Any] | None:
    if isinstance(props, _Transient):
        raise props
    return props


async def _version(client: DoctorClient, raw_props: dict[str, Any] | None | _Transient) -> dict[str, Any]:
    reply = await client.get_root_json("/version")
    if reply.status == 200 and isinstance(reply.data, dict) and "version" in reply.data:
        return {"version": str(reply.data["version"])[:200]}
    if reply.status >= 500 or reply.status in _TRANSIENT_STATUSES:
        raise _Transient(reply.detail)
    props = _served(raw_props)
    if props is not None and "build_info" in props:
        return {"build_info": str(props["build_info"])[:200]}
    raise _NotServed(reply.detail)


async def _tokenize(client: DoctorClient, body: dict[str, Any]) -> dict[str, Any]:
    data = _ok(await client.post_root_json("/tokenize", body))
    if not isinstance(data.get("tokens"), list):
        raise _NotServed("/tokenize returned no tokens")
    return data


async def _tokenizer(client: DoctorClient, model: str | None) -> list[list[Any]]:
    out = []
    for prompt in TOKENIZER_PROMPTS:
        # vLLM reads "prompt", llama.cpp "content"; each ignores the other's field.
        data = await _tokenize(client, {"model": model, "prompt": prompt, "content": prompt})
        out.append([_token_id(t) for t in data["tokens"][:_MAX_TOKENS]])
    return out


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted: 'Ġ' is a space, 'Ċ' a newline (vLLM's token_strs)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


_BYTE_DECODER = _gpt2_byte_decoder()


def _byte_level_text(pieces: list[str]) -> str:
    """Token strings joined into text, byte-level pieces decoded; other pieces (special tokens) kept."""
    raw = bytearray()
    for piece in pieces:
        if all(ch in _BYTE_DECODER for ch in piece):
            raw.extend(_BYTE_DECODER[ch] for ch in piece)
        else:
            raw.extend(piece.encode("utf-8", "surrogatepass"))
    return raw.decode("utf-8", errors="replace")


def _token_id(token: Any) -> Any:
    # llama.cpp returns {"id": .., "piece": ..} when asked for pieces; plain ints otherwise.
    return _scalar(token.get("id") if isinstance(token, dict) else token)


async def _chat_template(client: DoctorClient, model: str | None) -> dict[str, Any]:
    """The rendered fixed conversation: vLLM tokenizes it, llama.cpp renders it; else its prompt_tokens."""
    messages = list(CHAT)
    body = {"model": model, "messages": messages, "add_generation_prompt": True}
    reply = await client.post_root_json("/apply-template", body)  # llama.cpp: the rendered text itself
    if reply.status == 200 and isinstance(reply.data, dict) and isinstance(reply.data.get("prompt"), str):
        return {"rendered": reply.data["prompt"][:_MAX_TEXT_CHARS]}
    if reply.status >= 500 or reply.status in _TRANSIENT_STATUSES:  # not "another way of rendering"
        raise _Transient(reply.detail)
    try:
        # vLLM: the rendered conversation as token strings (their ids are the tokenizer's business).
        data = await _tokenize(client, {**body, "return_token_strs": True})
        strs = data.get("token_strs")
        if isinstance(strs, list) and all(isinstance(s, str) for s in strs):
            return {"rendered": _byte_level_text(strs)[:_MAX_TEXT_CHARS]}
        return {"tokens": [_token_id(t) for t in data["tokens"][: 4 * _MAX_TOKENS]]}
    except _NotServed:
        pass
    chat = _ok(await client.post_json("/chat/completions", {"model": model, "messages": messages, "max_tokens": 1}))
    usage = chat.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        raise _NotServed("no /tokenize with messages and no usage.prompt_tokens")
    return {"prompt_tokens": usage["prompt_tokens"]}


async def _chat(client: DoctorClient, body: dict[str, Any]) -> dict[str, Any]:
    data = _ok(await client.post_json("/chat/completions", body))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Transient("the reply has no choices")
    return data


def _usage(data: dict[str, Any], key: str) -> Any:
    usage = data.get("usage")
    return usage.get(key) if isinstance(usage, dict) else None


async def _sampling_defaults(
    client: DoctorClient,
    model: str | None,
    settings: FingerprintSettings,
    raw_props: dict[str, Any] | None | _Transient,
) -> dict[str, Any]:
    """What a request that omits temperature and max_tokens gets: where it ends, and llama.cpp's defaults."""
    value: dict[str, Any] = {}
    defaults = (_served(raw_props) or {}).get("default_generation_settings")
    params = defaults.get("params") if isinstance(defaults, dict) else None
    if isinstance(params, dict):
        value["server"] = {k: _scalar(params[k]) for k in _LLAMA_DEFAULTS if k in params}
    data = await _chat(client, {"model": model, "messages": list(CHAT), "seed": settings.seed})
    finish = _scalar(data["choices"][0].get("finish_reason"))
    value["finish_reason"] = finish
    if finish == "length":  # the default max_tokens (or the context) cut it: its size is the default
        value["completion_tokens"] = _scalar(_usage(data, "completion_tokens"))
    return value


async def _stop_behaviour(client: DoctorClient, model: str | None, settings: FingerprintSettings) -> dict[str, Any]:
    body = {
        "model": model, "messages": list(CHAT), "temperature": 0, "seed": settings.seed,
        "max_tokens": _STOP_MAX_TOKENS,
    }  # fmt: skip
    data = await _chat(client, body)
    return {"finish_reason": _scalar(data["choices"][0].get("finish_reason"))}


async def _reply_and_logprobs(
    client: DoctorClient, model: str | None, settings: FingerprintSettings
) -> dict[str, Reading]:
    """One temperature-0 seeded request gives both the reply text and its first tokens' top-k."""
    body = {
        "model": model, "messages": list(CHAT), "temperature": 0, "seed": settings.seed,
        "max_tokens": max(16, settings.logprob_tokens), "logprobs": True, "top_logprobs": settings.top_logprobs,
    }  # fmt: skip
    try:
        data = await _chat(client, body)
    except _NotServed as exc:  # a server refusing logprobs: retry without, the reply still counts
        body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
        try:
            data = await _chat(client, body)
        except (_NotServed, _Transient, ProbeConnectError, ProbeTimeout) as again:
            kind: ReadingStatus = "not_served" if isinstance(again, _NotServed) else "error"
            return {c: Reading(c, kind, None, str(again)) for c in ("reply", "logprobs")}
        return {
            "reply": Reading("reply", "ok", _reply_text(data)),
            "logprobs": Reading("logprobs", "not_served", None, str(exc)),
        }
    except (_Transient, ProbeConnectError, ProbeTimeout) as exc:
        return {c: Reading(c, "error", None, str(exc)) for c in ("reply", "logprobs")}
    positions = _top_logprobs(data, settings.logprob_tokens, settings.top_logprobs)
    logprobs = (
        Reading("logprobs", "ok", positions)
        if positions
        else Reading("logprobs", "not_served", None, "the reply carries no logprobs")
    )
    return {"reply": Reading("reply", "ok", _reply_text(data)), "logprobs": logprobs}


def _reply_text(data: dict[str, Any]) -> dict[str, Any]:
    message = data["choices"][0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return {"text": content[:_MAX_TEXT_CHARS] if isinstance(content, str) else None}


def _top_logprobs(data: dict[str, Any], n_tokens: int, top_k: int) -> list[dict[str, float]]:
    """vLLM's and llama.cpp's shape: choices[0].logprobs.content[i].top_logprobs[j] = {token, logprob}."""
    logprobs = data["choices"][0].get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return []
    out: list[dict[str, float]] = []
    for entry in content[:n_tokens]:
        tops = entry.get("top_logprobs") if isinstance(entry, dict) else None
        if not isinstance(tops, list):
            break
        position: dict[str, float] = {}
        for top in tops[:top_k]:
            if (
                isinstance(top, dict)
                and isinstance(top.get("token"), str)
                and isinstance(top.get("logprob"), int | float)
                and not math.isnan(top["logprob"])
            ):
                # -3.4e38 (llama.cpp's "impossible") becomes -1e4; a positive one is no log-probability.
                position[top["token"][:100]] = min(0.0, max(float(top["logprob"]), -1e4))
        out.append(position)
    return out
