"""Checks on the three server pipelines a reasoning model adds: reasoning parser, tool-call parser, structured output.

Each pipeline is one server flag away from answering HTTP 200 and wrong: without a reasoning
parser the thinking lands in `content`; without a tool-call parser the call is written as text and
`tool_calls` is empty; a backend that ignores `response_format` returns prose. Pure functions, no I/O;
each returns `CheckResult(name, passed, detail)`, and a failure's detail says how to fix it.

One cause, one failure: when reasoning ate the whole budget, `answer_empty` fails and the generic
`empty_reply`/`truncated` checks defer to it (see `monitor.checks.run_checks`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from monitor.config import ProbeSettings
from monitor.config.schemas import response_schema
from monitor.meter import StreamMeasurement, ToolCall
from monitor.results import CheckResult

__all__ = [
    "THINK_MARKERS",
    "budget_exhausted",
    "check_answer_empty",
    "check_reasoning",
    "check_schema",
    "check_stream_parity",
    "check_think_leak",
    "check_tool_call_invalid",
    "check_tool_call_missing",
    "excerpt",
    "first_think_marker",
    "pipeline_checks",
    "textual_tool_call",
]

# Reasoning markers that belong in the reasoning field, never in content: DeepSeek-R1, Qwen3 and
# GLM-4.5+ write <think>…</think>; gpt-oss's harmony format names an analysis channel.
THINK_MARKERS: tuple[str, ...] = ("<think>", "</think>", "<|channel|>analysis", "<|begin_of_thought|>")
# A tool call written as text: Hermes/Qwen <tool_call>, GLM-4.5's <arg_key>, Mistral's [TOOL_CALLS],
# DeepSeek's <｜tool▁calls▁begin｜>, Llama's <function=…>, or bare JSON with a name and arguments.
_TEXT_CALL = re.compile(
    r"<tool_call>|<arg_key>|\[TOOL_CALLS\]|<｜tool▁calls?▁begin｜>|<\|tool_calls?_begin\|>|<function=|"
    r"\{\s*\"name\"\s*:\s*\"[^\"]{1,200}\"\s*,\s*\"(?:arguments|parameters)\"\s*:"
)
_REASONING_FIX = (
    "the server is not separating reasoning: start it with a reasoning parser for the model "
    "(vLLM --reasoning-parser qwen3|glm45|deepseek_r1|openai_gptoss; SGLang --reasoning-parser); "
    "`llm-monitor doctor` names the one for this model"
)
_TOOL_FIX = (
    "the server is not parsing tool calls: start vLLM with --enable-auto-tool-choice --tool-call-parser "
    "for the model (hermes for Qwen3, glm45 for GLM-4.5, ...; SGLang --tool-call-parser); "
    "`llm-monitor doctor` names the one for this model"
)
_EXCERPT_CHARS = 60


def excerpt(text: str, at: int) -> str:
    """A short quote of `text` around position `at`, repr-quoted so markup and control characters show."""
    start = max(0, at - 15)
    return repr(text[start : start + _EXCERPT_CHARS])


def pipeline_checks(probe: ProbeSettings, m: StreamMeasurement) -> list[CheckResult]:
    """The pipeline checks that apply to this probe (chat probes only; none for completions)."""
    if probe.endpoint != "chat":
        return []
    out = [check_think_leak(m.text), check_answer_empty(probe, m)]
    if probe.reasoning != "any":
        out.append(check_reasoning(probe.reasoning == "expect", m))
    tools = probe.sampling.get("tools")
    if tools is not None:
        out.append(check_tool_call_missing(probe, m))
        if m.tool_calls:
            out.append(check_tool_call_invalid(probe, m.tool_calls))
    if _wants_json(probe):
        out.append(check_schema(probe, m))
    return out


def first_think_marker(text: str) -> tuple[int, str] | None:
    """The first reasoning marker in `text` and where it is, or None."""
    found = [(text.find(marker), marker) for marker in THINK_MARKERS if marker in text]
    return min(found) if found else None


def check_think_leak(text: str) -> CheckResult:
    first = first_think_marker(text)
    if first is None:
        return CheckResult("think_leak", True, "no reasoning markers in the content")
    where, marker = first
    return CheckResult(
        "think_leak", False, f"{marker} in the content at char {where}: {excerpt(text, where)}; {_REASONING_FIX}"
    )


def _has_reasoning(m: StreamMeasurement) -> bool:
    return bool(m.reasoning_text) or (m.reasoning_tokens > 0 and not m.reasoning_tokens_estimated)


def _tokens(count: int | None, estimated: bool) -> str:
    return "?" if count is None else f"{count}{'~' if estimated else ''}"


def budget_exhausted(m: StreamMeasurement) -> bool:
    """Reasoning came back, no answer and no tool call did: the reasoning used the whole budget (or the
    server cut it). `run_checks` lets `answer_empty` alone report it."""
    return _has_reasoning(m) and not m.text.strip() and not m.tool_calls and m.error_kind is None


def check_answer_empty(probe: ProbeSettings, m: StreamMeasurement) -> CheckResult:
    if not budget_exhausted(m):
        return CheckResult("answer_empty", True, "the reply has an answer" if m.text.strip() or m.tool_calls else
                           "no reasoning and no answer: see empty_reply")  # fmt: skip
    limit = probe.max_tokens or probe.sampling.get("max_completion_tokens")
    reasoning = _tokens(m.reasoning_tokens, m.reasoning_tokens_estimated)
    answer = _tokens(
        None if m.completion_tokens is None else max(0, m.completion_tokens - m.reasoning_tokens), m.tokens_estimated
    )
    budget = f" of max_tokens={limit}" if limit is not None else ""
    if m.finish_reason == "length":
        fix = "raise max_tokens" if limit is not None else "set a larger max_tokens"
        fix += " or lower the reasoning effort (reasoning_effort, or chat_template_kwargs: {enable_thinking: false})"
        cause = "reasoning used the whole budget"
    else:
        fix = "check the reasoning parser: the answer may have been parsed into the reasoning field"
        cause = f"finish_reason={m.finish_reason} with no answer"
    return CheckResult("answer_empty", False, f"{cause}: reasoning {reasoning} tokens, answer {answer}{budget}; {fix}")


def check_reasoning(expected: bool, m: StreamMeasurement) -> CheckResult:
    """`reasoning: expect` needs reasoning in its own field; `reasoning: forbid` needs none at all."""
    present = _has_reasoning(m)
    leaked = first_think_marker(m.text) is not None
    size = f"{len(m.reasoning_text)} chars, {_tokens(m.reasoning_tokens, m.reasoning_tokens_estimated)} tokens"
    if expected:
        if present:
            return CheckResult("reasoning_missing", True, f"reasoning in its own field ({size})")
        if leaked:
            # Not missing: misplaced. think_leak reports it, with the fix; one cause, one failure.
            return CheckResult("reasoning_missing", True, "the reasoning is in the content: see think_leak")
        return CheckResult(
            "reasoning_missing", False,
            "no reasoning in the reply (neither `reasoning` nor `reasoning_content`, no <think> in content): "
            "thinking is off (chat_template_kwargs enable_thinking, reasoning_effort) or this is not a reasoning model",
        )  # fmt: skip
    if present or leaked:
        where = f"in its own field ({size})" if present else "in the content"
        return CheckResult(
            "reasoning_present", False,
            f"the reply reasons {where} although the probe forbids it: pass chat_template_kwargs: "
            "{enable_thinking: false} (Qwen3, GLM-4.5+) or check the deployment's defaults",
        )  # fmt: skip
    return CheckResult("reasoning_present", True, "no reasoning, as the probe asks")


def textual_tool_call(text: str) -> int:
    """Where a tool call written as text starts in `text`, or -1."""
    match = _TEXT_CALL.search(text)
    return match.start() if match else -1


def check_tool_call_missing(probe: ProbeSettings, m: StreamMeasurement) -> CheckResult:
    """A probe with tools: a call written as text in content always fails; no call fails when one is required."""
    if m.tool_calls:
        names = ", ".join(call.name or "?" for call in m.tool_calls)
        return CheckResult("tool_call_missing", True, f"{len(m.tool_calls)} tool call(s): {names}")
    where = textual_tool_call(m.text)
    if where >= 0 and m.finish_reason == "length":
        # vLLM 0.32 seen doing this: the parser only takes a closed call; max_tokens ended it first.
        return CheckResult(
            "tool_call_missing", False,
            f"a tool call was cut off by the length limit before it closed, so it stayed text: "
            f"{excerpt(m.text, where)}; raise max_tokens (a strict tool keeps the arguments short)",
        )  # fmt: skip
    if where >= 0:
        return CheckResult(
            "tool_call_missing", False,
            f"a tool call came back as text in the content (tool_calls empty, finish_reason={m.finish_reason}): "
            f"{excerpt(m.text, where)}; {_TOOL_FIX}",
        )  # fmt: skip
    if probe.wants_tool_call:
        return CheckResult(
            "tool_call_missing", False,
            f"no tool call although the probe requires one (finish_reason={m.finish_reason}; content "
            f"{excerpt(m.text, 0)}): with tool_choice auto the server needs --enable-auto-tool-choice and a "
            "tool-call parser; with required or a named function it must enforce the choice",
        )  # fmt: skip
    return CheckResult("tool_call_missing", True, "no tool call, and none was required")


def check_tool_call_invalid(probe: ProbeSettings, calls: Sequence[ToolCall]) -> CheckResult:
    """Every call names a known function (the expected one, if set) and its arguments are JSON matching the schema."""
    tools = _tools_by_name(probe.sampling.get("tools"))
    wanted = probe.expect.tool_call
    choice = probe.sampling.get("tool_choice")
    expected_name = wanted.name if wanted is not None and wanted.name else None
    if expected_name is None and isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        expected_name = choice["function"].get("name")
    for call in calls:
        label = f"call {call.index} ({call.name!r})"
        if call.name not in tools:
            return CheckResult("tool_call_invalid", False, f"{label}: not one of the tools ({', '.join(tools)})")
        if expected_name is not None and call.name != expected_name:
            return CheckResult("tool_call_invalid", False, f"{label}: the probe expects {expected_name!r}")
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            quoted = excerpt(call.arguments, exc.pos if isinstance(exc, json.JSONDecodeError) else 0)
            return CheckResult("tool_call_invalid", False, f"{label}: arguments are not JSON ({exc}): {quoted}")
        schema = wanted.arguments_schema if wanted is not None and wanted.arguments_schema else None
        schema = schema if schema is not None else tools[call.name].get("parameters")
        if isinstance(schema, dict):
            problem = _schema_error(arguments, schema)
            if problem is not None:
                return CheckResult("tool_call_invalid", False, f"{label}: arguments do not match the schema: {problem}")
    return CheckResult("tool_call_invalid", True, f"{len(calls)} call(s) name known tools with valid arguments")


def _tools_by_name(tools: object) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            out[function["name"]] = function
    return out


def _wants_json(probe: ProbeSettings) -> bool:
    fmt = probe.sampling.get("response_format")
    asks = isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema")
    return asks or probe.expect.json_schema is not None


def check_schema(probe: ProbeSettings, m: StreamMeasurement) -> CheckResult:
    """The content is JSON matching `expect.json_schema`, else the schema `response_format` asked for."""
    if budget_exhausted(m):
        return CheckResult("schema_invalid", True, "no answer to check: see answer_empty")
    try:
        value = json.loads(m.text)
    except ValueError as exc:
        at = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        return CheckResult(
            "schema_invalid", False,
            f"the content is not JSON ({exc}): {excerpt(m.text, at)}; the server ignored response_format: "
            "check its structured-output backend (vLLM guided decoding, --structured-outputs-config; "
            "SGLang --grammar-backend)",
        )  # fmt: skip
    schema = probe.expect.json_schema or response_schema(probe.sampling)
    if schema is None:  # json_object: any JSON object
        ok = isinstance(value, dict)
        return CheckResult(
            "schema_invalid", ok, "a JSON object" if ok else f"JSON but not an object: {excerpt(m.text, 0)}"
        )
    problem = _schema_error(value, schema)
    if problem is None:
        return CheckResult("schema_invalid", True, "the content matches the schema")
    return CheckResult("schema_invalid", False, f"the content does not match the schema: {problem}")


def _schema_error(value: Any, schema: Mapping[str, Any]) -> str | None:
    """The first validation error as `at /pointer: message`, or None if `value` matches."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(value))
    if error is None:
        return None
    pointer = "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in error.absolute_path)
    return f"at {pointer}: {error.message[:200]}"


def _canonical_calls(calls: Sequence[ToolCall]) -> list[tuple[str | None, object]]:
    out: list[tuple[str | None, object]] = []
    for call in calls:
        try:
            arguments: object = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            arguments = call.arguments
        out.append((call.name, arguments))
    return out


def check_stream_parity(streamed: StreamMeasurement, unstreamed: StreamMeasurement) -> CheckResult:
    """At temperature 0 the streamed and the non-streamed reply carry the same tool calls and the same JSON.

    Tool calls compare by name and parsed arguments (ids differ per request); JSON content by value.
    A difference is a parser bug in one of the server's two code paths, not sampling.
    """
    if streamed.error_kind or unstreamed.error_kind:
        failed = "streamed" if streamed.error_kind else "non-streamed"
        return CheckResult("stream_parity", False, f"the {failed} request failed: compare once both answer")
    left, right = _canonical_calls(streamed.tool_calls), _canonical_calls(unstreamed.tool_calls)
    if left != right:
        return CheckResult(
            "stream_parity", False,
            f"tool calls differ: streamed {_short(left)}, non-streamed {_short(right)}; the server's streaming "
            "tool parser and its non-streaming one disagree",
        )  # fmt: skip
    if not left:
        try:
            same = json.loads(streamed.text) == json.loads(unstreamed.text)
        except ValueError:
            same = streamed.text == unstreamed.text
        if not same:
            return CheckResult(
                "stream_parity", False,
                f"content differs: streamed {excerpt(streamed.text, 0)}, non-streamed {excerpt(unstreamed.text, 0)}",
            )  # fmt: skip
    what = f"{len(left)} tool call(s)" if left else "the content"
    return CheckResult("stream_parity", True, f"streamed and non-streamed agree on {what}")


def _short(calls: list[tuple[str | None, object]]) -> str:
    return repr(json.dumps(calls, ensure_ascii=False, default=str)[:120])
