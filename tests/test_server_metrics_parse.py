"""The exposition parser and the interval arithmetic, with hypothesis: any text, label sets, resets, buckets."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from monitor.server_metrics import (
    FACTS,
    Cumulative,
    ExpositionError,
    ServerSample,
    histogram_quantile,
    interval,
    parse_exposition,
)

KNOWN_NAMES = [name for _, names in FACTS.values() for name in names]
label_values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\\\n'), max_size=8)
finite = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


def _line(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{key}="{val}"' for key, val in labels.items())
    return f"{name}{{{inner}}} {value!r}"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_parses_or_raises_exposition_error(text: str) -> None:
    try:
        sample = parse_exposition(text)
    except ExpositionError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= 200
        return
    assert all(v is None or math.isfinite(v) for v in sample.values.values())


# Lines that look like an exposition (known names, TYPE lines, odd values) reach deeper into the parser.
exposition_lines = st.one_of(
    st.builds(lambda n: f"# TYPE {n} gauge", st.sampled_from(KNOWN_NAMES)),
    st.builds(lambda n: f"# TYPE {n} counter", st.sampled_from(KNOWN_NAMES)),
    st.builds(lambda n: f"# HELP {n} some help", st.sampled_from(KNOWN_NAMES)),
    st.builds(
        lambda n, v: f"{n} {v}",
        st.sampled_from([*KNOWN_NAMES, "vllm:time_to_first_token_seconds_bucket", "x_total"]),
        st.sampled_from(["1", "-1", "NaN", "+Inf", "1e400", "abc", "", "0x10", "1 2 3"]),
    ),
    st.builds(
        lambda le, v: f'vllm:time_to_first_token_seconds_bucket{{le="{le}"}} {v}',
        st.sampled_from(["0.1", "+Inf", "NaN", "x", ""]),
        st.sampled_from(["1", "2", "NaN"]),
    ),
    st.text(max_size=40),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(exposition_lines, max_size=20))
def test_exposition_like_text_parses_or_raises_exposition_error(lines: list[str]) -> None:
    try:
        sample = parse_exposition("\n".join(lines) + "\n")
    except ExpositionError:
        return
    for h in sample.histograms.values():
        assert h is None or all(not math.isnan(le) for le, _ in h.buckets)


@given(st.dictionaries(label_values, finite, min_size=1, max_size=6))
def test_a_fact_sums_over_label_sets(series: dict[str, float]) -> None:
    text = "# TYPE vllm:num_requests_waiting gauge\n" + "".join(
        _line("vllm:num_requests_waiting", {"engine": engine}, value) + "\n" for engine, value in series.items()
    )
    sample = parse_exposition(text)
    assert sample.value("requests_waiting") == pytest.approx(sum(series.values()))
    assert sample.sources["requests_waiting"] == "vllm:num_requests_waiting"


def test_renamed_metrics_are_read_by_their_newest_name_and_the_rest_stay_none() -> None:
    old = parse_exposition("vllm:gpu_cache_usage_perc 0.5\nvllm:num_preemptions_total 3\n")
    assert old.value("kv_cache_usage") == 0.5 and old.sources["kv_cache_usage"] == "vllm:gpu_cache_usage_perc"
    assert old.value("preemptions") == 3.0 and old.value("requests_waiting") is None
    both = parse_exposition("vllm:gpu_cache_usage_perc 0.5\nvllm:kv_cache_usage_perc 0.25\n")
    assert both.value("kv_cache_usage") == 0.25


def _sample(**values: float) -> ServerSample:
    return ServerSample(dict(values), {})


@given(finite, finite, st.floats(min_value=0.1, max_value=3600))
def test_a_counter_that_went_down_is_a_reset(before: float, now: float, elapsed_s: float) -> None:
    got = interval(_sample(generation_tokens=before), _sample(generation_tokens=now), elapsed_s)
    expected = now if now < before else now - before
    assert got.generation_tokens_per_s == pytest.approx(expected / elapsed_s)
    assert got.generation_tokens_per_s is not None and got.generation_tokens_per_s >= 0


def test_the_first_scrape_has_only_gauges() -> None:
    got = interval(None, _sample(requests_waiting=2, generation_tokens=100, preemptions=4), 0.0)
    assert got.requests_waiting == 2 and got.generation_tokens_per_s is None and got.preemptions is None


bounds = st.lists(
    st.floats(min_value=0.001, max_value=1000, allow_nan=False), min_size=1, max_size=10, unique=True
).map(sorted)


@given(bounds, st.data())
def test_quantiles_stay_inside_the_bucket_edges(edges: list[float], data: st.DataObject) -> None:
    counts = data.draw(st.lists(st.integers(0, 100), min_size=len(edges) + 1, max_size=len(edges) + 1))
    cumulative, total = [], 0
    for le, count in zip([*edges, math.inf], counts, strict=True):
        total += count
        cumulative.append((le, float(total)))
    h = Cumulative(tuple(cumulative), 1.0, float(total))
    q50, q95 = histogram_quantile(0.5, h), histogram_quantile(0.95, h)
    if total == 0:
        assert q50 is None and q95 is None
        return
    assert q50 is not None and q95 is not None
    assert 0.0 <= q50 <= q95 <= edges[-1]
