"""TTFT, TTFA and reasoning tokens under load: `llm-monitor loadtest` against the mock's reasoning model.

The mock's glm45 flavour streams ~40 reasoning tokens, ``ITL_MS`` apart, before the answer, so each
chat reply's first answer token comes at least ~600 ms after its first token. Completions never
reason, and neither does the default mock: there TTFA is TTFT's sample and no split is reported.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.config import parse_settings
from monitor.loadtest.html import render_html
from monitor.loadtest.params import LoadParams
from monitor.loadtest.repo import LoadStore
from monitor.loadtest.runner import RunOutcome, run_loadtest_async
from monitor.loadtest.slo import parse_slo
from monitor.loadtest.summary import hidden_metrics, print_outcome, reasoning_notes
from monitor.store import create_engine, ensure_schema
from tests.mockserver import REPO_ROOT, MockProcess

pytestmark = pytest.mark.load

ITL_MS = 15.0
# Far above a first token on a busy machine, far below the ~40 x ITL_MS of reasoning before the answer.
BOUND_MS = 400
PERCENTILES = ("p50", "p90", "p95", "p99")


def _loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


@pytest.fixture(name="reasoning_mock")
def fix_reasoning_mock(mock: MockProcess) -> MockProcess:
    """The shared mock as GLM-4.5 served with its reasoning parser (the `mock` fixture resets it)."""
    mock.configure(reasoning_model="glm45", itl_ms=ITL_MS)
    return mock


@pytest.fixture(name="engine")
async def fix_engine(sqlite_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_db_url)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()


def _locust_names(summary: dict[str, Any]) -> set[str]:
    return {entry["name"] for entry in summary["locust"]}


async def test_reasoning_replies_report_ttft_and_ttfa_apart(
    reasoning_mock: MockProcess, tmp_path: Path, sqlite_db_url: str, engine: AsyncEngine
) -> None:
    html = tmp_path / "report.html"
    proc = _loadtest(
        "--base-url", reasoning_mock.base_url, "--db", sqlite_db_url, "--users", "2", "--duration", "4s",
        "--slo", "ttft_p95_ms<=60000,ttfa_p95_ms<=60000", "--json", "--html", str(html),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    summary = doc["summary"]
    assert set(summary["endpoints"]) == {"chat", "completion"}, summary
    metrics, chat, completion = summary["metrics"], summary["endpoints"]["chat"], summary["endpoints"]["completion"]
    reasoning = summary["reasoning"]
    assert chat["failures"] == 0 and chat["requests"] >= 2
    assert reasoning == {
        "split": True, "replies": chat["requests"], "tokens": reasoning["tokens"], "estimated": 0, "answerless": 0,
    }  # fmt: skip
    for p in PERCENTILES:
        # The reasoning tokens, each ITL_MS apart, come between the first token and the answer.
        assert chat[f"ttfa_{p}_ms"] >= chat[f"ttft_{p}_ms"] + 20 * ITL_MS, p
        # Completions do not reason: the same samples, the same numbers.
        assert completion[f"ttfa_{p}_ms"] == completion[f"ttft_{p}_ms"], p
    assert completion["reasoning_tokens_per_s"] is None
    assert 0 < metrics["reasoning_tokens_per_s"] == chat["reasoning_tokens_per_s"] < chat["tokens_per_s"]
    names = _locust_names(summary)
    assert {"TTFT chat", "TTFA chat", "reasoning tokens/s chat", "TTFT completion", "TTFA completion"} <= names
    assert "reasoning tokens/s completion" not in names
    assert {r["metric"]: r["passed"] for r in doc["slo"]} == {"ttft_p95_ms": True, "ttfa_p95_ms": True}

    store = LoadStore.from_engine(engine)
    run = await store.get_run(doc["run_id"])
    assert run is not None and run.summary is not None and run.summary["reasoning"] == reasoning
    series = await store.series(doc["run_id"])
    assert sum(p.reasoning_tokens for p in series) == reasoning["tokens"] > 0
    assert sum(p.output_tokens for p in series) > reasoning["tokens"]  # reasoning is part of the output
    assert any(p.ttfa_p95_ms is not None and p.ttft_p95_ms is not None and p.ttfa_p95_ms > p.ttft_p95_ms
               for p in series)  # fmt: skip
    assert {"ttfa_p50_ms", "ttfa_p95_ms", "reasoning_tokens"} <= set(doc["series"][0])
    page = html.read_text(encoding="utf-8")
    assert "Time to first token and first answer token" in page and "reasoning/s" in page
    assert "<td>ttfa_p95_ms</td>" in page and "<td>reasoning_tokens_per_s</td>" in page


def test_a_ttfa_objective_fails_where_the_same_ttft_objective_passes(
    reasoning_mock: MockProcess, sqlite_db_url: str
) -> None:
    """Printed at 80 columns: TTFA and reasoning rows beside TTFT, and the TTFA clause alone fails (exit 1)."""
    slo = f"ttft_p95_ms<={BOUND_MS},ttfa_p95_ms<={BOUND_MS}"
    proc = _loadtest(
        "--base-url", reasoning_mock.base_url, "--db", sqlite_db_url, "--endpoint", "chat", "--users", "2",
        "--duration", "3s", "--slo", slo,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, proc.stdout
    for label in ("TTFT p95", "TTFA p50", "TTFA p95", "TTFA p99", "reasoning tokens/s", "output tokens/s"):
        assert any(line.startswith(f"│ {label} ") for line in lines), label
    objectives = {line.split()[1]: line for line in lines if "_p95_ms<=" in line}
    assert "pass" in objectives[f"ttft_p95_ms<={BOUND_MS}"] and "FAIL" in objectives[f"ttfa_p95_ms<={BOUND_MS}"]
    assert "no reply reasoned" not in proc.stdout


async def _in_process(mock: MockProcess, sqlite_db_url: str, slo: str, **knobs: Any) -> RunOutcome:
    settings = parse_settings(
        {"storage": {"url": sqlite_db_url}, "targets": [{"name": "m", "base_url": mock.base_url}]}
    )
    params = LoadParams(target=settings.target("m"), api_key_env=None, users=2, duration_s=2.0,
                        objectives=parse_slo(slo), **knobs)  # fmt: skip
    return await run_loadtest_async(settings, params, io.StringIO())


def _printed(outcome: RunOutcome) -> str:
    console = Console(file=io.StringIO(), width=80)
    print_outcome(console, outcome)
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


async def test_a_plain_model_gets_no_invented_reasoning_split(mock: MockProcess, sqlite_db_url: str) -> None:
    outcome = await _in_process(mock, sqlite_db_url, "ttfa_p95_ms<=60000")
    assert outcome.exit_code == 0
    summary = outcome.summary
    assert summary["reasoning"] == {"split": False, "replies": 0, "tokens": 0, "estimated": 0, "answerless": 0}
    for values in (summary["metrics"], *summary["endpoints"].values()):
        assert values["reasoning_tokens_per_s"] is None  # not measured, rather than 0
        assert all(values[f"ttfa_{p}_ms"] == values[f"ttft_{p}_ms"] is not None for p in PERCENTILES)
    assert all(p.reasoning_tokens == 0 and p.ttfa_p95_ms == p.ttft_p95_ms for p in outcome.series)
    assert not any(name.startswith("reasoning") for name in _locust_names(summary))
    text = _printed(outcome)
    assert "no reply reasoned: TTFA = TTFT, no reasoning tokens" in text
    assert "TTFA p" not in text and "reasoning tokens/s" not in text and "TTFT p95" in text
    page = render_html(outcome)
    assert "TTFA = TTFT" in page and "<td>ttfa_p50_ms</td>" not in page and "reasoning/s" not in page
    assert "first answer token" not in page


async def test_reasoning_that_uses_all_of_max_tokens_is_truncation_without_ttfa(
    reasoning_mock: MockProcess, sqlite_db_url: str
) -> None:
    reasoning_mock.configure(reasoning_budget_exhaust=True, itl_ms=0)
    outcome = await _in_process(
        reasoning_mock, sqlite_db_url, "ttft_p95_ms<=60000,ttfa_p95_ms<=60000", endpoint="chat", max_tokens=16
    )
    assert outcome.exit_code == 1  # no answer came, so TTFA was not measured: its clause fails
    metrics, reasoning = outcome.summary["metrics"], outcome.summary["reasoning"]
    assert metrics["error_rate"] == 0.0 and metrics["truncation_rate"] == 1.0  # measured, not a failure
    assert reasoning["split"] and reasoning["answerless"] == reasoning["replies"] == metrics["requests"] > 0
    assert metrics["ttft_p95_ms"] is not None and metrics["ttfa_p95_ms"] is None
    assert [(r.objective.metric, r.value is None, r.passed) for r in outcome.slo] == [
        ("ttft_p95_ms", False, True), ("ttfa_p95_ms", True, False),
    ]  # fmt: skip
    text = _printed(outcome)
    assert "replies never reached an answer token (reasoning cut by max_tokens" in text
    assert "ttfa_p95_ms<=60000 │ not measured │ FAIL" in text


def test_summaries_stored_before_ttfa_hide_nothing_and_say_nothing() -> None:
    old = {"metrics": {"ttft_p95_ms": 10.0}}
    assert hidden_metrics(old) == frozenset() and reasoning_notes(old) == []
    estimated = {"reasoning": {"split": True, "replies": 4, "tokens": 90, "estimated": 3, "answerless": 0}}
    assert hidden_metrics(estimated) == frozenset()
    assert reasoning_notes(estimated) == [
        "reasoning tokens estimated for 3 of 4 reasoning replies (the server did not itemise "
        "usage.completion_tokens_details)"
    ]
