"""The probe client over real loopback HTTP: the mock process in every incident and fault mode."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from monitor.config import Settings, parse_settings
from monitor.envelope import error_message, http_error_detail, one_line
from monitor.probes import Prober, build_request
from monitor.results import ProbeResult
from tests.conftest import chat_probe, completion_probe
from tests.mockserver import MockProcess


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _settings(base_url: str, *probes: dict[str, Any], **target: Any) -> Settings:
    t = {"name": "mock", "base_url": base_url, "model": "glm-4-9b-chat", **target}
    return parse_settings({"targets": [t], "probes": list(probes)})


async def _run(
    session: aiohttp.ClientSession, base_url: str, probe: dict[str, Any], api_key: str | None = None, **target: Any
) -> ProbeResult:
    s = _settings(base_url, probe, **target)
    return await Prober(session).run(s.targets[0], s.probes[0], api_key)


def _failed(r: ProbeResult) -> set[str]:
    return {c.name for c in r.failed_checks()}


@pytest.mark.parametrize("stream", [True, False])
async def test_healthy_chat_passes_every_check(mock: MockProcess, session: aiohttp.ClientSession, stream: bool) -> None:
    r = await _run(session, mock.base_url, chat_probe(max_tokens=512, stream=stream))
    assert r.ok, (r.error_detail, r.checks)
    m = r.measurement
    assert m is not None and r.http_status == 200
    assert m.finish_reason == "stop" and m.stop_reason == 151336
    assert "你好" in m.text and not m.tokens_estimated
    assert m.prompt_tokens is not None and m.prompt_tokens > 0
    assert {c.name for c in r.checks} == {
        "truncated",
        "template_leak",
        "run_on",
        "empty_reply",
        "think_leak",
        "answer_empty",
    }
    if stream:
        assert m.ttft_ms is not None and m.ttft_ms <= m.latency_ms
        assert len(m.itl_ms) >= 1 and m.done_seen
    else:
        assert m.ttft_ms is None


async def test_completion_hello_is_a_continuation_cut_at_16(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    r = await _run(session, mock.base_url, completion_probe(stream=True))
    assert r.ok and r.truncated
    assert r.measurement is not None and r.measurement.completion_tokens == 16
    truncated = next(c for c in r.checks if c.name == "truncated")
    assert truncated.passed and "defaults to 16" in truncated.detail


async def test_max_tokens_7_fails_truncated(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    r = await _run(session, mock.base_url, chat_probe(max_tokens=7))
    assert r.error_kind is None and not r.ok
    assert _failed(r) == {"truncated"}
    assert "max_tokens=7 was the cause" in r.failed_checks()[0].detail


async def test_no_stop_tokens_runs_on(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(no_stop_tokens=True)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=200))
    assert r.error_kind is None
    assert "run_on" in _failed(r) or "truncated" in _failed(r)
    assert "run_on" in _failed(r)


async def test_leak_special_tokens_fails_template_leak(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(leak_special_tokens=True)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=512))
    assert "template_leak" in _failed(r)


async def test_no_chat_template_is_an_http_error(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(no_chat_template=True)
    r = await _run(session, mock.base_url, chat_probe())
    assert r.error_kind == "http_error" and r.http_status == 400
    assert r.error_detail is not None and "chat template" in r.error_detail
    assert not r.ok and r.checks == ()


async def test_unknown_model_names_the_server_message(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    r = await _run(session, mock.base_url, chat_probe(), model="gpt-4")
    assert r.error_kind == "http_error" and r.http_status == 404
    assert r.error_detail == "HTTP 404: The model `gpt-4` does not exist. Valid aliases: glm-4-9b-chat."


async def test_status_500_empty_body(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(status=500)
    r = await _run(session, mock.base_url, chat_probe())
    assert (r.error_kind, r.http_status, r.error_detail) == ("http_error", 500, "HTTP 500 with an empty body")


async def test_api_key(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(api_key="sk-test")
    r = await _run(session, mock.base_url, chat_probe())
    assert (r.error_kind, r.http_status, r.error_detail) == ("http_error", 401, "HTTP 401: Unauthorized")
    r = await _run(session, mock.base_url, chat_probe(max_tokens=64), api_key="sk-test")
    assert r.ok


async def test_stall_mid_stream_times_out_in_the_gap_phase(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(stall_after=3)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=64), chunk_timeout_s=0.5, timeout_s=10)
    assert (r.error_kind, r.timeout_phase) == ("timeout", "gap")
    assert r.error_detail is not None and "0.5 s between chunks" in r.error_detail


async def test_slow_first_token_times_out_in_the_first_byte_phase(
    mock: MockProcess, session: aiohttp.ClientSession
) -> None:
    mock.configure(ttft_ms=3000)
    r = await _run(session, mock.base_url, chat_probe(stream=False), first_byte_timeout_s=0.3, timeout_s=10)
    assert (r.error_kind, r.timeout_phase) == ("timeout", "first_byte")


async def test_total_timeout_wins_over_the_chunk_gap(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(itl_ms=100)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=64), timeout_s=0.5, chunk_timeout_s=5)
    assert (r.error_kind, r.timeout_phase) == ("timeout", "total")


async def test_disconnect_mid_stream_is_a_stream_error(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(disconnect_after=3)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=64))
    assert r.error_kind == "stream_error" and r.http_status == 200
    assert r.measurement is not None and not r.measurement.done_seen


async def test_error_event_mid_stream(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(error_event_after=2)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=64))
    assert r.error_kind == "stream_error" and r.http_status == 200
    assert r.measurement is not None and r.measurement.content_chunk_count >= 1


@pytest.mark.parametrize("stream", [True, False])
async def test_malformed_json_is_a_bad_response(
    mock: MockProcess, session: aiohttp.ClientSession, stream: bool
) -> None:
    mock.configure(malformed_rate=1.0)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=64, stream=stream))
    assert r.error_kind == "bad_response"


async def test_openai_flavour_is_measured_too(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(flavor="openai")
    r = await _run(session, mock.base_url, chat_probe(max_tokens=512))
    assert r.ok, (r.error_detail, r.checks)
    assert r.measurement is not None and r.measurement.finish_reason == "stop" and "你好" in r.measurement.text


async def test_no_stream_usage_marks_tokens_estimated(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    mock.configure(no_stream_usage=True)
    r = await _run(session, mock.base_url, chat_probe(max_tokens=512))
    assert r.ok and r.measurement is not None
    assert r.measurement.tokens_estimated and r.measurement.completion_tokens is not None


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = await _run(session, f"http://127.0.0.1:{port}/v1", chat_probe())
    assert r.error_kind == "connect_error"
    assert r.error_detail is not None and f"cannot connect to 127.0.0.1:{port}" in r.error_detail


async def test_dns_failure_is_a_connect_error(session: aiohttp.ClientSession) -> None:
    r = await _run(session, "http://no-such-host.invalid/v1", chat_probe(), connect_timeout_s=5, timeout_s=10)
    assert r.error_kind == "connect_error"
    assert r.error_detail is not None and "no-such-host.invalid" in r.error_detail


# A hand-written server for wire shapes the mock does not produce (other servers in the wild).
async def _odd_server(routes: dict[str, bytes], status: int = 200, ctype: str = "text/event-stream") -> web.AppRunner:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
        await resp.prepare(request)
        body = routes[request.path]
        for i in range(0, len(body), 7):  # tiny writes: events split across reads
            await resp.write(body[i : i + 7])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _url(runner: web.AppRunner) -> str:
    return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


async def test_llamacpp_style_stream_with_comments_and_separate_finish(session: aiohttp.ClientSession) -> None:
    body = (
        b": ping\r\n\r\n"
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"\\u4f60\\u597d"}}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"\\uff01"}}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n'
    )
    runner = await _odd_server({"/v1/chat/completions": body})
    try:
        r = await _run(session, _url(runner), chat_probe())
    finally:
        await runner.cleanup()
    assert r.ok, (r.error_detail, r.checks)
    m = r.measurement
    assert m is not None and m.text == "你好！" and m.finish_reason == "stop"
    assert m.tokens_estimated and not m.done_seen


async def test_flat_error_envelope_of_old_vllm(session: aiohttp.ClientSession) -> None:
    body = (
        b'{"object":"error","message":"temperature must be non-negative, got -1.0.",'
        b'"type":"BadRequestError","param":null,"code":400}'
    )
    runner = await _odd_server({"/v1/chat/completions": body}, status=400, ctype="application/json")
    try:
        r = await _run(session, _url(runner), chat_probe())
    finally:
        await runner.cleanup()
    assert r.error_detail == "HTTP 400: temperature must be non-negative, got -1.0."


def test_error_message_envelopes() -> None:
    assert error_message(b'{"error":{"message":"nested","type":"x"}}') == "nested"
    assert error_message(b'{"object":"error","message":"flat"}') == "flat"
    assert error_message(b'{"error":"Unauthorized"}') == "Unauthorized"
    assert error_message(b'{"detail":"Not Found"}') == "Not Found"
    assert error_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"
    assert http_error_detail(500, b" \n") == "HTTP 500 with an empty body"
    assert http_error_detail(400, b'{"error":{"message":"a   b"}}') == "HTTP 400: a b"
    assert one_line("x" * 400) == "x" * 299 + "…"


def test_build_request_passes_sampling_through() -> None:
    s = _settings("http://h/v1", chat_probe(max_tokens=9, stop_token_ids=[151336], extra_body={"x": 1}))
    url, body = build_request(s.targets[0], s.probes[0])
    assert url == "http://h/v1/chat/completions"
    assert body["stop_token_ids"] == [151336] and body["x"] == 1 and body["max_tokens"] == 9
    assert body["stream_options"] == {"include_usage": True}


async def test_probes_run_concurrently_without_interfering(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    s = _settings(mock.base_url, chat_probe(name="a", max_tokens=64), completion_probe(name="b"))
    prober = Prober(session)
    results = await asyncio.gather(*(prober.run(s.targets[0], p) for p in s.probes * 5))
    assert all(r.error_kind is None for r in results)


async def test_a_reply_quoting_the_key_is_redacted(session: aiohttp.ClientSession) -> None:
    key = "sk-very-secret-key-123"
    reply = {"choices": [{"index": 0, "message": {"content": f"your key is {key}"}, "finish_reason": "stop"}]}
    body = json.dumps(reply).encode()
    runner = await _odd_server({"/v1/chat/completions": body}, ctype="application/json")
    try:
        r = await _run(session, _url(runner), chat_probe(stream=False), api_key=key)
    finally:
        await runner.cleanup()
    assert r.measurement is not None and r.measurement.text == "your key is [redacted]"
    assert key not in json.dumps(r.to_json())
