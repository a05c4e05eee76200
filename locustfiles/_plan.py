"""The workload plan on every Locust process: read by the master, shipped to each worker that asks.

The runner writes the plan (``--llm-plan``, monitor/loadtest/plan.py) into a directory of its own on
the master's host; a worker on another host has no such file. So each worker asks its master for the
plan's text as soon as it starts (a custom ``llm_plan_request`` message, sent once its handler for the
reply is registered: a message that arrives before that is dropped by Locust), and the master answers
with ``llm_plan``. A worker builds its requests from that text, else from the file when its host has
it; when it has neither yet, its first user waits for the reply (up to ``WAIT_S``).
"""

from __future__ import annotations

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from pathlib import Path
from typing import Any

import gevent.event

REQUEST, REPLY = "llm_plan_request", "llm_plan"
WAIT_S = 30.0

_SHIPPED: list[str | None] = []  # the master's reply: the plan's text, or None (no plan)
_ARRIVED = gevent.event.Event()


def text(path: str) -> str:
    """The plan's JSONL text: what the master shipped, else the file at ``path``, else (a worker) what the
    master is about to ship."""
    if _SHIPPED and _SHIPPED[-1] is not None:
        return _SHIPPED[-1]
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if not _ARRIVED.wait(WAIT_S) or not _SHIPPED or _SHIPPED[-1] is None:
            raise RuntimeError(f"no workload plan: {path} is not on this host and the master sent none") from None
        return _SHIPPED[-1]


def install(environment: Environment) -> None:
    """Ship the plan from the master to each worker (called once per process, from ``events.init``)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def received(environment: Environment, msg: Any, **kw: Any) -> None:
            _SHIPPED.append((msg.data or {}).get("text"))
            _ARRIVED.set()

        runner.register_message(REPLY, received)
        runner.send_message(REQUEST, None)
    elif isinstance(runner, MasterRunner):
        options = environment.parsed_options
        path = getattr(options, "llm_plan", "") if options is not None else ""
        plan = Path(path).read_text(encoding="utf-8") if path else None

        def asked(environment: Environment, msg: Any, **kw: Any) -> None:
            runner.send_message(REPLY, {"text": plan}, msg.node_id)

        runner.register_message(REQUEST, asked)
