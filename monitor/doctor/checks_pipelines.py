"""Checks 11-13: the server pipelines a reasoning or agent model needs: reasoning parser, tool-call parser, JSON schema.

Each pipeline is one server flag away from answering HTTP 200 and wrong, so these checks read where
things landed, not what the model said: the thinking in `reasoning` or as <think> in `content`, a
call in `tool_calls` or written out as text, content that validates against the schema or prose.
Fixes name the flags for the model family (remedies.py). One cause, one failure: reasoning that
eats max_tokens is check 11's warning, and checks 12 and 13 call such a reply inconclusive.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from monitor.checks_pipelines import budget_exhausted, first_think_marker, textual_tool_call
from monitor.doctor.client import Exchange
from monitor.doctor.context import HELLO, Context
from monitor.doctor.findings import Finding, Status, excerpt, quote, skipped, worst
from monitor.doctor.remedies import (
    PARSERS,
    Family,
    detect_family,
    reasoning_parser_fix,
    structured_output_fix,
    tool_parser_fix,
    tools_ignored_fix,
)
from monitor.meter import StreamMeasurement, ToolCall

# Room to think first: a reasoning model spends a few hundred tokens on a short question.
PIPELINE_MAX_TOKENS = 1024
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_QUESTION = [{"role": "user", "content": "What is the weather in Beijing right now? Use the get_weather tool."}]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature_c": {"type": "number"}},
    "required": ["city", "temperature_c"],
    "additionalProperties": False,
}
SCHEMA_QUESTION = [
    {"role": "user", "content": "Give today's weather in Beijing as JSON: the city and the temperature in Celsius."}
]
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA}}
# vLLM's 400s when no tool-call parser runs (vllm/renderers/online_renderer.py, OnlineRenderer.render_chat).
_NO_TOOL_PARSER_400 = ("--enable-auto-tool-choice", "--tool-call-parser")
BUDGET_FIX = (
    "A reasoning model needs room to think: send max_tokens of a few thousand (or none), or let it think less: "
    '`reasoning_effort: low` (gpt-oss), `chat_template_kwargs: {"enable_thinking": false}` (Qwen3, GLM-4.5+), '
    "or, on recent vLLM, `thinking_token_budget` per request."
)


def _family(ctx: Context, *texts: str) -> Family:
    """The family from the model name and these replies' markup; what the runner found when they say nothing."""
    found = detect_family(ctx.info.model, texts)
    return ctx.family if found == "unknown" else found


def _has_reasoning(m: StreamMeasurement) -> bool:
    return bool(m.reasoning_text) or (m.reasoning_tokens > 0 and not m.reasoning_tokens_estimated)


def _reasoning_size(m: StreamMeasurement) -> str:
    estimated = "~" if m.reasoning_tokens_estimated else ""
    return f"{len(m.reasoning_text)} chars, {m.reasoning_tokens}{estimated} tokens"


def _inconclusive(check_id: str, ex: Exchange) -> Finding:
    summary = f"could not be judged, the request failed: {excerpt(ex.result)}"
    return Finding(check_id, "warn", summary, ex.request, excerpt(ex.result))


def _timing(m: StreamMeasurement) -> tuple[str, ...]:
    if m.ttfa_ms is None or m.ttft_ms is None:
        return ()
    return (f"first reasoning after {m.ttfa_ms:.0f} ms, first answer token after {m.ttft_ms:.0f} ms",)


async def check_reasoning_parser(ctx: Context) -> Finding:
    """Check 11: the thinking arrives in its own field, not as <think> in content, and leaves room for an answer."""
    if ctx.chat_blocked:
        return skipped("reasoning_parser", ctx.chat_blocked)
    max_tokens = ctx.fit(PIPELINE_MAX_TOKENS)
    ex = await ctx.client.chat("reasoning_parser", HELLO, max_tokens=max_tokens, stream=True)
    if not ex.ok:
        return _inconclusive("reasoning_parser", ex)
    m = ex.result.measurement
    assert m is not None  # ex.ok
    family = _family(ctx, ex.text)
    req, resp = ex.request, excerpt(ex.result)
    leak = first_think_marker(m.text)
    if leak is not None:
        at, marker = leak
        summary = f"the thinking is in `content` ({marker} at char {at}): the server runs no reasoning parser"
        details = [f"content: {quote(m.text[at:], 80)}"]
        if _has_reasoning(m):
            details.append(
                f"reasoning also came back in its own field ({_reasoning_size(m)}): a parser runs, but not the "
                "one for this model's format"
            )
        return Finding("reasoning_parser", "fail", summary, req, resp, reasoning_parser_fix(family), tuple(details))
    if budget_exhausted(m):
        total = "?" if m.completion_tokens is None else str(m.completion_tokens)
        numbers = f"{m.reasoning_tokens} of {total} tokens were reasoning, max_tokens={max_tokens}"
        if m.finish_reason == "length":
            summary = f"the reasoning used all of max_tokens and left no answer ({numbers}, finish_reason=length)"
            return Finding("reasoning_parser", "warn", summary, req, resp, BUDGET_FIX, _timing(m))
        summary = (
            f"everything came back as reasoning, no answer ({numbers}, finish_reason={m.finish_reason}): the "
            "parser may not find where the thinking ends"
        )
        return Finding("reasoning_parser", "warn", summary, req, resp, reasoning_parser_fix(family))
    if _has_reasoning(m):
        summary = (
            f"the thinking arrives in its own field ({_reasoning_size(m)}) and the answer in `content`: the server "
            "runs a reasoning parser"
        )
        return Finding("reasoning_parser", "pass", summary, req, resp, details=_timing(m))
    summary = "no reasoning in the reply: not a reasoning model, or thinking is off, so there is nothing to separate"
    if family in PARSERS:
        summary += f" ({PARSERS[family].label} thinks by default unless a request or the server switches it off)"
    return Finding("reasoning_parser", "skip", summary, req, resp)


@dataclass(frozen=True, slots=True)
class _Part:
    """What one tool_choice request showed: `what` reads after 'tool_choice "auto": '."""

    choice: str
    status: Status
    what: str
    exchange: Exchange
    disabled: bool = False  # vLLM's 400: no tool-call parser configured
    unparsed: bool = False  # a call written as text, or arguments a parser broke
    prose: bool = False  # no call at all, an answer in words

    @property
    def line(self) -> str:
        return f'tool_choice "{self.choice}": {self.what}'


def _show_call(call: ToolCall) -> str:
    arguments = call.arguments if len(call.arguments) <= 80 else call.arguments[:80] + "…"
    return f"{call.name}({arguments})"


def _judge_call(ex: Exchange, choice: str) -> _Part:
    r = ex.result
    if r.error_kind == "http_error":
        detail = r.error_detail or f"HTTP {r.http_status}"
        if any(flag in detail for flag in _NO_TOOL_PARSER_400):
            return _Part(choice, "skip", detail, ex, disabled=True)
        return _Part(choice, "warn", f"rejected: {detail}", ex)
    m = r.measurement
    if r.error_kind is not None or m is None:
        return _Part(choice, "warn", f"the request failed: {excerpt(r)}", ex)
    if m.tool_calls:
        call = m.tool_calls[0]
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            return _Part(
                choice, "fail", f"the parsed call's arguments are not JSON: {_show_call(call)}", ex, unparsed=True
            )
        if call.name != "get_weather" or not isinstance(arguments, dict) or "city" not in arguments:
            return _Part(choice, "warn", f"an unexpected call {_show_call(call)} (asked for get_weather(city))", ex)
        if choice == "auto" and m.finish_reason != "tool_calls":
            what = (
                f"{_show_call(call)} in `tool_calls`, but finish_reason={m.finish_reason}, not tool_calls: clients "
                "that branch on finish_reason miss the call"
            )
            return _Part(choice, "warn", what, ex)
        return _Part(choice, "pass", f"{_show_call(call)} in `tool_calls`, finish_reason={m.finish_reason}", ex)
    where = textual_tool_call(m.text)
    if where >= 0:
        what = (
            f"the call came back as text in `content` (tool_calls empty, finish_reason={m.finish_reason}): "
            f"{quote(m.text[where:], 100)}"
        )
        return _Part(choice, "fail", what, ex, unparsed=True)
    if budget_exhausted(m):
        return _Part(
            choice, "warn", "inconclusive: the reasoning used all of max_tokens before any call (see check 11)", ex
        )
    if choice == "required":
        what = f"no call, the reply is prose: {quote(m.text, 60)}: the server ignores tool_choice"
        return _Part(choice, "warn", what, ex, prose=True)
    what = f"the model answered without calling the tool, {quote(m.text, 60)}: inconclusive"
    return _Part(choice, "warn", what, ex, prose=True)


async def check_tool_parser(ctx: Context) -> Finding:
    """Check 12: a call asked for with tool_choice auto (and forced with required) comes back in `tool_calls`."""
    if ctx.chat_blocked:
        return skipped("tool_parser", ctx.chat_blocked)
    max_tokens = ctx.fit(PIPELINE_MAX_TOKENS)
    choices = ("auto", "required")
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(
                ctx.client.chat(
                    "tool_parser",
                    TOOL_QUESTION,
                    max_tokens=max_tokens,
                    sampling={"tools": [WEATHER_TOOL], "tool_choice": choice},
                )  # fmt: skip
            )
            for choice in choices
        ]
    auto, required = (_judge_call(task.result(), choice) for task, choice in zip(tasks, choices, strict=True))
    family = _family(ctx, auto.exchange.text, required.exchange.text)
    status = worst(auto.status, required.status)
    decisive = auto if auto.status == status else required
    other = required if decisive is auto else auto
    req, resp = decisive.exchange.request, excerpt(decisive.exchange.result)
    if auto.disabled and required.disabled:
        summary = f"tool calling is not enabled: {auto.what}"
        return Finding(
            "tool_parser", "skip", summary, req, resp, tool_parser_fix(family), (required.line,), informational=True
        )
    if status == "pass":
        summary = f'calls are parsed: {auto.what} for tool_choice "auto", and tool_choice "required" is enforced'
        return Finding("tool_parser", "pass", summary, req, resp)
    summary = decisive.line
    details: tuple[str, ...] = (other.line,)
    if other.status == decisive.status and other.what == decisive.what:
        summary, details = f'tool_choice "auto" and "required": {decisive.what}', ()
    fix = tool_parser_fix(family) if decisive.unparsed else None
    if auto.prose and required.prose:
        # Not even "required" got a call: the server drops the tools (llama.cpp without tool support, ...).
        ex = required.exchange
        req, resp = ex.request, excerpt(ex.result)
        summary = (
            f'the tools are ignored: no call for tool_choice "auto" nor "required", the reply is prose: '
            f"{quote(ex.text, 60)}"
        )
        details, fix = (), tools_ignored_fix(family)
    return Finding("tool_parser", status, summary, req, resp, fix, details)


def _json_pointer(path: Any) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _schema_problem(value: object) -> str | None:
    """The first error of `value` against WEATHER_SCHEMA, with its JSON pointer; None if it validates."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(WEATHER_SCHEMA).iter_errors(value))
    if error is None:
        return None
    pointer = _json_pointer(error.absolute_path)
    where = f'JSON pointer "{pointer}"' if pointer else 'JSON pointer "" (the document root)'
    return f"at {where}: {error.message[:160]}"


async def check_structured_output(ctx: Context) -> Finding:
    """Check 13: `response_format: {type: json_schema}` gives content that validates against the schema."""
    if ctx.chat_blocked:
        return skipped("structured_output", ctx.chat_blocked)
    max_tokens = ctx.fit(PIPELINE_MAX_TOKENS)
    sampling = {"response_format": RESPONSE_FORMAT}
    ex = await ctx.client.chat("structured_output", SCHEMA_QUESTION, max_tokens=max_tokens, sampling=sampling)
    family = _family(ctx, ex.text)
    req, resp = ex.request, excerpt(ex.result)
    r = ex.result
    if r.error_kind == "http_error":
        detail = r.error_detail or f"HTTP {r.http_status}"
        summary = f"the server rejects response_format json_schema: {detail[:120]}{'…' if len(detail) > 120 else ''}"
        return Finding("structured_output", "warn", summary, req, resp, structured_output_fix(family))
    if not ex.ok:
        return _inconclusive("structured_output", ex)
    m = r.measurement
    assert m is not None
    if budget_exhausted(m):
        summary = "inconclusive: the reasoning used all of max_tokens before any JSON (see check 11)"
        return Finding("structured_output", "warn", summary, req, resp)
    body = m.text
    details: tuple[str, ...] = ()
    if first_think_marker(body) is not None:
        # One cause, one failure: the leak is check 11's; the JSON after the thinking is judged here.
        body = body.rsplit("</think>", 1)[-1]
        details = ("the thinking is in `content` (see check 11): the text after </think> is judged",)
    body = body.strip()
    try:
        value, end = json.JSONDecoder().raw_decode(body)
    except ValueError:
        if m.finish_reason == "length" and body.startswith(("{", "[")):
            summary = f"the JSON was cut by max_tokens={max_tokens} before it closed: {quote(body, 60)}"
            return Finding("structured_output", "warn", summary, req, resp, details=details)
        summary = f"response_format is not enforced: the content is not JSON: {quote(body, 80)}"
        return Finding("structured_output", "fail", summary, req, resp, structured_output_fix(family), details)
    rest = body[end:].strip()
    problem = _schema_problem(value)
    if problem is not None:
        summary = f"response_format is not enforced: the content is JSON but breaks the schema {problem}"
        details = (*details, f"content: {quote(body, 80)}")
        return Finding("structured_output", "fail", summary, req, resp, structured_output_fix(family), details)
    if rest:
        # The grammar ends with the document; text after it means the server did not stop there (check 4).
        summary = (
            f"the JSON validates against the schema, but the reply goes on after it: {quote(rest, 40)} "
            f"(finish_reason={m.finish_reason}; see check 4), so json.loads(content) fails"
        )
        return Finding("structured_output", "warn", summary, req, resp, details=details)
    summary = f"the content validates against the requested JSON schema: {quote(body, 60)}"
    return Finding("structured_output", "pass", summary, req, resp, details=details)
