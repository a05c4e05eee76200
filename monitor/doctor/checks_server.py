"""Checks 8 and 10: Chinese tokenization, sampling defaults."""

from __future__ import annotations

import asyncio

from monitor.checks import cjk_ratio
from monitor.doctor.client import Exchange, JsonReply
from monitor.doctor.context import HELLO, Context, reasoning_only
from monitor.doctor.findings import Finding, Status, excerpt, skipped, tokens, worst
from monitor.errors import ProbeError

# A known sentence of 18 characters. Good Chinese tokenizers need about 0.5-1.5 tokens per character;
# a tokenizer that falls back to UTF-8 bytes needs about 3.
CHINESE_SENTENCE = "今天天气很好，我们一起去公园散步吧。"
CHINESE_QUESTION = "请用两三句话介绍一下长城。"
STREAM_MAX_TOKENS = 128
_MIN_TOKENS_PER_CHAR = 0.3
_MAX_TOKENS_PER_CHAR = 2.0
_SPECIAL_TOKEN_ROOM = 8  # BOS-like prefixes such as GLM's [gMASK]<sop>


async def check_chinese(ctx: Context) -> Finding:
    """Check 8: plausible token counts for a known sentence, and clean UTF-8 in a streamed Chinese reply."""
    client = ctx.client
    async with asyncio.TaskGroup() as tg:
        usage_task = tg.create_task(client.completion("chinese_tokenization", CHINESE_SENTENCE, max_tokens=1))
        tokenize_task = tg.create_task(_tokenize(ctx))
        stream_task = None
        if not ctx.chat_blocked:
            question = [{"role": "user", "content": CHINESE_QUESTION}]
            max_tokens = ctx.fit(STREAM_MAX_TOKENS)
            stream_task = tg.create_task(
                client.chat("chinese_tokenization", question, max_tokens=max_tokens, stream=True)
            )
    usage_ex, tokenize = usage_task.result(), tokenize_task.result()
    parts: list[tuple[Status, str]] = []
    fixes: list[str] = []
    prompt_tokens = _prompt_tokens(usage_ex)
    if prompt_tokens is None:
        parts.append(("skip", f"no prompt token count from /v1/completions: {excerpt(usage_ex.result, 60)}"))
    else:
        parts.append(_plausible("usage.prompt_tokens", prompt_tokens, fixes))
    if isinstance(tokenize, int):
        parts.append(_plausible("/tokenize count", tokenize, fixes))
        if prompt_tokens is not None and tokenize != prompt_tokens:
            parts.append(("warn", f"/tokenize ({tokenize}) and usage ({prompt_tokens}) disagree for the same text"))
    else:
        parts.append(("skip", tokenize))
    req, resp = usage_ex.request, excerpt(usage_ex.result)
    if stream_task is not None:
        streamed = stream_task.result()
        parts.append(_utf8(streamed, fixes))
        if parts[-1][0] == "fail":
            req, resp = streamed.request, excerpt(streamed.result)
    else:
        parts.append(("skip", f"streamed Chinese not tested: {ctx.chat_blocked}"))
    status = worst(*(s for s, _ in parts))
    summary = "; ".join(n for s, n in parts if s in ("warn", "fail")) or _passed_summary(prompt_tokens, tokenize, parts)
    return Finding(
        "chinese_tokenization", status, summary, req, resp, " ".join(fixes) or None, tuple(n for _, n in parts)
    )


def _passed_summary(prompt_tokens: int | None, tokenize: int | str, parts: list[tuple[Status, str]]) -> str:
    pieces = []
    count = prompt_tokens if prompt_tokens is not None else tokenize
    if isinstance(count, int):
        agree = " (usage and /tokenize agree)" if prompt_tokens == tokenize else ""
        pieces.append(f"{count} prompt tokens for an {len(CHINESE_SENTENCE)}-character sentence{agree}: plausible")
    if parts[-1][0] == "pass":
        pieces.append("streamed Chinese is valid UTF-8")
    return "; ".join(pieces) or "nothing could be measured"


async def _tokenize(ctx: Context) -> int | str:
    """The /tokenize count of the sentence, or why there is none (a skipped sub-check)."""
    body = {"prompt": CHINESE_SENTENCE} | ({"model": ctx.info.model} if ctx.info.model else {})
    try:
        reply: JsonReply = await ctx.client.post_root_json("/tokenize", body)
    except ProbeError as exc:
        return f"/tokenize not reachable: {exc}"
    if reply.status == 404:
        return "the server has no /tokenize (not vLLM?): that sub-check is skipped"
    count = reply.data.get("count") if isinstance(reply.data, dict) else None
    if reply.status != 200 or not isinstance(count, int):
        return f"/tokenize answered {reply.detail}"
    return count


def _prompt_tokens(ex: Exchange) -> int | None:
    m = ex.result.measurement
    if not ex.ok or m is None or m.tokens_estimated:
        return None
    return m.prompt_tokens


def _plausible(label: str, count: int, fixes: list[str]) -> tuple[Status, str]:
    chars = len(CHINESE_SENTENCE)
    low, high = _MIN_TOKENS_PER_CHAR * chars, _MAX_TOKENS_PER_CHAR * chars + _SPECIAL_TOKEN_ROOM
    what = f"{label} {count} for {chars} Chinese characters"
    if low <= count <= high:
        return "pass", f"{what}: plausible"
    if count > high:
        fixes.append(
            "The server tokenizes Chinese byte by byte: it loaded the wrong tokenizer. Serve the model's own tokenizer "
            "(`--tokenizer` = the model repo; GLM-4 needs `--trust-remote-code`)."
        )
        return "fail", f"{what}: far too many (about 3 per character means a byte-level fallback)"
    fixes.append("The token count is implausibly low: check that the server reports usage from the model's tokenizer.")
    return "fail", f"{what}: implausibly few"


def _utf8(ex: Exchange, fixes: list[str]) -> tuple[Status, str]:
    r = ex.result
    if r.error_kind == "bad_response" and "utf" in (r.error_detail or "").lower():
        fixes.append("The stream carries invalid UTF-8: a proxy or the server splits multi-byte characters.")
        return "fail", f"the streamed Chinese reply is not valid UTF-8: {r.error_detail}"
    if not ex.ok:
        return "warn", f"the streamed Chinese request failed: {excerpt(r, 60)}"
    if "\ufffd" in ex.text:
        fixes.append(
            "Replacement characters (U+FFFD) in the stream: the detokenizer emits half characters. Upgrade the "
            "server; do not decode chunks on byte boundaries in a proxy."
        )
        return "fail", f"U+FFFD in the streamed Chinese reply at char {ex.text.index(chr(0xFFFD))}"
    m = r.measurement
    events = m.content_chunk_count if m is not None else 0
    ratio = cjk_ratio(ex.text)
    return "pass", f"streamed Chinese arrived as valid UTF-8 in {events} events (CJK ratio {ratio:.2f})"


async def check_sampling_defaults(ctx: Context) -> Finding:
    """Check 10: what the server does when temperature and max_tokens are omitted (informational)."""
    if ctx.chat_blocked:
        return skipped("sampling_defaults", ctx.chat_blocked)
    ex = await ctx.client.chat("sampling_defaults", HELLO, max_tokens=None, temperature=None)
    advice = (
        "For dialogue send temperature 0.7-1.0. When a request omits it, vLLM takes the model's generation_config.json "
        "values (--generation-config auto, the default) or 1.0. Send max_tokens too (at least 512 for dialogue)."
    )
    never_ends = (
        "A reply that never ends fills the context window when max_tokens is omitted: fix the stop tokens "
        "(see check 4). " + advice
    )
    req, resp = ex.request, excerpt(ex.result)
    r = ex.result
    if r.error_kind == "timeout":
        summary = (
            f"without max_tokens the reply did not end within {ctx.client.target.timeout_s:g} s: "
            "the server may generate until the context window is full"
        )
        return Finding("sampling_defaults", "warn", summary, req, resp, never_ends)
    if not ex.ok:
        return Finding("sampling_defaults", "warn", f"the request failed: {resp}", req, resp, advice)
    m = r.measurement
    assert m is not None
    facts = f"finish_reason={m.finish_reason}, {tokens(r)} tokens, {len(ex.text)} chars"
    if m.finish_reason == "length" and reasoning_only(ex):
        summary = f"without max_tokens the model reasoned until the context window was full ({facts})"
        fix = "The model never stopped thinking (see check 11). " + advice
        return Finding("sampling_defaults", "warn", summary, req, resp, fix)
    if m.finish_reason == "length":
        summary = f"without max_tokens the reply ran to the end of the context window ({facts})"
        return Finding("sampling_defaults", "warn", summary, req, resp, never_ends)
    summary = f"with temperature and max_tokens omitted: {facts}"
    return Finding("sampling_defaults", "pass", summary, req, resp, advice, informational=True)
