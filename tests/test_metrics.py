"""The hand-built exposition, read back with prometheus_client's own parser."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from monitor import __version__
from monitor.exposition import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    ProbeMetrics,
    escape_label_value,
    format_value,
)
from tests.test_rollups import make_result

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _parse(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], sample_name: str, **labels: str) -> float:
    matches = [
        s.value for s in samples if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (sample_name, labels, samples)
    return matches[0]


def test_probe_metrics_parse_with_prometheus_naming() -> None:
    metrics = ProbeMetrics()
    metrics.observe(make_result(NOW, latency_ms=120.0, ttft_ms=30.0, completion_tokens=12))
    metrics.observe(make_result(NOW, latency_ms=4000.0, truncated=True, failed_check="expect.contains"))
    metrics.observe(make_result(NOW, error=True, latency_ms=3.0))
    metrics.observe_lateness(0.004)
    metrics.observe_lateness(-0.001)  # a job that started a hair early counts as on time
    metrics.skipped.inc(("chat", "busy"))
    extra = [GaugeFamily("llm_monitor_alerts", "Alerts by state.", ("state",), {("firing",): 2, ("pending",): 0})]
    families = _parse(metrics.render(extra))

    latency = families["llm_monitor_probe_latency_seconds"]
    labels = {"probe": "chat", "target": "mock", "endpoint": "chat"}
    assert _value(latency, "llm_monitor_probe_latency_seconds_count", **labels) == 3
    assert _value(latency, "llm_monitor_probe_latency_seconds_sum", **labels) == pytest.approx(4.123)
    assert _value(latency, "llm_monitor_probe_latency_seconds_bucket", le="0.25", **labels) == 2
    assert _value(latency, "llm_monitor_probe_latency_seconds_bucket", le="+Inf", **labels) == 3
    # Two measured replies with gaps of 5 and 7 ms each.
    itl = families["llm_monitor_probe_itl_seconds"]
    assert _value(itl, "llm_monitor_probe_itl_seconds_count", **labels) == 4
    assert _value(itl, "llm_monitor_probe_itl_seconds_bucket", le="0.005", **labels) == 2
    assert _value(families["llm_monitor_probe_ttft_seconds"], "llm_monitor_probe_ttft_seconds_count", **labels) == 2

    # prometheus_client names counter families without the _total suffix.
    results = families["llm_monitor_probe_results"]
    assert _value(results, "llm_monitor_probe_results_total", outcome="ok") == 1
    assert _value(results, "llm_monitor_probe_results_total", outcome="check_failed") == 1
    assert _value(results, "llm_monitor_probe_results_total", outcome="connect_error") == 1
    assert _value(families["llm_monitor_completion_tokens"], "llm_monitor_completion_tokens_total") == 22
    assert _value(families["llm_monitor_prompt_tokens"], "llm_monitor_prompt_tokens_total") == 16
    assert _value(families["llm_monitor_truncations"], "llm_monitor_truncations_total") == 1
    checks = families["llm_monitor_check_failures"]
    assert _value(checks, "llm_monitor_check_failures_total", check="expect.contains") == 1
    lateness = families["llm_monitor_scheduler_lateness_seconds"]
    assert _value(lateness, "llm_monitor_scheduler_lateness_seconds_bucket", le="0.001") == 1
    assert _value(lateness, "llm_monitor_scheduler_lateness_seconds_count") == 2
    assert _value(families["llm_monitor_probe_runs_skipped"], "llm_monitor_probe_runs_skipped_total") == 1
    assert _value(families["llm_monitor_alerts"], "llm_monitor_alerts", state="firing") == 2
    assert _value(families["llm_monitor_up"], "llm_monitor_up") == 1
    assert _value(families["llm_monitor_build_info"], "llm_monitor_build_info", version=__version__) == 1


def test_empty_families_still_declare_help_and_type() -> None:
    text = ProbeMetrics().render()
    assert "# TYPE llm_monitor_probe_latency_seconds histogram\n" in text
    assert "# TYPE llm_monitor_probe_results_total counter\n" in text
    assert "llm_monitor_probe_results" in _parse(text)


def test_label_values_and_help_are_escaped() -> None:
    nasty = 'a"b\\c\nd'
    counter = CounterFamily("x_total", "help with \\ and\nnewline", ("who",))
    counter.inc((nasty,), 2)
    hist = HistogramFamily("h_seconds", "h", ("who",), (0.1, 1.0))
    hist.observe((nasty,), 0.1)  # le is inclusive
    hist.observe((nasty,), 5.0)
    text = "\n".join([*counter.render(), *hist.render()]) + "\n"
    families = _parse(text)
    assert _value(families["x"], "x_total", who=nasty) == 2
    assert _value(families["h_seconds"], "h_seconds_bucket", who=nasty, le="0.1") == 1
    assert _value(families["h_seconds"], "h_seconds_bucket", who=nasty, le="1") == 1
    assert escape_label_value(nasty) == 'a\\"b\\\\c\\nd'
    with pytest.raises(ValueError, match="_total"):
        CounterFamily("x", "no suffix")


def test_format_value() -> None:
    assert [format_value(v) for v in (1.0, 0.25, float("inf"), float("-inf"), 1e-05)] == [
        "1", "0.25", "+Inf", "-Inf", "1e-05",
    ]  # fmt: skip
    assert format_value(float("nan")) == "NaN"
