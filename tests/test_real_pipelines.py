"""The pipeline probes (tool calls, structured output, reasoning expectations) against a real vLLM 0.32 on CPU.

vLLM runs with `--enable-auto-tool-choice --tool-call-parser hermes`, as a Qwen deployment would.
Guided decoding enforces `response_format` and a strict tool's arguments even with the tiny model's
weights, so what the daemon's checks say here is what vLLM did, not what the weights happened to
write (tests/test_pipelines_vllm_wire.py judges the recorded replies; this runs the whole probe path).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mockserver import REPO_ROOT
from tests.realservers.record_vllm import PIPELINE_ARGS, RESPONSE_FORMAT, STRICT_WEATHER_TOOL, WEATHER_TOOL
from tests.realservers.servers import MODEL_NAME, SERVERS, RealServer

pytestmark = [pytest.mark.real, pytest.mark.timeout(900)]

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(name="vllm", scope="module")
def fix_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    spec = SERVERS["vllm"].require()
    base_argv = spec.argv
    tools = dataclasses.replace(spec, argv=lambda root, port: [*base_argv(root, port), *PIPELINE_ARGS])
    with RealServer(tools, tmp_path_factory.mktemp("vllm-tools")) as server:
        yield server


def _probe(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "target": "vllm", "messages": ASK, "temperature": 0, "max_tokens": 64, **fields}


def _results(vllm: RealServer, tmp_path: Path, probes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    config = tmp_path / "monitor.yaml"
    target = {"name": "vllm", "base_url": vllm.base_url, "model": MODEL_NAME, "timeout_s": 120}
    # JSON is YAML, and json.dumps writes no aliases for objects shared between probes (the loader refuses them).
    config.write_text(json.dumps({"targets": [target], "probes": probes}), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "probe", "-c", str(config), "--db",
         f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return {r["probe"]: r for r in json.loads(proc.stdout)}


def _failed(result: dict[str, Any]) -> set[str]:
    return {c["name"] for c in result["checks"] if not c["passed"]}


def test_structured_output_and_prose_under_auto_pass_with_stream_parity(vllm: RealServer, tmp_path: Path) -> None:
    results = _results(vllm, tmp_path, [
        _probe("json-stream", response_format=RESPONSE_FORMAT, stream=True, stream_parity=True),
        _probe("json-nostream", response_format=RESPONSE_FORMAT, stream=False),
        _probe("auto-prose", tools=[WEATHER_TOOL], tool_choice="auto", stream=True),
    ])  # fmt: skip
    for name, result in results.items():
        assert result["error_kind"] is None and result["ok"], (name, result["checks"], result.get("text"))
    assert json.loads(results["json-stream"]["text"]) == json.loads(results["json-nostream"]["text"])
    parity = {c["name"]: c for c in results["json-stream"]["checks"]}["stream_parity"]
    assert parity["passed"] and "agree on the content" in parity["detail"], parity


def test_a_strict_tool_call_is_assembled_and_valid_and_the_unclosed_envelope_is_named(
    vllm: RealServer, tmp_path: Path
) -> None:
    results = _results(vllm, tmp_path, [
        _probe("strict-stream", tools=[STRICT_WEATHER_TOOL], tool_choice="required", stream=True,
               expect={"tool_call": {"name": "get_weather"}}),
        _probe("loose-nostream", tools=[WEATHER_TOOL], tool_choice="required", stream=False),
        _probe("expects-reasoning", reasoning="expect", stream=True),
    ])  # fmt: skip
    strict = results["strict-stream"]
    # The call streamed in fragments is whole and matches the schema; vLLM never closes the
    # envelope before max_tokens with these weights, and the result says exactly that.
    assert _failed(strict) == {"truncated"}, strict["checks"]
    checks = {c["name"]: c for c in strict["checks"]}
    assert "1 tool call(s): get_weather" in checks["tool_call_missing"]["detail"]
    # Without strict, only the envelope is enforced: the arguments are free text until max_tokens,
    # and the non-streaming parser leaves the unclosed call in content.
    loose = results["loose-nostream"]
    assert _failed(loose) == {"truncated", "tool_call_missing"}, loose["checks"]
    assert "cut off by the length limit" in {c["name"]: c for c in loose["checks"]}["tool_call_missing"]["detail"]
    # The tiny Qwen2 is not a reasoning model: expecting reasoning fails, and nothing else does.
    assert _failed(results["expects-reasoning"]) == {"reasoning_missing"}, results["expects-reasoning"]["checks"]
