"""The mock vLLM server: wire shapes (vLLM 0.32), GLM-4 behaviour, fault modes, SDK fidelity.

Most tests serve `create_mock_app()` in-process through pytest-aiohttp (real loopback sockets);
the SDK and lifecycle tests run the mock as a separate process via `MockProcess`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from monitor.mock import MockConfig, create_mock_app, glm
from monitor.mock.engine import SamplingRules, generate
from tests.mockserver import MockProcess

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]

HELLO = [{"role": "user", "content": "你好"}]
# Key order of vLLM 0.32 bodies: pydantic declaration order (§1.2, §2, §9; tests/fixtures/vllm-0.32.0).
BODY_KEYS = "id object created model choices service_tier system_fingerprint usage".split()
CHAT_KEYS = [
    *BODY_KEYS,
    "prompt_logprobs",
    "prompt_token_ids",
    "prompt_text",
    *"kv_transfer_params ec_transfer_params metrics".split(),
]
MESSAGE_KEYS = "role content refusal annotations audio function_call reasoning".split()  # no empty tool_calls
COMPLETION_KEYS = [*BODY_KEYS, "kv_transfer_params", "ec_transfer_params", "metrics"]
USAGE_KEYS = [
    "prompt_tokens",
    "total_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
]
GREETING = "\n你好👋！我是人工智能助手 ChatGLM，很高兴见到你，欢迎问我任何问题。"


@pytest.fixture(name="app_client")
def fix_app_client(aiohttp_client: AiohttpClient) -> MakeClient:
    """Factory: an in-process mock with the given MockConfig knobs, behind a real test server."""

    async def create(**knobs: Any) -> Client:
        return await aiohttp_client(create_mock_app(MockConfig(**knobs)))

    return create


def data_events(raw: str, sep: str = "\n\n") -> list[str]:
    """The `data:` payloads of an SSE body with vLLM framing (no comments, no other fields)."""
    assert raw.endswith(sep)
    blocks = raw.split(sep)[:-1]
    assert all(block.startswith("data: ") for block in blocks), blocks
    return [block[len("data: ") :] for block in blocks]


async def post(client: Client, path: str, body: dict[str, Any], **headers: str) -> tuple[int, str]:
    async with client.post(path, json=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def chat_stream(client: Client, body: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    status, raw = await post(client, "/v1/chat/completions", {**body, "stream": True}, **headers)
    assert status == 200, raw
    events = data_events(raw)
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def stream_text(chunks: list[dict[str, Any]], key: str = "content") -> str:
    pieces = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            pieces.append(choice["delta"].get(key, "") if "delta" in choice else choice["text"])
    return "".join(pieces)


# --- shapes -----------------------------------------------------------------------------------


async def test_chat_non_stream_shape_and_glm_greeting(app_client: MakeClient) -> None:
    client = await app_client()
    status, raw = await post(client, "/v1/chat/completions", {"model": "glm-4-9b-chat", "messages": HELLO})
    assert status == 200
    body = json.loads(raw)
    assert list(body) == CHAT_KEYS
    choice = body["choices"][0]
    assert list(choice) == [
        "index",
        "message",
        "logprobs",
        "finish_reason",
        "stop_reason",
        "token_ids",
        "routed_experts",
    ]
    assert list(choice["message"]) == MESSAGE_KEYS
    assert choice["message"]["content"] == GREETING
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", glm.USER)
    assert list(body["usage"]) == USAGE_KEYS
    assert body["system_fingerprint"].startswith("vllm-0.32.0-")
    # The stop token counts as a completion token (§1.2); the prompt is the GLM template.
    reply_ids = glm.encode(GREETING, allow_special=False)
    assert body["usage"]["completion_tokens"] == len(reply_ids) + 1
    assert body["usage"]["prompt_tokens"] == len(glm.encode("[gMASK]<sop><|user|>\n你好<|assistant|>")) == 7
    assert "你好" in raw and "\\u" not in raw  # ensure_ascii=False
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 16  # random_uuid()


async def test_chat_stream_exact_chunks(app_client: MakeClient) -> None:
    client = await app_client()
    status, raw = await post(
        client, "/v1/chat/completions", {"messages": HELLO, "stream": True}, **{"X-Request-Id": "r1"}
    )
    assert status == 200
    events = data_events(raw)
    first = json.loads(events[0])
    head = f'{{"id":"chatcmpl-r1","object":"chat.completion.chunk","created":{first["created"]},"model":"glm-4-9b-chat"'
    assert (
        events[0]
        == head
        + ',"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
        + ',"prompt_token_ids":null,"prompt_text":null}'
    )
    tail = ',"logprobs":null,"finish_reason":null,"token_ids":null}]}'
    assert events[1] == head + ',"choices":[{"index":0,"delta":{"content":"\\n"}' + tail
    assert events[2] == head + ',"choices":[{"index":0,"delta":{"content":"你"}' + tail
    # The last token is <|user|>: skipped text, so an empty delta with both reasons (§1.4 item 3);
    # without include_usage the finish chunk carries the system_fingerprint (§9).
    fingerprint = json.loads(events[-2])["system_fingerprint"]
    assert (
        events[-2]
        == head
        + ',"choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":151336'
        + f',"token_ids":null}}],"system_fingerprint":"{fingerprint}"}}'
    )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk and "stop_reason" not in chunk["choices"][0] for chunk in chunks[:-1])
    assert stream_text(chunks) == GREETING
    # The emoji is four byte-tokens: three empty deltas before it appears, like vLLM's detokenizer.
    assert [c["choices"][0]["delta"]["content"] for c in chunks[4:8]] == ["", "", "", "👋"]
    assert len(chunks) - 1 == len(glm.encode(GREETING, allow_special=False)) + 1  # one chunk per token


@pytest.mark.parametrize(
    ("stream_options", "knobs", "expect"),
    [
        (None, {}, "none"),
        ({}, {}, "none"),  # vLLM 0.32: include_usage defaults to false (it was true in 0.10)
        ({"include_usage": True}, {}, "final"),
        ({"include_usage": False}, {}, "none"),
        ({"continuous_usage_stats": True}, {}, "none"),  # needs include_usage too
        ({"include_usage": True, "continuous_usage_stats": True}, {}, "continuous"),
        ({"include_usage": True}, {"no_stream_usage": True}, "none"),
    ],
)
async def test_stream_usage_switches(app_client: MakeClient, stream_options: Any, knobs: Any, expect: str) -> None:
    client = await app_client(**knobs)
    body: dict[str, Any] = {"messages": HELLO, "max_tokens": 5}
    if stream_options is not None:
        body["stream_options"] = stream_options
    chunks = await chat_stream(client, body)
    with_usage = [chunk for chunk in chunks if "usage" in chunk]
    if expect == "none":
        assert with_usage == []
        return
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "total_tokens": 12, "completion_tokens": 5}
    assert list(chunks[-1]) == ["id", "object", "created", "model", "choices", "usage", "system_fingerprint"]
    if expect == "continuous":
        assert len(with_usage) == len(chunks)
        assert [chunk["usage"]["completion_tokens"] for chunk in chunks] == [0, 1, 2, 3, 4, 5, 5]
    else:
        assert with_usage == [chunks[-1]]


async def test_completions_raw_continuation_stream_and_non_stream(app_client: MakeClient) -> None:
    client = await app_client()
    status, raw = await post(client, "/v1/completions", {"model": "glm-4-9b-chat", "prompt": "你好"})
    body = json.loads(raw)
    assert status == 200 and body["object"] == "text_completion"
    assert list(body) == COMPLETION_KEYS
    choice = body["choices"][0]
    assert list(choice) == [
        *("index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids", "prompt_logprobs"),
        *("prompt_token_ids", "routed_experts"),
    ]
    assert choice["text"].startswith("，我是一个学生，今天想")  # no template: plain continuation (§6.2)
    assert (choice["finish_reason"], body["usage"]["completion_tokens"]) == ("length", 16)
    assert body["usage"]["prompt_tokens"] == 4  # [gMASK]<sop>你好

    request = {"prompt": "你好", "stream": True, "stream_options": {"include_usage": True}}
    status, raw = await post(client, "/v1/completions", request)
    events = data_events(raw)
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks[:-2]:
        assert list(chunk) == ["id", "object", "created", "model", "choices"]  # no "usage": null in 0.32
        assert list(chunk["choices"][0]) == [
            *("index", "text", "logprobs", "finish_reason", "stop_reason", "prompt_token_ids", "token_ids")
        ]
        assert chunk["choices"][0]["finish_reason"] is None and chunk["choices"][0]["stop_reason"] is None
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and chunks[-2]["choices"][0]["text"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert stream_text(chunks) == choice["text"]


async def test_models_health_version_tokenize(app_client: MakeClient) -> None:
    client = await app_client(max_model_len=4096)
    async with client.get("/v1/models") as resp:
        card = (await resp.json())["data"][0]
    assert list(card) == ["id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"]
    assert (card["id"], card["owned_by"], card["max_model_len"]) == ("glm-4-9b-chat", "vllm", 4096)
    assert card["permission"][0]["id"].startswith("modelperm-")
    async with client.get("/health") as resp:
        assert resp.status == 200 and await resp.read() == b""
    async with client.get("/version") as resp:
        assert await resp.json() == {"version": "0.32.0"}
    status, raw = await post(client, "/tokenize", {"messages": HELLO, "return_token_strs": True})
    tokenized = json.loads(raw)
    assert list(tokenized) == ["count", "max_model_len", "tokens", "token_strs"]
    assert tokenized["count"] == 7 and tokenized["token_strs"][:3] == ["[gMASK]", "<sop>", "<|user|>"]
    status, raw = await post(client, "/tokenize", {"prompt": "Hello world"})
    assert json.loads(raw)["token_strs"] is None and json.loads(raw)["tokens"][:2] == [glm.GMASK, glm.SOP]
    status, raw = await post(client, "/detokenize", {"tokens": tokenized["tokens"]})
    assert json.loads(raw) == {"prompt": "[gMASK]<sop><|user|>\n你好<|assistant|>"}


# --- sampling semantics -----------------------------------------------------------------------


async def test_max_tokens_stop_strings_and_determinism(app_client: MakeClient) -> None:
    client = await app_client()
    _, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 7})
    choice = json.loads(raw)["choices"][0]
    assert (
        choice["finish_reason"] == "length" and choice["message"]["content"] == "\n你好👋"
    )  # 3 tokens + 4 emoji bytes
    _, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "stop": ["ChatGLM"]})
    choice = json.loads(raw)["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "ChatGLM")
    assert choice["message"]["content"] == GREETING.split("ChatGLM")[0]
    chunks = await chat_stream(client, {"messages": HELLO, "stop": ["ChatGLM"]})
    assert stream_text(chunks) == choice["message"]["content"]
    # Greedy decoding is deterministic, and stream and non-stream texts agree.
    for prompt in ("Explain TCP slow start.", "怎么学习编程？", "What is 2+2?"):
        request = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_completion_tokens": 40}
        texts = {
            json.loads((await post(client, "/v1/chat/completions", request))[1])["choices"][0]["message"]["content"]
            for _ in range(2)
        }
        assert len(texts) == 1
        assert stream_text(await chat_stream(client, request)) == texts.pop()


def test_engine_rules_min_tokens_ignore_eos_and_stop_ids() -> None:
    reply = [*glm.encode("\nHi", allow_special=False), glm.USER, *glm.encode("\nUser: more", allow_special=False)]
    stopped = generate(reply, SamplingRules(max_tokens=50))
    assert (stopped.text, stopped.finish_reason, stopped.stop_reason) == ("\nHi", "stop", glm.USER)
    ignored = generate(reply, SamplingRules(max_tokens=len(reply), ignore_eos=True))
    assert (ignored.finish_reason, ignored.stop_reason) == ("length", None) and "User:" in ignored.text
    assert ignored.token_ids == reply  # <|user|> is generated but its text is skipped
    masked = generate(reply, SamplingRules(max_tokens=50, min_tokens=5))
    assert glm.USER not in masked.token_ids and "User:" in masked.text
    hi_id = glm.encode("Hi")[0]  # ASCII pairs are one token
    by_id = generate(reply, SamplingRules(max_tokens=50, stop_token_ids=(hi_id,)))
    assert (by_id.text, by_id.stop_reason, len(by_id.token_ids)) == ("\n", hi_id, 2)
    shown = generate(reply, SamplingRules(max_tokens=50, ignore_eos=True, skip_special_tokens=False))
    assert "<|user|>" in shown.text


async def test_multi_turn_name_recall(app_client: MakeClient) -> None:
    client = await app_client()
    messages = [
        {"role": "user", "content": "你好，我叫李雷。"},
        {"role": "assistant", "content": "你好，李雷！"},
        {"role": "user", "content": "我叫什么名字？"},
    ]
    _, raw = await post(client, "/v1/chat/completions", {"messages": messages})
    assert "李雷" in json.loads(raw)["choices"][0]["message"]["content"]
    _, raw = await post(client, "/v1/chat/completions", {"messages": messages[-1:]})
    assert "李雷" not in json.loads(raw)["choices"][0]["message"]["content"]


async def test_n_choices_stream(app_client: MakeClient) -> None:
    client = await app_client()
    # n > 1 needs sampling: vLLM 0.32 rejects it with temperature 0 ("n must be 1 when using greedy sampling").
    options = {"include_usage": True}
    chunks = await chat_stream(client, {"messages": HELLO, "n": 2, "temperature": 1, "stream_options": options})
    for index in (0, 1):
        own = [chunk for chunk in chunks if chunk["choices"] and chunk["choices"][0]["index"] == index]
        assert own[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert stream_text(own) == GREETING
    assert chunks[-1]["usage"]["completion_tokens"] == 2 * (len(glm.encode(GREETING, allow_special=False)) + 1)


# --- errors -----------------------------------------------------------------------------------

CONTEXT_400 = (
    "This model's maximum context length is 8192 tokens. However, your prompt contains at least 8193 input "
    "tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input "
    "prompt. (parameter=input_tokens, value=8193)"
)


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type", "param", "message"),
    [
        (
            "/v1/chat/completions",
            {"model": "gpt-4", "messages": HELLO},
            404,
            "NotFoundError",
            "model",
            "The model `gpt-4` does not exist. Valid aliases: glm-4-9b-chat.",
        ),
        (
            "/v1/chat/completions",
            {"messages": HELLO, "temperature": -1},
            400,
            "BadRequestError",
            "temperature",
            "temperature must be non-negative, got -1.0. (parameter=temperature, value=-1.0)",
        ),
        (
            "/v1/chat/completions",
            {"messages": HELLO, "max_tokens": 0},
            400,
            "BadRequestError",
            "max_tokens",
            "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
        ),
        (
            "/v1/chat/completions",
            {"messages": HELLO, "n": 0},
            400,
            "BadRequestError",
            None,
            "n must be at least 1, got 0.",
        ),
        (
            "/v1/chat/completions",
            {"messages": HELLO, "n": 2, "temperature": 0},
            400,
            "BadRequestError",
            None,
            "n must be 1 when using greedy sampling, got 2.",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "字" * 9000}]},
            400,
            "BadRequestError",
            "input_tokens",
            CONTEXT_400,
        ),
        (
            "/v1/completions",
            {"prompt": list(range(1, 9000)), "max_tokens": 4},
            400,
            "BadRequestError",
            "input_tokens",
            "This model's maximum context length is 8192 tokens. However, your prompt contains 8999 input tokens, "
            "which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. "
            "(parameter=input_tokens, value=8999)",
        ),
        (
            "/v1/chat/completions",
            {"messages": HELLO, "stream_options": {"include_usage": True}},
            400,
            "BadRequestError",
            "stream_options",
            "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
        ),
        (
            "/v1/completions",
            {"max_tokens": 4},
            400,
            "BadRequestError",
            "prompt",
            "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
        ),
        ("/v1/chat/completions", {"model": "glm-4-9b-chat"}, 400, "Bad Request", "body.messages", "'body.messages'"),
        ("/v1/chat/completions", {"messages": HELLO, "n": "abc"}, 400, "Bad Request", "body.n", "'int_parsing'"),
        (
            "/v1/completions",
            {"prompt": "hi", "suffix": "x"},
            400,
            "BadRequestError",
            "suffix",
            "suffix is only supported for models with FIM completion rendering",
        ),
    ],
)
async def test_request_errors(
    app_client: MakeClient, path: str, body: Any, status: int, error_type: str, param: str | None, message: str
) -> None:
    client = await app_client()
    got_status, raw = await post(client, path, {**body, "unknown_key_is_fine": 1})
    assert got_status == status
    error = json.loads(raw)["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert (error["type"], error["code"], error["param"]) == (error_type, status, param)
    assert message in error["message"]
    if error_type != "Bad Request":
        assert error["message"] == message
    else:
        assert error["message"].startswith("1 validation error:\n  {'type': ")


async def test_max_tokens_over_the_context_is_clamped(app_client: MakeClient) -> None:
    """vLLM 0.32 clamps max_tokens to the rest of the context instead of rejecting the request (§9)."""
    client = await app_client(max_model_len=64)
    status, raw = await post(client, "/v1/completions", {"prompt": "hi", "max_tokens": 500})
    body = json.loads(raw)
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] == 64
    status, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 500})
    assert status == 200 and json.loads(raw)["usage"]["total_tokens"] <= 64


async def test_malformed_json_content_type_auth_and_unknown_route(app_client: MakeClient) -> None:
    client = await app_client(api_key="sekret")
    auth = {"Authorization": "Bearer sekret", "Content-Type": "application/json"}
    async with client.post("/v1/chat/completions", data=b"{not json", headers=auth) as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "error": {
                "message": "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.1', 'msg': "
                "'JSON decode error', 'input': '<dict of 0 items>', "
                "'ctx': {'error': 'Expecting property name enclosed in double quotes'}}",
                "type": "Bad Request",
                "param": "body.1",
                "code": 400,
            }
        }
    # vLLM 0.32 raises a RequestValidationError for a wrong content type: 400, not 415.
    async with client.post("/v1/chat/completions", data=b"{}", headers={**auth, "Content-Type": "text/plain"}) as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "error": {
                "message": "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
                "type": "Bad Request",
                "param": None,
                "code": 400,
            }
        }
    async with client.get("/v1/models", headers={"Authorization": "Bearer wrong"}) as resp:
        assert (resp.status, await resp.json()) == (401, {"error": "Unauthorized"})
    async with client.get("/v1/models", headers=auth) as resp:
        assert resp.status == 200
    for path in ("/health", "/metrics", "/_mock/config", "/version"):  # only /v1 is guarded
        async with client.get(path) as resp:
            assert resp.status == 200, path
    async with client.get("/v2/nothing") as resp:
        assert (resp.status, await resp.json()) == (404, {"detail": "Not Found"})


async def test_no_chat_template(app_client: MakeClient) -> None:
    client = await app_client(no_chat_template=True)
    status, raw = await post(client, "/v1/chat/completions", {"messages": HELLO})
    assert status == 400
    assert json.loads(raw)["error"]["message"].startswith(
        "As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat "
        "template if the tokenizer does not define one."
    )
    status, _ = await post(client, "/v1/completions", {"prompt": "你好"})
    assert status == 200  # completions apply no template


# --- incident and fault modes -----------------------------------------------------------------


async def test_no_stop_tokens_self_continuing_dialogue(app_client: MakeClient) -> None:
    client = await app_client(no_stop_tokens=True)
    _, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 120})
    choice = json.loads(raw)["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("length", None)
    assert choice["message"]["content"].startswith(GREETING) and "\n用户：" in choice["message"]["content"]
    assert "<|user|>" not in choice["message"]["content"]  # markers are skipped, role words remain
    chunks = await chat_stream(client, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 80})
    assert "\nUser:" in stream_text(chunks) and chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_leak_special_tokens(app_client: MakeClient) -> None:
    client = await app_client(leak_special_tokens=True)
    _, raw = await post(client, "/v1/chat/completions", {"messages": HELLO})
    choice = json.loads(raw)["choices"][0]
    assert "<|user|>" in choice["message"]["content"] and "<|assistant|>" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"


async def test_forced_status_and_error_rate(app_client: MakeClient) -> None:
    client = await app_client(status=503)
    async with client.get("/v1/models") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["type"] == "ServiceUnavailableError"
    async with client.get("/health") as resp:
        assert resp.status == 200  # only /v1 is affected
    client = await app_client(status=500)
    status, raw = await post(client, "/v1/chat/completions", {"messages": HELLO})
    assert (status, raw) == (500, "")
    # error_rate draws from a seeded generator, so the same seed gives the same sequence.
    outcomes = []
    for _ in range(2):
        client = await app_client(error_rate=0.5, seed=7)
        outcomes.append([(await post(client, "/v1/completions", {"prompt": "x"}))[0] for _ in range(12)])
    assert outcomes[0] == outcomes[1] and set(outcomes[0]) == {200, 500}


async def test_oversize_500(app_client: MakeClient) -> None:
    client = await app_client(oversize_500=True, max_model_len=64)
    status, raw = await post(client, "/v1/chat/completions", {"messages": [{"role": "user", "content": "字" * 64}]})
    assert (status, raw) == (500, "")
    status, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 64})
    assert status == 200 and json.loads(raw)["usage"]["total_tokens"] <= 64  # max_tokens is clamped, no 500


async def test_stall_after_hangs_with_connection_open(app_client: MakeClient) -> None:
    client = await app_client(stall_after=3)
    timeout = aiohttp.ClientTimeout(sock_read=0.5)
    received = b""
    with pytest.raises(asyncio.TimeoutError):
        async with client.post(
            "/v1/chat/completions", json={"messages": HELLO, "stream": True}, timeout=timeout
        ) as resp:
            assert resp.status == 200
            async for piece in resp.content.iter_any():
                received += piece
    assert received.count(b"data: ") == 4  # role chunk + 3 tokens


async def test_disconnect_after_closes_without_done(app_client: MakeClient) -> None:
    client = await app_client(disconnect_after=2)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.post("/v1/completions", json={"prompt": "hi", "stream": True}) as resp:
            async for piece in resp.content.iter_any():
                received += piece
    assert received.count(b"data: ") == 2 and b"[DONE]" not in received
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(client, "/v1/completions", {"prompt": "hi"})


async def test_error_event_after(app_client: MakeClient) -> None:
    client = await app_client(error_event_after=2)
    status, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "stream": True})
    events = data_events(raw)
    assert status == 200 and len(events) == 5  # role, 2 tokens, error, [DONE]
    assert events[3] == (
        '{"error": {"message": "Mock engine error after 2 tokens (error_event_after).", '
        '"type": "BadRequestError", "param": null, "code": 400}}'
    )
    assert events[4] == "[DONE]"


async def test_malformed_rate(app_client: MakeClient) -> None:
    client = await app_client(malformed_rate=1)
    status, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "stream": True})
    bad = []
    for event in data_events(raw)[:-1]:
        try:
            json.loads(event)
        except json.JSONDecodeError:
            bad.append(event)
    assert status == 200 and len(bad) == 1
    _, raw = await post(client, "/v1/completions", {"prompt": "hi"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


async def test_drip_sends_body_in_pieces(app_client: MakeClient) -> None:
    client = await app_client(drip_bytes_per_s=4000)
    pieces = []
    async with client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3}) as resp:
        async for piece in resp.content.iter_any():
            pieces.append(piece)
    assert len(pieces) >= 3
    assert json.loads(b"".join(pieces))["usage"]["completion_tokens"] == 3


async def test_openai_flavor(app_client: MakeClient) -> None:
    client = await app_client(flavor="openai")
    status, raw = await post(client, "/v1/chat/completions", {"messages": HELLO, "stream": True})
    assert status == 200 and "\r\n\r\n" in raw and ": keep-alive\r\n\r\n" in raw
    assert "你" not in raw and "\\u4f60" in raw  # ensure_ascii
    events = [block for block in raw.split("\r\n\r\n") if block.startswith("data: ")]
    chunks = [json.loads(block[6:]) for block in events[:-1]]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert stream_text(chunks) == GREETING
    for path in ("/health", "/metrics"):
        async with client.get(path) as resp:
            assert resp.status == 404


# --- control, timings, metrics ----------------------------------------------------------------


async def test_runtime_config(app_client: MakeClient) -> None:
    client = await app_client(itl_ms=1)
    async with client.get("/_mock/config") as resp:
        assert (await resp.json())["itl_ms"] == 1
    async with client.post("/_mock/config", json={"error_rate": 1, "flavor": "openai"}) as resp:
        config = await resp.json()
        assert (config["error_rate"], config["flavor"], config["itl_ms"]) == (1, "openai", 1)
    assert (await post(client, "/v1/completions", {"prompt": "x"}))[0] == 500
    for bad, field in (({"error_rate": 2}, "error_rate"), ({"nope": 1}, "nope"), ({"flavor": "tgi"}, "flavor")):
        async with client.post("/_mock/config", json=bad) as resp:
            assert resp.status == 400 and field in (await resp.json())["error"]["message"]
    async with client.post("/_mock/config", json={"reset": True}) as resp:
        assert await resp.json() == MockConfig(itl_ms=1).model_dump(mode="json")


async def test_timings_recorded_per_token(app_client: MakeClient) -> None:
    client = await app_client(ttft_ms=1, itl_ms=1)
    chunks = await chat_stream(client, {"messages": HELLO, "max_tokens": 9}, **{"X-Request-Id": "t-1"})
    async with client.get("/_mock/timings", params={"request_id": "t-1"}) as resp:
        record = await resp.json()
    assert record["request_id"] == "t-1" and record["stream"] is True
    assert len(record["token_times_s"]) == 9 == len(chunks) - 1
    assert record["token_times_s"] == sorted(record["token_times_s"])
    written = record["token_written_s"]  # each token's write returned after its clock read, before the next
    assert len(written) == 9 and all(a <= w for a, w in zip(record["token_times_s"], written, strict=True))
    assert all(w <= b for w, b in zip(written, record["token_times_s"][1:], strict=False))
    async with client.get("/_mock/timings", params={"request_id": "chatcmpl-t-1"}) as resp:
        assert resp.status == 200
    async with client.get("/_mock/timings") as resp:
        assert [r["request_id"] for r in (await resp.json())["requests"]] == ["t-1"]
    async with client.delete("/_mock/timings") as resp:
        assert await resp.json() == {"cleared": 1}
    async with client.get("/_mock/timings", params={"request_id": "t-1"}) as resp:
        assert resp.status == 404


async def test_metrics_parse_with_prometheus_client(app_client: MakeClient) -> None:
    client = await app_client()
    await post(client, "/v1/chat/completions", {"messages": HELLO})
    await chat_stream(client, {"messages": HELLO, "max_tokens": 5})
    async with client.get("/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        families = {family.name: family for family in text_string_to_metric_families(await resp.text())}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:request_success",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
    ):
        assert name in families, name
    samples = {(s.name, s.labels.get("finished_reason")): s for f in families.values() for s in f.samples}
    success = samples[("vllm:request_success_total", "stop")]
    assert success.value == 1 and success.labels["model_name"] == "glm-4-9b-chat" and success.labels["engine"] == "0"
    assert samples[("vllm:request_success_total", "length")].value == 1
    assert samples[("vllm:prompt_tokens_total", None)].value == 14
    assert samples[("vllm:e2e_request_latency_seconds_count", None)].value == 2


# --- a real separate process and the official openai SDK --------------------------------------


@pytest.fixture(name="sdk")
async def fix_sdk(mock: MockProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK against the session's mock process (conftest's `mock` resets its config)."""
    async with openai.AsyncOpenAI(base_url=mock.base_url, api_key="x", max_retries=0) as client:
        yield client


@pytest.mark.parametrize("flavor", ["vllm", "openai"])
async def test_openai_sdk_parses_every_shape(sdk: openai.AsyncOpenAI, mock: MockProcess, flavor: str) -> None:
    mock.configure(flavor=flavor)
    reply = await sdk.chat.completions.create(model="glm-4-9b-chat", messages=[{"role": "user", "content": "你好"}])
    assert reply.choices[0].message.content == GREETING and reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 7
    for options in (None, {"include_usage": True}):
        extra: dict[str, Any] = {} if options is None else {"stream_options": options}
        stream = await sdk.chat.completions.create(
            model="glm-4-9b-chat", messages=[{"role": "user", "content": "你好"}], stream=True, **extra
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == GREETING
        assert (chunks[-1].usage is not None) == (options is not None)
    completion = await sdk.completions.create(model="glm-4-9b-chat", prompt="你好", max_tokens=7)
    assert completion.choices[0].finish_reason == "length"
    cstream = await sdk.completions.create(
        model="glm-4-9b-chat", prompt="你好", max_tokens=7, stream=True, stream_options={"include_usage": True}
    )
    cchunks = [chunk async for chunk in cstream]
    assert "".join(c.choices[0].text for c in cchunks if c.choices) == completion.choices[0].text
    assert cchunks[-1].usage is not None and cchunks[-1].usage.completion_tokens == 7


async def test_openai_sdk_error_classes(sdk: openai.AsyncOpenAI, mock: MockProcess) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await sdk.chat.completions.create(model="gpt-4", messages=messages)
    with pytest.raises(openai.BadRequestError, match="temperature must be non-negative"):
        await sdk.chat.completions.create(model="glm-4-9b-chat", messages=messages, temperature=-1)
    mock.configure(status=500)
    with pytest.raises(openai.InternalServerError):
        await sdk.chat.completions.create(model="glm-4-9b-chat", messages=messages)
    mock.configure(status=None, api_key="sekret")
    with pytest.raises(openai.AuthenticationError):
        await sdk.models.list()
    mock.configure(api_key=None, error_event_after=1)
    stream = await sdk.chat.completions.create(model="glm-4-9b-chat", messages=messages, stream=True)
    with pytest.raises(openai.APIError, match="Mock engine error"):
        async for _ in stream:
            pass


def test_process_flags_timings_and_clean_stop() -> None:
    with MockProcess(itl_ms=1, model="glm-test", record_timings=True) as process:
        request = {"model": "glm-test", "prompt": "hi", "max_tokens": 4}
        urllib_post(process.root_url + "/v1/completions", request, {"X-Request-Id": "p-1"})
        assert len(process.timings("p-1")["token_times_s"]) == 1  # non-stream: one send
        assert process.configure(itl_ms=2)["model"] == "glm-test"
        with pytest.raises(ValueError, match="ttft_ms"):
            process.configure(ttft_ms=-1)
        assert process.stop() == 0  # SIGTERM -> graceful exit
    assert process.stop() is None
    assert any("listening on http://127.0.0.1:" in line for line in process.output)


def urllib_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_client_hanging_up_mid_stream_logs_no_error() -> None:
    """A load generator that gives up on streams must not fill the mock's log with tracebacks."""
    body = json.dumps({"messages": [{"role": "user", "content": "你好"}], "stream": True, "max_tokens": 400})
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()
    with MockProcess(itl_ms=5) as mock:
        port = int(mock.root_url.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                # Hang up with a reset, as a client killed mid-stream does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        time.sleep(0.5)  # the server notices on its next write
        assert mock.configure(itl_ms=0)["itl_ms"] == 0  # still serving
        output = "\n".join(mock.output)
    assert "Traceback" not in output and "Error handling request" not in output, output
