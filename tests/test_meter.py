"""StreamMeter: vLLM wire shapes (wire reference sections 1.4, 2, 3.4), TTFT/ITL semantics, properties."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from monitor.meter import Endpoint, StreamMeasurement, StreamMeter, estimate_tokens
from monitor.meter_layout import _INT_SENTINEL, Layout


class SlowMeter(StreamMeter):
    """The reference path: every event goes through json.loads, nothing is learned."""

    _LEARN_ATTEMPTS = 0


HEAD = '"id":"chatcmpl-X","object":"chat.completion.chunk","created":1700000000,"model":"glm-4-9b-chat"'
CMPL_HEAD = '"id":"cmpl-9d0a","object":"text_completion","created":1748737044,"model":"Qwen/Qwen3-4B"'


def chat(delta: str, finish: str = "null", extra: str = "") -> bytes:
    """One vLLM chat chunk, byte for byte as `model_dump_json(exclude_unset=True)` writes it."""
    choice = f'{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}{extra}}}'
    return f'data: {{{HEAD},"choices":[{choice}]}}\n\n'.encode()


def cmpl(text: str, finish: str = "null") -> bytes:
    """One vLLM /v1/completions chunk: every field present, `"usage":null` included."""
    choice = f'{{"index":0,"text":"{text}","logprobs":null,"finish_reason":{finish},"stop_reason":null}}'
    return f'data: {{{CMPL_HEAD},"choices":[{choice}],"usage":null}}\n\n'.encode()


ROLE = chat('{"role":"assistant","content":""}')
EMPTY = chat('{"content":""}')
USAGE = f'data: {{{HEAD},"choices":[],"usage":{{"prompt_tokens":6,"total_tokens":20,"completion_tokens":14}}}}\n\n'
DONE = b"data: [DONE]\n\n"


def measure(
    endpoint: Endpoint,
    reads: list[bytes] | bytes,
    *,
    stream: bool = True,
    times: list[float] | None = None,
    meter_cls: type[StreamMeter] = StreamMeter,
) -> StreamMeasurement:
    """Feed reads at the given timestamps (default 0.1 s apart), finish 0.1 s after the last."""
    if isinstance(reads, bytes):
        reads = [reads]
    times = times or [0.1 * (i + 1) for i in range(len(reads))]
    meter = meter_cls(endpoint, stream=stream, start_s=0.0)
    for data, now_s in zip(reads, times, strict=True):
        meter.feed(data, now_s)
    return meter.finish(times[-1] + 0.1 if times else 0.1)


def both(endpoint: Endpoint, reads: list[bytes], **kwargs: Any) -> StreamMeasurement:
    """Measure with the fast and the reference path; they must agree exactly."""
    fast = measure(endpoint, reads, **kwargs)
    assert fast == measure(endpoint, reads, meter_cls=SlowMeter, **kwargs)
    return fast


# --- streaming chat (section 1.4) ------------------------------------------------------------


def test_vllm_chat_stream_with_role_empty_delta_finish_text_and_usage() -> None:
    reads = [
        ROLE,
        chat('{"content":"你好"}'),
        EMPTY,
        chat('{"content":"，世界"}') + chat('{"content":"!"}'),
        chat('{"content":"。"}', '"length"', ',"stop_reason":null'),
        USAGE.encode() + DONE,
    ]
    m = both("chat", reads)
    assert m.text == "你好，世界!。"
    assert m.ttft_ms == pytest.approx(200.0)
    assert m.itl_ms == pytest.approx((200.0, 0.0, 100.0))  # same read -> a true zero gap
    assert (m.chunk_count, m.content_chunk_count) == (7, 4)
    assert (m.prompt_tokens, m.completion_tokens, m.tokens_estimated) == (6, 14, False)
    assert (m.finish_reason, m.stop_reason, m.done_seen) == ("length", None, True)
    assert (m.error_kind, m.error_detail, m.itl_per_token_exact) == (None, None, False)
    assert m.latency_ms == pytest.approx(700.0)


def test_captured_qwen3_stream_eos_finish_with_empty_content() -> None:
    body = (
        b'data: {"id":"chatcmpl-dc46","object":"chat.completion.chunk","created":1753616032,"model":"Qwen/Qwen3-0.6B",'
        b'"choices":[{"index":0,"delta":{"content":" \xf0\x9f\x98\x8a"},"logprobs":null,"finish_reason":null}]}\n\n'
        b'data: {"id":"chatcmpl-dc46","object":"chat.completion.chunk","created":1753616032,"model":"Qwen/Qwen3-0.6B",'
        b'"choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}\n\n'
        b"data: [DONE]\n\n"
    )
    m = both("chat", [body])
    assert (m.text, m.finish_reason, m.chunk_count, m.content_chunk_count) == (" 😊", "stop", 2, 1)
    assert (m.completion_tokens, m.tokens_estimated, m.prompt_tokens) == (1, True, None)


def test_ttft_ignores_role_chunk_and_empty_deltas_but_counts_reasoning() -> None:
    empty_reasoning = chat('{"reasoning_content":""}')
    reads = [ROLE, EMPTY, chat('{"content":null}'), empty_reasoning, chat('{"reasoning_content":"hmm"}')]
    reads.append(chat('{"content":"a"}'))
    m = both("chat", reads, times=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert m.ttft_ms == pytest.approx(2500.0) and m.ttfa_ms == pytest.approx(3000.0)
    assert (m.text, m.reasoning_text, m.content_chunk_count, m.chunk_count) == ("a", "hmm", 1, 6)
    assert m.itl_ms == pytest.approx((500.0,))  # a reasoning delta is a token: the gap to the answer counts


def test_tool_call_deltas_are_tokens_but_not_content() -> None:
    tool = '{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{}"}}],"content":null}'
    m = both("chat", [ROLE, chat(tool), chat("{}", '"tool_calls"')])
    assert (m.text, m.content_chunk_count, m.finish_reason, m.error_kind) == ("", 0, "tool_calls", None)
    assert m.ttft_ms == pytest.approx(200.0)
    assert (m.ttfa_ms, m.tool_call_chunk_count, m.completion_tokens, m.tokens_estimated) == (None, 1, 1, True)


def test_openai_style_separate_empty_finish_chunk() -> None:
    reads = [ROLE, chat('{"content":"Hi"}'), chat('{"content":" there"}'), chat("{}", '"stop"'), DONE]
    m = both("chat", reads)
    assert (m.text, m.finish_reason, m.content_chunk_count, m.chunk_count) == ("Hi there", "stop", 2, 4)


def test_continuous_usage_stats_gives_per_token_itl() -> None:
    def usage(k: int) -> str:
        return f',"usage":{{"prompt_tokens":6,"total_tokens":{6 + k},"completion_tokens":{k}}}'

    def chunk(delta: str, k: int) -> bytes:
        return f'data: {{{HEAD},"choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]{usage(k)}}}\n\n'.encode()

    reads = [
        chunk('{"role":"assistant","content":""}', 0),
        chunk('{"content":"a"}', 1),
        chunk('{"content":""}', 2),  # a held-back token: its time is part of the next gap
        chunk('{"content":"bc"}', 3),
        chunk('{"content":"d"}', 4),
        f'data: {{{HEAD},"choices":[]{usage(5)}}}\n\n'.encode() + DONE,
    ]
    m = both("chat", reads, times=[0.1, 0.2, 0.3, 0.4, 0.7, 0.8])
    assert m.itl_per_token_exact
    assert m.itl_ms == pytest.approx((100.0, 100.0, 300.0))
    assert (m.completion_tokens, m.prompt_tokens, m.tokens_estimated) == (5, 6, False)


def test_usage_on_some_content_chunks_only_is_not_exact() -> None:
    with_usage = (
        f'data: {{{HEAD},"choices":[{{"index":0,"delta":{{"content":"b"}},"finish_reason":null}}],'
        f'"usage":{{"prompt_tokens":1,"completion_tokens":3}}}}\n\n'
    ).encode()
    m = both("chat", [chat('{"content":"a"}'), with_usage], times=[0.1, 0.4])
    assert not m.itl_per_token_exact
    assert m.itl_ms == pytest.approx((300.0,))
    assert (m.completion_tokens, m.tokens_estimated) == (3, False)


def test_no_usage_estimates_one_token_per_content_event() -> None:
    m = both("chat", [ROLE, chat('{"content":"你好"}'), chat('{"content":"吗"}'), DONE])
    assert (m.completion_tokens, m.tokens_estimated, m.prompt_tokens) == (2, True, None)


def test_stream_without_done_is_fine() -> None:
    m = both("chat", [ROLE, chat('{"content":"x"}', '"stop"')])
    assert (m.done_seen, m.error_kind, m.text) == (False, None, "x")


def test_other_choices_are_ignored() -> None:
    one = chat('{"content":"B"}').replace(b'"index":0', b'"index":1')
    both_choices = (
        f'data: {{{HEAD},"choices":[{{"index":1,"delta":{{"content":"C"}},"finish_reason":"length"}},'
        f'{{"index":0,"delta":{{"content":"A"}},"finish_reason":null}}]}}\n\n'
    ).encode()
    m = both("chat", [one, both_choices, one, chat('{"content":"D"}')])
    assert (m.text, m.finish_reason, m.content_chunk_count, m.chunk_count) == ("AD", None, 2, 4)


def test_stop_reason_token_id_and_string() -> None:
    m = both("chat", [chat('{"content":"x"}', '"stop"', ',"stop_reason":151336')])
    assert (m.finish_reason, m.stop_reason) == ("stop", 151336)
    m = both("chat", [chat('{"content":"x"}', '"stop"', ',"stop_reason":"</s>"')])
    assert m.stop_reason == "</s>"


def test_escaped_json_decodes_like_raw_utf8() -> None:
    raw = [chat('{"content":"你好"}'), chat('{"content":" 😊\\n\\"q\\""}')]
    escaped = [chat('{"content":"\\u4f60\\u597d"}'), chat('{"content":" \\ud83d\\ude0a\\n\\u0022q\\""}')]
    assert both("chat", raw) == both("chat", escaped)
    assert both("chat", escaped).text == '你好 😊\n"q"'


# --- streaming /v1/completions (section 2) ----------------------------------------------------


def test_captured_completion_stream_with_usage_null_on_every_chunk() -> None:
    m = both("completion", [cmpl(" California"), cmpl(",", '"length"'), DONE])
    assert (m.text, m.finish_reason, m.stop_reason, m.done_seen) == (" California,", "length", None, True)
    assert (m.chunk_count, m.content_chunk_count, m.completion_tokens, m.tokens_estimated) == (2, 2, 2, True)
    assert m.ttft_ms == pytest.approx(100.0)


def test_completion_usage_chunk() -> None:
    usage = f'data: {{{CMPL_HEAD},"choices":[],"usage":{{"prompt_tokens":4,"total_tokens":6,"completion_tokens":2}}}}'
    m = both("completion", [cmpl(" a") + cmpl(" b", '"length"'), usage.encode() + b"\n\n" + DONE])
    assert (m.prompt_tokens, m.completion_tokens, m.tokens_estimated, m.text) == (4, 2, False, " a b")


def test_best_of_whole_response_as_one_event() -> None:
    event = (
        f'data: {{{CMPL_HEAD},"choices":[{{"index":0,"text":" whole","logprobs":null,"finish_reason":"length",'
        f'"stop_reason":null,"prompt_logprobs":null}}],"usage":{{"prompt_tokens":4,"total_tokens":6,'
        f'"completion_tokens":2}}}}\n\n'
    ).encode()
    m = both("completion", [event + DONE])
    assert (m.text, m.completion_tokens, m.finish_reason, m.content_chunk_count) == (" whole", 2, "length", 1)


# --- SSE framing -----------------------------------------------------------------------------


def test_comments_event_id_retry_lines_are_ignored() -> None:
    reads = [b": ping\n\n", b"event: message\nid: 1\nretry: 100\n" + chat('{"content":"a"}'), b": ping\n\n" + DONE]
    m = both("chat", reads)
    assert (m.text, m.chunk_count, m.done_seen) == ("a", 1, True)


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(eol: bytes) -> None:
    body = ROLE + chat('{"content":"a"}') + chat('{"content":"b"}', '"stop"') + DONE
    expected = both("chat", [body])
    converted = body.replace(b"\n", eol)
    # Every cut, including between "\r" and "\n", must give the same result.
    for cut in range(len(converted) + 1):
        assert both("chat", [converted[:cut], converted[cut:]], times=[0.1, 0.1]) == expected


def test_data_without_space_and_multi_line_data() -> None:
    reads = [b'data:{"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n', b'data: {"choices":\ndata: []}\n\n']
    m = both("chat", reads)
    assert (m.text, m.chunk_count, m.error_kind) == ("a", 2, None)


def test_event_gets_the_time_of_the_read_that_completes_it() -> None:
    first = chat('{"content":"a"}')
    reads = [ROLE + first[:-1], b"\n", first[:-2] + b"\r", b"\n\r\n"]
    m = both("chat", reads, times=[1.0, 2.0, 3.0, 4.0])
    assert m.ttft_ms == pytest.approx(2000.0)
    assert m.itl_ms == pytest.approx((2000.0,))


@pytest.mark.parametrize("done", [b"data:[DONE]", b"data: [DONE] ", b"data:  [DONE]"])
def test_done_variants(done: bytes) -> None:
    m = both("chat", [chat('{"content":"a"}'), done + b"\n\n"])
    assert (m.done_seen, m.chunk_count, m.error_kind) == (True, 1, None)


@pytest.mark.parametrize("bad", [b"\t", b"\x01", b"\n", b"\\", b"\\x", b"\\u12", b"\xe4\xbd", b'"'])
def test_invalid_content_string_after_the_layout_is_learned(bad: bytes) -> None:
    good = [chat('{"content":"a"}'), chat('{"content":"b"}')]
    broken = chat('{"content":"c"}').replace(b'"c"', b'"c' + bad + b'"')
    m = both("chat", [*good, broken, chat('{"content":"d"}')])
    assert m.error_kind == "bad_response"
    assert (m.text, m.chunk_count) == ("abd", 4)


def test_escaped_event_with_other_bytes_after_the_string_is_not_taken_for_the_hot_layout() -> None:
    same_length_post = chat('{"content":"\\u4f60"}', '"ab"')  # "ab" is as long as null
    m = both("chat", [chat('{"content":"a"}'), chat('{"content":"b"}'), same_length_post])
    assert (m.text, m.finish_reason) == ("ab你", "ab")


def test_trailing_data_line_without_blank_line_is_parsed() -> None:
    m = both("chat", [chat('{"content":"a"}') + chat('{"content":"b"}')[:-1]])
    assert (m.text, m.error_kind) == ("ab", None)
    m = both("chat", [chat('{"content":"a"}') + b"data: [DONE]"])
    assert m.done_seen


def test_truncated_final_event_is_malformed() -> None:
    m = both("chat", [chat('{"content":"a"}') + chat('{"content":"b"}')[:-30]])
    assert (m.text, m.error_kind) == ("a", "bad_response")
    assert m.error_detail is not None and m.error_detail.startswith("malformed JSON in SSE event 2: ")


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"error": {"message": "engine died\\nbadly", "type": "BadRequestError", "param": null, "code": 400}}',
        b'data: {"error": {"object": "error", "message": "engine died\\nbadly", "type": "BadRequestError", '
        b'"param": null, "code": 400}}',
        b'data: {"object":"error","message":"engine died\\nbadly","type":"BadRequestError","param":null,"code":400}',
    ],
)
def test_mid_stream_error_event(event: bytes) -> None:
    m = both("chat", [ROLE, chat('{"content":"partial"}'), event + b"\n\n" + DONE])
    assert (m.error_kind, m.error_detail) == ("stream_error", "engine died badly")
    assert (m.text, m.done_seen, m.chunk_count, m.finish_reason) == ("partial", True, 3, None)


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        (b'{"error":"Unauthorized"}', "Unauthorized"),  # the --api-key envelope, as monitor.envelope reads it
        (b'{"error":{"code":500}}', '{"code": 500}'),
        (b'{"error":""}', '""'),
        (b'{"object":"error","type":"X"}', '{"object": "error", "type": "X"}'),
    ],
)
def test_error_events_are_read_by_the_envelope_parser(event: bytes, detail: str) -> None:
    m = both("chat", [chat('{"content":"a"}'), b"data: " + event + b"\n\n" + DONE])
    assert (m.error_kind, m.error_detail, m.text) == ("stream_error", detail, "a")
    body = both("chat", [event], stream=False)
    assert (body.error_kind, body.error_detail) == ("bad_response", f"error in response body: {detail}")


def test_malformed_json_keeps_first_error_and_counts_later_events() -> None:
    reads = [chat('{"content":"a"}'), b'data: {"choices": [\n\n', b"data: nope\n\n", chat('{"content":"b"}')]
    m = both("chat", reads)
    assert m.error_kind == "bad_response"
    assert m.error_detail is not None and m.error_detail.startswith("malformed JSON in SSE event 2: ")
    assert (m.text, m.chunk_count, m.content_chunk_count) == ("ab", 4, 2)


def test_invalid_utf8_event() -> None:
    m = both("chat", [chat('{"content":"a"}'), chat('{"content":"\xff"}').replace(b"\xc3\xbf", b"\xff")])
    assert (m.error_kind, m.error_detail, m.text) == ("bad_response", "invalid UTF-8 in SSE event 2", "a")


def test_event_without_choices_is_bad_response() -> None:
    m = both("chat", [b'data: {"id":"x"}\n\n', chat('{"content":"a"}')])
    assert (m.error_kind, m.error_detail, m.text) == ("bad_response", "SSE event 1 has no choices list", "a")


def test_error_detail_is_one_short_line() -> None:
    event = json.dumps({"error": {"message": "x\n" * 400}}).encode()
    m = both("chat", [b"data: " + event + b"\n\n"])
    assert m.error_detail is not None and "\n" not in m.error_detail and len(m.error_detail) <= 300


@pytest.mark.parametrize(
    ("reads", "detail"),
    [
        ([], "empty stream"),
        ([b"", b"\n\n"], "empty stream"),
        ([b": ping\n\n"], "no SSE data events in stream body: : ping"),
        ([DONE], "empty stream: only [DONE]"),
        ([b"<html>oops</html>"], "no SSE data events in stream body: <html>oops</html>"),
    ],
)
def test_empty_streams(reads: list[bytes], detail: str) -> None:
    m = both("chat", reads or [b""])
    assert (m.error_kind, m.error_detail, m.ttft_ms) == ("bad_response", detail, None)


# --- non-streaming bodies and plain JSON in a stream ------------------------------------------

CHAT_BODY = (
    b'{"id":"chatcmpl-4dc4","object":"chat.completion","created":1746809788,"model":"TinyLlama",'
    b'"choices":[{"index":0,"message":{"role":"assistant","reasoning_content":null,'
    b'"content":"I don\'t have \xe4\xbd\xa0",'
    b'"tool_calls":[]},"logprobs":null,"finish_reason":"stop","stop_reason":null}],'
    b'"usage":{"prompt_tokens":29,"total_tokens":105,"completion_tokens":76,"prompt_tokens_details":null},'
    b'"prompt_logprobs":null}'
)
CMPL_BODY = (
    b'{"id":"cmpl-e084","object":"text_completion","created":1748736946,"model":"Qwen/Qwen3-4B",'
    b'"choices":[{"index":0,"text":" city in the state of California,","logprobs":null,"finish_reason":"length",'
    b'"stop_reason":null,"prompt_logprobs":null}],'
    b'"usage":{"prompt_tokens":4,"total_tokens":36,"completion_tokens":32,"prompt_tokens_details":null},'
    b'"kv_transfer_params":null}'
)


def test_non_streaming_chat_body() -> None:
    m = both("chat", [CHAT_BODY[:50], CHAT_BODY[50:]], stream=False)
    assert (m.text, m.finish_reason, m.stop_reason) == ("I don't have 你", "stop", None)
    assert (m.prompt_tokens, m.completion_tokens, m.tokens_estimated) == (29, 76, False)
    assert (m.ttft_ms, m.itl_ms, m.chunk_count, m.content_chunk_count, m.done_seen) == (None, (), 1, 1, False)
    assert not m.itl_per_token_exact
    assert m.latency_ms == pytest.approx(300.0)


def test_non_streaming_completion_body() -> None:
    m = both("completion", [CMPL_BODY], stream=False)
    assert (m.text, m.finish_reason, m.completion_tokens) == (" city in the state of California,", "length", 32)


def test_non_streaming_null_content_and_no_usage() -> None:
    body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"tool_calls"}]}'
    m = both("chat", [body], stream=False)
    assert (m.text, m.content_chunk_count, m.completion_tokens, m.tokens_estimated) == ("", 0, 0, True)
    body = b'{"choices":[{"index":0,"message":{"content":"\\u4f60\\u597d, world"},"stop_reason":7}]}'
    m = both("chat", [body], stream=False)
    assert (m.text, m.completion_tokens, m.tokens_estimated, m.stop_reason) == ("你好, world", 4, True, 7)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "empty response body"),
        (b'{"choices":[{"index":0,', "malformed JSON response body: Expecting "),
        (b"[1]", "response body is not a JSON object"),
        (b'{"object":"chat.completion"}', "response has no choices"),
        (b'{"choices":[{"index":1,"message":{"content":"x"}}]}', "response has no choice with index 0"),
        (b'{"choices":[{"index":0,"text":"x"}]}', "choices[0] has no message object"),
        (b'{"choices":[{"index":0,"message":{"content":["x"]}}]}', "choices[0] content is a list, not a string"),
        (b'{"error":{"message":"The model `gpt-4` does not exist.","type":"NotFoundError","param":null,"code":404}}',
         "error in response body: The model `gpt-4` does not exist."),
        (b'{"object":"error","message":"boom","type":"BadRequestError","param":null,"code":400}',
         "error in response body: boom"),
        (b"\xff{}", "invalid UTF-8 in response body"),
    ],
)  # fmt: skip
def test_non_streaming_bad_bodies(body: bytes, detail: str) -> None:
    m = both("chat", [body], stream=False)
    assert m.error_kind == "bad_response"
    assert m.error_detail is not None and m.error_detail.startswith(detail)
    assert (m.chunk_count, m.ttft_ms) == (1 if body else 0, None)


def test_completion_body_without_text() -> None:
    m = both("completion", [b'{"choices":[{"index":0,"message":{"content":"x"}}]}'], stream=False)
    assert (m.error_kind, m.error_detail) == ("bad_response", "choices[0] has no text")


def test_stream_answered_with_plain_json_is_measured_like_non_streaming() -> None:
    m = both("chat", [CHAT_BODY[:100], CHAT_BODY[100:]])
    assert (m.stream, m.text, m.ttft_ms, m.chunk_count, m.completion_tokens) == (True, "I don't have 你", None, 1, 76)
    assert m.error_kind is None
    err = both("chat", [b'{"error":{"message":"boom","code":500}}'])
    assert (err.error_kind, err.error_detail) == ("bad_response", "error in response body: boom")


def test_finish_twice_gives_the_same_measurement() -> None:
    meter = StreamMeter("chat", stream=False, start_s=0.0)
    meter.feed(CHAT_BODY, 0.1)
    assert meter.finish(0.2) == meter.finish(0.2)


# --- per-chunk usage (continuous_usage_stats): the learned layout's integer slots ------------


def chat_u(content: str, k: int, prompt: int = 6, finish: str = "null", usage: str | None = None) -> bytes:
    """A vLLM chat chunk with continuous usage; ``usage`` replaces the usage object's text."""
    usage = usage or f'{{"prompt_tokens":{prompt},"total_tokens":{prompt + k},"completion_tokens":{k}}}'
    choice = f'{{"index":0,"delta":{{"content":{json.dumps(content)}}},"logprobs":null,"finish_reason":{finish}}}'
    return f'data: {{{HEAD},"choices":[{choice}],"usage":{usage}}}\n\n'.encode()


def cmpl_u(text: str, k: int, prompt: int = 4, finish: str = "null", usage: str | None = None) -> bytes:
    usage = usage or f'{{"prompt_tokens":{prompt},"total_tokens":{prompt + k},"completion_tokens":{k}}}'
    choice = f'{{"index":0,"text":{json.dumps(text)},"logprobs":null,"finish_reason":{finish},"stop_reason":null}}'
    return f'data: {{{CMPL_HEAD},"choices":[{choice}],"usage":{usage}}}\n\n'.encode()


def test_continuous_usage_chat_stream_is_read_from_the_layout_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = [chat_u("", 0).replace(b'"content"', b'"role":"assistant","content"')]
    reads += [chat_u(f"t{k}", k) for k in range(1, 40)]
    reads += [chat_u("!", 40, finish='"length"'), USAGE.encode().replace(b":14", b":40") + DONE]
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    for i, data in enumerate(reads[:3]):
        meter.feed(data, 0.1 * (i + 1))
    loads: list[str] = []

    def counting_loads(s: str, **kwargs: Any) -> Any:
        loads.append(s)
        return json.JSONDecoder(**kwargs).decode(s)

    monkeypatch.setattr(json, "loads", counting_loads)
    for i, data in enumerate(reads[3:-2], start=3):
        meter.feed(data, 0.1 * (i + 1))
    assert loads == []  # 37 events, none parsed by json.loads
    monkeypatch.undo()
    m = both("chat", reads)
    assert (m.text, m.prompt_tokens, m.completion_tokens, m.itl_per_token_exact) == (
        "".join(f"t{k}" for k in range(1, 40)) + "!", 6, 40, True)  # fmt: skip
    assert m.itl_ms == pytest.approx((100.0,) * 39)


def test_continuous_usage_completion_stream_with_held_back_and_multi_token_events() -> None:
    reads = [cmpl_u(" a", 1), cmpl_u("", 2), cmpl_u(" b", 3), cmpl_u(" c", 3), cmpl_u('d\\n"你', 7)]
    m = both("completion", reads, times=[0.1, 0.2, 0.4, 0.5, 0.9])
    assert (m.text, m.completion_tokens, m.prompt_tokens) == (' a b cd\\n"你', 7, 4)
    assert not m.itl_per_token_exact  # " c" came with no new token: counts cannot be split into gaps
    reads = [cmpl_u(" a", 1), cmpl_u("", 2), cmpl_u(" b", 3), cmpl_u("cd", 7)]
    m = both("completion", reads, times=[0.1, 0.2, 0.4, 0.8])
    assert m.itl_per_token_exact
    assert m.itl_ms == pytest.approx((150.0, 150.0, 100.0, 100.0, 100.0, 100.0))


@pytest.mark.parametrize(
    "usage",
    [
        '{"completion_tokens":%d,"prompt_tokens":5,"total_tokens":99}',
        '{"total_tokens":99, "completion_tokens": %d ,"prompt_tokens" :5}',
        '{"completion_tokens":%d}',
        '{"prompt_tokens":%d}',
        '{"total_tokens":%d}',
        '{"prompt_tokens":5,"completion_tokens":%d,"prompt_tokens_details":null}',
        '{"prompt_tokens":5,"completion_tokens":%d,"prompt_tokens_details":{"cached_tokens":0}}',
        '{"prompt_tokens":5,"completion_tokens":%d,"completion_tokens":3}',  # the last key wins
        '{"prompt_tokens":5,"completion_tokens":%d.0}',
        '{"prompt_tokens":5,"completion_tokens":%de0}',
        '{"prompt_tokens":5,"completion_tokens":-%d}',
        '{"prompt_tokens":5,"completion_tokens":"%d"}',
        '{"prompt_tokens":5,"x":"\\"completion_tokens\\":%d"}',
        '{"prompt\\u005ftokens":5,"completion_tokens":%d}',  # a key the slot finder cannot see
        '{"prompt_tokens":%d,"completion\\u005ftokens":3}',
        # ... holding the number the layout learner puts in the first slot
        f'{{"prompt\\u005ftokens":{_INT_SENTINEL},"completion_tokens":%d}}',
    ],
)
def test_continuous_usage_key_orders_and_odd_usage_objects(usage: str) -> None:
    chats = [chat_u(c, k, usage=usage % k) for k, c in enumerate("abcdef", start=1)]
    assert both("chat", chats).text == "abcdef"
    cmpls = [cmpl_u(c, k, usage=usage % k) for k, c in enumerate("abcdef", start=1)]
    assert both("completion", cmpls).text == "abcdef"
    chats.insert(3, chat_u("x", 9, usage=usage.replace("%d", "1%d") % 3))  # a count with one more digit
    assert both("chat", chats).text == "abcxdef"


@pytest.mark.parametrize(
    ("digits", "error"),
    [
        ("0", None),
        ("999999999999999", None),  # 15 digits: the longest slot
        ("1000000000000000", None),  # 16: parsed by json.loads instead
        ("9" * 40, None),
        ("9" * 5000, "malformed JSON"),  # json.loads refuses more than 4,300 digits
        ("007", "malformed JSON"),
        ("-0", None),
        ("1.5", None),
        ("", "malformed JSON"),
        ("1 2", "malformed JSON"),
        ("true", None),
        ("null", None),
    ],
)
def test_usage_numbers_after_the_layout_is_learned(digits: str, error: str | None) -> None:
    for slot in range(3):  # the odd number in each of the three slots
        usage = ['"prompt_tokens":6', '"total_tokens":9', '"completion_tokens":3']
        usage[slot] = usage[slot].split(":")[0] + ":" + digits
        odd = chat_u("c", 3, usage="{" + ",".join(usage) + "}")
        m = both("chat", [chat_u("a", 1), chat_u("b", 2), odd, chat_u("d", 4)])
        assert (m.error_detail or "").startswith(f"{error} in SSE event 3") if error else m.error_kind is None
        assert m.text == ("abd" if error else "abcd")


def test_usage_event_with_other_bytes_of_the_same_length_between_the_slots() -> None:
    for odd in (chat_u("c", 3, finish='"ab"'), chat_u("c", 3, usage='{"prompt_tokens":6,"total_tokenz":9}')):
        m = both("chat", [chat_u("a", 1), chat_u("b", 2), odd, chat_u("d", 4)])  # "ab" is as long as null
        assert m.text == "abcd"
        m = both("chat", [chat_u("a", 1), odd, chat_u("b", 2)])  # the first repeat is read without a pattern
        assert m.text == "acb"


@pytest.mark.parametrize("literal", ["\\u007fllm-monitor-slot\\u007f", "\x7fllm-monitor-slot\x7f"])
def test_the_slot_sentinel_written_into_an_event_does_not_fool_the_layout(literal: str) -> None:
    # The first "content" key sits in an object no chunk reads; the real content is the sentinel itself.
    def event(text: str) -> bytes:
        return chat(f'{{"x":{{"content":"{text}"}},"content":"{literal}"}}')

    m = both("chat", [event(c) for c in "abcd"])
    # The sentinel's DEL is a control character, stored as U+FFFD (monitor/untrusted.py) like any other.
    assert m.text == "\ufffdllm-monitor-slot\ufffd" * 4 and m.sanitised


def test_a_layout_promoted_mid_read_matches_the_rest_of_that_read(monkeypatch: pytest.MonkeyPatch) -> None:
    body = ROLE + b"".join(chat(f'{{"content":"t{k}"}}') for k in range(40)) + DONE
    reads: list[bytes] = []
    read = Layout.read

    def counting_read(layout: Layout, block: bytes) -> Any:
        reads.append(block)
        return read(layout, block)

    monkeypatch.setattr(Layout, "read", counting_read)
    meter = StreamMeter("chat", stream=True, start_s=0.0)
    meter.feed(body, 1.0)  # a 2 KiB probe slice holds several events: the hot path must not wait for the next one
    # The event that taught the layout, and the one that promoted it unless an earlier stream compiled it.
    assert 1 <= len(reads) <= 2
    monkeypatch.undo()
    assert both("chat", [body]).text == "".join(f"t{k}" for k in range(40))


def test_a_field_that_changes_in_every_event_gets_no_compiled_pattern() -> None:
    def event(i: int) -> bytes:  # like OpenAI's per-chunk "obfuscation" padding
        return chat('{"content":"x"}').replace(b"]}\n", b'],"pad":"%s"}\n' % (b"z" * i))

    meter = StreamMeter("chat", stream=True, start_s=0.0)
    for i in range(8):
        meter.feed(event(i), float(i))
    assert meter._hot[0] == b""  # four layouts learned, none seen twice
    assert both("chat", [event(i) for i in range(8)]).text == "x" * 8


def test_usage_going_backwards_or_standing_still_is_not_exact() -> None:
    for ks in ([1, 2, 2, 3], [1, 3, 2, 4], [5, 4, 3, 2]):
        m = both("chat", [chat_u(c, k) for c, k in zip("abcd", ks, strict=True)])
        assert (m.itl_per_token_exact, m.completion_tokens, len(m.itl_ms)) == (False, ks[-1], 3)


def test_usage_null_and_missing_usage_between_usage_chunks() -> None:
    plain = chat('{"content":"x"}')
    reads = [chat_u("a", 1), chat_u("b", 2), plain, chat_u("c", 4), plain, chat_u("d", 6), chat_u("e", 7)]
    m = both("chat", reads)
    assert (m.text, m.completion_tokens, m.itl_per_token_exact) == ("abxcxde", 7, False)
    nulls = [cmpl_u("a", 1), cmpl(" b"), cmpl_u("c", 3), cmpl(" d"), cmpl_u("e", 5), cmpl_u("f", 6, finish='"stop"')]
    m = both("completion", nulls)
    assert (m.text, m.completion_tokens, m.finish_reason) == ("a bc def", 6, "stop")


def test_usage_before_choices_and_prompt_change_mid_stream() -> None:
    def first(k: int) -> bytes:
        usage = f'"usage":{{"prompt_tokens":2,"total_tokens":{2 + k},"completion_tokens":{k}}}'
        return f'data: {{{usage},{HEAD},"choices":[{{"index":0,"delta":{{"content":"z"}}}}]}}\n\n'.encode()

    m = both("chat", [first(k) for k in range(1, 6)])
    assert (m.text, m.completion_tokens, m.prompt_tokens, m.itl_per_token_exact) == ("zzzzz", 5, 2, True)
    m = both("chat", [chat_u("a", 1), chat_u("b", 2, prompt=7), chat_u("c", 3, prompt=99999)])
    assert m.prompt_tokens == 99999


# --- estimate_tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("你好", 2), ("你好 world", 4), ("こんにちは", 5), ("😊", 1)],
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


# --- properties ------------------------------------------------------------------------------

TEXTS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(['"', "\\", "\n", "\t", "\x00", "\x7f", "你好", "😊", "\u2028", '"content":"', "}", ""]),
)


@st.composite
def chunk_objects(draw: st.DrawFn, endpoint: Endpoint) -> dict[str, Any]:
    """A chunk as some OpenAI-compatible server might send it."""
    kind = draw(st.sampled_from(["content"] * 6 + ["role", "finish", "usage", "error", "flat_error", "choice1"]))
    obj: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    text = draw(TEXTS)
    if endpoint == "chat":
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None, "stop_reason": None}
    if kind == "role" and endpoint == "chat":
        choice["delta"] = {"role": "assistant", "content": draw(st.sampled_from(["", None]))}
    elif kind == "finish":
        choice["finish_reason"] = draw(st.sampled_from(["stop", "length"]))
        choice["stop_reason"] = draw(st.sampled_from([None, 151336, "</s>"]))
    elif kind == "usage":
        k = draw(st.integers(0, 50))
        obj["usage"] = {"prompt_tokens": 3, "total_tokens": 3 + k, "completion_tokens": k}
        if draw(st.booleans()):
            choice = {}
    elif kind == "error":
        return {"error": {"message": text, "type": "BadRequestError", "param": None, "code": 400}}
    elif kind == "flat_error":
        return {"object": "error", "message": text, "type": "BadRequestError", "param": None, "code": 400}
    elif kind == "choice1":
        choice["index"] = 1
    if endpoint == "completion" and draw(st.booleans()):
        obj["usage"] = obj.get("usage")
    obj["choices"] = [choice] if choice else []
    return obj


@st.composite
def streams(draw: st.DrawFn) -> tuple[Endpoint, bytes]:
    """A whole SSE body: serialized like vLLM or otherwise, sometimes damaged."""
    endpoint: Endpoint = draw(st.sampled_from(["chat", "completion"]))
    ensure_ascii = draw(st.booleans())
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    prefix = draw(st.sampled_from([b"data: ", b"data:"]))
    events = []
    for obj in draw(st.lists(chunk_objects(endpoint), max_size=12)):
        dumped = json.dumps(obj, ensure_ascii=ensure_ascii, separators=separators)
        payload = dumped.encode("utf-8", "surrogatepass")
        damage = draw(st.sampled_from([None] * 12 + ["truncate", "raw_tab", "raw_ctrl", "bad_utf8", "comment", "lf"]))
        if damage == "truncate":
            payload = payload[: draw(st.integers(0, len(payload)))]
        elif damage == "raw_tab":
            payload = payload.replace(b"\\t", b"\t").replace(b"\\n", b"\t")
        elif damage == "raw_ctrl":
            payload = payload.replace(b'content":"', b'content":"\x1f').replace(b'text":"', b'text":"\x1f')
        elif damage == "bad_utf8":
            payload = payload.replace(b"content", b"cont\xe4nt").replace(b"\xe4\xbd\xa0", b"\xe4\xbd")
        elif damage == "comment":
            events.append(b": ping")
        elif damage == "lf":
            payload = payload.replace(b",", b",\n" + prefix, 1)
        events.append(prefix + payload)
    if draw(st.booleans()):
        events.append(b"data: [DONE]")
    eol = draw(st.sampled_from([b"\n"] * 4 + [b"\r\n", b"\r"]))
    body = b"".join(e.replace(b"\n", eol) + eol + eol for e in events)
    if draw(st.booleans()) and body:
        body = body[: -len(eol)]  # no final blank line
    return endpoint, body


USAGE_KEYS = ("prompt_tokens", "total_tokens", "completion_tokens")
# Token counts: small, at the 15-digit slot limit, past it, and past json's 4,300-digit limit.
COUNTS = st.one_of(st.integers(0, 300), st.sampled_from([10**14, 10**15 - 1, 10**15, 10**19, 10**4400]))


@st.composite
def usage_chunks(draw: st.DrawFn, endpoint: Endpoint) -> list[dict[str, Any]]:
    """The chunks of one stream with per-chunk usage: key order, counts and gaps vary, some lack usage."""
    chat_ = endpoint == "chat"
    keys = draw(st.permutations(USAGE_KEYS))
    if draw(st.integers(0, 4)) == 0:
        keys = keys[: draw(st.integers(0, 2))]
    extra = draw(st.sampled_from([{}, {}, {"prompt_tokens_details": None}]))
    prompt, k = draw(COUNTS), 0
    head: dict[str, Any] = {"id": "chatcmpl-1" if chat_ else "cmpl-1", "object": "x", "created": 1, "model": "m"}

    def chunk(text: str | None, finish: str | None = None, usage: bool | None = True) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": {"content": text}} if chat_ else {"index": 0, "text": text}
        choice |= {"logprobs": None, "finish_reason": finish}
        if not chat_ or finish is not None:
            choice["stop_reason"] = None
        obj = {**head, "choices": [choice] if text is not None else []}
        values = {"prompt_tokens": prompt, "total_tokens": prompt + k, "completion_tokens": k}
        if usage or not chat_:  # completions chunks say "usage":null
            obj["usage"] = {key: values[key] for key in keys} | extra if usage else None
        return obj

    chunks = [chunk("")] if chat_ and draw(st.booleans()) else []
    usages = [True] * 8 + [False, None] if draw(st.booleans()) else [True]
    for _ in range(draw(st.integers(0, 12))):
        k = max(0, k + draw(st.sampled_from([1] * 8 + [0, 2, 5, -1])))
        if draw(st.integers(0, 9)) == 0:
            prompt = draw(COUNTS)
        chunks.append(chunk(draw(TEXTS), usage=draw(st.sampled_from(usages))))
    if draw(st.booleans()):
        chunks.append(chunk(draw(TEXTS), finish=draw(st.sampled_from(["stop", "length"]))))
    if draw(st.booleans()):
        chunks.append(chunk(None))
    return chunks


def damage(draw: st.DrawFn, kind: str | None, payload: bytes) -> bytes:
    if kind == "truncate":
        return payload[: draw(st.integers(0, len(payload)))]
    if kind == "raw_ctrl":
        return payload.replace(b'content":"', b'content":"\x1f').replace(b'text":"', b'text":"\x1f')
    if kind == "bad_utf8":
        return payload.replace(b"\xe4\xbd\xa0", b"\xe4\xbd").replace(b"choices", b"ch\xffices")
    if kind in ("zero", "minus", "float"):  # 012, -12 or 12.5 in one usage number
        number = re.search(b'%s": ?([0-9]+)' % draw(st.sampled_from(USAGE_KEYS)).encode(), payload)
        if number is not None:
            at = number.end(1) if kind == "float" else number.start(1)
            return payload[:at] + {"zero": b"0", "minus": b"-", "float": b".5"}[kind] + payload[at:]
    return payload


@st.composite
def continuous_streams(draw: st.DrawFn) -> tuple[Endpoint, bytes]:
    """A whole SSE body with per-chunk usage (continuous_usage_stats), serialized in various ways, maybe damaged."""
    endpoint: Endpoint = draw(st.sampled_from(["chat", "completion"]))
    ensure_ascii = draw(st.booleans())
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    kinds: list[str | None] = [None] * 10
    if draw(st.booleans()):
        kinds += ["truncate", "raw_ctrl", "bad_utf8", "zero", "minus", "float"]
    events = []
    for obj in draw(usage_chunks(endpoint)):
        try:
            dumped = json.dumps(obj, ensure_ascii=ensure_ascii, separators=separators)
        except ValueError:  # 10**4400 has too many digits for json.dumps too
            giant = '"completion_tokens": ' + "9" * 4400
            dumped = json.dumps(obj | {"usage": {"completion_tokens": 0}}).replace('"completion_tokens": 0', giant)
        events.append(b"data: " + damage(draw, draw(st.sampled_from(kinds)), dumped.encode("utf-8", "surrogatepass")))
    if draw(st.booleans()):
        events.append(b"data: [DONE]")
    return endpoint, b"".join(e + b"\n\n" for e in events)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(streams() | continuous_streams(), st.lists(st.integers(0, 10_000), max_size=20))
def test_any_split_gives_the_same_measurement(stream: tuple[Endpoint, bytes], points: list[int]) -> None:
    endpoint, body = stream
    whole = measure(endpoint, [body], times=[1.0])
    pieces = cut(body, points)
    assert measure(endpoint, pieces, times=[1.0] * len(pieces)) == whole
    assert whole.error_detail is None or "internal error" not in whole.error_detail


@PROPERTY
@given(streams() | continuous_streams(), st.lists(st.integers(0, 10_000), max_size=20))
def test_split_with_real_timestamps_keeps_what_does_not_depend_on_time(
    stream: tuple[Endpoint, bytes], points: list[int]
) -> None:
    endpoint, body = stream
    whole = measure(endpoint, [body], times=[1.0])
    pieces = cut(body, points)
    split = measure(endpoint, pieces, times=[1.0 + i for i in range(len(pieces))])
    timeless = {"ttft_ms", "ttfa_ms", "latency_ms", "itl_ms"}
    for f in fields(StreamMeasurement):
        if f.name not in timeless:
            assert getattr(split, f.name) == getattr(whole, f.name), f.name
    assert len(split.itl_ms) == len(whole.itl_ms)


@PROPERTY
@given(streams(), st.lists(st.integers(0, 10_000), max_size=20))
def test_fast_path_equals_reference_path(stream: tuple[Endpoint, bytes], points: list[int]) -> None:
    endpoint, body = stream
    pieces = cut(body, points)
    times = [0.5 * (i + 1) for i in range(len(pieces))]
    assert measure(endpoint, pieces, times=times) == measure(endpoint, pieces, times=times, meter_cls=SlowMeter)


@PROPERTY
@given(continuous_streams(), st.lists(st.integers(0, 10_000), max_size=20))
def test_fast_path_equals_reference_path_with_per_chunk_usage(
    stream: tuple[Endpoint, bytes], points: list[int]
) -> None:
    endpoint, body = stream
    pieces = cut(body, points)
    times = [0.5 * (i + 1) for i in range(len(pieces))]
    assert measure(endpoint, pieces, times=times) == measure(endpoint, pieces, times=times, meter_cls=SlowMeter)


@PROPERTY
@given(
    st.sampled_from(["chat", "completion"]),
    st.booleans(),
    st.lists(st.binary(max_size=40) | st.sampled_from([b"data: ", b"\n\n", b"\r", b'{"choices":[', DONE])),
)
def test_arbitrary_bytes_never_raise(endpoint: Endpoint, stream: bool, reads: list[bytes]) -> None:
    fast = measure(endpoint, reads or [b""], stream=stream)
    assert fast == measure(endpoint, reads or [b""], stream=stream, meter_cls=SlowMeter)
    assert fast.error_detail is None or "internal error" not in fast.error_detail


@pytest.mark.parametrize(
    ("endpoint", "make", "usage_slots"),
    [
        ("chat", lambda i: chat(f'{{"content":"t{i}"}}'), False),
        ("completion", lambda i: cmpl(f"t{i}"), False),
        ("chat", lambda i: chat_u(f"t{i}", i), True),
        ("completion", lambda i: cmpl_u(f"t{i}", i), True),
    ],
)
def test_fast_path_is_taken_for_vllm_streams(endpoint: Endpoint, make: Any, usage_slots: bool) -> None:
    meter = StreamMeter(endpoint, stream=True, start_s=0.0)
    for i in range(5):
        meter.feed(make(i), float(i))
    hot = meter._hot
    # The equality tests above would pass vacuously without a hot layout.
    assert hot.pre.startswith(b"data: {")
    assert (hot.prompt_group > 0, hot.completion_group > 0) == (usage_slots, usage_slots)


def test_done_after_only_the_role_chunk_is_an_abort_by_the_server() -> None:
    # llama-cpp-python's default interrupt: the role chunk, then [DONE], nothing finished; since sse-starlette 3
    # the connection then closes cleanly, so only the stream itself tells.
    m = both("chat", [chat('{"role":"assistant","content":""}'), b"data: [DONE]\n\n"])
    assert m.error_kind == "stream_error"
    assert m.error_detail is not None and "--interrupt_requests False" in m.error_detail
    # Text without a finish_reason is tolerated, as some servers do (test_done_variants).
    m = both("chat", [chat('{"content":"a"}'), b"data: [DONE]\n\n"])
    assert m.error_kind is None and m.finish_reason is None
