"""Fuzzing the meter: whatever a target sends, it measures or classifies, and never raises.

tests/test_meter.py generates well-formed and lightly damaged streams. These go further: arbitrary
bytes, valid vLLM streams mutated byte by byte (flips, insertions, deletions, repeats, swaps, cuts),
absurd numbers, deep nesting and huge fields. For every input the meter must return a measurement
whose failure, if any, is one of its own classified kinds with a short one-line detail, and its
catch-all (`meter internal error`) must never be the one that answered. An atheris run of
tests/fuzz_meter_atheris.py is included, bounded to a few seconds, when atheris is installed.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from monitor.meter import ERROR_DETAIL_MAX_CHARS, Endpoint, StreamMeasurement
from monitor.meter_measurement import (
    MAX_REASONING_CHARS,
    MAX_TOKEN_COUNT,
    MAX_TOOL_ARGUMENTS_CHARS,
    MAX_TOOL_CALLS,
    MAX_TOOL_FIELD_CHARS,
)
from tests.mockserver import REPO_ROOT
from tests.test_meter import DONE, ROLE, USAGE, SlowMeter, chat, cmpl, cut, measure

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ATHERIS_SECONDS = 8

REASONING_USAGE = USAGE.replace(
    ',"completion_tokens":14}', ',"completion_tokens":14,"completion_tokens_details":{"reasoning_tokens":2}}'
)
VALID: dict[Endpoint, bytes] = {
    "chat": b"".join(
        [
            ROLE,
            chat('{"reasoning":"hm"}'),
            chat('{"reasoning_content":"m"}'),
            chat('{"tool_calls":[{"id":"c1","type":"function","index":0,"function":{"name":"f","arguments":""}}]}'),
            chat('{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}'),
            chat('{"content":"\\u4f60\\u597d"}'),
            chat('{"content":" world"}'),
            chat('{"content":"!"}', '"stop"'),
            REASONING_USAGE.encode(),
            DONE,
        ]
    ),
    "completion": b"".join([cmpl("Hello"), cmpl(" there"), cmpl("!", '"length"'), DONE]),
}
MESSAGE = {
    "role": "assistant",
    "content": "你好",
    "reasoning": "嗯",
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
}
VALID_BODY: dict[Endpoint, bytes] = {
    "chat": json.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": MESSAGE, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 1}},
        },
        ensure_ascii=False,
    ).encode(),
    "completion": json.dumps(
        {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "hi", "finish_reason": "length"}]}
    ).encode(),
}


def check_invariants(m: StreamMeasurement) -> None:
    """What every measurement promises, whatever the input was."""
    assert m.error_kind in (None, "bad_response", "stream_error")
    if m.error_detail is not None:
        assert m.error_kind is not None
        assert "internal error" not in m.error_detail, m.error_detail  # the catch-all never answered
        assert "\n" not in m.error_detail and len(m.error_detail) <= ERROR_DETAIL_MAX_CHARS
    assert math.isfinite(m.latency_ms)
    assert m.ttft_ms is None or math.isfinite(m.ttft_ms)
    assert all(math.isfinite(gap) and gap >= 0 for gap in m.itl_ms)
    assert isinstance(m.text, str) and m.chunk_count >= 0 and m.content_chunk_count >= 0
    for name in ("prompt_tokens", "completion_tokens"):
        value = getattr(m, name)
        assert value is None or (isinstance(value, int) and not isinstance(value, bool)), (name, value)
    assert m.finish_reason is None or isinstance(m.finish_reason, str)
    assert isinstance(m.stop_reason, str | int | None)
    # Reasoning and tool calls: bounded, typed, and the answer never comes before the first token.
    assert m.ttfa_ms is None or (m.ttft_ms is not None and math.isfinite(m.ttfa_ms) and m.ttft_ms <= m.ttfa_ms)
    assert (m.ttfa_ms is None) == (not m.stream or not m.content_chunk_count or m.ttft_ms is None)
    assert isinstance(m.reasoning_text, str) and len(m.reasoning_text) <= MAX_REASONING_CHARS
    assert isinstance(m.reasoning_tokens, int) and 0 <= m.reasoning_tokens <= MAX_TOKEN_COUNT
    assert len(m.tool_calls) <= MAX_TOOL_CALLS and [c.index for c in m.tool_calls] == sorted(
        {c.index for c in m.tool_calls}
    )
    for call in m.tool_calls:
        assert isinstance(call.arguments, str) and len(call.arguments) <= MAX_TOOL_ARGUMENTS_CHARS
        assert all(
            v is None or (isinstance(v, str) and len(v) <= MAX_TOOL_FIELD_CHARS)
            for v in (call.id, call.type, call.name)
        )
    assert min(m.content_chunk_count, m.reasoning_chunk_count, m.tool_call_chunk_count) >= 0


def fuzz_one(endpoint: Endpoint, reads: list[bytes], stream: bool) -> StreamMeasurement:
    """Fast path and reference path agree, and both keep the invariants."""
    fast = measure(endpoint, reads or [b""], stream=stream)
    check_invariants(fast)
    assert fast == measure(endpoint, reads or [b""], stream=stream, meter_cls=SlowMeter)
    return fast


@pytest.fixture(autouse=True)
def no_meter_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The meter logs (with a traceback) only when its catch-all fires: that must never happen."""
    caplog.set_level(logging.ERROR, logger="monitor.meter")
    yield
    assert not [r for r in caplog.records if r.name == "monitor.meter"], caplog.text[-2000:]


ENDPOINTS = st.sampled_from(["chat", "completion"])


@FUZZ
@given(ENDPOINTS, st.booleans(), st.lists(st.binary(max_size=200), max_size=30))
def test_arbitrary_bytes(endpoint: Endpoint, stream: bool, reads: list[bytes]) -> None:
    fuzz_one(endpoint, reads, stream)


MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "repeat", "swap", "cut"]), st.integers(0, 10**6),
              st.integers(0, 255), st.integers(1, 64)),
    min_size=1, max_size=8,
)  # fmt: skip


def mutate(data: bytes, steps: list[tuple[str, int, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, byte, length in steps:
        if not buf:
            break
        i = pos % len(buf)
        if op == "flip":
            buf[i] ^= 1 << (byte % 8)
        elif op == "insert":
            buf[i:i] = bytes([byte]) * (length % 4 + 1)
        elif op == "delete":
            del buf[i : i + length]
        elif op == "repeat":
            buf[i:i] = buf[i : i + length]
        elif op == "swap":
            j = (pos // 7) % len(buf)
            a, b = sorted((i, j))
            buf[a : b + length] = buf[b : b + length] + buf[a + length : b] + buf[a : a + length]
        else:
            del buf[i:]
    return bytes(buf)


@FUZZ
@given(ENDPOINTS, st.booleans(), MUTATIONS, st.lists(st.integers(0, 10_000), max_size=12))
def test_mutated_valid_streams_and_bodies(
    endpoint: Endpoint, stream: bool, steps: list[tuple[str, int, int, int]], points: list[int]
) -> None:
    body = mutate(VALID[endpoint] if stream else VALID_BODY[endpoint], steps)
    whole = fuzz_one(endpoint, [body], stream)
    # However the mutated bytes are split into reads, what does not depend on time is the same.
    pieces = cut(body, points)
    split = fuzz_one(endpoint, pieces, stream)
    for f in fields(StreamMeasurement):
        if f.name not in ("ttft_ms", "ttfa_ms", "latency_ms", "itl_ms"):
            assert getattr(split, f.name) == getattr(whole, f.name), f.name


HUGE_INT = 10**400
ABSURD_VALUES: st.SearchStrategy[object] = st.sampled_from(
    [HUGE_INT, -HUGE_INT, 2**63, -1, 1e308, -1e308, "NaN", "Infinity", "-Infinity", 1e-320, True, None, [], {},
     "x" * 10_000, "\ud800", 0]
)  # fmt: skip
FIELDS = st.sampled_from(["index", "content", "text", "finish_reason", "stop_reason", "prompt_tokens",
                          "completion_tokens", "total_tokens", "choices", "usage", "delta", "message", "reasoning",
                          "reasoning_content", "tool_calls", "function", "arguments", "name", "id", "type",
                          "completion_tokens_details", "reasoning_tokens"])  # fmt: skip


def _literal(value: object) -> str:
    if value in ("NaN", "Infinity", "-Infinity"):
        return str(value)  # bare JSON5-ish literals: Python's json.loads accepts them
    return json.dumps(value)


@FUZZ
@given(ENDPOINTS, st.lists(st.tuples(FIELDS, ABSURD_VALUES), min_size=1, max_size=4), st.booleans())
def test_absurd_numbers_and_types_in_every_field(
    endpoint: Endpoint, replacements: list[tuple[str, object]], stream: bool
) -> None:
    text = (VALID[endpoint] if stream else VALID_BODY[endpoint]).decode()
    for name, value in replacements:
        # Replace the value of the first occurrence of the field, whatever it was.
        key = f'"{name}":'
        at = text.find(key)
        if at < 0:
            continue
        start = at + len(key)
        end = start
        depth = 0
        while end < len(text):
            ch = text[end]
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "," and depth == 0:
                break
            elif ch == '"':
                end = text.index('"', end + 1) if '"' in text[end + 1 :] else len(text)
            end += 1
        text = text[:start] + _literal(value) + text[end:]
    fuzz_one(endpoint, [text.encode("utf-8", "surrogatepass")], stream)


@pytest.mark.parametrize("depth", [10, 900, 5_000, 200_000])
@pytest.mark.parametrize("stream", [True, False])
def test_deep_nesting(depth: int, stream: bool) -> None:
    nested = "[" * depth + "]" * depth
    event = f'{{"choices":[{{"index":0,"delta":{{"content":{nested}}}}}],"x":{nested}}}'
    body = (f"data: {event}\n\n" if stream else event).encode()
    m = fuzz_one("chat", [body], stream)
    assert m.text == ""  # a list is no content, however deep
    if depth > sys.getrecursionlimit():
        assert m.error_kind == "bad_response" and "recursion" in (m.error_detail or ""), m.error_detail


@pytest.mark.parametrize("stream", [True, False])
def test_huge_fields_and_many_tiny_reads(stream: bool) -> None:
    content = "好" * 500_000  # 1.5 MB of content in one event
    body = (chat(json.dumps({"content": content})) + DONE) if stream else VALID_BODY["chat"].replace(
        "你好".encode(), content.encode()
    )  # fmt: skip
    m = fuzz_one("chat", [body], stream)
    assert m.error_kind is None and m.text == content
    # The same bytes one at a time (a slow drip): the same result, in linear time.
    drip = measure("chat", [body[i : i + 1] for i in range(min(len(body), 200_000))] or [b""], stream=stream)
    check_invariants(drip)


def test_absurd_usage_numbers_are_not_taken_as_token_counts() -> None:
    """A usage of 10^25 or -5 tokens is no count: the database's INTEGER columns (and counters) refuse it."""
    for claimed in (10**25, 2**31, -5):
        usage = f'data: {{"choices":[],"usage":{{"prompt_tokens":1,"completion_tokens":{claimed}}}}}\n\n'
        m = measure("chat", [chat('{"content":"x"}') + usage.encode() + DONE])
        check_invariants(m)
        assert m.completion_tokens is not None and 0 <= m.completion_tokens < 2**31
        assert m.tokens_estimated, "an impossible usage is not a measurement"


@pytest.mark.timeout(60)
def test_atheris_fuzzes_the_meter_for_a_few_seconds() -> None:
    pytest.importorskip("atheris", reason="atheris is optional (pip install atheris)")
    out = subprocess.run(
        [sys.executable, "tests/fuzz_meter_atheris.py", f"-max_total_time={ATHERIS_SECONDS}", "-rss_limit_mb=2048"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=ATHERIS_SECONDS + 40,
    )  # fmt: skip
    tail = (out.stdout + out.stderr)[-3000:]
    assert out.returncode == 0, tail
    assert "Done" in tail and "ERROR" not in tail, tail
