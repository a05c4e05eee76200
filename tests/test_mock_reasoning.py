"""The mock's reasoning flavours (GLM-4.5, Qwen3), tool calls, structured output and their failure modes.

The wire is vLLM 0.32's (monitor/mock/reasoning.py lists it with the vLLM files it follows). Most tests
serve `create_mock_app()` in-process behind a real loopback server; the flag and run-time toggle tests
run the mock as a separate process (`MockProcess`). JSON is checked against its schema with `jsonschema`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import click
import jsonschema
import openai
import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from pytest_aiohttp import AiohttpClient

from monitor.mock import MockConfig, create_mock_app, schema
from monitor.mockcli import add_mock_command
from tests.mockserver import MockProcess

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
FAMILIES = ["glm45", "qwen3"]
HI = [{"role": "user", "content": "hi"}]
WEATHER = [{"role": "user", "content": "What's the weather in Paris for the next days?"}]
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["city", "days"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "email": {"type": "string"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
STOP_REASON = {"glm45": 151336, "qwen3": None}  # GLM-4.5 ends a turn on <|user|>, Qwen3 on its EOS
CALL_STOP_REASON = {"glm45": 151338, "qwen3": None}  # a GLM-4.5 call ends on <|observation|>
MESSAGE_KEYS = ["role", "content", "refusal", "annotations", "audio", "function_call", "reasoning"]
TOOL_ID = re.compile(r"chatcmpl-tool-[0-9a-f]{16}")


@pytest.fixture(name="app_client")
def fix_app_client(aiohttp_client: AiohttpClient) -> MakeClient:
    async def create(**knobs: Any) -> Client:
        return await aiohttp_client(create_mock_app(MockConfig(**knobs)))

    return create


async def chat(client: Client, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with client.post("/v1/chat/completions", json=body) as resp:
        return resp.status, await resp.json()


async def stream(client: Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a streamed chat reply (vLLM framing checked), without [DONE]."""
    async with client.post("/v1/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status == 200
        raw = await resp.text()
    blocks = raw.split("\n\n")
    assert blocks[-1] == "" and blocks[-2] == "data: [DONE]"
    assert all(block.startswith("data: ") for block in blocks[:-1])
    return [json.loads(block[6:]) for block in blocks[:-2]]


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]


def joined(chunks: list[dict[str, Any]], key: str) -> str:
    return "".join(delta.get(key) or "" for delta in deltas(chunks))


def streamed_calls(chunks: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The calls an OpenAI client assembles from `delta.tool_calls` fragments, by index."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas(chunks):
        for fragment in delta.get("tool_calls") or []:
            call = calls.setdefault(fragment["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += fragment.get("id") or ""
            call["name"] += fragment.get("function", {}).get("name") or ""
            call["arguments"] += fragment.get("function", {}).get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


# --- healthy reasoning --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
async def test_healthy_reasoning_non_stream(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family)
    status, body = await chat(client, {"messages": HI})
    assert status == 200
    choice = body["choices"][0]
    message = choice["message"]
    assert list(message) == MESSAGE_KEYS  # no empty tool_calls, `reasoning` last (vLLM 0.32 ChatMessage)
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", STOP_REASON[family])
    reasoning, content = message["reasoning"], message["content"]
    assert reasoning and "think>" not in reasoning and "think>" not in content
    # GLM-4.5 writes "\n<think>" (the newline stays in reasoning) and "</think>\n"; Qwen3 "</think>\n\n".
    assert content.startswith("\n\nHello" if family == "qwen3" else "\nHello")
    assert reasoning.startswith("\n") and reasoning.endswith("\n") == (family == "qwen3")
    usage = body["usage"]
    reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning_tokens < usage["completion_tokens"]
    assert list(usage["completion_tokens_details"]) == ["reasoning_tokens"]


@pytest.mark.parametrize("family", FAMILIES)
async def test_healthy_reasoning_stream_matches_non_stream(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family)
    _, full = await chat(client, {"messages": HI, "temperature": 0})
    options = {"include_usage": True, "continuous_usage_stats": True}
    chunks = await stream(client, {"messages": HI, "temperature": 0, "stream_options": options})
    message = full["choices"][0]["message"]
    assert deltas(chunks)[0] == {"role": "assistant", "content": ""}
    kinds = [("reasoning" if "reasoning" in d else "content") for d in deltas(chunks)[1:-1]]
    assert kinds == sorted(kinds, key=lambda kind: kind == "content") and "reasoning" in kinds and "content" in kinds
    assert all(d and set(d) <= {"reasoning", "content"} for d in deltas(chunks)[1:-1])  # one field each, never empty
    assert joined(chunks, "reasoning") == message["reasoning"]
    assert joined(chunks, "content") == message["content"]
    last = chunks[-2]["choices"][0]
    assert (last["delta"], last["finish_reason"], last["stop_reason"]) == ({}, "stop", STOP_REASON[family])
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["completion_tokens"] == full["usage"]["completion_tokens"]
    assert usage["completion_tokens_details"] == full["usage"]["completion_tokens_details"]
    running = [c["usage"]["completion_tokens_details"]["reasoning_tokens"] for c in chunks[:-1]]
    assert (
        running[0] == 0
        and running == sorted(running)
        and running[-1] == usage["completion_tokens_details"]["reasoning_tokens"]
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("switch", [{"chat_template_kwargs": {"enable_thinking": False}}, {"reasoning_effort": "none"}])
async def test_thinking_off(app_client: MakeClient, family: str, switch: dict[str, Any]) -> None:
    client = await app_client(reasoning_model=family)
    _, thinking = await chat(client, {"messages": HI})
    _, body = await chat(client, {"messages": HI, **switch})
    message = body["choices"][0]["message"]
    answer = thinking["choices"][0]["message"]["content"].lstrip("\n")
    # GLM-4.5 still writes its "\n" after the closed block; Qwen3's template ends "</think>\n\n".
    assert message["reasoning"] is None and message["content"] == ("\n" if family == "glm45" else "") + answer
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    # The template closes an empty reasoning block in the prompt.
    assert body["usage"]["prompt_tokens"] > thinking["usage"]["prompt_tokens"]
    chunks = await stream(client, {"messages": HI, **switch})
    assert joined(chunks, "content") == message["content"] and not joined(chunks, "reasoning")


async def test_reasoning_field_and_usage_knobs(app_client: MakeClient) -> None:
    client = await app_client(reasoning_model="glm45", reasoning_field="reasoning_content", no_reasoning_usage=True)
    _, body = await chat(client, {"messages": HI})
    message = body["choices"][0]["message"]
    assert list(message) == [*MESSAGE_KEYS[:-1], "reasoning_content"] and message["reasoning_content"]
    assert body["usage"]["completion_tokens_details"] is None
    chunks = await stream(client, {"messages": HI, "stream_options": {"include_usage": True}})
    assert joined(chunks, "reasoning_content") == message["reasoning_content"]
    assert not any("reasoning" in d for d in deltas(chunks))
    assert "completion_tokens_details" not in chunks[-1]["usage"]  # None is dropped (exclude_none)


@pytest.mark.parametrize("family", FAMILIES)
async def test_include_reasoning_false(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family)
    _, body = await chat(client, {"messages": HI, "include_reasoning": False})
    assert body["choices"][0]["message"]["reasoning"] is None
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0  # still counted
    chunks = await stream(client, {"messages": HI, "include_reasoning": False})
    middle = deltas(chunks)[1:-1]
    assert middle and all(d["reasoning"] is None and d["content"] for d in middle)  # parse_delta sets it to None


# --- modes: each gives its own failure shape and nothing else ------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
async def test_no_reasoning_parser(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family, no_reasoning_parser=True)
    status, body = await chat(client, {"messages": HI})
    choice = body["choices"][0]
    content = choice["message"]["content"]
    assert status == 200 and choice["message"]["reasoning"] is None
    assert content.startswith("\n<think>" if family == "glm45" else "<think>\n") and "</think>" in content
    assert content.endswith("feel free to ask me any questions.")
    assert (choice["finish_reason"], body["usage"]["completion_tokens_details"]) == ("stop", None)
    chunks = await stream(client, {"messages": HI})
    assert joined(chunks, "content") == content and not any("reasoning" in d for d in deltas(chunks))
    # The tool-call parser still works.
    _, called = await chat(client, {"messages": WEATHER, "tools": TOOLS})
    assert called["choices"][0]["finish_reason"] == "tool_calls"
    assert called["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("family", FAMILIES)
async def test_no_tool_parser(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family, no_tool_parser=True)
    status, body = await chat(client, {"messages": WEATHER, "tools": TOOLS})
    choice = body["choices"][0]
    message = choice["message"]
    assert status == 200 and "tool_calls" not in message and message["reasoning"]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", CALL_STOP_REASON[family])
    content = message["content"]
    if family == "glm45":
        found = re.fullmatch(
            r"\n<tool_call>get_weather\n((?:<arg_key>\w+</arg_key>\n<arg_value>.*?</arg_value>\n)+)</tool_call>",
            content,
            re.S,
        )
        assert found is not None, content
        pairs = dict(re.findall(r"<arg_key>(\w+)</arg_key>\n<arg_value>(.*?)</arg_value>", found.group(1)))
        assert pairs["city"] and int(pairs["days"]) >= 1
    else:
        found = re.fullmatch(r"\n\n<tool_call>\n(\{.*\})\n</tool_call>", content, re.S)
        assert found is not None, content
        call = json.loads(found.group(1))
        assert list(call) == ["name", "arguments"] and call["name"] == "get_weather"
        jsonschema.validate(call["arguments"], WEATHER_PARAMS)
    chunks = await stream(client, {"messages": WEATHER, "tools": TOOLS, "tool_choice": "required"})
    assert not any("tool_calls" in d for d in deltas(chunks)) and joined(chunks, "content") == content
    last = chunks[-1]["choices"][0]
    assert (last["delta"], last["finish_reason"]) == ({"content": ""}, "stop")  # no tool parser: plain deltas


@pytest.mark.parametrize("family", [*FAMILIES, "none"])
async def test_ignore_response_format(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family, ignore_response_format=True)
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    status, body = await chat(client, {"messages": HI, "response_format": rf})
    choice = body["choices"][0]
    assert status == 200 and choice["finish_reason"] == "stop"
    assert "Hello" in choice["message"]["content"] and not choice["message"]["content"].lstrip().startswith("{")
    assert (choice["message"]["reasoning"] is None) == (family == "none")
    status, _ = await chat(
        client, {"messages": HI, "response_format": {**rf, "json_schema": {"name": "x", "schema": {"type": "nope"}}}}
    )
    assert status == 200  # a server that ignores response_format does not compile it either


@pytest.mark.parametrize("family", FAMILIES)
async def test_reasoning_budget_exhaust(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family, reasoning_budget_exhaust=True)
    _, body = await chat(client, {"messages": HI, "max_tokens": 64})
    choice = body["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"], choice["message"]["content"]) == ("length", None, None)
    assert len(choice["message"]["reasoning"]) > 64
    usage = body["usage"]
    assert usage["completion_tokens"] == 64
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 63  # all but the <think> marker
    chunks = await stream(client, {"messages": HI, "max_tokens": 64})
    assert not joined(chunks, "content") and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert joined(chunks, "reasoning").rstrip() == choice["message"]["reasoning"].rstrip()
    # With thinking off the mode has nothing to exhaust.
    _, off = await chat(client, {"messages": HI, "reasoning_effort": "none"})
    assert off["choices"][0]["finish_reason"] == "stop" and off["choices"][0]["message"]["content"]


# --- tool calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("tool_choice", "name", "finish", "content"),
    [
        ("auto", "get_weather", "tool_calls", None),
        ("required", "get_weather", "tool_calls", ""),  # the first tool; content `or ""`
        ({"type": "function", "function": {"name": "ping"}}, "ping", "stop", ""),  # named: finish stays stop
    ],
)
async def test_tool_calls(
    app_client: MakeClient, family: str, tool_choice: Any, name: str, finish: str, content: str | None
) -> None:
    client = await app_client(reasoning_model=family)
    request = {"messages": WEATHER, "tools": TOOLS, "tool_choice": tool_choice, "temperature": 0}
    _, body = await chat(client, request)
    choice = body["choices"][0]
    message = choice["message"]
    assert list(message) == [*MESSAGE_KEYS[:-1], "tool_calls", "reasoning"] and message["reasoning"]
    assert (message["content"], choice["finish_reason"]) == (content, finish)
    assert choice["stop_reason"] == CALL_STOP_REASON[family]
    [call] = message["tool_calls"]
    assert list(call) == ["id", "type", "function"] and TOOL_ID.fullmatch(call["id"]) and call["type"] == "function"
    assert list(call["function"]) == ["name", "arguments"] and call["function"]["name"] == name
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER_PARAMS if name == "get_weather" else {"type": "object"})
    assert call["function"]["arguments"] == json.dumps(arguments, ensure_ascii=False)  # vLLM's json.dumps spacing

    chunks = await stream(client, request)
    [streamed] = streamed_calls(chunks)
    assert (streamed["name"], streamed["arguments"]) == (name, call["function"]["arguments"])
    assert TOOL_ID.fullmatch(streamed["id"])
    fragments = [(d, f) for d in deltas(chunks) for f in d.get("tool_calls") or []]
    first, rest = fragments[0][1], [f for _, f in fragments[1:]]
    assert list(first) == ["id", "type", "index", "function"] and first["index"] == 0
    assert all(list(f) == ["index", "function"] and list(f["function"]) == ["arguments"] for f in rest)
    # hermes (qwen3) builds DeltaMessage(content=None, tool_calls=...); the GLM engine omits content.
    assert all(("content" in d) == (family == "qwen3") and d.get("content") is None for d, _ in fragments)
    if name == "get_weather":
        assert len(rest) > 3  # arguments arrive in several fragments
    assert chunks[-1]["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("family", FAMILIES)
async def test_tool_choice_none_auto_without_mention_and_tool_results(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family)
    for request in ({"messages": WEATHER, "tools": TOOLS, "tool_choice": "none"}, {"messages": HI, "tools": TOOLS}):
        _, body = await chat(client, request)
        choice = body["choices"][0]
        assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop", request
    history = [
        *WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"},
    ]
    _, body = await chat(client, {"messages": history, "tools": TOOLS})
    assert "sunny, 21 C" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_glm45_call_cut_by_max_tokens(app_client: MakeClient) -> None:
    """A stream cut inside a GLM call is closed with its complete pairs, as the message is (vLLM 0.32)."""
    client = await app_client(reasoning_model="glm45")
    request = {"messages": WEATHER, "tools": TOOLS, "reasoning_effort": "none", "max_tokens": 24}
    _, body = await chat(client, request)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["stop_reason"] is None  # auto: a call was parsed
    [call] = choice["message"]["tool_calls"]
    chunks = await stream(client, request)
    [streamed] = streamed_calls(chunks)
    assert streamed["arguments"] == call["function"]["arguments"] and json.loads(streamed["arguments"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # streamed: only a stop becomes tool_calls


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {"tools": TOOLS},
            None,
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        ),
        (
            {"tools": TOOLS, "tool_choice": "required"},
            None,
            'tool_choice="required" requires --tool-call-parser to be set',
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "ping"}}},
            None,
            'tool_choice=function "ping" requires --tool-call-parser to be set',
        ),
        (
            {"tools": [], "tool_choice": "auto"},
            "tools",
            "`tools` must not be an empty array. Either provide at least one tool or omit the field entirely. "
            "(parameter=tools)",
        ),
        (
            {"tool_choice": "auto"},
            "tool_choice",
            "When using `tool_choice`, `tools` must be set. (parameter=tool_choice)",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "The tool specified in `tool_choice` does not match any of the specified `tools` (parameter=tool_choice)",
        ),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format",
            "When response_format type is 'json_schema', the 'json_schema' field must be provided. "
            "(parameter=response_format)",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "p", "schema": {"type": "nosuchtype"}},
                }
            },
            None,
            "Grammar error: Invalid type: nosuchtype",
        ),
    ],
)
async def test_tool_and_format_errors(
    app_client: MakeClient, body: dict[str, Any], param: str | None, message: str
) -> None:
    """On GLM-4-9B-Chat without parsers (the default); vLLM 0.32's messages and params."""
    client = await app_client()
    status, reply = await chat(client, {"messages": HI, **body})
    assert (status, reply) == (
        400,
        {"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}},
    )


async def test_invalid_schema_streamed_is_an_error_event(app_client: MakeClient) -> None:
    client = await app_client(reasoning_model="qwen3")
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "required": "name"}}}
    async with client.post(
        "/v1/chat/completions", json={"messages": HI, "response_format": rf, "stream": True}
    ) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = await resp.text()
    error = {
        "message": "Grammar error: Expected array for 'required', got \"name\"",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    assert raw == f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n"


# --- structured output --------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["none", *FAMILIES])
async def test_json_schema_output(app_client: MakeClient, family: str) -> None:
    client = await app_client(reasoning_model=family)
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    _, body = await chat(client, {"messages": HI, "response_format": rf, "temperature": 0})
    choice = body["choices"][0]
    document = json.loads(choice["message"]["content"])  # pure JSON: the grammar allows no whitespace around it
    jsonschema.validate(document, PERSON)
    assert set(document) >= {"name", "age"} and choice["finish_reason"] == "stop"
    assert (choice["message"]["reasoning"] is None) == (family == "none")
    chunks = await stream(client, {"messages": HI, "response_format": rf, "temperature": 0})
    content_deltas = [d["content"] for d in deltas(chunks)[1:] if d.get("content")]
    assert "".join(content_deltas) == choice["message"]["content"] and len(content_deltas) > 3


async def test_json_object_and_no_reasoning_parser_json(app_client: MakeClient) -> None:
    client = await app_client(reasoning_model="glm45", no_reasoning_parser=True)
    _, body = await chat(client, {"messages": HI, "response_format": {"type": "json_object"}})
    message = body["choices"][0]["message"]
    # No reasoning parser: the grammar applies from the first token, so there is no thinking at all.
    assert isinstance(json.loads(message["content"]), dict) and message["reasoning"] is None


# --- the schema instance generator ---------------------------------------------------------------


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    bounds = st.tuples(st.integers(-50, 50), st.integers(0, 20))
    return st.one_of(
        st.builds(
            lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
            st.integers(0, 12),
            st.integers(0, 8),
        ),
        st.just({"type": "string"}),
        st.builds(lambda b: {"type": "integer", "minimum": b[0], "maximum": b[0] + b[1]}, bounds),
        st.builds(lambda b: {"type": "integer", "exclusiveMinimum": b[0], "maximum": b[0] + b[1] + 1}, bounds),
        st.builds(lambda b: {"type": "number", "minimum": b[0] / 4, "exclusiveMaximum": b[0] / 4 + b[1] + 0.5}, bounds),
        st.builds(
            lambda m, lo: {"type": "integer", "multipleOf": m, "minimum": lo}, st.integers(1, 9), st.integers(-30, 30)
        ),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.builds(
            lambda values: {"enum": values}, st.lists(st.text(max_size=5) | st.integers(), min_size=1, max_size=4)
        ),
        st.builds(lambda value: {"const": value}, st.text(max_size=5) | st.integers() | st.booleans()),
        st.just({"type": ["null", "string"]}),
    )


def _composite(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.text("abcdefgh_", min_size=1, max_size=6)

    def obj(properties: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
        required = data.draw(st.lists(st.sampled_from(sorted(properties)), unique=True)) if properties else []
        return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}

    return st.one_of(
        st.builds(obj, st.dictionaries(names, children, max_size=4), st.data()),
        st.builds(
            lambda items, lo, extra: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + extra},
            children,
            st.integers(0, 3),
            st.integers(0, 2),
        ),
        st.builds(lambda branches: {"anyOf": branches}, st.lists(children, min_size=1, max_size=3)),
    )


_NESTED = st.recursive(_leaf(), _composite, max_leaves=12)
# `$ref`s resolve against the document root, so `$defs` live there.
SCHEMAS = _NESTED | st.builds(
    lambda item, rest: {
        "$defs": {"Item": item},
        "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}, "rest": rest},
    },
    _NESTED,
    _NESTED,
)


@settings(max_examples=300, deadline=None)
@given(SCHEMAS)
def test_instance_satisfies_random_schemas(json_schema: dict[str, Any]) -> None:
    value = schema.instance(json_schema)
    jsonschema.Draft202012Validator(json_schema).validate(value)
    assert schema.instance(json_schema) == value  # deterministic
    assert schema.grammar_error(json_schema) is None


@pytest.mark.parametrize(
    "json_schema",
    [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[0-9]+$", "minLength": 2},
        {"type": "number", "multipleOf": 0.1, "minimum": 0.25},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 3, "uniqueItems": True},
        {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
        {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"const": 1}}, "required": ["x"]}]},
        {"type": "object", "minProperties": 2, "additionalProperties": {"type": "boolean"}},
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "integer",
            "exclusiveMinimum": True,
            "minimum": 5,
        },
    ],
)
def test_instance_keywords(json_schema: dict[str, Any]) -> None:
    jsonschema.validate(schema.instance(json_schema), json_schema)


@pytest.mark.parametrize(
    ("json_schema", "message"),
    [
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "Grammar error: Invalid type: strin"),
        ({"type": 5}, "Grammar error: type must be a string or array of strings"),
        ({"type": "object", "properties": [1]}, "Grammar error: properties must be an object"),
        ({"type": "array", "items": 3}, "Grammar error: schema must be an object or boolean"),
        ({"type": "string", "minLength": "x"}, "Grammar error: Expected positive integer for 'minLength', got \"x\""),
        ({"enum": "x"}, "Grammar error: enum must be an array"),
        ({"$ref": "#/$defs/missing"}, "Grammar error: Pointer '/$defs/missing' does not exist"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "integer"}}}, None),
    ],
)
def test_grammar_errors(json_schema: dict[str, Any], message: str | None) -> None:
    """The llguidance messages vLLM 0.32's auto backend reports (checked against llguidance 1.7.6)."""
    assert schema.grammar_error(json_schema) == message


# --- flags, run-time toggles and the official SDK, on a real separate process -------------------


def test_mock_cli_flags_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[MockConfig] = []
    monkeypatch.setattr("monitor.mock.server.run_mock", lambda config, host, port: seen.append(config))
    group = click.Group("llm-monitor")
    add_mock_command(group)
    args = ["mock", "--reasoning-model", "qwen3", "--reasoning-field", "reasoning_content", "--no-tool-parser"]
    args += ["--no-reasoning-parser", "--no-reasoning-usage", "--ignore-response-format", "--reasoning-budget-exhaust"]
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 0, result.output
    [config] = seen
    assert (config.reasoning_model, config.reasoning_field) == ("qwen3", "reasoning_content")
    assert config.no_tool_parser and config.no_reasoning_parser and config.no_reasoning_usage
    assert config.ignore_response_format and config.reasoning_budget_exhaust
    result = CliRunner().invoke(group, ["mock", "--reasoning-model", "llama"])
    assert result.exit_code == 2 and "llama" in result.output


async def test_runtime_toggles_and_sdk() -> None:
    with MockProcess(reasoning_model="qwen3", no_tool_parser=True) as process:
        async with openai.AsyncOpenAI(base_url=process.base_url, api_key="x", max_retries=0) as sdk:
            create: Any = sdk.chat.completions.create  # plain dicts, not the SDK's TypedDicts

            async def ask(**extra: Any) -> Any:
                reply = await create(model="glm-4-9b-chat", messages=WEATHER, **extra)
                return reply.choices[0]

            choice = await ask(tools=TOOLS)
            assert choice.message.tool_calls is None and "<tool_call>" in (choice.message.content or "")
            process.configure(no_tool_parser=False)
            choice = await ask(tools=TOOLS)
            assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
            assert (choice.message.model_extra or {})["reasoning"]  # a vLLM extra the SDK keeps
            events = await create(model="glm-4-9b-chat", messages=WEATHER, tools=TOOLS, stream=True)
            arguments = "".join(
                [
                    tc.function.arguments or ""
                    async for chunk in events
                    for tc in (chunk.choices[0].delta.tool_calls or [])
                ]
            )
            assert arguments == choice.message.tool_calls[0].function.arguments
            process.configure(reasoning_field="reasoning_content", no_reasoning_usage=True)
            choice = await ask()
            assert "reasoning_content" in (choice.message.model_extra or {})
            process.configure(no_reasoning_parser=True)
            assert (await ask()).message.content.startswith("<think>")
            process.configure(reasoning_model="glm45", no_reasoning_parser=False, reasoning_budget_exhaust=True)
            assert (await ask(max_tokens=16)).finish_reason == "length"
            process.configure(reasoning_budget_exhaust=False, ignore_response_format=True)
            choice = await ask(response_format={"type": "json_object"})
            assert not (choice.message.content or "").lstrip().startswith("{")
            config = process.reset()
            assert (config["reasoning_model"], config["no_tool_parser"]) == ("qwen3", True)
