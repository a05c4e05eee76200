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
from locust.runners import WorkerRunner

import json
import logging
import math
import time
from typing import Any

import _collect
import _locust_fixes
import _plan
import gevent
from _http import ALL_STATUS_CODES, Failure, closed_before_reply, drop_idle_connections, read_reply, stamp_connections
from _requests import _CONFIG, Config, Request, config, prepare
from _selftime import CLOCK, ReplyTiming
from _turns import wait_quiet

from monitor.checks import run_checks
from monitor.envelope import new_request_id
from monitor.golden.lexical import lexical_similarity
from monitor.loadtest.goodput import is_good
from monitor.meter import StreamMeasurement, StreamMeter
from monitor.results import CheckResult
from monitor.untrusted import Untrusted

logger = logging.getLogger(__name__)

_locust_fixes.apply()  # before a worker's first spawn message


@events.init.add_listener
def _init(environment: Environment, **kw: Any) -> None:
    # libev caches the loop's "now" and has not run since before the locustfile was imported; Locust
    # arms its --run-time timer right after this event, against that stale clock. On a busy machine
    # the imports take seconds, and a 3 s run ended at once, with no request sent.
    gevent.get_hub().loop.update_now()
    options = environment.parsed_options
    _collect.install(environment, options.llm_out if options is not None else None)
    _plan.install(environment)

    @environment.events.test_start.add_listener
    def _start(environment: Environment, **kw: Any) -> None:
        # Workers get the master's --llm-* values with the spawn message, just before this event. This
        # event runs in a worker's message loop, so a worker builds on first use instead: its plan may
        # still be on the way (_plan), and waiting here would stop the message that brings it.
        prepare(environment)
        if not isinstance(environment.runner, WorkerRunner):
            config()  # the master and a single process build at once: a bad plan or prompt fails the start

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
        stamp_connections(self.client, environment.host or "")  # the first request's reads too
        self.cfg = config()
        self.sent = 0
        self.fire = environment.events.request.fire

    def send(
        self, endpoint: str, prompt_index: int, start_s: float, request: Request | None = None
    ) -> StreamMeasurement | None:
        """One request, timed from ``start_s`` (``time.perf_counter()``; the intended start in open loop).

        ``request`` overrides the prompt list (a session's next turn, built from its history). Returns
        the measurement of a successful reply (a session appends its text), None for a failure.
        """
        cfg = self.cfg
        if request is None:
            request = cfg.requests[endpoint][prompt_index % len(cfg.requests[endpoint])]
        self.sent += 1
        rid = new_request_id()
        headers = {**cfg.headers, "X-Request-Id": rid}
        untrusted = Untrusted(cfg.api_key)
        meter = StreamMeter(endpoint, stream=cfg.stream, start_s=start_s, untrusted=untrusted)
        timing = ReplyTiming(start_s)
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
                read_reply(resp, meter, untrusted, cfg.max_body_bytes, timing)
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
                    endpoint, now_wall, failure.kind, failure.detail, tokens, m.reasoning_tokens,
                    judged=bool(cfg.goodput),
                )  # fmt: skip
            else:
                resp.success()
                golden = None
                if request.golden is not None:
                    golden = lexical_similarity(request.golden, m.text) >= request.min_similarity
                good = is_good(cfg.goodput, m) if cfg.goodput else None
                self._record_ok(endpoint, m, tokens, now_wall, golden, good=good, turn=request.turn, timing=timing)
        if cfg.trace is not None:
            _trace(cfg, rid, endpoint, start_s, m, failure, timing)
        return m if failure is None else None

    def _post(self, endpoint: str, request: Request, headers: dict[str, str]) -> Any:
        return self.client.request(
            "POST", request.path, data=request.body, headers=headers, stream=True, catch_response=True,
            name=f"E2E {endpoint}",
        )  # fmt: skip

    def _record_ok(
        self,
        endpoint: str,
        m: StreamMeasurement,
        tokens: int,
        now_wall: float,
        golden: bool | None = None,
        *,
        good: bool | None = None,
        turn: int | None = None,
        timing: ReplyTiming | None = None,
    ) -> None:
        _collect.COLLECTOR.record_ok(endpoint, now_wall, m, tokens, golden, good=good, turn=turn, timing=timing)
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
    cfg: Config,
    rid: str,
    endpoint: str,
    start_s: float,
    m: StreamMeasurement | None,
    failure: Failure | None,
    timing: ReplyTiming | None = None,
) -> None:
    assert cfg.trace is not None
    record = {
        "id": rid,
        "endpoint": endpoint,
        "start_wall": start_s + CLOCK.offset_s,  # the kernel stamps' conversion, so trace times agree with them
        "ttft_ms": m.ttft_ms if m else None,
        "ttfa_ms": m.ttfa_ms if m else None,
        "e2e_ms": m.latency_ms if m else None,
        "itl_ms": list(m.itl_ms) if m else [],
        "tokens": m.completion_tokens if m else None,
        "reasoning_tokens": m.reasoning_tokens if m else None,
        "error": str(failure) if failure else None,
        # The generator's own error: at most this much on ttft_ms (None: no token), and its worst read lag.
        "ttft_bound_ms": _ceil_us(timing.ttft_bound_ms) if timing else None,
        "read_lag_max_ms": _ceil_us(timing.read_lag_max_ms) if timing else None,
    }
    cfg.trace.write(json.dumps(record, separators=(",", ":")) + "\n")


def _ceil_us(value_ms: float | None) -> float | None:
    # Rounded up to the µs: a bound must not shrink on its way to the trace.
    return None if value_ms is None else math.ceil(value_ms * 1000.0) / 1000.0
