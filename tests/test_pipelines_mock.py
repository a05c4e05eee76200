"""Against the mock's reasoning flavours, each pipeline fault mode makes exactly its check fail.

The real mock process over loopback HTTP, the real Prober and checks: the healthy flavours pass every
check (no false alarm), and `--no-reasoning-parser`, `--no-tool-parser`, `--ignore-response-format`
and `--reasoning-budget-exhaust` each fail the one check that names their cause (issue 14).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from monitor.config import parse_settings
from monitor.probes import Prober
from monitor.results import ProbeResult
from tests.mockserver import MockProcess

MODEL = "glm-4.5"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
ASK = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
PROBES: dict[str, dict[str, Any]] = {
    "reply": {"messages": [{"role": "user", "content": "你好"}], "reasoning": "expect", "max_tokens": 1024},
    "tool": {"messages": ASK, "tools": [WEATHER], "tool_choice": "auto", "max_tokens": 1024,
             "expect": {"tool_call": {"name": "get_weather"}}, "temperature": 0, "stream_parity": True},
    "json": {"messages": [{"role": "user", "content": "Is Paris in France?"}], "max_tokens": 1024,
             "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}},
}  # fmt: skip


@pytest.fixture(name="mock", scope="module", params=["glm45", "qwen3"])
def fix_mock(request: pytest.FixtureRequest) -> Iterator[MockProcess]:
    with MockProcess(reasoning_model=request.param, model=MODEL, itl_ms=1) as process:
        yield process


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _failed(mock: MockProcess, session: aiohttp.ClientSession, stream: bool) -> dict[str, set[str]]:
    probes = [{"name": name, "target": "mock", "stream": stream, **probe} for name, probe in PROBES.items()]
    settings = parse_settings({"targets": [{"name": "mock", "base_url": mock.base_url, "model": MODEL}],
                               "probes": probes})  # fmt: skip
    out: dict[str, set[str]] = {}
    for probe in settings.probes:
        result: ProbeResult = await Prober(session).run(settings.targets[0], probe)
        assert result.error_kind is None, (probe.name, result.error_detail)
        out[probe.name] = {c.name for c in result.checks if not c.passed}
    return out


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ({}, {"reply": set(), "tool": set(), "json": set()}),
        # Without a reasoning parser vLLM applies the grammar from the first token: no thinking in JSON.
        ({"no_reasoning_parser": True}, {"reply": {"think_leak"}, "tool": {"think_leak"}, "json": set()}),
        # Both the streamed and the unstreamed reply carry the call as text: they agree, parity passes.
        ({"no_tool_parser": True}, {"reply": set(), "tool": {"tool_call_missing"}, "json": set()}),
        ({"ignore_response_format": True}, {"reply": set(), "tool": set(), "json": {"schema_invalid"}}),
        ({"reasoning_budget_exhaust": True},
         {"reply": {"answer_empty"}, "tool": {"answer_empty", "tool_call_missing"}, "json": {"answer_empty"}}),
    ],
)  # fmt: skip
async def test_each_mode_fails_exactly_its_check(
    mock: MockProcess, session: aiohttp.ClientSession, stream: bool, mode: dict[str, Any],
    expected: dict[str, set[str]],
) -> None:  # fmt: skip
    mock.reset()
    if mode:
        mock.configure(**mode)
    assert await _failed(mock, session, stream) == expected
