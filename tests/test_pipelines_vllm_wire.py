"""The pipeline checks judge real vLLM 0.32 replies: the recorded wire of tests/fixtures/vllm-0.32.0/pipelines*/.

Each fixture is a real server's reply (tests/realservers/record_vllm.py --pipelines), fed byte for
byte through the same meter and checks the daemon uses. What they must say is what happened on the
real server, including two things vLLM 0.32 does that the mock's authors did not expect:
- with its default `--tool-strict-level auto`, `tool_choice: required` or a named function constrains
  only the envelope (`<tool_call>{"name": ..., "arguments": `); the tiny model then writes free text
  until max_tokens. Only a `strict: true` tool gets its arguments pinned to the schema;
- the qwen3 reasoning parser reads an output without `</think>` as all reasoning, and structured
  output only starts after `</think>`: a wrong parser leaves `content` null with finish `stop`.
A healthy reply (prose under tool_choice auto, a schema-enforced JSON reply) must fail nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.checks import run_checks
from monitor.config import ProbeSettings
from monitor.meter import StreamMeasurement, StreamMeter

FIXTURES = Path(__file__).parent / "fixtures" / "vllm-0.32.0"
PROBE_FIELDS = ("messages", "max_tokens", "temperature", "stream")

# fixture -> the checks that must fail, and nothing else.
EXPECTED: dict[str, set[str]] = {
    "pipelines/tools_auto": set(),
    "pipelines/tools_auto_stream": set(),
    "pipelines/json_schema": set(),
    "pipelines/json_schema_stream": set(),
    # The envelope alone is enforced: free text in "arguments" until max_tokens.
    "pipelines/tools_required": {"truncated", "tool_call_missing"},
    "pipelines/tools_named": {"truncated", "tool_call_missing"},
    "pipelines/tools_required_stream": {"truncated", "tool_call_invalid"},
    "pipelines/tools_named_stream": {"truncated", "tool_call_invalid"},
    # Strict: valid arguments, but the envelope never closes before max_tokens.
    "pipelines/tools_required_strict": {"truncated", "tool_call_missing"},
    "pipelines/tools_named_strict": {"truncated", "tool_call_missing"},
    "pipelines/tools_required_strict_stream": {"truncated"},
    # json_object is not enforced: an unterminated key until max_tokens.
    "pipelines/json_object": {"truncated", "schema_invalid"},
    # The qwen3 parser on a model that never writes </think>: the answer is parsed as reasoning.
    "pipelines-reasoning-qwen3/reasoning_chat": {"answer_empty"},
    "pipelines-reasoning-qwen3/reasoning_chat_stream": {"answer_empty"},
    "pipelines-reasoning-qwen3/json_schema": {"answer_empty"},
    "pipelines-reasoning-qwen3/tools_required_stream": {"answer_empty", "tool_call_missing"},
}


def _probe(request: dict[str, Any]) -> ProbeSettings:
    body = request["json"]
    fields = {key: body[key] for key in PROBE_FIELDS if key in body}
    sampling = {key: body[key] for key in ("tools", "tool_choice", "response_format") if key in body}
    return ProbeSettings.model_validate(
        {"name": "p", "target": "vllm", "endpoint": "chat", "stream": False, **fields, **sampling}
    )


def _wire(response: dict[str, Any]) -> bytes:
    if response["kind"] == "sse":
        events = [e if isinstance(e, str) else json.dumps(e, ensure_ascii=False) for e in response["events"]]
        return "".join(f"data: {event}\n\n" for event in events).encode()
    return json.dumps(response["body"], ensure_ascii=False).encode()


def _measure(fixture: dict[str, Any], stream: bool) -> StreamMeasurement:
    meter = StreamMeter("chat", stream=stream, start_s=0.0)
    meter.feed(_wire(fixture["response"]), 0.01)
    return meter.finish(0.02)


def test_every_pipeline_fixture_is_judged() -> None:
    recorded = {f"{p.parent.name}/{p.stem}" for p in FIXTURES.glob("pipelines*/*.json")}
    assert recorded - {"pipelines/error_invalid_schema"} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_checks_on_real_vllm_pipeline_replies(name: str) -> None:
    fixture = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert fixture["response"]["status"] == 200
    probe = _probe(fixture["request"])
    m = _measure(fixture, probe.stream)
    assert m.error_kind is None, m.error_detail
    failed = {c.name: c.detail for c in run_checks(probe, m) if not c.passed}
    assert set(failed) == EXPECTED[name], failed


def test_the_streamed_strict_call_is_assembled_from_fragments() -> None:
    fixture = json.loads((FIXTURES / "pipelines/tools_required_strict_stream.json").read_text(encoding="utf-8"))
    m = _measure(fixture, stream=True)
    assert [(c.index, c.type, c.name, json.loads(c.arguments)) for c in m.tool_calls] == [
        (0, "function", "get_weather", {"city": "Paris"})
    ]
    assert m.tool_calls[0].id is not None and m.tool_calls[0].id.startswith("chatcmpl-")


def test_reasoning_tokens_are_measured_from_usage_when_vllm_sends_them() -> None:
    fixture = json.loads((FIXTURES / "pipelines-reasoning-qwen3/reasoning_chat_stream.json").read_text("utf-8"))
    m = _measure(fixture, stream=True)
    assert m.reasoning_text == "Hello! How can I help?" and m.text == ""
    assert (m.reasoning_tokens, m.reasoning_tokens_estimated) == (7, False)
    assert m.ttft_ms is not None and m.ttfa_ms is None
