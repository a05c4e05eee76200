"""SLO expressions, the metrics they name, and the mergeable windows they are computed from (pure code)."""

from __future__ import annotations

import random

import pytest

from monitor.errors import ConfigError
from monitor.loadtest.slo import Objective, evaluate, parse_slo, verdict
from monitor.loadtest.slo_metrics import is_metric, metric_value, reasoning_summary, summarize
from monitor.loadtest.window import KEYS_PER_MS, Window, compact, hist_percentile
from monitor.results import percentile


def test_parses_the_issue_example() -> None:
    objectives = parse_slo("ttft_p95_ms<=500,itl_p95_ms<=50,error_rate<=0.01,truncation_rate<=0.05")
    assert objectives == (
        Objective("ttft_p95_ms", "<=", 500.0),
        Objective("itl_p95_ms", "<=", 50.0),
        Objective("error_rate", "<=", 0.01),
        Objective("truncation_rate", "<=", 0.05),
    )
    assert [str(o) for o in objectives] == [
        "ttft_p95_ms<=500", "itl_p95_ms<=50", "error_rate<=0.01", "truncation_rate<=0.05",
    ]  # fmt: skip


def test_spaces_percentages_and_other_operators() -> None:
    objectives = parse_slo(" e2e_p99.9_ms < 2000 , error_rate<=1% ,tokens_per_s>=1500, rps>10, itl_mean_ms<=20")
    assert objectives == (
        Objective("e2e_p99.9_ms", "<", 2000.0),
        Objective("error_rate", "<=", 0.01),
        Objective("tokens_per_s", ">=", 1500.0),
        Objective("rps", ">", 10.0),
        Objective("itl_mean_ms", "<=", 20.0),
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("itl_p95<=50", "--slo: clause 1 'itl_p95<=50': unknown metric 'itl_p95'"),
        ("ttft_p95_ms<=500,ttft_p95_ms=>5", "--slo: clause 2 'ttft_p95_ms=>5': expected METRIC OP NUMBER"),
        ("ttft_p95_ms<=500,,error_rate<=0", "--slo: clause 2 is empty"),
        ("ttft_p95_ms<=fast", "--slo: clause 1 'ttft_p95_ms<=fast': 'fast' is not a number"),
        ("error_rate<=5", "--slo: clause 1 'error_rate<=5': a rate is a fraction between 0 and 1"),
        ("ttft_p95_ms<=5%", "a percentage only makes sense for a *_rate metric"),
        ("ttft_p95_ms==5", "use <=, <, >= or >"),
        ("ttft_p95_ms<=nan", "is not a finite number"),
        ("ttft_p95_ms<=-1", "thresholds cannot be negative"),
        ("", "--slo: empty expression"),
    ],
)
def test_bad_clauses_get_one_line_naming_them(expression: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_slo(expression)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_metric_names() -> None:
    for name in ("ttft_p50_ms", "itl_p99.9_ms", "e2e_p100_ms", "lag_p95_ms", "ttft_mean_ms", "canary_ok_rate"):
        assert is_metric(name), name
    for name in ("ttft_p95", "ttft_p950_ms", "gpu_p95_ms", "latency_ms"):
        assert not is_metric(name), name


def test_ttfa_and_reasoning_throughput_are_objectives() -> None:
    objectives = parse_slo("ttfa_p95_ms<2000,ttfa_p50_ms<=800,ttfa_p99.9_ms<5000,ttfa_mean_ms<900,"
                           "reasoning_tokens_per_s>=100")  # fmt: skip
    assert [o.metric for o in objectives] == [
        "ttfa_p95_ms", "ttfa_p50_ms", "ttfa_p99.9_ms", "ttfa_mean_ms", "reasoning_tokens_per_s",
    ]  # fmt: skip
    for name in ("ttfa_p95", "ttfa_ms", "reasoning_tokens", "reasoning_tokens_per_s_ms"):
        assert not is_metric(name), name
    with pytest.raises(ConfigError, match="known: .*ttfa_p95_ms.*reasoning_tokens_per_s"):
        parse_slo("ttfa_95_ms<1")


def test_evaluate_and_verdict() -> None:
    objectives = parse_slo("ttft_p95_ms<=500,error_rate<=0.01,tokens_per_s>=100")
    values = {"ttft_p95_ms": 499.9, "error_rate": 0.02, "tokens_per_s": None}
    results = evaluate(objectives, values.get)
    assert [r.passed for r in results] == [True, False, False]  # an unmeasured metric fails its clause
    assert verdict(results) == "fail"
    assert verdict(evaluate(objectives[:1], values.get)) == "pass"
    assert results[0].to_json() == {
        "metric": "ttft_p95_ms", "op": "<=", "threshold": 500.0, "value": 499.9, "passed": True,
    }  # fmt: skip


def _window(ttft_ms: list[float], itl_ms: list[float]) -> Window:
    w = Window(requests=len(ttft_ms), failures=1, finished=4, truncated=1, output_tokens=500)
    w.errors["timeout"] = 1
    w.ttft.update(int(v * KEYS_PER_MS) for v in ttft_ms)
    w.itl.update(int(v * KEYS_PER_MS) for v in itl_ms)
    return w


def test_histogram_percentiles_match_raw_values_within_the_bucket_error() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3.5, 1.0) for _ in range(5000)]  # ms, from ~1 ms to seconds
    w = Window()
    w.ttft.update(int(v * KEYS_PER_MS) for v in values)
    compacted = compact(w.ttft)
    for pct in (50.0, 90.0, 95.0, 99.0, 99.9):
        exact = percentile(values, pct)
        for hist in (w.ttft, compacted):
            got = hist_percentile(hist, pct)
            assert got is not None
            # Keys truncate to 10 µs; compaction rounds to three significant digits (< 0.5 %).
            assert got == pytest.approx(exact, rel=0.006, abs=0.011), pct
    assert hist_percentile(w.lag, 95.0) is None


def test_windows_merge_exactly_and_survive_json() -> None:
    a = _window([10.0, 20.0, 30.0], [1.0, 2.0])
    b = _window([40.0], [3.0, 4.0, 5.0])
    merged = Window.merged([Window.from_json(a.to_json()), Window.from_json(b.to_json())])
    assert merged.requests == 4 and merged.failures == 2 and merged.output_tokens == 1000
    assert merged.errors == {"timeout": 2}
    assert metric_value("ttft_p50_ms", merged, 1.0) == pytest.approx(25.0)
    assert metric_value("itl_p100_ms", merged, 1.0) == pytest.approx(5.0)
    assert metric_value("itl_mean_ms", merged, 1.0) == pytest.approx(3.0)
    assert metric_value("error_rate", merged, 1.0) == pytest.approx(0.5)
    assert metric_value("truncation_rate", merged, 1.0) == pytest.approx(0.25)
    assert metric_value("rps", merged, 2.0) == pytest.approx(2.0)
    assert metric_value("tokens_per_s", merged, 2.0) == pytest.approx(500.0)
    assert metric_value("canary_ok_rate", merged, 1.0, {"canary_ok_rate": 0.5}) == 0.5
    assert metric_value("canary_ok_rate", merged, 1.0) is None


def test_summary_of_an_empty_window_has_no_made_up_numbers() -> None:
    summary = summarize(Window(), 10.0)
    assert summary["requests"] == 0
    assert summary["error_rate"] is None and summary["ttft_p95_ms"] is None
    assert summary["rps"] == 0.0
    assert summary["ttfa_p95_ms"] is None and summary["reasoning_tokens_per_s"] is None


def test_ttfa_and_reasoning_tokens_merge_and_survive_json() -> None:
    a = Window(requests=2, output_tokens=300, reasoning_tokens=120, reasoned=2, reasoning_estimated=1)
    a.ttft.update([1000, 2000])  # 10 and 20 ms
    a.ttfa.update([30000, 40000])  # 300 and 400 ms: the reasoning came first
    b = Window(requests=1, output_tokens=64, reasoning_tokens=64, reasoned=1, answerless=1)
    b.ttft[1500] += 1  # reasoning until max_tokens: a first token, no answer
    merged = Window.merged([Window.from_json(a.to_json()), Window.from_json(b.to_json())])
    assert (merged.reasoning_tokens, merged.reasoned, merged.reasoning_estimated, merged.answerless) == (184, 3, 1, 1)
    assert metric_value("ttft_p50_ms", merged, 1.0) == pytest.approx(15.0)
    assert metric_value("ttfa_p50_ms", merged, 1.0) == pytest.approx(350.0)  # answers only
    assert metric_value("ttfa_mean_ms", merged, 1.0) == pytest.approx(350.0)
    assert metric_value("reasoning_tokens_per_s", merged, 2.0) == pytest.approx(92.0)
    assert reasoning_summary(merged) == {"split": True, "replies": 3, "tokens": 184, "estimated": 1, "answerless": 1}


def test_a_model_that_does_not_reason_has_no_reasoning_throughput() -> None:
    """TTFA is TTFT's sample then; reasoning tokens/s is not measured, rather than a made-up 0."""
    plain = Window(requests=2, output_tokens=200)
    plain.ttft.update([1000, 2000])
    plain.ttfa.update([1000, 2000])
    summary = summarize(plain, 1.0)
    assert summary["ttfa_p95_ms"] == summary["ttft_p95_ms"]
    assert summary["reasoning_tokens_per_s"] is None and summary["tokens_per_s"] == 200.0
    assert reasoning_summary(plain)["split"] is False
    results = evaluate(parse_slo("ttfa_p95_ms<100,reasoning_tokens_per_s<=1000"), lambda n: summary.get(n))
    assert [r.passed for r in results] == [True, False]  # an unmeasured metric fails its clause
