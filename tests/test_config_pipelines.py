"""Probe config for the server pipelines: reasoning, tool calls, structured output (issue 14, parts 2 and 8).

A schema that is itself invalid is the config's fault, not the server's: it must be a one-line
config error naming its YAML path (exit 2), never a `schema_invalid` failure on every reply.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import parse_settings
from monitor.errors import ConfigError

TARGETS = [{"name": "m", "base_url": "http://127.0.0.1:1/v1"}]
HELLO = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _probe(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "target": "m", "messages": HELLO, **fields}


def _error(probe: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"targets": TARGETS, "probes": [probe]})
    return str(caught.value)


def test_a_tool_probe_and_a_structured_probe_validate() -> None:
    settings = parse_settings(
        {"targets": TARGETS, "probes": [
            _probe(name="tool", temperature=0, stream_parity=True, reasoning="expect", tools=[WEATHER],
                   tool_choice="required", expect={"tool_call": {"name": "get_weather"}}),
            _probe(name="json", response_format={"type": "json_schema", "json_schema": {
                "name": "city", "schema": {"type": "object", "required": ["city"]}}},
                   expect={"json_schema": {"type": "object"}}),
            _probe(name="plain", reasoning="forbid"),
        ]}
    )  # fmt: skip
    tool, structured, plain = settings.probes
    # tools, tool_choice and response_format are request fields, sent as written.
    assert tool.sampling["tools"] == [WEATHER] and tool.sampling["tool_choice"] == "required"
    assert tool.wants_tool_call and tool.reasoning == "expect" and tool.stream_parity
    assert structured.sampling["response_format"]["type"] == "json_schema" and not structured.wants_tool_call
    assert plain.reasoning == "forbid" and not plain.wants_tool_call


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        (_probe(tools=[{**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": "strin"}}}]),
         "probes[0].tools[0].function.parameters: not a valid JSON schema at /type: 'strin' is not valid"),
        (_probe(tools=[WEATHER, WEATHER]), "probes[0].tools[1].function.name: duplicate tool name 'get_weather'"),
        (_probe(tools=[{"type": "function"}]), "probes[0].tools[0].function: must be a mapping"),
        (_probe(tools=[]), "probes[0].tools: must be a non-empty list"),
        (_probe(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}),
         "probes[0].tool_choice.function.name: 'nope' is not one of the tools (get_weather)"),
        (_probe(tool_choice="required"), "probes[0].tool_choice: required needs tools"),
        (_probe(tool_choice="sometimes", tools=[WEATHER]), "probes[0].tool_choice: must be none, auto, required"),
        (_probe(response_format={"type": "yaml"}), "probes[0].response_format: must be {type: text | json_object"),
        (_probe(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
         "probes[0].response_format.json_schema.schema: required"),
        (_probe(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"required": "a"}}}),
         "probes[0].response_format.json_schema.schema: not a valid JSON schema at /required: 'a' is not of type"),
        (_probe(expect={"json_schema": {"type": 3}}), "probes[0].expect.json_schema: not a valid JSON schema at /type"),
        (_probe(expect={"json_schema": []}), "probes[0].expect.json_schema: must be a mapping"),
        (_probe(expect={"tool_call": {"name": "get_weather"}}), "probes[0].expect.tool_call: needs tools"),
        (_probe(tools=[WEATHER], expect={"tool_call": {"name": "other"}}),
         "probes[0].expect.tool_call.name: 'other' is not one of the tools (get_weather)"),
        (_probe(tools=[WEATHER], expect={"tool_call": {"arguments_schema": {"minimum": "a"}}}),
         "probes[0].expect.tool_call.arguments_schema: not a valid JSON schema at /minimum"),
        (_probe(reasoning="maybe"), "probes[0].reasoning: must be one of 'expect', 'forbid' or 'any'"),
        (_probe(stream_parity=True), "probes[0].stream_parity: needs temperature: 0"),
        ({"name": "p", "target": "m", "endpoint": "completion", "prompt": "x", "tools": [WEATHER]},
         "probes[0].tools: only chat probes take"),
        ({"name": "p", "target": "m", "endpoint": "completion", "prompt": "x", "reasoning": "expect"},
         "probes[0].reasoning: only chat probes take"),
    ],
)  # fmt: skip
def test_bad_pipeline_config_names_its_yaml_path(probe: dict[str, Any], message: str) -> None:
    error = _error(probe)
    assert error.startswith(message), error
    assert "\n" not in error


def test_check_config_refuses_an_invalid_tool_schema_with_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = {**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": "object", "properties": []}}}
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({"targets": TARGETS, "probes": [_probe(tools=[bad])]}), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", "-c", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "probes[0].tools[0].function.parameters: not a valid JSON schema at /properties" in lines[0]
    assert "Traceback" not in out.stderr


def test_ttfa_reasoning_tokens_and_the_new_checks_are_rule_metrics() -> None:
    rules = [
        {"name": "slow-answer", "kind": "threshold", "metric": "ttfa_ms", "agg": "p95", "window": "10m",
         "op": ">", "value": 2000},
        {"name": "more-thinking", "kind": "regression", "metric": "reasoning_tokens", "window": "1h",
         "baseline_window": "1d", "ratio": 1.5},
        {"name": "think-leak", "kind": "threshold", "metric": "check_failure_rate", "check": "think_leak",
         "window": "10m", "op": ">", "value": 0},
    ]  # fmt: skip
    settings = parse_settings({"targets": TARGETS, "probes": [_probe()], "rules": rules})
    assert [r.metric for r in settings.rules] == ["ttfa_ms", "reasoning_tokens", "check_failure_rate"]
    with pytest.raises(ConfigError, match=r"^rules\[0\]\.metric: must be one of"):
        parse_settings({"targets": TARGETS, "probes": [_probe()], "rules": [{**rules[0], "metric": "tfta_ms"}]})
