"""Check 9: requests the server must refuse cleanly, with a 4xx and a message, not a 500 or a hang.

Both requests go to /v1/completions: the engine's input validation is shared by both endpoints in
vLLM, and completions does not depend on a chat template (check 2 reports that separately).
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from monitor.doctor.client import Exchange
from monitor.doctor.context import Context
from monitor.doctor.findings import Finding, Status, excerpt, worst

# Each " hello" is at least one token for BPE tokenizers, so this many words overflow max_model_len.
_OVERSIZE_WORD = " hello"
_OVERSIZE_EXTRA_WORDS = 64
_MAX_OVERSIZE_TOKENS = 2_000_000  # beyond this the request body alone would be unreasonable to send
LIMIT_TIMEOUT_S = 30.0  # a validation error is instant; a server that hangs on one fails within this
_SEVERITY: tuple[Status, ...] = ("skip", "pass", "warn", "fail")


class _Verdict(NamedTuple):
    status: Status
    what: str
    note: str
    exchange: Exchange | None = None
    fix: str | None = None


async def check_limits(ctx: Context) -> Finding:
    """Check 9: an over-long prompt and temperature -1 each get a clean 4xx with a message."""
    client = ctx.client
    timeout_s = min(client.target.timeout_s, LIMIT_TIMEOUT_S)
    limit = ctx.info.max_model_len
    async with asyncio.TaskGroup() as tg:
        oversize_task = None
        if limit is not None and limit <= _MAX_OVERSIZE_TOKENS:
            prompt = _OVERSIZE_WORD * (limit + _OVERSIZE_EXTRA_WORDS)
            oversize_task = tg.create_task(client.completion("limits", prompt, max_tokens=1, timeout_s=timeout_s))
        temperature_task = tg.create_task(
            client.completion("limits", "你好", max_tokens=1, temperature=None, extra_body={"temperature": -1},
                              timeout_s=timeout_s)
        )  # fmt: skip
    verdicts: list[_Verdict] = []
    if oversize_task is not None:
        verdicts.append(_judge(f"prompt over max_model_len {limit}", oversize_task.result(), timeout_s))
    else:
        skip_note = "max_model_len unknown: the over-long prompt was not sent"
        verdicts.append(_Verdict("skip", "over-long prompt", skip_note))
    verdicts.append(_judge_temperature(_judge("temperature -1", temperature_task.result(), timeout_s)))
    status = worst(*(v.status for v in verdicts))
    decisive = max(verdicts, key=lambda v: _SEVERITY.index(v.status))
    ex = decisive.exchange
    problems = [v.note for v in verdicts if v.status in ("warn", "fail")]
    passed = [f"{v.what} → HTTP {v.exchange.result.http_status}" for v in verdicts if v.status == "pass" and v.exchange]
    summary = "; ".join(problems) or "rejected cleanly with a message: " + ", ".join(passed)
    fixes = " ".join(v.fix for v in verdicts if v.fix)
    return Finding(
        "limits", status, summary, ex.request if ex else "", excerpt(ex.result) if ex else "", fixes or None,
        tuple(v.note for v in verdicts),
    )  # fmt: skip


def _judge(what: str, ex: Exchange, timeout_s: float) -> _Verdict:
    r = ex.result
    status = r.http_status or 0
    if r.error_kind == "http_error" and 400 <= status < 500:
        if (r.error_detail or "").endswith("with an empty body"):
            fix = "Error responses should say what is wrong."
            return _Verdict("warn", what, f"{what}: HTTP {status} without a message", ex, fix)
        return _Verdict("pass", what, f"{what}: clean {r.error_detail}", ex)
    if r.error_kind == "http_error":
        fix = (
            f"The server must reject this with a 4xx and a message, not HTTP {status}: upgrade vLLM (it validates "
            "requests before scheduling them), make any gateway pass 4xx bodies through, and read the server log."
        )
        return _Verdict("fail", what, f"{what}: {r.error_detail} instead of a 4xx", ex, fix)
    if r.error_kind == "timeout":
        fix = "The server hangs on a request it should reject at once: check its log; upgrade vLLM."
        return _Verdict("fail", what, f"{what}: no answer within {timeout_s:g} s", ex, fix)
    if r.error_kind is not None:
        fix = "The server broke the connection on a request it should reject: read its log."
        return _Verdict("fail", what, f"{what}: {r.error_kind}: {r.error_detail}", ex, fix)
    fix = (
        "The server accepted an invalid request: it silently truncates over-long prompts or ignores invalid "
        "sampling values, so clients get wrong answers instead of errors."
    )
    return _Verdict("fail", what, f"{what}: accepted with HTTP {status} instead of rejected", ex, fix)


def _judge_temperature(verdict: _Verdict) -> _Verdict:
    """An accepted temperature -1 is a warning, not a failure: llama.cpp documents temperature <= 0 as
    greedy decoding, so a healthy llama.cpp server answers it. Clients still get no error for a value
    the OpenAI API rejects, which is worth knowing."""
    if verdict.status != "fail" or verdict.exchange is None or verdict.exchange.result.error_kind is not None:
        return verdict
    note = "temperature -1: accepted with HTTP 200 (llama.cpp and some gateways treat temperature <= 0 as greedy)"
    fix = "Clients that send an invalid temperature get greedy answers instead of an error; validate it client-side."
    return verdict._replace(status="warn", note=note, fix=fix)
