"""The pipeline checks (think_leak, reasoning_missing, answer_empty, tool_call_missing, tool_call_invalid,
schema_invalid, stream_parity) on measurements the real meter makes from vLLM-shaped wire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitor.checks import run_checks
from monitor.checks_pipelines import check_stream_parity, textual_tool_call
from monitor.config import ProbeSettings
from monitor.meter import StreamMeasurement, StreamMeter

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _probe(**kw: Any) -> ProbeSettings:
    shape = {"messages": [{"role": "user", "content": "What is the weather in Paris?"}]}
    return ProbeSettings.model_validate({"name": "p", "target": "t", "endpoint": "chat", **shape, **kw})


def _reply(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> StreamMeasurement:
    """A non-streamed vLLM chat reply, measured by the real meter."""
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29},
    }  # fmt: skip
    meter = StreamMeter("chat", stream=False, start_s=0.0)
    meter.feed(json.dumps(body).encode(), 0.01)
    return meter.finish(0.02)


def _stream(deltas: list[dict[str, Any]], finish: str = "stop") -> StreamMeasurement:
    """A streamed vLLM chat reply, one delta per SSE event, measured by the real meter."""
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    events: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    for i, event in enumerate(events):
        meter.feed(f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', **event})}\n\n".encode(), i / 100)
    meter.feed(b"data: [DONE]\n\n", 1.0)
    return meter.finish(1.0)


def _failed(checks: tuple[Any, ...]) -> dict[str, str]:
    return {c.name: c.detail for c in checks if not c.passed}


def test_a_separated_reasoning_reply_passes_and_ttfa_follows_ttft() -> None:
    m = _stream([{"role": "assistant", "content": ""}, {"reasoning": "The user greets"}, {"reasoning": " me."},
                 {"content": "Hello!"}, {"content": " How can I help?"}])  # fmt: skip
    assert m.reasoning_text == "The user greets me." and m.text == "Hello! How can I help?"
    assert m.ttft_ms is not None and m.ttfa_ms is not None and m.ttfa_ms > m.ttft_ms
    assert _failed(run_checks(_probe(reasoning="expect"), m)) == {}


def test_think_in_content_is_a_think_leak_and_only_that() -> None:
    m = _reply({"content": "<think>The user greets me.</think>\n\nHello! How can I help?"})
    failed = _failed(run_checks(_probe(reasoning="expect"), m))
    assert list(failed) == ["think_leak"]
    assert "<think> in the content at char 0" in failed["think_leak"] and "--reasoning-parser" in failed["think_leak"]


def test_reasoning_missing_and_reasoning_forbidden() -> None:
    plain = _reply({"content": "Hello!"})
    assert list(_failed(run_checks(_probe(reasoning="expect"), plain))) == ["reasoning_missing"]
    assert _failed(run_checks(_probe(reasoning="forbid"), plain)) == {}
    thinking = _reply({"reasoning_content": "Hmm.", "content": "Hello!"})  # SGLang's and older vLLM's name
    failed = _failed(run_checks(_probe(reasoning="forbid"), thinking))
    assert list(failed) == ["reasoning_present"] and "enable_thinking: false" in failed["reasoning_present"]


def test_reasoning_that_eats_the_budget_fails_answer_empty_alone_with_the_token_split() -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 64, "total_tokens": 73,
             "completion_tokens_details": {"reasoning_tokens": 64}}  # fmt: skip
    m = _reply({"reasoning": "Let me think. " * 40, "content": None}, finish="length", usage=usage)
    failed = _failed(run_checks(_probe(max_tokens=64), m))
    assert list(failed) == ["answer_empty"], failed
    assert "reasoning used the whole budget: reasoning 64 tokens, answer 0 of max_tokens=64" in failed["answer_empty"]


def test_a_tool_call_written_as_text_is_quoted() -> None:
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    glm = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
    for text in (hermes, glm, '{"name": "get_weather", "arguments": {"city": "Paris"}}'):
        assert textual_tool_call(text) == 0
        # Even with tool_choice auto (no call required), a call written as text is a parser missing.
        failed = _failed(run_checks(_probe(tools=[WEATHER], tool_choice="auto"), _reply({"content": text})))
        assert list(failed) == ["tool_call_missing"], failed
        assert (
            "came back as text" in failed["tool_call_missing"] and "--tool-call-parser" in failed["tool_call_missing"]
        )
    prose = _reply({"content": "It is sunny in Paris."})
    assert _failed(run_checks(_probe(tools=[WEATHER], tool_choice="auto"), prose)) == {}
    assert list(_failed(run_checks(_probe(tools=[WEATHER], tool_choice="required"), prose))) == ["tool_call_missing"]


def _call(name: str, arguments: str, index: int = 0) -> dict[str, Any]:
    return {"id": f"chatcmpl-tool-{index}", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_calls_streamed_in_fragments_pass_and_match_the_unstreamed_ones() -> None:
    probe = _probe(tools=[WEATHER], tool_choice="required", temperature=0, stream_parity=True)
    streamed = _stream(
        [{"role": "assistant", "content": None},
         {"tool_calls": [{"index": 0, "id": "chatcmpl-tool-a", "type": "function",
                          "function": {"name": "get_weather", "arguments": ""}}]},
         {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
         {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}],
        finish="tool_calls",
    )  # fmt: skip
    unstreamed = _reply({"content": None, "tool_calls": [_call("get_weather", '{"city":"Paris"}')]}, "tool_calls")
    for m in (streamed, unstreamed):
        assert _failed(run_checks(probe, m)) == {}
    parity = check_stream_parity(streamed, unstreamed)
    assert parity.passed, parity
    other = _reply({"content": None, "tool_calls": [_call("get_weather", '{"city":"Rome"}')]}, "tool_calls")
    parity = check_stream_parity(streamed, other)
    assert not parity.passed and "tool calls differ" in parity.detail and "Rome" in parity.detail


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (_call("get_time", "{}"), "not one of the tools (get_weather)"),
        (_call("get_weather", '{"city": '), "arguments are not JSON"),
        (_call("get_weather", '{"town": "Paris"}'), "arguments do not match the schema: at /: 'city' is a required"),
        (_call("get_weather", '{"city": 3}'), "at /city: 3 is not of type 'string'"),
    ],
)
def test_invalid_tool_calls_name_the_problem(call: dict[str, Any], problem: str) -> None:
    m = _reply({"content": None, "tool_calls": [call]}, "tool_calls")
    failed = _failed(run_checks(_probe(tools=[WEATHER], tool_choice="required"), m))
    assert list(failed) == ["tool_call_invalid"], failed
    assert problem in failed["tool_call_invalid"]


def test_a_named_expected_function_must_be_the_one_called() -> None:
    tools = [WEATHER, {"type": "function", "function": {"name": "get_time"}}]
    m = _reply({"content": None, "tool_calls": [_call("get_time", "{}")]}, "tool_calls")
    failed = _failed(run_checks(_probe(tools=tools, expect={"tool_call": {"name": "get_weather"}}), m))
    assert failed == {"tool_call_invalid": "call 0 ('get_time'): the probe expects 'get_weather'"}


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"answer": 391}', None),
        ("The answer is 391.", "the content is not JSON"),
        ('{"answer": "391"}', "at /answer: '391' is not of type 'integer'"),
        ("{}", "at /: 'answer' is a required property"),
    ],
)
def test_structured_output_is_checked_against_the_schema(content: str, problem: str | None) -> None:
    failed = _failed(run_checks(_probe(response_format=FORMAT), _reply({"content": content})))
    if problem is None:
        assert failed == {}
    else:
        assert list(failed) == ["schema_invalid"] and problem in failed["schema_invalid"], failed


def test_expect_json_schema_wins_over_response_format_and_json_object_needs_an_object() -> None:
    loose = _probe(response_format=FORMAT, expect={"json_schema": {"type": "object"}})
    assert _failed(run_checks(loose, _reply({"content": '{"answer": "x"}'}))) == {}
    as_object = _probe(response_format={"type": "json_object"})
    assert list(_failed(run_checks(as_object, _reply({"content": "[1, 2]"})))) == ["schema_invalid"]
    assert _failed(run_checks(as_object, _reply({"content": ' {"a": 1} '}))) == {}


def test_completion_probes_get_no_pipeline_checks() -> None:
    probe = ProbeSettings.model_validate({"name": "p", "target": "t", "endpoint": "completion", "prompt": "x"})
    meter = StreamMeter("completion", stream=False, start_s=0.0)
    meter.feed(b'{"choices": [{"index": 0, "text": "<think>x", "finish_reason": "stop"}]}', 0.01)
    names = {c.name for c in run_checks(probe, meter.finish(0.02))}
    assert not names & {"think_leak", "answer_empty", "tool_call_missing", "schema_invalid"}
