"""Checks 1-3: the server answers and serves the model; chat applies a template; chat vs completions.

Checks 2 and 3 judge the same pair of requests (chat "你好" and completion "你好"), which the runner
sends first: the chat request also proves that generation works at all.
"""

from __future__ import annotations

from typing import Any

from yarl import URL

from monitor.doctor.client import DoctorClient, Exchange
from monitor.doctor.context import ServerInfo, failed_check, reasoning_note, reasoning_only
from monitor.doctor.findings import Finding, Status, excerpt, quote
from monitor.doctor.remedies import Family, chat_template_fix, leak_fix

# A reply that starts like this continues the user's sentence instead of answering it.
_CONTINUATION_STARTS = "，,、；;：:"
_SAME_START_CHARS = 8
VLLM_COMPLETION_DEFAULT_MAX_TOKENS = 16


async def check_reachable(client: DoctorClient) -> tuple[Finding, ServerInfo]:
    """Check 1: `/v1/models` answers and lists the model (raises ProbeError when unreachable)."""
    target = client.target
    reply = await client.get_json("/models")
    request = f"GET {URL(target.base_url + '/models').path}"
    response = reply.detail
    if reply.status in (401, 403):
        fix = "Give the API key: --api-key-env VAR (the variable that holds it), or api_key_env in the config."
        summary = f"the server refused the request (HTTP {reply.status}): it wants an API key"
        return Finding("reachable", "fail", summary, request, response, fix), ServerInfo((), target.model, None, False)
    if reply.status == 404:
        summary = "the server has no /v1/models, so the model could not be confirmed"
        return Finding("reachable", "warn", summary, request, response), ServerInfo((), target.model, None)
    cards = _model_cards(reply.data)
    if reply.status >= 400 or not cards:
        summary = f"/v1/models answered HTTP {reply.status} without a model list"
        fix = "Check the server log: /v1/models should list the served model (vLLM: --served-model-name)."
        return Finding("reachable", "fail", summary, request, response, fix), ServerInfo((), target.model, None)
    served = tuple(card["id"] for card in cards)
    model = target.model or served[0]
    card = next((c for c in cards if c["id"] == model), None)
    response = f"HTTP 200: served models {', '.join(served)}"
    if card is None:
        summary = f"model {model!r} is not served; the server serves: {', '.join(served)}"
        fix = f"Use --model {served[0]}, or start vLLM with --served-model-name {model}."
        return Finding("reachable", "fail", summary, request, response, fix), ServerInfo(served, model, None, False)
    max_model_len = _context_length(card)
    summary = f"{model} is served" + (
        f", max_model_len {max_model_len}" if max_model_len else "; the server does not report max_model_len"
    )
    details = () if target.model else (f"no --model given: using the served model {model}",)
    finding = Finding("reachable", "pass", summary, request, response + _mml(max_model_len), details=details)
    return finding, ServerInfo(served, model, max_model_len)


def _context_length(card: dict[str, Any]) -> int | None:
    """vLLM's `max_model_len`, else llama.cpp's `meta.n_ctx` (the context the server runs with)."""
    meta = card.get("meta")
    for limit in (card.get("max_model_len"), meta.get("n_ctx") if isinstance(meta, dict) else None):
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
    return None


def _model_cards(data: Any) -> list[dict[str, Any]]:
    cards = data.get("data") if isinstance(data, dict) else None
    if not isinstance(cards, list):
        return []
    return [c for c in cards if isinstance(c, dict) and isinstance(c.get("id"), str)]


def _mml(max_model_len: int | None) -> str:
    return f" (max_model_len {max_model_len})" if max_model_len else ""


def judge_chat_template(chat: Exchange, completion: Exchange, family: Family) -> Finding:
    """Check 2: chat "你好" gets an answer, not a continuation, and no template tokens leak."""
    req, resp = chat.request, excerpt(chat.result)
    r = chat.result
    if r.error_kind == "http_error":
        detail = r.error_detail or ""
        if "chat template" in detail.lower():
            summary = "the server has no chat template, so it rejects every chat request"
            return Finding("chat_template", "fail", summary, req, resp, fix=chat_template_fix(family))
        fix = '/v1/chat/completions must answer a plain "你好"; the server log says why it does not.'
        return Finding("chat_template", "fail", f"chat requests fail: {detail}", req, resp, fix=fix)
    if not chat.ok:
        fix = "The server does not answer chat requests properly: read its log (engine crash, proxy timeout)."
        return Finding("chat_template", "fail", f"the chat request failed: {resp}", req, resp, fix)
    leak = failed_check(chat, "template_leak")
    if leak is not None:
        summary = "chat-template or special tokens leak into the reply"
        return Finding("chat_template", "fail", summary, req, resp, fix=leak_fix(family), details=(leak.detail,))
    text = chat.text.strip()
    if reasoning_only(chat):
        # Thinking in its own field means the template opened the model's reasoning block: it is applied.
        summary = f'chat "你好" got {reasoning_note(chat)}: the template is applied (see check 11)'
        return Finding("chat_template", "pass", summary, req, resp)
    if not text:
        return Finding("chat_template", "fail", "the reply is empty", req, resp, fix=chat_template_fix(family))
    if _continues(text, completion):
        summary = "the reply continues the prompt as raw text instead of answering it"
        details = (f"completions gave: {excerpt(completion.result)}",)
        return Finding("chat_template", "fail", summary, req, resp, fix=chat_template_fix(family), details=details)
    return Finding("chat_template", "pass", f'chat "你好" got an answer: {quote(text, 50)}', req, resp)


def _continues(text: str, completion: Exchange) -> bool:
    if text[0] in _CONTINUATION_STARTS:
        return True
    # At temperature 0 a chat reply that starts like the raw completion was rendered without a template.
    raw = completion.text.strip()
    return completion.ok and len(raw) >= _SAME_START_CHARS and text[:_SAME_START_CHARS] == raw[:_SAME_START_CHARS]


# A default output limit, if the server has one, is far below this (vLLM: 16, OpenAI's API: 16).
NO_LIMIT_TOKENS = 256
NO_LIMIT_TIMEOUT_S = 30.0
_NO_LIMIT_FIX = (
    " A request without max_tokens can hold a slot until the context is full: set a server-side default "
    "(llama-server: -n/--n-predict) or always send max_tokens."
)


def judge_endpoint_semantics(chat: Exchange, completion: Exchange) -> Finding:
    """Check 3: the same "你好" on both endpoints, side by side, with what the difference means."""
    req, resp = completion.request, excerpt(completion.result)
    chat_side = f"chat:        {quote(chat.text, 60)}" if chat.ok else f"chat:        failed ({excerpt(chat.result)})"
    if reasoning_only(chat):
        chat_side = f"chat:        {reasoning_note(chat)}"
    fix = (
        "Use /v1/chat/completions for dialogue. Keep /v1/completions for raw text continuation, and set max_tokens "
        f"there (vLLM's default is {VLLM_COMPLETION_DEFAULT_MAX_TOKENS})."
    )
    r = completion.result
    if r.error_kind == "timeout":
        summary = (
            f"with no max_tokens, completions did not finish within {NO_LIMIT_TIMEOUT_S:g} s: the server sets no "
            "default output limit (llama.cpp generates until the context is full)"
        )
        return Finding("endpoint_semantics", "warn", summary, req, resp, fix=fix + _NO_LIMIT_FIX, details=(chat_side,))
    if not completion.ok:
        missing = r.http_status == 404
        summary = "the server does not offer /v1/completions" if missing else f"the completions request failed: {resp}"
        return Finding("endpoint_semantics", "warn", summary, req, resp, fix=fix, details=(chat_side,))
    m = r.measurement
    assert m is not None  # completion.ok
    completion_side = f"completions: {quote(completion.text, 60)}"
    explain = ['completions applies no chat template: the model continues the text "你好" instead of answering it.']
    unlimited = m.finish_reason == "length" and (m.completion_tokens or 0) > NO_LIMIT_TOKENS
    if m.finish_reason == "length" and not unlimited:
        limit = "vLLM's default for /v1/completions" if m.completion_tokens == 16 else "the server's default"
        explain.append(f"no max_tokens was sent: it stopped after {m.completion_tokens} tokens ({limit}).")
    summary = "completions continues raw text, chat answers; use chat for dialogue"
    status: Status = "pass"
    if unlimited:
        status, fix = "warn", fix + _NO_LIMIT_FIX
        summary = (
            f"with no max_tokens, completions generated {m.completion_tokens} tokens: the server sets no default "
            "output limit (llama.cpp generates until the context is full)"
        )
    return Finding(
        "endpoint_semantics", status, summary, req, resp, fix=fix,
        details=(chat_side, completion_side, *explain), informational=True,
    )  # fmt: skip
