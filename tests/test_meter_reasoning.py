"""StreamMeter on reasoning models and tool calls: TTFT vs TTFA, reasoning tokens, tool-call assembly.

The streams are shaped like vLLM 0.32's (`model_dump_json(exclude_unset=True)`: a reasoning delta is
`{"reasoning": ...}` alone, a tool-call delta `{"tool_calls": [DeltaToolCall]}` with `id`, `type`,
`index`, `function.name` and `arguments: ""` in a call's first fragment and `index` plus an
arguments piece after); `reasoning_content` is the name before vLLM's rename and in SGLang.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from monitor.meter import StreamMeasurement, StreamMeter, ToolCall, estimate_tokens
from monitor.meter_measurement import MAX_REASONING_CHARS, MAX_TOOL_ARGUMENTS_CHARS, MAX_TOOL_CALLS
from monitor.untrusted import Untrusted
from tests.test_meter import DONE, SlowMeter, cut, measure

HEAD = {"id": "chatcmpl-9f3e", "object": "chat.completion.chunk", "created": 0, "model": "qwen3"}
FIXTURES = Path(__file__).parent / "fixtures" / "vllm-0.32.0"


def event(obj: object, *, ensure_ascii: bool = False) -> bytes:
    """One ``data:`` event as vLLM writes it; a lone surrogate can only travel \\u-escaped."""
    try:
        dumped = json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        dumped = json.dumps(obj, separators=(",", ":")).encode()
    return b"data: " + dumped + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    if finish is not None:
        choice["stop_reason"] = None
    return event({**HEAD, "choices": [choice], **({"usage": usage} if usage is not None else {})})


def usage(completion: int, reasoning: int | None = None, prompt: int = 9) -> dict[str, Any]:
    """A vLLM usage object; ``completion_tokens_details`` only with a reasoning parser."""
    out: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt + completion}
    out["completion_tokens"] = completion
    if reasoning is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def usage_chunk(completion: int, reasoning: int | None = None) -> bytes:
    return event({**HEAD, "choices": [], "usage": usage(completion, reasoning)})


def tool_start(index: int, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "index": index, "function": {"name": name, "arguments": arguments}}


def tool_args(index: int, arguments: str) -> dict[str, Any]:
    return {"index": index, "function": {"arguments": arguments}}


ROLE = chunk({"role": "assistant", "content": ""})


def both(reads: list[bytes], **kwargs: Any) -> StreamMeasurement:
    fast = measure("chat", reads, **kwargs)
    assert fast == measure("chat", reads, meter_cls=SlowMeter, **kwargs)
    return fast


# --- reasoning, then the answer ----------------------------------------------------------------


def test_reasoning_then_content_splits_ttft_and_ttfa() -> None:
    reads = [ROLE, chunk({"reasoning": "Let me"}), chunk({"reasoning": " think."})]
    reads += [chunk({"content": "Hi"}), chunk({"content": "!"}, "stop"), usage_chunk(5, 2) + DONE]
    m = both(reads, times=[0.1, 0.2, 0.4, 0.7, 0.8, 0.9])
    assert m.ttft_ms == pytest.approx(200.0) and m.ttfa_ms == pytest.approx(700.0)
    assert (m.text, m.reasoning_text, m.finish_reason, m.error_kind) == ("Hi!", "Let me think.", "stop", None)
    assert m.itl_ms == pytest.approx((200.0, 300.0, 100.0))  # reasoning gaps count, and the step to the answer
    assert (m.content_chunk_count, m.reasoning_chunk_count, m.tool_call_chunk_count) == (2, 2, 0)
    assert (m.completion_tokens, m.tokens_estimated) == (5, False)
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated) == (2, False)


def test_reasoning_without_usage_is_estimated_per_reasoning_event() -> None:
    reads = [ROLE, *(chunk({"reasoning": r}) for r in "abc"), chunk({"content": "x"})]
    m = both(reads)
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated) == (3, True)
    assert (m.completion_tokens, m.tokens_estimated) == (4, True)  # one per token event, reasoning included


def test_reasoning_only_reply_cut_by_length() -> None:
    reads = [ROLE, *(chunk({"reasoning": f"step {k} "}) for k in range(4)), chunk({"reasoning": "and"}, "length")]
    m = both([*reads, usage_chunk(16, 16) + DONE])
    assert (m.ttfa_ms, m.text, m.finish_reason, m.content_chunk_count) == (None, "", "length", 0)
    assert m.ttft_ms == pytest.approx(200.0)
    assert (m.reasoning_text, m.reasoning_chunk_count) == ("step 0 step 1 step 2 step 3 and", 5)
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated, m.completion_tokens) == (16, False, 16)
    estimated = both([*reads, DONE])
    assert (estimated.reasoning_tokens, estimated.reasoning_tokens_estimated, estimated.ttfa_ms) == (5, True, None)


def test_an_event_with_reasoning_and_content_is_one_token_event() -> None:
    m = both([chunk({"reasoning": "r", "content": "c"}), chunk({"content": "d"})])
    assert m.ttft_ms == m.ttfa_ms == pytest.approx(100.0)
    assert (m.text, m.reasoning_text, m.content_chunk_count, m.reasoning_chunk_count) == ("cd", "r", 2, 1)
    assert (len(m.itl_ms), m.completion_tokens) == (1, 2)


def test_completions_text_is_the_answer() -> None:
    head = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m"}
    reads = [event({**head, "choices": [{"index": 0, "text": t, "finish_reason": None}]}) for t in ("", " a", " b")]
    m = measure("completion", reads)
    assert m.ttft_ms == m.ttfa_ms == pytest.approx(200.0)
    assert (m.reasoning_text, m.reasoning_tokens, m.tool_calls) == ("", 0, ())


# --- the fast path reads reasoning events too ------------------------------------------------------


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
@pytest.mark.parametrize("continuous", [False, True])
def test_reasoning_events_take_the_fast_path(monkeypatch: pytest.MonkeyPatch, key: str, continuous: bool) -> None:
    def thinking(k: int) -> bytes:
        return chunk({key: f"t{k}"}, usage=usage(k, k) if continuous else None)

    reads = [
        ROLE,
        *(thinking(k) for k in range(1, 30)),
        chunk({"content": "A"}, usage=usage(30, 29) if continuous else None),
    ]
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    for i, read in enumerate(reads[:4]):
        meter.feed(read, 0.1 * (i + 1))
    hot = meter._hot
    assert hot.feeds_reasoning and hot.pre.endswith(f'"{key}":"'.encode())
    assert (hot.completion_group > 0, hot.reasoning_group > 0) == (continuous, continuous)
    loads: list[str] = []

    def counting_loads(text: str, **kwargs: Any) -> Any:
        loads.append(text)
        return json.JSONDecoder(**kwargs).decode(text)

    monkeypatch.setattr(json, "loads", counting_loads)
    for i, read in enumerate(reads[4:-1], start=4):
        meter.feed(read, 0.1 * (i + 1))
    assert loads == []  # 25 reasoning events, none parsed by json.loads
    monkeypatch.undo()
    m = both(reads)
    assert (m.reasoning_text, m.reasoning_chunk_count, m.text) == ("".join(f"t{k}" for k in range(1, 30)), 29, "A")
    assert m.ttft_ms == pytest.approx(200.0) and m.ttfa_ms == pytest.approx(3100.0)
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated) == (29, not continuous)
    assert m.itl_per_token_exact is continuous


def test_interleaved_reasoning_and_content_switch_the_hot_layout() -> None:
    reads = [chunk({"reasoning": "r"}), chunk({"reasoning": "s"}), chunk({"content": "a"}), chunk({"content": "b"})]
    reads += [chunk({"reasoning": "t"}), chunk({"content": "c"}), chunk({"reasoning": "u"}), chunk({"content": "d"})]
    m = both(reads)
    assert (m.reasoning_text, m.text, m.reasoning_chunk_count, m.content_chunk_count) == ("rstu", "abcd", 4, 4)
    assert m.ttft_ms == pytest.approx(100.0) and m.ttfa_ms == pytest.approx(300.0) and len(m.itl_ms) == 7


def test_a_reasoning_event_with_content_beside_it_is_read_right() -> None:
    # The layout's string is the reasoning; the constant content must come along, not be dropped.
    reads = [chunk({"content": "x", "reasoning": r}) for r in ("a", "b", "c")]
    m = both(reads)
    assert (m.text, m.reasoning_text, m.content_chunk_count) == ("xxx", "abc", 3)


# --- the reasoning_content alias -----------------------------------------------------------------


def test_reasoning_content_alias_in_deltas() -> None:
    sglang = [chunk({"role": "assistant", "content": None, "reasoning_content": ""})]
    sglang += [chunk({"content": None, "reasoning_content": r}) for r in ("好的", "，")]
    m = both([*sglang, chunk({"content": "你好", "reasoning_content": None}), DONE])
    assert (m.reasoning_text, m.reasoning_chunk_count, m.text) == ("好的，", 2, "你好")
    assert m.ttft_ms == pytest.approx(200.0) and m.ttfa_ms == pytest.approx(400.0)


def test_both_names_with_the_same_text_count_once_and_reasoning_wins() -> None:
    mlx = [chunk({"reasoning": r, "reasoning_content": r}) for r in ("a", "b")]  # vllm-mlx sends both keys
    assert both(mlx).reasoning_text == "ab"
    assert both([chunk({"reasoning": None, "reasoning_content": "old"})]).reasoning_text == "old"
    assert both([chunk({"reasoning": "new", "reasoning_content": "old"})]).reasoning_text == "new"
    assert both([chunk({"reasoning": 5, "reasoning_content": "old"})]).reasoning_text == "old"
    assert both([chunk({"reasoning": ["x"]})]).reasoning_chunk_count == 0


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_non_streamed_message_reasoning(key: str) -> None:
    message = {"role": "assistant", "content": "42", key: "thinking hard", "tool_calls": []}
    body = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()
    m = both([body], stream=False)
    assert (m.text, m.reasoning_text, m.ttft_ms, m.ttfa_ms) == ("42", "thinking hard", None, None)
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated) == (estimate_tokens("thinking hard"), True)
    assert (m.completion_tokens, m.tokens_estimated) == (1 + estimate_tokens("thinking hard"), True)
    assert (m.content_chunk_count, m.reasoning_chunk_count, m.itl_ms) == (1, 1, ())


# --- usage with and without completion_tokens_details --------------------------------------------


@pytest.mark.parametrize(
    ("details", "tokens", "estimated"),
    [
        (None, 1, True),  # vLLM without --reasoning-parser: "completion_tokens_details": null
        ({"reasoning_tokens": 0}, 0, False),  # with a parser, no reasoning: a measured zero
        ({"reasoning_tokens": 7}, 7, False),
        ({}, 1, True),
        ({"reasoning_tokens": None}, 1, True),
        ({"reasoning_tokens": -1}, 1, True),
        ({"reasoning_tokens": 2**40}, 1, True),
        ({"reasoning_tokens": "7"}, 1, True),
        ({"reasoning_tokens": True}, 1, True),
        ({"reasoning_tokens": 7.0}, 1, True),
        ([7], 1, True),
        ("7", 1, True),
    ],
)
def test_reasoning_tokens_from_usage_details(details: object, tokens: int, estimated: bool) -> None:
    final = usage(3)
    final["completion_tokens_details"] = details
    m = both([chunk({"reasoning": "r"}), chunk({"content": "a"}), event({**HEAD, "choices": [], "usage": final})])
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated) == (tokens, estimated)
    assert (m.completion_tokens, m.tokens_estimated) == (3, False)


def test_usage_without_details_keeps_the_other_counts() -> None:
    m = both([chunk({"reasoning": "r"}), chunk({"content": "a"}), usage_chunk(2)])
    assert (m.prompt_tokens, m.completion_tokens, m.reasoning_tokens, m.reasoning_tokens_estimated) == (9, 2, 1, True)


def test_continuous_usage_with_reasoning_counts_gives_exact_itl() -> None:
    reads = [chunk({"role": "assistant", "content": ""}, usage=usage(0, 0))]
    reads += [chunk({"reasoning": f"r{k}"}, usage=usage(k, k)) for k in (1, 2, 4)]  # the third event: 2 tokens
    reads += [chunk({"content": f"c{k}"}, usage=usage(k, 4)) for k in (5, 6)]
    m = both(reads, times=[0.1, 0.2, 0.3, 0.5, 0.6, 0.7])
    assert m.itl_per_token_exact
    assert m.itl_ms == pytest.approx((100.0, 100.0, 100.0, 100.0, 100.0))
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated, m.completion_tokens) == (4, False, 6)
    assert m.ttft_ms == pytest.approx(200.0) and m.ttfa_ms == pytest.approx(600.0)


def test_usage_only_details_is_still_a_usage() -> None:
    only = event({**HEAD, "choices": [], "usage": {"completion_tokens_details": {"reasoning_tokens": 3}}})
    m = both([chunk({"reasoning": "r"}), only])
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated) == (3, False)
    assert (m.completion_tokens, m.tokens_estimated) == (1, True)


# --- tool calls ------------------------------------------------------------------------------------


def test_tool_call_fragments_of_several_calls_interleaved_by_index() -> None:
    reads = [
        ROLE,
        chunk({"tool_calls": [tool_start(0, "chatcmpl-tool-a", "get_weather")]}),
        chunk({"tool_calls": [tool_args(0, '{"city": ')]}),
        chunk({"tool_calls": [tool_start(1, "chatcmpl-tool-b", "get_time", '{"tz"')]}),
        chunk({"tool_calls": [tool_args(0, '"Paris"}')]}),
        chunk({"tool_calls": [tool_args(1, ': "CET"}'), tool_start(2, "chatcmpl-tool-c", "noop")]}),
        chunk({}, "tool_calls"),
        usage_chunk(17) + DONE,
    ]
    m = both(reads)
    assert m.tool_calls == (
        ToolCall(0, "chatcmpl-tool-a", "function", "get_weather", '{"city": "Paris"}'),
        ToolCall(1, "chatcmpl-tool-b", "function", "get_time", '{"tz": "CET"}'),
        ToolCall(2, "chatcmpl-tool-c", "function", "noop", ""),
    )
    assert (m.finish_reason, m.error_kind, m.text, m.ttfa_ms) == ("tool_calls", None, "", None)
    assert m.tool_call_chunk_count == 5
    assert m.ttft_ms == pytest.approx(200.0) and len(m.itl_ms) == 4
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    for read in reads:
        meter.feed(read, 1.0)
    assert not meter.ended_without_finish  # "tool_calls" is a finish like "stop"


def test_tool_calls_out_of_order_and_content_alongside() -> None:
    reads = [
        chunk({"content": "Calling.", "tool_calls": [tool_start(3, "c3", "f3", "[1")]}),
        chunk({"tool_calls": [tool_start(1, "c1", "f1")]}),
        chunk({"tool_calls": [tool_args(3, "]"), tool_args(1, "{}")]}),
    ]
    m = both(reads)
    assert [(c.index, c.arguments) for c in m.tool_calls] == [(1, "{}"), (3, "[1]")]
    assert m.text == "Calling." and m.ttft_ms == m.ttfa_ms == pytest.approx(100.0)


def test_the_first_non_empty_id_and_name_win() -> None:
    reads = [
        chunk({"tool_calls": [{"index": 0, "id": "", "function": {"name": "", "arguments": "a"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "late", "type": "function", "function": {"name": "f"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "later", "function": {"name": "g", "arguments": "b"}}]}),
    ]
    assert both(reads).tool_calls == (ToolCall(0, "late", "function", "f", "ab"),)


def test_non_streamed_tool_calls() -> None:
    functions = [("get_weather", '{"c": 1}'), ("get_time", "{}")]
    calls = [
        {"id": f"chatcmpl-tool-{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(functions, start=1)
    ]
    message = {"role": "assistant", "content": None, "reasoning": None, "tool_calls": calls}
    body = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}).encode()
    m = both([body], stream=False)
    assert m.tool_calls == (
        ToolCall(0, "chatcmpl-tool-1", "function", "get_weather", '{"c": 1}'),
        ToolCall(1, "chatcmpl-tool-2", "function", "get_time", "{}"),
    )
    assert (m.text, m.finish_reason, m.error_kind, m.tool_call_chunk_count, m.content_chunk_count) == (
        "", "tool_calls", None, 1, 0)  # fmt: skip
    tokens = sum(estimate_tokens(name) + estimate_tokens(arguments) for name, arguments in functions)
    assert (m.completion_tokens, m.tokens_estimated) == (tokens, True)


# --- hostile values --------------------------------------------------------------------------------


def test_huge_arguments_and_reasoning_are_capped() -> None:
    piece = "x" * 40_000
    reads = [chunk({"tool_calls": [tool_start(0, "c", "f", piece)]}), chunk({"tool_calls": [tool_args(0, piece)]})]
    reads += [chunk({"reasoning": "好" * 40_000}), chunk({"reasoning": "好" * 40_000})]
    m = both(reads)
    assert len(m.tool_calls[0].arguments) == MAX_TOOL_ARGUMENTS_CHARS and len(m.reasoning_text) == MAX_REASONING_CHARS
    assert m.capped and m.reasoning_chunk_count == 2
    assert not both(reads[:1]).capped


def test_long_ids_and_names_are_capped() -> None:
    fragment = {"index": 0, "id": "i" * 1000, "type": "t" * 1000, "function": {"name": "n" * 999}}
    m = both([chunk({"tool_calls": [fragment]})])
    call = m.tool_calls[0]
    assert (len(call.id or ""), len(call.type or ""), len(call.name or ""), m.capped) == (256, 256, 256, True)


def test_too_many_tool_calls_are_dropped_and_flagged() -> None:
    reads = [chunk({"tool_calls": [tool_start(i, f"c{i}", "f") for i in range(MAX_TOOL_CALLS + 5)]})]
    reads.append(chunk({"tool_calls": [tool_args(MAX_TOOL_CALLS + 1, "{}"), tool_args(0, "{}")]}))
    m = both(reads)
    assert len(m.tool_calls) == MAX_TOOL_CALLS and m.capped
    assert m.tool_calls[0].arguments == "{}" and m.tool_calls[-1].index == MAX_TOOL_CALLS - 1


@pytest.mark.parametrize(
    "fragment",
    [
        {"index": -1, "function": {"arguments": "x"}},
        {"index": True, "function": {"arguments": "x"}},
        {"index": "0", "function": {"arguments": "x"}},
        {"index": 1.0, "function": {"arguments": "x"}},
        {"index": 2**40, "function": {"arguments": "x"}},
        {"index": None, "function": {"arguments": "x"}},
        "not an object",
        None,
        ["index", 0],
    ],
)
def test_fragments_without_a_usable_index_are_skipped(fragment: object) -> None:
    m = both([chunk({"tool_calls": [fragment]}), chunk({"content": "a"})])
    assert (m.tool_calls, m.tool_call_chunk_count, m.error_kind) == ((), 0, None)
    assert m.ttft_ms == pytest.approx(200.0)  # an event with no usable fragment is no token


def test_a_missing_index_is_the_position_in_the_list() -> None:
    m = both([chunk({"tool_calls": [{"id": "a", "function": {"name": "f"}}, {"id": "b"}]})])
    assert [(c.index, c.id) for c in m.tool_calls] == [(0, "a"), (1, "b")]


@pytest.mark.parametrize("odd", [7, 7.5, True, ["x"], {"k": "v"}])
def test_non_string_ids_types_names_and_arguments_are_absent(odd: object) -> None:
    fragment = {"index": 0, "id": odd, "type": odd, "function": {"name": odd, "arguments": odd}}
    m = both([chunk({"tool_calls": [fragment, {"index": 1, "function": odd}]})])
    assert m.tool_calls == (ToolCall(0, None, None, None, ""), ToolCall(1, None, None, None, ""))
    assert m.tool_call_chunk_count == 1 and m.error_kind is None


def test_surrogates_nul_and_the_key_are_cleaned_everywhere() -> None:
    key = "sk-secret-123456"
    bad = f"\ud800 \x00 {key}"
    fragment = {"index": 0, "id": bad, "type": bad, "function": {"name": bad, "arguments": bad}}
    reads = [chunk({"reasoning": bad}), chunk({"tool_calls": [fragment]})]
    meter = StreamMeter("chat", stream=True, start_s=0.0, untrusted=Untrusted(key))
    for read in reads:
        meter.feed(read, 0.1)
    m = meter.finish(0.2)
    clean = "\ufffd \ufffd [redacted]"
    assert m.reasoning_text == clean and m.tool_calls == (ToolCall(0, clean, clean, clean, clean),)
    assert m.sanitised


def test_a_key_split_across_fragments_is_still_redacted() -> None:
    key = "sk-secret-123456"
    reads = [chunk({"tool_calls": [tool_start(0, "c", "f", '{"k": "sk-sec')]})]
    reads.append(chunk({"tool_calls": [tool_args(0, 'ret-123456"}')]}))
    reads += [chunk({"reasoning": "my key is sk-se"}), chunk({"reasoning": "cret-123456"})]
    meter = StreamMeter("chat", stream=True, start_s=0.0, untrusted=Untrusted(key))
    for read in reads:
        meter.feed(read, 0.1)
    m = meter.finish(0.2)
    assert (m.tool_calls[0].arguments, m.reasoning_text) == ('{"k": "[redacted]"}', "my key is [redacted]")


# --- recorded vLLM 0.32 replies (no reasoning parser, no tools) ------------------------------------


def recorded(case: str) -> dict[str, Any]:
    response: dict[str, Any] = json.loads((FIXTURES / f"{case}.json").read_text(encoding="utf-8"))["response"]
    return response


def test_recorded_vllm_stream_has_ttfa_equal_to_ttft_and_no_reasoning() -> None:
    events = recorded("chat_stream_include_usage")["events"]
    reads = [DONE if e == "[DONE]" else event(e) for e in events]
    m = both(reads)
    assert m.ttft_ms == m.ttfa_ms == pytest.approx(200.0)
    assert (m.reasoning_text, m.reasoning_tokens, m.reasoning_tokens_estimated, m.tool_calls) == ("", 0, True, ())


def test_recorded_vllm_body_with_null_reasoning_and_null_details() -> None:
    body = json.dumps(recorded("chat")["body"]).encode()
    m = both([body], stream=False)
    assert (m.text, m.reasoning_text, m.reasoning_tokens, m.reasoning_tokens_estimated) == (
        "Hello! How can I help?", "", 0, True)  # fmt: skip
    assert (m.completion_tokens, m.tokens_estimated, m.tool_calls, m.capped) == (8, False, (), False)


# --- recorded vLLM 0.32 pipeline replies (tests/realservers/record_vllm.py --pipelines) ----------------

PIPELINE_STREAMS = sorted(
    f"{path.parent.name}/{path.stem}"
    for path in FIXTURES.glob("pipelines*/*.json")
    if json.loads(path.read_text(encoding="utf-8"))["response"]["kind"] == "sse"
)


def recorded_reads(case: str) -> list[bytes]:
    return [DONE if e == "[DONE]" else event(e) for e in recorded(case)["events"]]


@pytest.mark.parametrize("case", PIPELINE_STREAMS)
def test_recorded_pipeline_streams_measure_the_same_however_they_are_cut(case: str) -> None:
    reads = recorded_reads(case)
    m = both(reads)
    assert m.error_kind is None and m.done_seen and not m.tokens_estimated
    body = b"".join(reads)
    for size in (1, 7, 64):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        assert measure("chat", pieces, times=[1.0] * len(pieces)) == measure("chat", [body], times=[1.0])


def test_recorded_qwen3_reasoning_parser_stream() -> None:
    # The tiny model never writes </think>: the qwen3 parser reads the whole reply as reasoning.
    m = both(recorded_reads("pipelines-reasoning-qwen3/reasoning_chat_stream"))
    assert (m.reasoning_text, m.text, m.ttfa_ms, m.finish_reason) == ("Hello! How can I help?", "", None, "stop")
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated, m.completion_tokens, m.reasoning_chunk_count) == (
        7, False, 8, 7)  # fmt: skip
    assert m.ttft_ms == pytest.approx(200.0)


def test_recorded_qwen3_reasoning_parser_body() -> None:
    body = json.dumps(recorded("pipelines-reasoning-qwen3/reasoning_chat")["body"]).encode()
    m = both([body], stream=False)
    assert (m.reasoning_text, m.text, m.reasoning_tokens, m.reasoning_tokens_estimated) == (
        "Hello! How can I help?", "", 7, False)  # fmt: skip


def test_recorded_tool_call_stream_assembles_one_call() -> None:
    # vLLM 0.32's first fragment carries id, type, index and function.name, no arguments key.
    m = both(recorded_reads("pipelines/tools_required_stream"))
    assert [(c.index, c.id, c.type, c.name) for c in m.tool_calls] == [(0, "chatcmpl-<id>", "function", "get_time")]
    assert m.tool_calls[0].arguments == '"' + " the cat" * 9
    assert (m.finish_reason, m.text, m.ttfa_ms, m.tool_call_chunk_count, m.completion_tokens) == (
        "length", "", None, 20, 64)  # fmt: skip


# --- properties: any chunking gives the same measurement --------------------------------------------

TEXTS = st.one_of(st.text(max_size=5), st.sampled_from(["", '"', "\\", "\n", "你好", "😊", "\ud800", "\x00", '{"a":']))


@st.composite
def reasoning_streams(draw: st.DrawFn) -> tuple[bytes, list[str], list[str], dict[int, list[str]]]:
    """A vLLM-like stream of reasoning, content and tool-call fragments, and what it should assemble to."""
    ensure_ascii = draw(st.booleans())
    key = draw(st.sampled_from(["reasoning", "reasoning_content"]))
    continuous = draw(st.booleans())
    body: list[bytes] = []
    reasoning: list[str] = []
    content: list[str] = []
    arguments: dict[int, list[str]] = {}
    tokens = 0

    def emit(delta: dict[str, Any], finish: str | None = None) -> None:
        nonlocal tokens
        tokens += 1
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj: dict[str, Any] = {**HEAD, "choices": [choice]}
        if continuous:
            obj["usage"] = usage(tokens, len(reasoning))
        body.append(event(obj, ensure_ascii=ensure_ascii))

    emit({"role": "assistant", "content": ""})
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["reasoning", "reasoning", "content", "tool", "tool", "empty"]))
        text = draw(TEXTS)
        if kind == "reasoning":
            reasoning += [text] if text else []
            emit({key: text})
        elif kind == "content":
            content += [text] if text else []
            emit({"content": text})
        elif kind == "tool":
            index = draw(st.integers(0, 3))
            if index not in arguments:
                arguments[index] = [text]
                emit({"tool_calls": [tool_start(index, f"call-{index}", f"fn{index}", text)]})
            else:
                arguments[index].append(text)
                emit({"tool_calls": [tool_args(index, text)]})
        else:
            emit({})
    emit({}, draw(st.sampled_from(["stop", "length", "tool_calls"])))
    if draw(st.booleans()):
        body.append(event({**HEAD, "choices": [], "usage": usage(tokens, len(reasoning))}))
    body.append(DONE)
    return b"".join(body), reasoning, content, arguments


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(reasoning_streams(), st.lists(st.integers(0, 100_000), max_size=20))
def test_any_split_gives_the_same_reasoning_and_tool_calls(
    stream: tuple[bytes, list[str], list[str], dict[int, list[str]]], points: list[int]
) -> None:
    body, reasoning, content, arguments = stream
    whole = measure("chat", [body], times=[1.0])
    pieces = cut(body, points)
    assert measure("chat", pieces, times=[1.0] * len(pieces)) == whole
    assert measure("chat", pieces, times=[1.0] * len(pieces), meter_cls=SlowMeter) == whole
    clean = Untrusted().text
    assert (whole.reasoning_text, whole.text) == (clean("".join(reasoning)), clean("".join(content)))
    assert whole.tool_calls == tuple(
        ToolCall(i, f"call-{i}", "function", f"fn{i}", clean("".join(arguments[i]))) for i in sorted(arguments)
    )
    assert whole.error_kind is None and whole.reasoning_chunk_count == len(reasoning)


@PROPERTY
@given(reasoning_streams(), st.lists(st.integers(0, 100_000), max_size=20))
def test_split_with_real_timestamps_keeps_the_order_of_first_token_and_answer(
    stream: tuple[bytes, list[str], list[str], dict[int, list[str]]], points: list[int]
) -> None:
    body, _, content, _ = stream
    pieces = cut(body, points)
    times = [1.0 + i for i in range(len(pieces))]
    split = measure("chat", pieces, times=times)
    assert split == measure("chat", pieces, times=times, meter_cls=SlowMeter)
    whole = measure("chat", [body], times=[1.0])
    timed = {"ttft_ms", "ttfa_ms", "latency_ms", "itl_ms"}
    assert {f.name: getattr(split, f.name) for f in fields(StreamMeasurement) if f.name not in timed} == {
        f.name: getattr(whole, f.name) for f in fields(StreamMeasurement) if f.name not in timed
    }
    assert (split.ttfa_ms is None) == (not content)
    if split.ttfa_ms is not None:
        assert split.ttft_ms is not None and split.ttft_ms <= split.ttfa_ms
