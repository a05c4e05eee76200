"""Record real vLLM responses as the fixtures the mock is checked against (tests/test_mock_conformance.py).

    .venv/bin/python -m tests.realservers.record_vllm [--out tests/fixtures/vllm-0.32.0] [--log-dir DIR]

Starts `SERVERS["vllm"]` once through `RealServer`, sends every case in `CASES`, writes one JSON file
per case (request, status, content type, scrubbed body or SSE events), and stops the server. The same
`send()` and `scrub()` are used by the conformance test on the mock, so both sides go through one
client and one scrubber. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CASES", "Case", "fixture_request", "scrub", "send", "with_model"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MAX_STRING_CHARS = 120
MAX_LIST_ITEMS = 12
HTTP_TIMEOUT_S = 900.0
HELLO = [{"role": "user", "content": "Hello"}]
MODEL = "<model>"  # replaced by the served model name when a request is sent


@dataclass(frozen=True)
class Case:
    """One request; `body` is JSON (with MODEL where the served name goes) unless `raw` is given."""

    name: str
    about: str
    path: str
    body: Any = None
    method: str = "POST"
    raw: str | None = None
    content_type: str | None = "application/json"
    # Context cases: the prompt's token count decides the outcome, so it is recorded beside the response.
    context: bool = False


def _chat(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": HELLO, **kw}


def _completion(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "the cat", **kw}


LONG_PROMPT = "the " * 2100  # over a 2048-token context in any tokenizer that splits words
NEAR_FULL_PROMPT = "the " * 2000  # fits in 2048 with room for a few tokens, but not for max_tokens=200
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"

CASES: list[Case] = [
    # --- chat ---
    Case("chat", "non-streaming chat", CHAT, _chat(max_tokens=16)),
    Case("chat_no_model", "chat without `model`: the base model", CHAT, {"messages": HELLO, "max_tokens": 16}),
    Case("chat_default_max_tokens", "chat without max_tokens (rest of the context)", CHAT, _chat()),
    Case("chat_n2", "two sampled choices", CHAT, _chat(max_tokens=16, n=2, temperature=1)),
    Case("chat_stop_string", "a stop string ends the reply", CHAT, _chat(max_tokens=16, stop=["!"])),
    Case("chat_stream", "stream without stream_options: no usage", CHAT, _chat(max_tokens=16, stream=True)),
    Case(
        "chat_stream_include_usage", "stream with include_usage: a usage chunk", CHAT,
        _chat(max_tokens=16, stream=True, stream_options={"include_usage": True}),
    ),
    Case(
        "chat_stream_empty_options", "stream_options {}: include_usage defaults to true?", CHAT,
        _chat(max_tokens=16, stream=True, stream_options={}),
    ),
    Case(
        "chat_stream_include_usage_false", "include_usage false: no usage", CHAT,
        _chat(max_tokens=16, stream=True, stream_options={"include_usage": False}),
    ),
    Case(
        "chat_stream_continuous_usage", "include_usage + continuous_usage_stats: usage on every chunk", CHAT,
        _chat(max_tokens=16, stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}),
    ),
    Case(
        "chat_stream_continuous_only", "continuous_usage_stats alone", CHAT,
        _chat(max_tokens=16, stream=True, stream_options={"continuous_usage_stats": True}),
    ),
    Case(
        "chat_stream_length", "stream cut by max_tokens", CHAT,
        _chat(max_tokens=3, stream=True, stream_options={"include_usage": True}),
    ),
    Case(
        "chat_stream_n2", "two sampled choices streamed, with usage", CHAT,
        _chat(max_tokens=16, n=2, temperature=1, stream=True, stream_options={"include_usage": True}),
    ),
    # --- completions ---
    Case("completion", "non-streaming completion", COMPLETIONS, _completion(max_tokens=8)),
    Case("completion_default_max_tokens", "no max_tokens: vLLM's default 16", COMPLETIONS, _completion()),
    Case("completion_stop_string", "a stop string ends the text", COMPLETIONS, _completion(max_tokens=8, stop=["e"])),
    Case("completion_token_prompt", "token ids", COMPLETIONS, {"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 4}),
    Case("completion_stream", "stream without stream_options", COMPLETIONS, _completion(max_tokens=8, stream=True)),
    Case(
        "completion_stream_include_usage", "stream with include_usage", COMPLETIONS,
        _completion(max_tokens=8, stream=True, stream_options={"include_usage": True}),
    ),
    Case(
        "completion_stream_continuous_usage", "stream with continuous_usage_stats", COMPLETIONS,
        _completion(max_tokens=8, stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}),
    ),
    # --- other endpoints ---
    Case("models", "GET /v1/models", "/v1/models", method="GET", content_type=None),
    Case("health", "GET /health", "/health", method="GET", content_type=None),
    Case("version", "GET /version", "/version", method="GET", content_type=None),
    Case("metrics", "GET /metrics: metric families (names, types, label names; no values)", "/metrics", method="GET",
         content_type=None),
    Case("tokenize_prompt", "POST /tokenize with a prompt", "/tokenize", {"model": MODEL, "prompt": "Hello world"}),
    Case(
        "tokenize_messages", "POST /tokenize with messages and token strings", "/tokenize",
        {"model": MODEL, "messages": HELLO, "return_token_strs": True},
    ),
    Case("detokenize", "POST /detokenize", "/detokenize", {"model": MODEL, "tokens": [9707, 1879]}),
    # --- errors ---
    Case("error_unknown_model", "unknown model", CHAT, {**_chat(max_tokens=4), "model": "no-such-model"}),
    Case(
        "error_unknown_model_stream", "unknown model, stream: still a JSON error", CHAT,
        {**_chat(max_tokens=4, stream=True), "model": "no-such-model"},
    ),
    Case(
        "error_unknown_model_completion", "unknown model on completions", COMPLETIONS,
        {**_completion(max_tokens=4), "model": "no-such-model"},
    ),
    Case(
        "error_unknown_model_tokenize", "unknown model on /tokenize", "/tokenize",
        {"model": "no-such-model", "prompt": "Hello"},
    ),
    Case("error_bad_json", "a body that is not JSON", CHAT, raw="{not json"),
    Case("error_wrong_content_type", "Content-Type text/plain", CHAT, raw=json.dumps(_chat(max_tokens=4)),
         content_type="text/plain"),
    Case("error_missing_messages", "chat without messages", CHAT, {"model": MODEL, "max_tokens": 4}),
    Case("error_missing_prompt", "completion without prompt", COMPLETIONS, {"model": MODEL, "max_tokens": 4}),
    Case("error_wrong_type", "n is a string", CHAT, _chat(max_tokens=4, n="abc")),
    Case("error_negative_max_tokens", "max_tokens -1", CHAT, _chat(max_tokens=-1)),
    Case("error_zero_max_tokens", "max_tokens 0", CHAT, _chat(max_tokens=0)),
    Case("error_negative_max_tokens_completion", "max_tokens -1", COMPLETIONS, _completion(max_tokens=-1)),
    Case("error_negative_temperature", "temperature -1", CHAT, _chat(max_tokens=4, temperature=-1)),
    Case("error_zero_n", "n 0", CHAT, _chat(max_tokens=4, n=0)),
    Case("error_n2_greedy", "n 2 with temperature 0", CHAT, _chat(max_tokens=16, n=2, temperature=0)),
    Case(
        "error_n2_greedy_stream", "n 2 with temperature 0, streamed", CHAT,
        _chat(max_tokens=16, n=2, temperature=0, stream=True, stream_options={"include_usage": True}),
    ),
    Case("error_top_p", "top_p 0", CHAT, _chat(max_tokens=4, top_p=0)),
    Case("error_empty_stop", "an empty stop string", CHAT, _chat(max_tokens=4, stop=[""])),
    Case("error_min_tokens", "min_tokens over max_tokens", CHAT, _chat(max_tokens=4, min_tokens=8)),
    Case(
        "error_stream_options_without_stream", "stream_options on a non-streaming request", CHAT,
        _chat(max_tokens=4, stream_options={"include_usage": True}),
    ),
    Case("error_suffix", "completions with suffix", COMPLETIONS, _completion(max_tokens=4, suffix="x")),
    Case(
        "error_tools_auto", "tools without --enable-auto-tool-choice", CHAT,
        _chat(max_tokens=4, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
    ),
    Case("error_unknown_route", "an unknown path", "/v2/nothing", method="GET", content_type=None),
    Case("error_wrong_method", "GET on a POST route", CHAT, method="GET", content_type=None),
    # --- context length (max_model_len 2048) ---
    Case(
        "context_chat_prompt_too_long", "a chat prompt longer than the context", CHAT,
        {"model": MODEL, "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 4}, context=True,
    ),
    Case(
        "context_chat_max_tokens_too_large", "chat prompt fits, prompt + max_tokens does not", CHAT,
        {"model": MODEL, "messages": [{"role": "user", "content": NEAR_FULL_PROMPT}], "max_tokens": 200},
        context=True,
    ),
    Case(
        "context_completion_prompt_too_long", "a completion prompt longer than the context", COMPLETIONS,
        {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 4}, context=True,
    ),
    Case(
        "context_completion_max_tokens_too_large", "completion prompt fits, prompt + max_tokens does not", COMPLETIONS,
        {"model": MODEL, "prompt": NEAR_FULL_PROMPT, "max_tokens": 200}, context=True,
    ),
    Case(
        "context_completion_stream_prompt_too_long", "a too-long prompt with stream: true", COMPLETIONS,
        {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 4, "stream": True}, context=True,
    ),
]  # fmt: skip


# --- the server pipelines: tool calls, structured output, a reasoning parser ----------------------
# Recorded from a second server started with PIPELINE_ARGS (a parser changes every chat reply's
# shape), into the `pipelines/` subfolder. `tool_choice: required`, a named function and
# `response_format` are enforced by guided decoding, so even the tiny model's weights obey them.
# `--reasoning NAME` records REASONING_CASES with that reasoning parser added, into
# `pipelines-reasoning-NAME/`: vLLM 0.32's qwen3 parser takes an output without </think> for
# reasoning, and its grammar only starts after </think>, so that run shows a wrong parser's wire.

PIPELINE_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                       "required": ["city"], "additionalProperties": False},
    },
}  # fmt: skip
# OpenAI's `strict: true`: vLLM 0.32 pins the arguments to the schema only for such a tool (its default
# --tool-strict-level auto constrains the envelope alone: `<tool_call>{"name": ..., "arguments": ` and
# then free text, which the tiny model fills with " the cat the cat" until max_tokens).
STRICT_WEATHER_TOOL = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}  # type: ignore[dict-item]
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
JSON_SCHEMA = {
    "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False,
}  # fmt: skip
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": JSON_SCHEMA}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def _tools(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": ASK, "tools": [WEATHER_TOOL, TIME_TOOL], "temperature": 0, "max_tokens": 64,
            **kw}  # fmt: skip


_USAGE = {"stream": True, "stream_options": {"include_usage": True}}
PIPELINE_CASES: list[Case] = [
    Case("tools_required", "tool_choice required (guided decoding)", CHAT, _tools(tool_choice="required")),
    Case("tools_required_stream", "tool_choice required, streamed", CHAT, _tools(tool_choice="required", **_USAGE)),
    Case("tools_named", "a named function (guided decoding)", CHAT, _tools(tool_choice=NAMED)),
    Case("tools_named_stream", "a named function, streamed", CHAT, _tools(tool_choice=NAMED, **_USAGE)),
    Case("tools_required_strict", "tool_choice required, a strict tool: arguments pinned to the schema", CHAT,
         {**_tools(tool_choice="required"), "tools": [STRICT_WEATHER_TOOL]}),
    Case("tools_required_strict_stream", "the same, streamed", CHAT,
         {**_tools(tool_choice="required", **_USAGE), "tools": [STRICT_WEATHER_TOOL]}),
    Case("tools_named_strict", "a named strict function", CHAT,
         {**_tools(tool_choice=NAMED), "tools": [STRICT_WEATHER_TOOL, TIME_TOOL]}),
    Case("tools_auto", "tool_choice auto with the hermes parser: the model answers in prose", CHAT,
         _tools(tool_choice="auto")),
    Case("tools_auto_stream", "tool_choice auto, streamed", CHAT, _tools(tool_choice="auto", **_USAGE)),
    Case("json_schema", "response_format json_schema", CHAT,
         _chat(max_tokens=64, temperature=0, response_format=RESPONSE_FORMAT)),
    Case("json_schema_stream", "response_format json_schema, streamed", CHAT,
         _chat(max_tokens=64, temperature=0, response_format=RESPONSE_FORMAT, **_USAGE)),
    Case("json_object", "response_format json_object", CHAT,
         _chat(max_tokens=64, temperature=0, response_format={"type": "json_object"})),
    Case("error_invalid_schema", "response_format with an invalid JSON schema", CHAT,
         _chat(max_tokens=8, response_format={"type": "json_schema", "json_schema": {"name": "x",
                                                                                    "schema": {"type": 3}}})),
]  # fmt: skip


REASONING_CASES: list[Case] = [
    Case("reasoning_chat", "a chat reply through the reasoning parser (no <think> in the output)", CHAT,
         _chat(max_tokens=16)),
    Case("reasoning_chat_stream", "the same, streamed with usage", CHAT, _chat(max_tokens=16, **_USAGE)),
    *(case for case in PIPELINE_CASES if case.name in ("tools_required_stream", "json_schema")),
]  # fmt: skip


# --- sending -------------------------------------------------------------------------------------


def with_model(body: Any, model: str) -> Any:
    """`body` with every MODEL placeholder (at the top level) replaced by `model`."""
    if isinstance(body, dict):
        return {key: (model if value == MODEL else value) for key, value in body.items()}
    return body


def fixture_request(case: Case) -> dict[str, Any]:
    """The request as stored in a fixture; `send()` takes this dict."""
    request: dict[str, Any] = {"method": case.method, "path": case.path, "headers": {}}
    if case.content_type is not None:
        request["headers"]["Content-Type"] = case.content_type
    if case.raw is not None:
        request["raw"] = case.raw
    elif case.body is not None:
        request["json"] = case.body
    return request


def send(root_url: str, request: dict[str, Any], model: str) -> dict[str, Any]:
    """Send one fixture request (MODEL -> `model`) and return the response in fixture form, unscrubbed."""
    url = urllib.parse.urlsplit(root_url)
    assert url.hostname == "127.0.0.1", root_url  # loopback only
    if "raw" in request:
        data: bytes | None = str(request["raw"]).replace(MODEL, model).encode()
    elif "json" in request:
        data = json.dumps(with_model(request["json"], model), ensure_ascii=False).encode()
    else:
        data = None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request(request["method"], request["path"], body=data, headers=dict(request["headers"]))
        resp = conn.getresponse()
        raw = resp.read()
        status, content_type = resp.status, resp.getheader("Content-Type")
    finally:
        conn.close()
    return {"status": status, "content_type": content_type, **_body(raw, content_type or "", request["path"])}


def _body(raw: bytes, content_type: str, path: str) -> dict[str, Any]:
    text = raw.decode("utf-8", errors="replace")
    if not raw:
        return {"kind": "empty"}
    if content_type.startswith("text/event-stream"):
        return _sse(text)
    if path == "/metrics" and content_type.startswith("text/plain"):
        return {"kind": "metrics", "families": metric_families(text)}
    if content_type.startswith("application/json"):
        try:
            return {"kind": "json", "body": json.loads(text)}
        except json.JSONDecodeError:
            pass
    return {"kind": "text", "body": text}


def _sse(text: str) -> dict[str, Any]:
    """The `data:` events; `framing` says whether every block is one `data: ` line ended by a blank line."""
    blocks = text.split("\n\n")
    tail = blocks.pop()
    events: list[Any] = []
    data_only = tail == "" and "\r" not in text
    for block in blocks:
        if not block.startswith("data: ") or "\n" in block:
            data_only = False
            events.append({"non_data_block": block})
            continue
        payload = block[len("data: ") :]
        try:
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        except json.JSONDecodeError:
            events.append({"unparsable": payload})
    # Mid-stream error events are written with json.dumps' default spacing; chunks are compact.
    return {"kind": "sse", "framing": {"data_lines_only": data_only}, "events": events}


def metric_families(text: str) -> dict[str, dict[str, Any]]:
    """Family name -> type, sample names and label names (values are left out: they are not shapes)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        labels = sorted({key for sample in family.samples for key in sample.labels if key != "le"})
        samples = sorted({sample.name for sample in family.samples})
        families[family.name] = {"type": family.type, "samples": samples, "labels": labels}
    return families


# --- scrubbing -----------------------------------------------------------------------------------

VOLATILE_INT_KEYS = frozenset({"created"})
GENERATED_ID_PREFIXES = ("chatcmpl-", "cmpl-", "modelperm-")
MAX_MESSAGE_CHARS = 1000  # error messages are kept whole (they are the point of an error fixture)


def scrub(value: Any, key: str | None = None) -> Any:
    """Volatile values out (generated ids, timestamps, local paths), long text and lists cut; shapes kept."""
    if isinstance(value, dict):
        return {k: scrub(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            value = value[:MAX_LIST_ITEMS]  # token id lists: the first few keep the element type
        return [scrub(item) for item in value]
    if key == "id" and isinstance(value, str) and value.startswith(GENERATED_ID_PREFIXES):
        return value.partition("-")[0] + "-<id>"
    if key in VOLATILE_INT_KEYS and isinstance(value, int):
        return 0
    if key == "root" and isinstance(value, str) and value.startswith("/"):
        return "<model path>"  # --model was a local folder
    limit = MAX_MESSAGE_CHARS if key == "message" else MAX_STRING_CHARS
    if isinstance(value, str) and len(value) > limit and "…[" not in value:
        return value[:limit] + f"…[{len(value) - limit} more chars]"
    return value


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    out = dict(response)
    if "body" in out:
        out["body"] = scrub(out["body"])
    if "events" in out:
        out["events"] = [scrub(event) for event in out["events"]]
    return out


# --- recording -----------------------------------------------------------------------------------


def _prompt_tokens(root_url: str, body: dict[str, Any], model: str) -> int:
    """The prompt's token count by the server's own /tokenize (chat: with the template)."""
    tokenize: dict[str, Any] = {"model": MODEL}
    if "messages" in body:
        tokenize["messages"] = body["messages"]
    else:
        tokenize["prompt"] = body["prompt"]
    reply = send(root_url, {"method": "POST", "path": "/tokenize", "headers": {"Content-Type": "application/json"},
                            "json": tokenize}, model)  # fmt: skip
    assert reply["status"] == 200, reply
    count: int = reply["body"]["count"]
    return count


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dump_fixture(fixture: dict[str, Any]) -> str:
    """One top-level key per line and one SSE event per line: small files that still diff well."""
    lines = []
    for key, value in fixture.items():
        if key == "response" and "events" in value:
            head = _compact({k: v for k, v in value.items() if k != "events"})[:-1]
            events = ",\n  ".join(_compact(event) for event in value["events"])
            lines.append(f' "{key}": {head},"events":[\n  {events}\n ]}}')
        else:
            lines.append(f" {_compact(key)}: {_compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def record(
    root_url: str,
    model: str,
    max_model_len: int,
    version: str,
    out: Path,
    log: Callable[[str], None],
    cases: list[Case] = CASES,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        request = fixture_request(case)
        response = send(root_url, request, model)
        fixture: dict[str, Any] = {
            "server": version,
            "case": case.name,
            "about": case.about,
            "served_model": model,
            "max_model_len": max_model_len,
            "request": request,
            "response": scrub_response(response),
        }
        if case.context:
            fixture["prompt_tokens"] = _prompt_tokens(root_url, case.body, model)
        (out / f"{case.name}.json").write_text(dump_fixture(fixture), encoding="utf-8")
        log(f"{case.name}: {response['status']} {response['content_type']} ({response['kind']})")


def main(argv: list[str] | None = None) -> int:
    # servers.py is imported here, not at module level: the conformance test imports this module
    # for send() and scrub() and must not need the real servers' machinery.
    from tests.realservers.servers import CONTEXT, MODEL_NAME, SERVERS, RealServer, servers_root

    spec = SERVERS["vllm"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="Fixture folder (default: tests/fixtures/vllm-<version>).")
    parser.add_argument("--log-dir", type=Path, help="Where vllm.log goes (default: a temporary folder).")
    parser.add_argument("--pipelines", action="store_true", help="Record PIPELINE_CASES with PIPELINE_ARGS.")
    parser.add_argument("--reasoning", metavar="PARSER", help="With --pipelines: REASONING_CASES, this parser added.")
    args = parser.parse_args(argv)
    missing = spec.missing()
    if missing:
        print(missing)
        return 1
    version = spec.version(servers_root())  # "vLLM 0.32.0 (CPU)"
    out: Path = args.out or FIXTURES / ("vllm-" + version.split()[1])
    cases = CASES
    if args.pipelines:
        extra = [*PIPELINE_ARGS, *(["--reasoning-parser", args.reasoning] if args.reasoning else [])]
        base_argv = spec.argv
        spec = dataclasses.replace(spec, argv=lambda root, port: [*base_argv(root, port), *extra])
        folder = f"pipelines-reasoning-{args.reasoning}" if args.reasoning else "pipelines"
        out, cases = (args.out or out / folder), (REASONING_CASES if args.reasoning else PIPELINE_CASES)
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix="record-vllm-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting {version}; log in {log_dir / (spec.name + '.log')}", flush=True)
    with RealServer(spec, log_dir) as server:
        record(server.root_url, MODEL_NAME, CONTEXT, version, out, lambda line: print(line, flush=True), cases)
    print(f"wrote {len(cases)} fixtures to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
