"""Locust-side requests: the ``--llm-*`` options, and every request body built once per process.

``build_config`` turns the options into a ``Config`` when the test starts: the request bodies of
each endpoint (from the prompts, or from a workload plan, ``--llm-plan``), headers, the per-request
goodput clauses, and the trace file. ``locustfiles/_common.py`` sends them.
"""

from __future__ import annotations

from locust import events
from locust.env import Environment

import json
import os
import time
from argparse import ArgumentParser
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import _plan
import gevent.lock

from monitor.config import ProbeSettings, TargetSettings
from monitor.loadtest.goodput import RequestClause, parse_goodput
from monitor.loadtest.prompts import BUILTIN_PROMPTS, Prompt, load_prompts

ENDPOINTS = ("chat", "completion")


@events.init_command_line_parser.add_listener
def _options(parser: ArgumentParser) -> None:
    # parser.add_argument (not an argument group) knows include_in_web_ui.
    group = parser
    group.add_argument(
        "--llm-endpoint",
        choices=["chat", "completion", "both"],
        default="both",
        help="Endpoint(s) to load; both alternates chat and completion requests.",
    )
    group.add_argument("--llm-model", default="", help="Model name to request (default: the server's).")
    group.add_argument("--llm-max-tokens", type=int, default=128, help="max_tokens of every request.")
    group.add_argument("--llm-temperature", type=float, default=None, help="Sampling temperature (default: unset).")
    group.add_argument("--llm-prompts", default="", help="JSONL prompts file (messages, prompt or ShareGPT).")
    group.add_argument("--llm-no-stream", action="store_true", default=False, help="Send non-streaming requests.")
    group.add_argument(
        "--llm-no-continuous-usage",
        action="store_true",
        default=False,
        help="Do not ask for per-chunk usage (stream_options.continuous_usage_stats).",
    )
    group.add_argument("--llm-extra-body", default="", help="JSON object merged into every request body.")
    group.add_argument(
        "--llm-api-key-env",
        default="OPENAI_API_KEY",
        help="Environment variable holding the API key (sent as a Bearer token).",
    )
    group.add_argument("--llm-timeout", type=float, default=60.0, help="Socket timeout in seconds (any silence).")
    group.add_argument(
        "--llm-max-body-bytes",
        type=int,
        default=TargetSettings.model_fields["max_body_bytes"].default,
        help="Largest reply body; a longer one fails as body_too_large.",
    )
    group.add_argument("--llm-out", default="", include_in_web_ui=False, help="Write the JSONL event stream here.")
    group.add_argument(
        "--llm-trace",
        default="",
        include_in_web_ui=False,
        help="Write one JSON line per request (ids, TTFT, every gap) here.",
    )
    # Open loop (locustfiles/llm_open.py) and shapes (locustfiles/llm_shape.py).
    group.add_argument("--llm-rate", type=float, default=1.0, help="Open loop: arrivals per second, whole test.")
    group.add_argument(
        "--llm-arrival", choices=["constant", "poisson"], default="poisson", help="Open loop: arrival process."
    )
    group.add_argument(
        "--llm-max-inflight",
        type=int,
        default=512,
        help="Open loop: concurrent requests per scheduler user before arrivals queue.",
    )
    group.add_argument("--llm-stages", default="", help="Stages like 8@30s,~64@1m (users, or rate in open loop).")
    group.add_argument("--llm-goodput", default="", help="Per-request goodput clauses, e.g. ttft_ms<=500,tpot_ms<=50.")
    group.add_argument(
        "--llm-plan", default="", include_in_web_ui=False, help="A workload plan (JSONL) written by llm-monitor."
    )
    group.add_argument(
        "--llm-total-users",
        type=int,
        default=0,
        include_in_web_ui=False,
        help="(set by the master) total users, to split the open-loop rate.",
    )


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    golden: str | None = None  # the prompt's known-good answer, graded lexically (no call per request)
    min_similarity: float = 0.8
    turn: int | None = None  # a session's turn number (1-based), for TTFT by turn
    input_tokens: int | None = None  # the plan's prompt length (server tokens, see the plan's token_source)
    at_s: float | None = None  # a trace replay's arrival offset (seconds from the schedule's start)


@dataclass(frozen=True, slots=True)
class SessionTurn:
    content: str
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Session:
    """A planned conversation: the user resends the whole history each turn (locustfiles/_sessions.py)."""

    system: str | None
    turns: tuple[SessionTurn, ...]
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a request needs, built once per process when the test starts."""

    endpoints: tuple[str, ...]
    requests: dict[str, tuple[Request, ...]]
    probes: dict[str, ProbeSettings]
    headers: dict[str, str]
    api_key: str | None  # redacted from everything the server sends back
    stream: bool
    timeout_s: float
    max_body_bytes: int
    wall_offset_s: float  # time.time() - time.perf_counter(), to report wall-clock times
    trace: IO[str] | None
    goodput: tuple[RequestClause, ...] = ()  # per-request clauses; () counts no goodput
    sessions: tuple[Session, ...] = ()  # planned conversations (--llm-plan with sessions)
    arrivals: tuple[tuple[str, Request], ...] = ()  # a trace replay: (endpoint, request) by at_s
    common: dict[str, Any] | None = None  # the body fields every request shares (model, stream, ...)
    paths: dict[str, str] | None = None

    def chat_body(self, messages: list[dict[str, str]], max_tokens: int, extra: dict[str, Any]) -> bytes:
        body = {**(self.common or {}), "messages": messages, "max_tokens": max_tokens, **extra}
        return json.dumps(body, ensure_ascii=False).encode()


_CONFIG: list[Config] = []
# The environment whose Config is still to build (test_start sets it; the first config() call builds it).
_PENDING: list[Environment] = []
_BUILDING = gevent.lock.Semaphore()


def prepare(environment: Environment) -> None:
    """The test starts: its Config is built on first use (a worker may still be waiting for its plan)."""
    _PENDING[:] = [environment]


def config() -> Config:
    if _PENDING:
        with _BUILDING:  # users start concurrently: one builds, the others wait for it
            if _PENDING:
                _CONFIG.append(build_config(_PENDING[0]))
                _PENDING.clear()
    if not _CONFIG:
        raise RuntimeError("the llm-monitor locustfile was not initialised (test_start did not run)")
    return _CONFIG[-1]


def api_prefix(host: str) -> str:
    """``/v1`` for a bare host (``http://h:8000``); nothing if the host already has a path (``.../v1``)."""
    return "" if urlparse(host).path.strip("/") else "/v1"


def build_config(environment: Environment) -> Config:
    options = environment.parsed_options
    assert options is not None
    host = environment.host or ""
    prefix = api_prefix(host)
    prompts: tuple[Prompt, ...] = load_prompts(Path(options.llm_prompts)) if options.llm_prompts else BUILTIN_PROMPTS
    extra: dict[str, Any] = json.loads(options.llm_extra_body) if options.llm_extra_body else {}
    if not isinstance(extra, dict):
        raise ValueError("--llm-extra-body must be a JSON object")
    stream = not options.llm_no_stream
    common: dict[str, Any] = {"max_tokens": options.llm_max_tokens, "stream": stream}
    if options.llm_model:
        common["model"] = options.llm_model
    if options.llm_temperature is not None:
        common["temperature"] = options.llm_temperature
    if stream:
        # Per-chunk usage lets a chunk carrying k tokens count as k gaps; servers that do not
        # know continuous_usage_stats ignore it (OpenAI sends the final usage chunk only).
        usage: dict[str, bool] = {"include_usage": True}
        if not options.llm_no_continuous_usage:
            usage["continuous_usage_stats"] = True
        common["stream_options"] = usage
    endpoints = ENDPOINTS if options.llm_endpoint == "both" else (options.llm_endpoint,)

    def body(endpoint: str, prompt: Prompt) -> bytes:
        specific = {"messages": prompt.chat_messages()} if endpoint == "chat" else {"prompt": prompt.text}
        return json.dumps({**common, **specific, **extra}, ensure_ascii=False).encode()

    paths = {"chat": prefix + "/chat/completions", "completion": prefix + "/completions"}
    requests = {
        ep: tuple(Request(paths[ep], body(ep, p), p.golden, p.min_similarity) for p in prompts) for ep in endpoints
    }
    sessions: tuple[Session, ...] = ()
    arrivals: tuple[tuple[str, Request], ...] = ()
    if options.llm_plan:
        endpoints, requests, sessions, arrivals = _planned(Path(options.llm_plan), {**common, **extra}, paths)
    first = prompts[0]
    probes = {
        "chat": ProbeSettings(name="load-chat", target="load", endpoint="chat", stream=stream,
                              messages=first.chat_messages(), max_tokens=options.llm_max_tokens),
        "completion": ProbeSettings(name="load-completion", target="load", endpoint="completion", stream=stream,
                                    prompt=first.text, max_tokens=options.llm_max_tokens),
    }  # fmt: skip
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    api_key = os.environ.get(options.llm_api_key_env) if options.llm_api_key_env else None
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    trace: IO[str] | None = None
    if options.llm_trace:
        from locust.runners import WorkerRunner

        suffix = f".{os.getpid()}" if isinstance(environment.runner, WorkerRunner) else ""
        trace = open(options.llm_trace + suffix, "a", encoding="utf-8", buffering=1 << 16)
    return Config(
        endpoints=endpoints,
        requests=requests,
        probes=probes,
        headers=headers,
        api_key=api_key or None,
        stream=stream,
        timeout_s=options.llm_timeout,
        max_body_bytes=options.llm_max_body_bytes,
        wall_offset_s=time.time() - time.perf_counter(),
        trace=trace,
        goodput=parse_goodput(options.llm_goodput) if options.llm_goodput else (),
        sessions=sessions,
        arrivals=arrivals,
        common={**common, **extra},
        paths=paths,
    )


def _planned(
    path: Path, common: dict[str, Any], paths: dict[str, str]
) -> tuple[tuple[str, ...], dict[str, tuple[Request, ...]], tuple[Session, ...], tuple[tuple[str, Request], ...]]:
    """Endpoints, requests by endpoint, sessions and trace arrivals of a plan."""
    planned, sessions = _read_plan(_plan.text(str(path)), common, paths)
    if sessions:
        return ("chat",), {}, sessions, ()
    arrivals: tuple[tuple[str, Request], ...] = ()
    if any(r.at_s is not None for _, r in planned):
        arrivals = tuple(sorted(planned, key=lambda er: er[1].at_s or 0.0))
    endpoints = tuple(ep for ep in ENDPOINTS if any(e == ep for e, _ in planned))
    return endpoints, {ep: tuple(r for e, r in planned if e == ep) for ep in endpoints}, (), arrivals


def _read_plan(
    text: str, common: dict[str, Any], paths: dict[str, str]
) -> tuple[list[tuple[str, Request]], tuple[Session, ...]]:
    """The plan monitor/loadtest/plan.py wrote (see its docstring for the format), as JSONL text."""
    planned: list[tuple[str, Request]] = []
    sessions: list[Session] = []
    for line in text.splitlines():
        if line.strip():
            item = json.loads(line)
            endpoint = item["endpoint"]
            extra = item.get("extra") or {}
            if "session" in item:
                turns = tuple(SessionTurn(t["content"], int(t["max_tokens"])) for t in item["session"]["turns"])
                sessions.append(Session(item["session"].get("system"), turns, extra))
                continue
            specific = {"messages": item["messages"]} if endpoint == "chat" else {"prompt": item["prompt"]}
            body = {**common, **specific, "max_tokens": item["max_tokens"], **extra}
            raw = json.dumps(body, ensure_ascii=False).encode()
            planned.append((endpoint, Request(paths[endpoint], raw, input_tokens=item.get("input_tokens"),
                                              at_s=item.get("at_s"))))  # fmt: skip
    return planned, tuple(sessions)
