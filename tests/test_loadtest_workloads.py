"""`llm-monitor loadtest` with workloads, end to end against the mock: each kind, a few seconds each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.mockserver import REPO_ROOT, MockProcess
from tests.realservers.servers import servers_root

MODEL = "glm-4-9b-chat"


def _run(mock: MockProcess, tmp_path: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", "--base-url", mock.base_url, "--model", MODEL,
         "--db", f"sqlite+aiosqlite:///{tmp_path / 'load.db'}", "--json", "--endpoint", "chat", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    summary: dict[str, Any] = doc["summary"]
    assert summary["metrics"]["error_rate"] == 0, summary["metrics"]
    return summary


def test_synthetic_lengths_with_ignore_eos(mock: MockProcess, tmp_path: Path) -> None:
    summary = _run(mock, tmp_path, "--users", "2", "--duration", "3s", "--input-tokens", "48", "--output-tokens",
                   "20", "--ignore-eos", "--seed", "1")  # fmt: skip
    workload = summary["workload"]
    assert workload["kind"] == "synthetic" and workload["token_source"] == "server /tokenize", workload
    assert summary["lengths"]["output"]["p50"] == 20, summary["lengths"]
    assert summary["lengths"]["input"]["p50"] == 48, summary["lengths"]  # the chat template is counted in


def test_without_a_server_tokenizer_lengths_are_estimated_and_the_report_says_so(
    mock: MockProcess, tmp_path: Path
) -> None:
    mock.configure(flavor="openai")  # like OpenAI's API: no /tokenize, nor llama.cpp's
    summary = _run(mock, tmp_path, "--users", "1", "--duration", "2s", "--input-tokens", "48", "--output-tokens",
                   "8", "--seed", "1")  # fmt: skip
    workload = summary["workload"]
    assert workload["token_source"] == "estimate", workload
    # The reason is in the workload's warnings, which the reports print.
    assert any(w.startswith("token counts: estimate (the server has no usable /tokenize (/tokenize: ")
               for w in workload["warnings"]), workload  # fmt: skip
    assert summary["lengths"]["input"]["p50"] > 0


def test_a_named_local_tokenizer_counts_when_the_server_cannot(mock: MockProcess, tmp_path: Path) -> None:
    """--tokenizer: a Hugging Face tokenizer directory, loaded offline (the conformance tier's Qwen2 one)."""
    tokenizer = servers_root() / "model" / "hf"
    if not (tokenizer / "tokenizer.json").exists():
        if os.environ.get("CI"):
            pytest.fail(f"no tokenizer at {tokenizer}: run tests/realservers/build.sh")
        pytest.skip(f"no tokenizer at {tokenizer} (tests/realservers/build.sh makes it)")
    mock.configure(flavor="openai")
    summary = _run(mock, tmp_path, "--users", "1", "--duration", "2s", "--input-tokens", "48", "--output-tokens",
                   "8", "--seed", "1", "--tokenizer", str(tokenizer))  # fmt: skip
    assert summary["workload"]["token_source"] == f"tokenizer {tokenizer}", summary["workload"]


def test_sessions_give_ttft_by_turn_with_shared_prefixes(mock: MockProcess, tmp_path: Path) -> None:
    summary = _run(mock, tmp_path, "--users", "2", "--duration", "3s", "--turns", "3", "--input-tokens", "16",
                   "--output-tokens", "8", "--shared-prefixes", "2", "--prefix-tokens", "40")  # fmt: skip
    assert [row["turn"] for row in summary["turns"]] == [1, 2, 3], summary["turns"]
    assert summary["workload"]["prefixes"] == {"count": 2, "tokens": 40}
    assert summary["workload"]["sessions"]["turns"] == "3"


def test_mooncake_replay_sends_every_row(mock: MockProcess, tmp_path: Path) -> None:
    trace = tmp_path / "mooncake.jsonl"
    rows = [{"timestamp": 400 * i, "input_length": 30 + 300 * (i % 3), "output_length": 6,
             "hash_ids": [1, 100 + i]} for i in range(8)]  # fmt: skip
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = _run(mock, tmp_path, "--trace", str(trace), "--trace-speedup", "2", "--duration", "30s")
    assert summary["workload"]["trace"]["format"] == "mooncake"
    assert summary["metrics"]["requests"] == len(rows), summary["metrics"]


def test_burstgpt_replay_skips_failed_rows(mock: MockProcess, tmp_path: Path) -> None:
    trace = tmp_path / "burst.csv"
    lines = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"]
    lines += [f"{0.3 * i:.1f},ChatGPT,{20 + i},{0 if i == 3 else 5},{25 + i},Conversation log" for i in range(7)]
    trace.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = _run(mock, tmp_path, "--trace", str(trace), "--trace-speedup", "1.5", "--duration", "30s")
    assert summary["workload"]["trace"]["skipped"] == 1
    assert summary["metrics"]["requests"] == 6, summary["metrics"]


def test_nonsense_combinations_are_usage_errors(tmp_path: Path) -> None:
    for args, flag in ((["--turns", "2", "--endpoint", "completion", "--users", "1"], "--turns"),
                       (["--turns", "2", "--rate", "3"], "--turns"),
                       (["--prefix-tokens", "9"], "--prefix-tokens")):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "monitor", "loadtest", "--base-url", "http://127.0.0.1:9/v1", *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
