"""Checks 4-7, all on /v1/chat/completions: stop tokens, truncation, streaming, multi-turn context."""

from __future__ import annotations

import asyncio

from monitor.doctor.client import Exchange
from monitor.doctor.context import HELLO, Context, failed_check, reasoning_note, reasoning_only
from monitor.doctor.findings import Finding, Status, excerpt, quote, skipped, tokens, worst
from monitor.doctor.remedies import detect_family, leak_fix, stop_token_fix, turn_family

GENEROUS_MAX_TOKENS = 512
TINY_MAX_TOKENS = 7  # the incident's value
SHORT_MAX_TOKENS = 64
TURN_MAX_TOKENS = 128
_GLM_STOP_NAMES = {151329: "<|endoftext|>", 151336: "<|user|>", 151338: "<|observation|>"}
MAX_TOKENS_ADVICE = (
    "For dialogue leave max_tokens unset (with working stop tokens) or set it to at least 512; a small value "
    "such as 7 cuts every reply mid-sentence (finish_reason=length)."
)


def _failed_request(check_id: str, ex: Exchange, status: Status = "fail") -> Finding:
    return Finding(check_id, status, f"the request failed: {excerpt(ex.result)}", ex.request, excerpt(ex.result))


async def check_stop_tokens(ctx: Context) -> Finding:
    """Check 4: with a generous max_tokens, the reply ends with `stop` and never writes the next turn."""
    if ctx.chat_blocked:
        return skipped("stop_tokens", ctx.chat_blocked)
    max_tokens = ctx.fit(GENEROUS_MAX_TOKENS)
    ex = await ctx.client.chat("stop_tokens", HELLO, max_tokens=max_tokens)
    if not ex.ok:
        return _failed_request("stop_tokens", ex)
    m = ex.result.measurement
    assert m is not None  # ex.ok
    family = detect_family(ctx.info.model, (ex.text,)) if ctx.family == "unknown" else ctx.family
    req, resp = ex.request, excerpt(ex.result)
    if reasoning_only(ex):
        summary = f"the reply is {reasoning_note(ex)}: whether the turn ends cannot be told (see check 11)"
        return Finding("stop_tokens", "skip", summary, req, resp)
    run_on = failed_check(ex, "run_on")
    if run_on is not None and failed_check(ex, "template_leak") is not None and m.finish_reason == "stop":
        # The "next turn" is written in leaked marker text, a template fault (check 2), not a stop-token one.
        summary = "the reply writes a next turn in leaked template markers, then stops (see check 2)"
        return Finding("stop_tokens", "warn", summary, req, resp, leak_fix(family))
    if run_on is not None:
        until = f" until max_tokens={max_tokens}" if m.finish_reason == "length" else ""
        summary = f"the reply runs on into the user's next turn{until}: the server is missing the stop tokens"
        return Finding("stop_tokens", "fail", summary, req, resp, stop_token_fix(family), (run_on.detail,))
    if m.finish_reason == "length" and max_tokens < GENEROUS_MAX_TOKENS:
        summary = (
            f"max_model_len {ctx.info.max_model_len} leaves room for only {max_tokens} tokens, which the reply "
            "filled: too small to tell whether the server stops at the end of a turn"
        )
        return Finding("stop_tokens", "warn", summary, req, resp, "Serve the model with a larger --max-model-len.")
    if m.finish_reason != "stop":
        summary = (
            f'the reply to "你好" did not end within max_tokens={max_tokens} (finish_reason={m.finish_reason}): '
            "the server does not stop at the end of the turn"
        )
        return Finding("stop_tokens", "fail", summary, req, resp, stop_token_fix(family))
    why = ""
    if isinstance(m.stop_reason, int):
        name = _GLM_STOP_NAMES.get(m.stop_reason, "") if turn_family(family) == "glm" else ""
        why = f", on stop token {m.stop_reason}{f' {name}' if name else ''}"
    elif m.stop_reason is not None:
        why = f", on the stop string {m.stop_reason!r}"
    summary = f"the reply ends with finish_reason=stop after {tokens(ex.result)} tokens{why}"
    return Finding("stop_tokens", "pass", summary, req, resp)


async def check_truncation(ctx: Context) -> Finding:
    """Check 5: max_tokens 7 gives `length`, shown; the server must honour the limit."""
    if ctx.chat_blocked:
        return skipped("truncation", ctx.chat_blocked)
    ex = await ctx.client.chat("truncation", HELLO, max_tokens=TINY_MAX_TOKENS)
    if not ex.ok:
        return _failed_request("truncation", ex)
    m = ex.result.measurement
    assert m is not None
    req, resp = ex.request, excerpt(ex.result)
    used = m.completion_tokens
    if used is not None and not m.tokens_estimated and used > TINY_MAX_TOKENS:
        summary = f"the server ignored max_tokens={TINY_MAX_TOKENS}: {used} tokens came back"
        fix = "The server must honour max_tokens; check that a gateway does not rewrite the request."
        return Finding("truncation", "fail", summary, req, resp, fix)
    if m.finish_reason == "length" and reasoning_only(ex):
        summary = f"max_tokens={TINY_MAX_TOKENS} cut the reply while it was still reasoning (finish_reason=length)"
    elif m.finish_reason == "length":
        summary = f"max_tokens={TINY_MAX_TOKENS} cut the reply: {quote(ex.text, 30)} (finish_reason=length)"
    else:
        summary = f"the reply fit in {TINY_MAX_TOKENS} tokens (finish_reason={m.finish_reason}); nothing was cut"
    return Finding("truncation", "pass", summary, req, resp, MAX_TOKENS_ADVICE, informational=True)


async def check_streaming(ctx: Context) -> Finding:
    """Check 6: streaming works, usage arrives with include_usage, and temperature-0 texts match."""
    if ctx.chat_blocked:
        return skipped("streaming", ctx.chat_blocked)
    client = ctx.client
    async with asyncio.TaskGroup() as tg:
        max_tokens = ctx.fit(SHORT_MAX_TOKENS)
        streamed_task = tg.create_task(client.chat("streaming", HELLO, max_tokens=max_tokens, stream=True))
        plain_task = tg.create_task(client.chat("streaming", HELLO, max_tokens=max_tokens))
    streamed, plain = streamed_task.result(), plain_task.result()
    req, resp = streamed.request, excerpt(streamed.result)
    if not streamed.ok:
        fix = (
            "Streaming must deliver server-sent events end to end: check the server log, and turn buffering off in "
            "any proxy in between (nginx: proxy_buffering off)."
        )
        return Finding("streaming", "fail", f"streaming failed: {resp}", req, resp, fix)
    m = streamed.result.measurement
    assert m is not None
    parts: list[tuple[Status, str]] = []
    fixes: list[str] = []
    # A reasoning model streams its thinking first: those events count, or a short budget looks buffered.
    events = m.content_chunk_count + m.reasoning_chunk_count
    if events < 2 and (m.completion_tokens or 0) > 1:
        parts.append(("warn", "the whole reply arrived in one event: something buffers the stream"))
        fixes.append("Turn response buffering off in proxies between client and server (nginx: proxy_buffering off).")
    else:
        ttft = f", first token after {m.ttft_ms:.0f} ms" if m.ttft_ms is not None else ""
        thinking = f" and {m.reasoning_chunk_count} reasoning" if m.reasoning_chunk_count else ""
        parts.append(("pass", f"streaming works: {m.content_chunk_count} content{thinking} events{ttft}"))
    if m.tokens_estimated:
        parts.append(("warn", "no usage in the stream although stream_options.include_usage was set"))
        fixes.append(
            "Token counts of streamed requests will be estimates (marked ~). Upgrade the server, or make the "
            "gateway forward stream_options and the final usage chunk."
        )
    else:
        usage = f"usage arrived with include_usage: {m.prompt_tokens} prompt, {m.completion_tokens} completion tokens"
        parts.append(("pass", usage))
    status, note, mismatch_fix = _compare(streamed, plain)
    parts.append((status, note))
    if mismatch_fix:
        fixes.append(mismatch_fix)
    final = worst(*(s for s, _ in parts))
    problems = [n for s, n in parts if s != "pass"]
    summary = "; ".join(problems) or "streams with usage; streamed and non-streamed replies match at temperature 0"
    notes = tuple(n for _, n in parts)
    return Finding("streaming", final, summary, req, resp, " ".join(fixes) or None, notes)


def _compare(streamed: Exchange, plain: Exchange) -> tuple[Status, str, str | None]:
    if not plain.ok:
        return "warn", f"the non-streamed request failed: {excerpt(plain.result)}", None
    a, b = streamed.text, plain.text
    fa = streamed.result.measurement.finish_reason if streamed.result.measurement else None
    fb = plain.result.measurement.finish_reason if plain.result.measurement else None
    if a == b and fa == fb:
        return "pass", "streamed and non-streamed texts are identical at temperature 0", None
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    note = (
        f"inconsistent server: at temperature 0 the streamed and non-streamed replies differ from char {at} "
        f"(stream: {quote(a[at:], 40)}, finish {fa}; non-stream: {quote(b[at:], 40)}, finish {fb})"
    )
    fix = "Streaming and non-streaming should run the same generation; check for a gateway that rewrites one path."
    return "warn", note, fix


async def check_multi_turn(ctx: Context) -> Finding:
    """Check 7: "我叫小明", then "我叫什么名字？" — the answer should contain 小明 (warning only)."""
    if ctx.chat_blocked:
        return skipped("multi_turn", ctx.chat_blocked)
    first_turn = [{"role": "user", "content": "我叫小明"}]
    first = await ctx.client.chat("multi_turn", first_turn, max_tokens=ctx.fit(TURN_MAX_TOKENS))
    if not first.ok:
        return _failed_request("multi_turn", first, "warn")
    if reasoning_only(first):
        summary = f"turn 1 got {reasoning_note(first)}: the context cannot be tested (see check 11)"
        return Finding("multi_turn", "skip", summary, first.request, excerpt(first.result))
    history = [
        *first_turn,
        {"role": "assistant", "content": first.text.strip()},
        {"role": "user", "content": "我叫什么名字？"},
    ]
    second = await ctx.client.chat("multi_turn", history, max_tokens=ctx.fit(TURN_MAX_TOKENS))
    if not second.ok:
        return _failed_request("multi_turn", second, "warn")
    req, resp = second.request, excerpt(second.result)
    if reasoning_only(second):
        summary = f"turn 2 got {reasoning_note(second)}: the context cannot be tested (see check 11)"
        return Finding("multi_turn", "skip", summary, req, resp)
    details = (f"turn 1: {quote(first.text, 60)}", f"turn 2: {quote(second.text, 60)}")
    if "小明" in second.text:
        return Finding("multi_turn", "pass", f"the second turn remembers the name: {quote(second.text, 40)}", req, resp)
    fix = (
        "Send the whole conversation in `messages` on every turn. Small models may fail this; if the client does "
        "send the history, try a larger model."
    )
    return Finding("multi_turn", "warn", "the answer to 我叫什么名字？ does not contain 小明", req, resp, fix, details)
