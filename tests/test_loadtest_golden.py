"""Golden answers and cost under load: the Locust users grade replies lexically, the run reports the pass
rate per sweep step, its cost (per 1k requests, per correct answer) and gates on both (real mock, real Locust)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config.deployment import PriceSettings
from monitor.errors import ConfigError
from monitor.loadtest.cost import cost_metrics, quality_cost_notes
from monitor.loadtest.prompts import load_prompts
from monitor.loadtest.slo import parse_slo
from monitor.loadtest.slo_metrics import metric_value
from monitor.loadtest.window import Window
from monitor.mock.replies import GREETING_EN, GREETING_ZH
from tests.mockserver import REPO_ROOT, MockProcess

RUN_TIMEOUT_S = 90


def _prompts(tmp_path: Path, *, english_golden: str) -> Path:
    path = tmp_path / "golden.jsonl"
    lines = [
        {"prompt": "你好", "golden": GREETING_ZH},
        {
            "messages": [{"role": "user", "content": "Hello!"}],
            "golden": {"answer": english_golden, "min_similarity": 0.8},
        },
    ]
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


def _config(tmp_path: Path, mock: MockProcess) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        f"targets:\n  - name: mock\n    base_url: {mock.base_url}\n"
        "    price: {input_per_1m: 1.0, output_per_1m: 4.0, currency: EUR}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.load
def test_sweep_reports_golden_pass_rate_per_step_and_cost(
    mock: MockProcess, tmp_path: Path, sqlite_db_url: str
) -> None:
    # Half the prompts have a golden answer the mock's reply matches, half one it does not.
    prompts = _prompts(tmp_path, english_golden="巴黎是法国的首都。")
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "loadtest", "--config", str(_config(tmp_path, mock)), "--db", sqlite_db_url,
         "--endpoint", "chat", "--prompts", str(prompts), "--rate", "6", "--sweep", "--sweep-steps", "2",
         "--duration", "2s", "--arrival", "constant", "--max-tokens", "128",
         "--slo", "quality_rate>=0.2,cost_per_1k_requests<=1", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    golden, cost = summary["golden"], summary["cost"]
    assert 0 < golden["passed"] < golden["graded"] <= summary["metrics"]["requests"]
    assert 0.2 < summary["metrics"]["quality_rate"] < 0.8
    for step in summary["sweep"]["steps"]:
        assert step["metrics"]["quality_rate"] is not None
        assert {r["metric"] for r in step["slo"]} == {"quality_rate", "cost_per_1k_requests"}
    assert cost["currency"] == "EUR" and cost["input_tokens"] > 0 and cost["output_tokens"] > 0
    assert cost["cost"] == pytest.approx((cost["input_tokens"] * 1.0 + cost["output_tokens"] * 4.0) / 1e6)
    assert cost["cost_per_correct"] == pytest.approx(cost["cost"] / golden["passed"])


def _window(**counts: int) -> Window:
    window = Window()
    for name, value in counts.items():
        setattr(window, name, value)
    return window


def test_quality_rate_and_cost_metrics_of_a_window() -> None:
    window = _window(requests=10, failures=2, input_tokens=1000, output_tokens=3000, golden_graded=8, golden_passed=6)
    assert metric_value("quality_rate", window, 1.0) == 0.75
    assert metric_value("quality_rate", Window(), 1.0) is None  # no golden answers: not measured, not 0
    price = PriceSettings(input_per_1m=2.0, output_per_1m=10.0)
    costs = cost_metrics(window, price)
    assert costs["cost"] == pytest.approx(0.032)
    assert costs["cost_per_1k_requests"] == pytest.approx(4.0)  # 0.032 over 8 answered requests
    assert costs["cost_per_correct"] == pytest.approx(0.032 / 6)
    assert cost_metrics(window, None) == dict.fromkeys(("cost", "cost_per_1k_requests", "cost_per_correct"))
    (objective,) = parse_slo("cost_per_correct<=0.01")
    assert objective.metric == "cost_per_correct"
    assert metric_value("cost_per_correct", window, 1.0, costs) == costs["cost_per_correct"]
    notes = quality_cost_notes({"golden": {"graded": 8, "passed": 6}, "cost": {
        **costs, "currency": "EUR", "input_tokens": 1000, "output_tokens": 3000, "estimated": True}})  # fmt: skip
    assert notes[0].startswith("golden answers: 75.0% passed (6 of 8 replies")
    assert "0.032 EUR" in notes[1] and "per correct answer" in notes[1] and notes[1].endswith("estimated)")


def test_golden_prompt_lines_and_their_errors(tmp_path: Path) -> None:
    (first, second) = load_prompts(_prompts(tmp_path, english_golden=GREETING_EN))
    assert (first.golden, first.min_similarity) == (GREETING_ZH, 0.8) and second.golden == GREETING_EN
    bad = tmp_path / "bad.jsonl"
    for golden, message in (
        ({"answer": ""}, "golden.answer: must be a non-empty string"),
        ({"answer": "x", "min_similarity": 2}, "golden.min_similarity: must be a number from 0 to 1"),
        (["x"], "golden: must be the answer, or an object"),
    ):
        bad.write_text(json.dumps({"prompt": "hi", "golden": golden}) + "\n", encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_prompts(bad)
        assert str(info.value) == f"--prompts: {bad}:1: {message}" or message in str(info.value)
