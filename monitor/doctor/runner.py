"""`run_doctor(settings, target)`: walk the deployment checklist once, store the results, print the report.

Order: check 1 alone (it proves the server answers), then the chat/completion "你好" pair that
checks 2 and 3 judge (it proves generation answers in time), then checks 4-13 concurrently: they
are independent, and the doctor judges what comes back, not how fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from rich.console import Console

from monitor.config import Settings
from monitor.doctor.checks_basic import (
    NO_LIMIT_TIMEOUT_S,
    check_reachable,
    judge_chat_template,
    judge_endpoint_semantics,
)
from monitor.doctor.checks_chat import (
    SHORT_MAX_TOKENS,
    check_multi_turn,
    check_stop_tokens,
    check_streaming,
    check_truncation,
)
from monitor.doctor.checks_limits import check_limits
from monitor.doctor.checks_pipelines import check_reasoning_parser, check_structured_output, check_tool_parser
from monitor.doctor.checks_server import check_chinese, check_sampling_defaults
from monitor.doctor.client import DoctorClient, Exchange
from monitor.doctor.context import HELLO, Context, fit_max_tokens
from monitor.doctor.findings import CHECK_IDS, DoctorReport, Finding, skipped
from monitor.doctor.printout import print_report
from monitor.doctor.remedies import detect_family
from monitor.errors import ProbeTimeout
from monitor.store.db import connect, ensure_schema
from monitor.store.repo import Store
from monitor.target_http import target_session

logger = logging.getLogger(__name__)

# Checks 4-13 by id, in checklist order.
_LATER_CHECKS: dict[str, Callable[[Context], Coroutine[Any, Any, Finding]]] = dict(
    zip(
        CHECK_IDS[3:],
        (
            check_stop_tokens, check_truncation, check_streaming, check_multi_turn, check_chinese, check_limits,
            check_sampling_defaults, check_reasoning_parser, check_tool_parser, check_structured_output,
        ),
        strict=True,
    )
)  # fmt: skip


def run_doctor(settings: Settings, target_name: str, *, as_json: bool, console: Console | None = None) -> int:
    """Run the doctor against one configured target; 0 without failures, 1 with any.

    Raises ProbeConnectError/ProbeTimeout (exit code 2 in the CLI) when the server cannot be reached.
    """
    report = asyncio.run(doctor(settings, target_name))
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print_report(console or Console(), report)
    return report.exit_code


async def doctor(settings: Settings, target_name: str) -> DoctorReport:
    """Diagnose the target and store every request's result (probe names `doctor.<check-id>`).

    The database is reached (and migrated if empty) first, so a bad storage URL fails fast. Results
    are stored even when the run stops because the server cannot be reached, as source `doctor`,
    which the daemon's trends, alerts and dashboard leave out.
    """
    target = settings.target(target_name)
    async with AsyncExitStack() as stack:
        engine = await connect(settings.storage.url)
        stack.push_async_callback(engine.dispose)
        await ensure_schema(engine)
        session = target_session()
        stack.push_async_callback(session.close)
        client = DoctorClient(session, target, settings.api_key(target.name))
        try:
            return await diagnose(client)
        finally:
            await Store.from_engine(engine).add_results(client.results, source="doctor")


async def diagnose(client: DoctorClient, checks: Collection[str] | None = None) -> DoctorReport:
    """The checks against the client's target (`checks`: a subset, default all); results stay in `client.results`.

    Check 1 (reachable) always runs and is always reported: every other check needs the model it
    finds. When any later check is chosen, the chat/completion pair that checks 2 and 3 judge is
    sent too (it proves generation answers and tells the model family); only the chosen checks are
    reported.
    """
    target = client.target
    chosen = set(CHECK_IDS if checks is None else checks) | {"reachable"}
    reach, info = await check_reachable(client)
    if not info.proceed:
        rest = [skipped(c, "the model cannot be used (check 1)") for c in CHECK_IDS[1:] if c in chosen]
        return DoctorReport(target.name, target.base_url, info.model, None, (reach, *rest), tuple(client.results))
    if chosen == {"reachable"}:
        return DoctorReport(
            target.name, target.base_url, info.model, info.max_model_len, (reach,), tuple(client.results)
        )
    async with asyncio.TaskGroup() as tg:
        max_tokens = fit_max_tokens(info, SHORT_MAX_TOKENS)
        chat_task = tg.create_task(client.chat("chat_template", HELLO, max_tokens=max_tokens))
        # No max_tokens: shows the server's default for completions (vLLM: 16; llama.cpp: none, it generates
        # until the context is full, so this request is bounded in time).
        completion_task = tg.create_task(
            client.completion("endpoint_semantics", "你好", timeout_s=min(target.timeout_s, NO_LIMIT_TIMEOUT_S))
        )
    chat, completion = chat_task.result(), completion_task.result()
    await _raise_if_unreachable(client, chat)
    family = detect_family(info.model, (chat.text,))
    blocked = None
    if chat.result.error_kind == "http_error":
        blocked = f"the server rejects chat requests (HTTP {chat.result.http_status}, see check 2)"
    elif chat.result.error_kind == "connect_error":
        blocked = "the server drops chat requests (see check 2)"
    ctx = Context(client, info, family, blocked)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(check(ctx)) for check_id, check in _LATER_CHECKS.items() if check_id in chosen]
    judged = (judge_chat_template(chat, completion, family), judge_endpoint_semantics(chat, completion))
    findings = (reach, *(f for f in judged if f.id in chosen), *(t.result() for t in tasks))
    for finding in findings:
        logger.info("doctor check %s: %s", finding.id, finding.status)
    return DoctorReport(target.name, target.base_url, info.model, info.max_model_len, findings, tuple(client.results))


async def _raise_if_unreachable(client: DoctorClient, chat: Exchange) -> None:
    """A first generation request that times out, or finds the server gone, ends the run (exit code 2).

    A server that accepts connections but drops chat requests is a finding (check 2), not an
    unreachable server: asking /v1/models again tells the two apart (it raises if the server is gone).
    """
    r = chat.result
    url = client.target.base_url + "/chat/completions"
    if r.error_kind == "timeout":
        raise ProbeTimeout(f"cannot reach {url}: {r.error_detail}", phase=r.timeout_phase or "total")
    if r.error_kind == "connect_error":
        await client.get_json("/models")
