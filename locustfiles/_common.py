"""Shared Locust-side code: ``--llm-*`` options, request bodies, and the measuring base user.

Every request goes through ``LLMUser.send``: one POST, its body fed read by read to the same
sans-IO ``monitor.meter.StreamMeter`` the probes use, then ``monitor.checks.run_checks``. The
result lands in three places: Locust's own statistics (named entries, see below), the
per-second windows of ``_collect.COLLECTOR``, and optionally a per-request trace file.

Locust statistics, all with request type ``LLM`` (one entry per endpoint):

* ``E2E chat`` is the request itself: response time = end-to-end latency in ms, measured from
  the intended send time; failures carry their classified reason (``http_error: HTTP 500 ...``);
* ``TTFT chat``: time to first token of any kind (reasoning, answer or tool call), ms;
* ``TTFA chat``: time to the first answer (content) token, ms; the same as TTFT for a model that
  does not reason, and left out for a reply that never got to its answer;
* ``ITL chat``: the request's mean inter-token latency, ms (one sample per request; every
  single gap goes into llm-monitor's own ITL percentiles instead);
* ``tokens/s chat``: that request's output tokens (reasoning included) per second of its E2E time;
* ``reasoning tokens/s chat``: likewise its reasoning tokens, only for replies that reasoned;
* ``Lag chat`` (open loop only): how late the request left compared to its schedule, ms.

The "size" column of these entries holds output tokens, not bytes. Only ``E2E`` rows count
requests: the ``Aggregated`` row adds every entry together and is not a request count.

A request whose pooled keep-alive connection the server had closed (no response byte came back:
llama-server closes idle connections) is sent once more on a fresh connection and counted as a
reconnect (``_collect.COLLECTOR.reconnects``), not as a failure.
"""

from __future__ import annotations

from locust import FastHttpUser, constant, events
from locust.env import Environment

import json
import logging
import os
import time
from argparse import ArgumentParser
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import _collect
import gevent
from _http import ALL_STATUS_CODES, Failure, closed_before_reply, drop_idle_connections, read_reply
from _turns import wait_quiet

from monitor.checks import run_checks
from monitor.config import ProbeSettings, TargetSettings
from monitor.envelope import new_request_id
from monitor.golden.lexical import lexical_similarity
from monitor.loadtest.prompts import BUILTIN_PROMPTS, Prompt, load_prompts
from monitor.meter import StreamMeasurement, StreamMeter
from monitor.results import CheckResult
from monitor.untrusted import Untrusted

logger = logging.getLogger(__name__)

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


_CONFIG: list[Config] = []


def config() -> Config:
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
    )


@events.init.add_listener
def _init(environment: Environment, **kw: Any) -> None:
    # libev caches the loop's "now" and has not run since before the locustfile was imported; Locust
    # arms its --run-time timer right after this event, against that stale clock. On a busy machine
    # the imports take seconds, and a 3 s run ended at once, with no request sent.
    gevent.get_hub().loop.update_now()
    options = environment.parsed_options
    _collect.install(environment, options.llm_out if options is not None else None)

    @environment.events.test_start.add_listener
    def _start(environment: Environment, **kw: Any) -> None:
        # Workers get the master's --llm-* values with the spawn message, just before this event.
        _CONFIG.append(build_config(environment))

        runner = environment.runner
        opts = environment.parsed_options
        if opts is not None and runner is not None and not opts.llm_total_users:
            opts.llm_total_users = max(1, getattr(runner, "target_user_count", 0) or opts.num_users or 1)

    @environment.events.quitting.add_listener
    def _quit(environment: Environment, **kw: Any) -> None:
        for cfg in _CONFIG:
            if cfg.trace is not None and not cfg.trace.closed:
                cfg.trace.close()


class LLMUser(FastHttpUser):
    """Abstract base: measures one LLM request per ``send`` call."""

    abstract = True
    wait_time = constant(0)
    connection_timeout = 10.0
    # Keep-alive connections per user; open-loop users raise it to their in-flight limit.
    concurrency = 4

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        if options is not None:
            self.network_timeout = options.llm_timeout
        super().__init__(environment)
        agent = self.client.client
        # Read every reply ourselves: an error body has the server's message, and a redirect is an error.
        agent.valid_response_codes = ALL_STATUS_CODES
        agent.redirect_response_codes = frozenset()
        self.cfg = config()
        self.sent = 0
        self.fire = environment.events.request.fire

    def send(self, endpoint: str, prompt_index: int, start_s: float) -> None:
        """One request, timed from ``start_s`` (``time.perf_counter()``; the intended start in open loop)."""
        cfg = self.cfg
        request = cfg.requests[endpoint][prompt_index % len(cfg.requests[endpoint])]
        self.sent += 1
        rid = new_request_id()
        headers = {**cfg.headers, "X-Request-Id": rid}
        untrusted = Untrusted(cfg.api_key)
        meter = StreamMeter(endpoint, stream=cfg.stream, start_s=start_s, untrusted=untrusted)
        m: StreamMeasurement | None = None
        failure: Failure | None = None
        resp = self._post(endpoint, request, headers)
        if closed_before_reply(resp):
            # Not entered, so Locust never reports this attempt; the time it took stays in E2E.
            _collect.COLLECTOR.record_reconnect()
            drop_idle_connections(self.client)
            resp = self._post(endpoint, request, headers)
        with resp:
            meta = resp.request_meta
            meta["request_type"] = "LLM"
            try:
                read_reply(resp, meter, untrusted, cfg.max_body_bytes)
            except Failure as exc:
                failure = exc
            end_s = time.perf_counter()
            wait_quiet()
            m = meter.finish(end_s)
            if failure is None and m.error_kind is not None:
                failure = Failure(m.error_kind, m.error_detail or "")
            if failure is None:
                failed = [c for c in run_checks(cfg.probes[endpoint], m) if not c.passed and not _truncation(c, m)]
                if failed:
                    failure = Failure("check_failed", "; ".join(f"{c.name}: {c.detail}" for c in failed))
            tokens = m.completion_tokens or 0
            meta["response_time"] = m.latency_ms
            meta["response_length"] = tokens
            now_wall = time.time()
            if failure is not None:
                resp.failure(_short(failure))
                _collect.COLLECTOR.record_failure(
                    endpoint, now_wall, failure.kind, failure.detail, tokens, m.reasoning_tokens
                )
            else:
                resp.success()
                golden = None
                if request.golden is not None:
                    golden = lexical_similarity(request.golden, m.text) >= request.min_similarity
                self._record_ok(endpoint, m, tokens, now_wall, golden)
        if cfg.trace is not None:
            _trace(cfg, rid, endpoint, start_s, m, failure)

    def _post(self, endpoint: str, request: Request, headers: dict[str, str]) -> Any:
        return self.client.request(
            "POST", request.path, data=request.body, headers=headers, stream=True, catch_response=True,
            name=f"E2E {endpoint}",
        )  # fmt: skip

    def _record_ok(
        self, endpoint: str, m: StreamMeasurement, tokens: int, now_wall: float, golden: bool | None = None
    ) -> None:
        _collect.COLLECTOR.record_ok(endpoint, now_wall, m, tokens, golden)
        fire = self.fire
        if m.ttft_ms is not None:
            fire(request_type="LLM", name=f"TTFT {endpoint}", response_time=m.ttft_ms, response_length=tokens)
        if m.ttfa_ms is not None:
            # The same sample as TTFT unless the reply reasoned (or called a tool) first.
            fire(request_type="LLM", name=f"TTFA {endpoint}", response_time=m.ttfa_ms, response_length=tokens)
        itl = m.itl_ms
        if itl:
            fire(request_type="LLM", name=f"ITL {endpoint}", response_time=sum(itl) / len(itl), response_length=tokens)
        if m.latency_ms > 0:
            rate = tokens * 1000.0 / m.latency_ms
            fire(request_type="LLM", name=f"tokens/s {endpoint}", response_time=rate, response_length=tokens)
            if m.reasoning_chunk_count:
                # Only replies that reasoned: a plain model gets no row of zeros.
                rate = m.reasoning_tokens * 1000.0 / m.latency_ms
                fire(request_type="LLM", name=f"reasoning tokens/s {endpoint}", response_time=rate,
                     response_length=m.reasoning_tokens)  # fmt: skip


def _truncation(check: CheckResult, m: StreamMeasurement) -> bool:
    # Truncation is measured (truncation_rate), not a failure. Reasoning that used all of max_tokens is
    # truncation too: answer_empty reports it instead of `truncated`, and the reply has a TTFT but no TTFA.
    return check.name == "truncated" or (check.name == "answer_empty" and m.finish_reason == "length")


def _short(failure: Failure) -> str:
    # Locust groups failures by message, so check details (which quote reply text) are left out.
    if failure.kind == "check_failed":
        names = sorted({part.split(":", 1)[0] for part in failure.detail.split("; ")})
        return f"check_failed: {', '.join(names)}"
    # The meter quotes the start of a malformed event, which holds the (unique) response id.
    return f"{failure.kind}: {failure.detail.split('; data: ', 1)[0]}"


def _trace(
    cfg: Config, rid: str, endpoint: str, start_s: float, m: StreamMeasurement | None, failure: Failure | None
) -> None:
    assert cfg.trace is not None
    record = {
        "id": rid,
        "endpoint": endpoint,
        "start_wall": start_s + cfg.wall_offset_s,
        "ttft_ms": m.ttft_ms if m else None,
        "ttfa_ms": m.ttfa_ms if m else None,
        "e2e_ms": m.latency_ms if m else None,
        "itl_ms": list(m.itl_ms) if m else [],
        "tokens": m.completion_tokens if m else None,
        "reasoning_tokens": m.reasoning_tokens if m else None,
        "error": str(failure) if failure else None,
    }
    cfg.trace.write(json.dumps(record, separators=(",", ":")) + "\n")
