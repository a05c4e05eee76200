"""Checks 11-13 (reasoning parser, tool-call parser, JSON schema) against the real mock and small fake servers.

Each mock mode that breaks one server pipeline must fail exactly that check and name the flag that fixes
it for the model family; the healthy reasoning flavours and the plain GLM-4-9B mock must raise no alarm.
Wire shapes the mock never produces (a model that answers in prose, a call written as bare JSON, a
schema broken at a nested key) come from small aiohttp servers on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from monitor.cli_doctor import doctor_settings
from monitor.config import parse_settings
from monitor.doctor import CHECK_IDS, DoctorReport, Finding, doctor
from monitor.doctor.checks_pipelines import check_structured_output, check_tool_parser
from monitor.doctor.client import DoctorClient
from monitor.doctor.context import Context, ServerInfo
from monitor.doctor.remedies import (
    Family,
    detect_family,
    reasoning_parser_fix,
    structured_output_fix,
    tool_parser_fix,
)
from tests.mockserver import REPO_ROOT, MockProcess

NO_PIPELINES = {"reasoning_parser": "skip", "tool_parser": "skip"}
GLM45 = {"reasoning_model": "glm45", "model": "GLM-4.5-Air"}
QWEN3 = {"reasoning_model": "qwen3", "model": "Qwen3-8B"}


async def _diagnose(mock: MockProcess, db_url: str, model: str) -> DoctorReport:
    settings, name = doctor_settings(None, base_url=mock.base_url, model=model, db=db_url)
    return await doctor(settings, name)


def _not_passing(report: DoctorReport) -> dict[str, str]:
    return {f.id: f.status for f in report.findings if f.status != "pass"}


def _finding(report: DoctorReport, check_id: str) -> Finding:
    return next(f for f in report.findings if f.id == check_id)


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        (GLM45, {}),
        ({**QWEN3, "reasoning_field": "reasoning_content"}, {}),  # older vLLM and SGLang spell the field so
        # GLM-4-9B-Chat without parsers: the pipeline modes change nothing there, so nothing new is flagged.
        ({"no_reasoning_parser": True, "no_tool_parser": True}, NO_PIPELINES),
    ],
    ids=["glm45", "qwen3-reasoning_content", "plain-glm4"],
)  # fmt: skip
async def test_healthy_servers_raise_no_pipeline_alarm(
    mock: MockProcess, sqlite_db_url: str, knobs: dict[str, Any], expected: dict[str, str]
) -> None:
    mock.configure(**knobs)
    report = await _diagnose(mock, sqlite_db_url, str(knobs.get("model", "glm-4-9b-chat")))
    assert [f.id for f in report.findings] == list(CHECK_IDS)
    assert _not_passing(report) == expected, [f.to_json() for f in report.findings if f.status != "pass"]
    if "reasoning_model" in knobs:
        assert "its own field" in _finding(report, "reasoning_parser").summary
        assert 'tool_choice "required" is enforced' in _finding(report, "tool_parser").summary
    else:
        tools = _finding(report, "tool_parser")
        assert tools.summary.startswith("tool calling is not enabled: HTTP 400:")
        assert "--enable-auto-tool-choice and --tool-call-parser to be set" in tools.summary
        assert tools.informational and tools.fix is not None and "GLM-4-9B-Chat" in tools.fix


@pytest.mark.parametrize(
    ("knobs", "check_id", "status", "quoted", "fix"),
    [
        ({**GLM45, "no_reasoning_parser": True}, "reasoning_parser", "fail", "<think>",
         "vLLM `--reasoning-parser glm45`; SGLang `--reasoning-parser glm45`"),
        ({**QWEN3, "no_reasoning_parser": True}, "reasoning_parser", "fail", "<think>",
         "vLLM `--reasoning-parser qwen3`; SGLang `--reasoning-parser qwen3`"),
        ({**GLM45, "no_tool_parser": True}, "tool_parser", "fail", "<arg_key>city</arg_key>",
         "vLLM `--enable-auto-tool-choice --tool-call-parser glm45`; SGLang `--tool-call-parser glm45`"),
        ({**QWEN3, "no_tool_parser": True}, "tool_parser", "fail", '"name\\": \\"get_weather\\"',
         "vLLM `--enable-auto-tool-choice --tool-call-parser hermes`; SGLang `--tool-call-parser qwen25`"),
        ({**QWEN3, "ignore_response_format": True}, "structured_output", "fail", "not JSON",
         "--structured-outputs-config.backend xgrammar"),
        ({"ignore_response_format": True}, "structured_output", "fail", "not JSON", "--grammar-backend xgrammar"),
    ],
    ids=["glm45-no-reasoning-parser", "qwen3-no-reasoning-parser", "glm45-no-tool-parser", "qwen3-no-tool-parser",
         "qwen3-ignore-response-format", "plain-ignore-response-format"],
)  # fmt: skip
async def test_each_pipeline_mode_fails_exactly_its_check(
    mock: MockProcess, sqlite_db_url: str, knobs: dict[str, Any], check_id: str, status: str, quoted: str, fix: str
) -> None:
    mock.configure(**knobs)
    report = await _diagnose(mock, sqlite_db_url, str(knobs.get("model", "glm-4-9b-chat")))
    expected = {check_id: status} | ({} if "reasoning_model" in knobs else NO_PIPELINES)
    assert _not_passing(report) == expected, [f.to_json() for f in report.findings if f.status != "pass"]
    finding = _finding(report, check_id)
    assert quoted in finding.summary and finding.fix is not None and fix in finding.fix
    assert finding.request.startswith("POST /v1/chat/completions") and finding.response_excerpt
    assert report.exit_code == 1


async def test_a_reasoning_budget_eaten_warns_with_the_numbers_and_blames_nothing_else(
    mock: MockProcess, sqlite_db_url: str
) -> None:
    mock.configure(**QWEN3, reasoning_budget_exhaust=True)
    report = await _diagnose(mock, sqlite_db_url, "Qwen3-8B")
    assert _not_passing(report) == {
        "stop_tokens": "skip", "multi_turn": "skip", "sampling_defaults": "warn",
        "reasoning_parser": "warn", "tool_parser": "warn", "structured_output": "warn",
    }, [f.to_json() for f in report.findings if f.status != "pass"]  # fmt: skip
    reasoning = _finding(report, "reasoning_parser")
    assert "1023 of 1024 tokens were reasoning, max_tokens=1024, finish_reason=length" in reasoning.summary
    assert reasoning.fix is not None and "enable_thinking" in reasoning.fix
    assert "see check 11" in _finding(report, "tool_parser").summary
    assert "see check 11" in _finding(report, "structured_output").summary
    assert "the template is applied" in _finding(report, "chat_template").summary  # not "the reply is empty"
    assert report.exit_code == 0


async def test_glm47_gets_its_own_parsers(mock: MockProcess, sqlite_db_url: str) -> None:
    mock.configure(reasoning_model="glm45", model="GLM-4.7-Flash", no_reasoning_parser=True, no_tool_parser=True)
    report = await _diagnose(mock, sqlite_db_url, "GLM-4.7-Flash")
    assert _not_passing(report) == {"reasoning_parser": "fail", "tool_parser": "fail"}
    # SGLang has no glm47 reasoning parser: GLM-4.7 reasons like GLM-4.5 there.
    assert "vLLM `--reasoning-parser glm47`; SGLang `--reasoning-parser glm45`" in str(
        _finding(report, "reasoning_parser").fix
    )
    assert "--tool-call-parser glm47`; SGLang `--tool-call-parser glm47`" in str(_finding(report, "tool_parser").fix)


@pytest.mark.parametrize(
    ("knobs", "line", "fix"),
    [
        ({**GLM45, "no_reasoning_parser": True}, "FAIL  11. Reasoning parser: the thinking is in `content`",
         "--reasoning-parser glm45"),
        ({**GLM45, "no_tool_parser": True}, 'FAIL  12. Tool-call parser: tool_choice "auto" and "required": the call',
         "--tool-call-parser glm45"),
        ({**GLM45, "ignore_response_format": True}, "FAIL  13. JSON schema enforced: response_format is not",
         "--structured-outputs-config.backend"),
    ],
    ids=["no-reasoning-parser", "no-tool-parser", "ignore-response-format"],
)  # fmt: skip
def test_the_printed_report_in_80_columns(knobs: dict[str, Any], line: str, fix: str, tmp_path: Path) -> None:
    """The mock started with the real flags (`--no-reasoning-parser`, ...), the doctor run as a command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")} | {"COLUMNS": "80"}
    with MockProcess(**knobs) as mock:
        out = subprocess.run(
            [sys.executable, "-m", "monitor", "doctor", "--base-url", mock.base_url, "--db",
             f"sqlite:///{tmp_path}/d.db"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=90,
            check=False,
        )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(text.startswith(line) for text in lines), out.stdout
    assert "12 passed, 0 warnings, 1 failed, 0 skipped  (exit code 1)" in lines
    assert all(len(text) <= 80 and text == text.rstrip() for text in lines), out.stdout
    assert fix in " ".join(text.strip() for text in lines)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("glm-4-9b-chat", "glm"), ("zai-org/GLM-4.5-Air", "glm45"), ("zai-org/GLM-4.6", "glm45"),
        ("zai-org/GLM-4.7-Flash", "glm47"), ("Qwen/Qwen3-8B", "qwen3"),
        ("Qwen/Qwen3-235B-A22B-Thinking-2507", "qwen3"), ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "chatml"),
        ("Qwen/Qwen2.5-7B-Instruct", "chatml"), ("deepseek-ai/DeepSeek-R1-0528", "deepseek_r1"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek_r1"), ("openai/gpt-oss-20b", "gpt_oss"),
    ],
)  # fmt: skip
def test_pipeline_families_from_the_model_name(model: str, family: Family) -> None:
    assert detect_family(model) == family


def test_markup_names_the_family_when_the_name_does_not() -> None:
    assert detect_family("glm-4-9b-chat", ("\n<think>嗯</think>\n你好",)) == "glm45"  # GLM-4-9B does not think
    assert detect_family("my-model", ("<tool_call>get_weather\n<arg_key>city</arg_key>",)) == "glm45"
    assert detect_family("my-model", ("<|channel|>analysis<|message|>...",)) == "gpt_oss"


@pytest.mark.parametrize(
    ("family", "reasoning", "tools"),
    [
        ("glm45", ("--reasoning-parser glm45", "--reasoning-parser glm45"),
         ("--enable-auto-tool-choice --tool-call-parser glm45", "SGLang `--tool-call-parser glm45`")),
        ("glm47", ("--reasoning-parser glm47", "SGLang `--reasoning-parser glm45`"),
         ("--enable-auto-tool-choice --tool-call-parser glm47", "SGLang `--tool-call-parser glm47`")),
        ("qwen3", ("--reasoning-parser qwen3", "SGLang `--reasoning-parser qwen3`"),
         ("--enable-auto-tool-choice --tool-call-parser hermes", "SGLang `--tool-call-parser qwen25`")),
        ("deepseek_r1", ("vLLM `--reasoning-parser deepseek_r1`", "SGLang `--reasoning-parser deepseek-r1`"),
         ("--tool-call-parser deepseek_v3 --chat-template examples/tool_chat_template_deepseekr1.jinja",
          "SGLang `--tool-call-parser deepseekv3`")),
        ("gpt_oss", ("vLLM `--reasoning-parser openai_gptoss`", "SGLang `--reasoning-parser gpt-oss`"),
         ("--enable-auto-tool-choice --tool-call-parser openai", "SGLang `--tool-call-parser gpt-oss`")),
    ],
)  # fmt: skip
def test_the_fix_table_names_both_servers_flags(
    family: Family, reasoning: tuple[str, str], tools: tuple[str, str]
) -> None:
    assert all(flag in reasoning_parser_fix(family) for flag in reasoning)
    assert all(flag in tool_parser_fix(family) for flag in tools)
    assert reasoning[0].split("`")[-1] in structured_output_fix(family)  # keep the reasoning parser on


def test_unknown_models_get_the_parser_lists() -> None:
    assert "qwen3, glm45, glm47, deepseek_r1, openai_gptoss" in reasoning_parser_fix("unknown")
    assert "hermes for Qwen" in tool_parser_fix("unknown") and "qwen25" in tool_parser_fix("unknown")


# --- shapes the mock never produces, from a small fake server ---------------------------------------------

Reply = Callable[[dict[str, Any]], web.Response]


def _completion(content: str | None, *, tool_calls: list[dict[str, Any]] | None = None, finish: str = "stop") -> Any:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
    }  # fmt: skip


def _call(arguments: str) -> list[dict[str, Any]]:
    return [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]


@pytest.fixture(name="fake_server")
async def fix_fake_server(aiohttp_server: AiohttpServer) -> AsyncIterator[Callable[..., Any]]:
    """`await fake_server(model, reply)`: a Context on a server whose chat replies come from `reply(body)`."""
    async with aiohttp.ClientSession() as session:

        async def create(model: str, reply: Reply) -> Context:
            async def chat(request: web.Request) -> web.Response:
                return reply(await request.json())

            app = web.Application()
            app.router.add_post("/v1/chat/completions", chat)
            server = await aiohttp_server(app)
            raw = {"targets": [{"name": "t", "base_url": str(server.make_url("/v1")), "model": model}]}
            client = DoctorClient(session, parse_settings(raw).targets[0], None)
            return Context(client, ServerInfo((model,), model, 4096), detect_family(model))

        yield create


def _by_choice(auto: Any, required: Any) -> Reply:
    return lambda body: web.json_response(auto if body.get("tool_choice") == "auto" else required)


async def test_an_answer_in_prose_is_inconclusive_not_a_failure(fake_server: Callable[..., Any]) -> None:
    prose = _completion("I cannot check the weather, but Beijing is often sunny.")
    forced = _completion(None, tool_calls=_call('{"city": "Beijing"}'), finish="tool_calls")
    ctx = await fake_server("Qwen/Qwen3-8B", _by_choice(prose, forced))
    finding = await check_tool_parser(ctx)
    assert finding.status == "warn" and "inconclusive" in finding.summary and finding.fix is None
    assert finding.details == ('tool_choice "required": get_weather({"city": "Beijing"}) in `tool_calls`, '
                               "finish_reason=tool_calls",)  # fmt: skip


async def test_tools_ignored_even_when_required_warn_and_name_the_llama_cpp_flags(
    fake_server: Callable[..., Any],
) -> None:
    # llama-server without --jinja and llama-cpp-python's default chat format do this (tests/test_real_servers.py).
    prose = _completion("Hello! How can I help?")
    finding = await check_tool_parser(await fake_server("tiny-qwen2", _by_choice(prose, prose)))
    assert finding.status == "warn" and finding.summary.startswith("the tools are ignored: no call for tool_choice")
    assert '"tool_choice": "required"' in finding.request
    assert finding.fix is not None and "`--jinja`" in finding.fix and "chatml-function-calling" in finding.fix


async def test_a_call_written_as_bare_json_is_quoted_with_the_parser_lists(fake_server: Callable[..., Any]) -> None:
    text = _completion('{"name": "get_weather", "arguments": {"city": "Beijing"}}')
    ctx = await fake_server("my-model", _by_choice(text, text))
    finding = await check_tool_parser(ctx)
    assert finding.status == "fail"
    assert finding.summary.startswith('tool_choice "auto" and "required": the call came back as text in `content`')
    assert '{\\"name\\": \\"get_weather\\"' in finding.summary
    assert finding.fix == tool_parser_fix("unknown")


async def test_a_parsed_call_with_finish_reason_stop_warns(fake_server: Callable[..., Any]) -> None:
    call = _completion("", tool_calls=_call('{"city": "Beijing"}'), finish="stop")
    ctx = await fake_server("Qwen/Qwen3-8B", _by_choice(call, call))
    finding = await check_tool_parser(ctx)
    assert finding.status == "warn" and "finish_reason=stop, not tool_calls" in finding.summary


async def test_a_parsed_call_whose_arguments_are_not_json_fails(fake_server: Callable[..., Any]) -> None:
    call = _completion(None, tool_calls=_call('{"city": "Beij'), finish="tool_calls")
    ctx = await fake_server("zai-org/GLM-4.5-Air", _by_choice(call, call))
    finding = await check_tool_parser(ctx)
    assert finding.status == "fail" and "arguments are not JSON" in finding.summary
    assert finding.fix is not None and "--tool-call-parser glm45" in finding.fix


@pytest.mark.parametrize(
    ("content", "pointer"),
    [
        ('{"city": "Beijing", "temperature_c": "hot"}', 'at JSON pointer "/temperature_c": \'hot\' is not of type'),
        ('{"city": "Beijing"}', "at JSON pointer \"\" (the document root): 'temperature_c' is a required property"),
    ],
)  # fmt: skip
async def test_json_that_breaks_the_schema_names_the_pointer(
    fake_server: Callable[..., Any], content: str, pointer: str
) -> None:
    ctx = await fake_server("Qwen/Qwen3-8B", lambda body: web.json_response(_completion(content)))
    finding = await check_structured_output(ctx)
    assert finding.status == "fail" and pointer in finding.summary, finding.summary
    assert finding.fix is not None and "--reasoning-parser qwen3" in finding.fix


async def test_a_rejected_response_format_warns_with_the_message(fake_server: Callable[..., Any]) -> None:
    def reject(body: dict[str, Any]) -> web.Response:
        error = {"error": {"message": "response_format type json_schema is not supported", "code": 400}}
        return web.json_response(error, status=400)

    finding = await check_structured_output(await fake_server("m", reject))
    assert finding.status == "warn" and "json_schema is not supported" in finding.summary
