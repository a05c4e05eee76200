"""The pure comparer: TV/KL over top-k logprobs, digests and diffs (hypothesis for the properties)."""

from __future__ import annotations

import json
import math

from hypothesis import given, strategies as st

from monitor.fingerprint.collect import _bounded, _top_logprobs
from monitor.fingerprint.compare import MAX_DIFF_CHARS, digest, divergence, judge, kl, render_diff, total_variation

_TOKENS = st.text(min_size=1, max_size=4)
_LOGPROB = st.floats(min_value=-30, max_value=0, allow_nan=False)
_POSITION = st.dictionaries(_TOKENS, _LOGPROB, min_size=1, max_size=5).filter(
    lambda d: sum(math.exp(v) for v in d.values()) <= 1.0 + 1e-9
)
_POSITIONS = st.lists(_POSITION, min_size=1, max_size=4)


@given(_POSITION)
def test_identical_distributions_diverge_by_zero(p: dict[str, float]) -> None:
    assert total_variation(p, p) == 0.0
    assert abs(kl(p, p)) < 1e-9


@given(_POSITION, _POSITION)
def test_tv_is_symmetric_and_bounded(p: dict[str, float], q: dict[str, float]) -> None:
    assert math.isclose(total_variation(p, q), total_variation(q, p), abs_tol=1e-12)
    assert 0.0 <= total_variation(p, q) <= 1.0 + 1e-9


@given(_POSITION, _POSITION)
def test_kl_is_not_negative(p: dict[str, float], q: dict[str, float]) -> None:
    assert kl(p, q) >= -1e-9


@given(_POSITIONS, st.floats(min_value=0.0, max_value=0.01))
def test_batching_noise_stays_under_the_threshold(positions: list[dict[str, float]], noise: float) -> None:
    jittered = [{t: lp * (1 + noise) for t, lp in p.items()} for p in positions]
    verdict = judge("logprobs", ("ok", positions), ("ok", jittered), metric="tv", threshold=0.2)
    assert not verdict.changed and verdict.detail.startswith("tv ")


def test_another_top_token_is_drift() -> None:
    before = [{"Hello": math.log(0.9), "Hi": math.log(0.05)}]
    after = [{"Hi": math.log(0.9), "Hello": math.log(0.05)}]
    assert math.isclose(divergence(before, after, "tv"), 0.85)
    verdict = judge("logprobs", ("ok", before), ("ok", after), metric="tv", threshold=0.2)
    assert verdict.changed and "'Hello':0.90" in verdict.before and "'Hi':0.90" in verdict.after
    assert judge("logprobs", ("ok", before), ("ok", after), metric="kl", threshold=0.2).changed


def test_a_missing_position_counts_as_different() -> None:
    one = [{"a": 0.0}]
    assert divergence(one, one + one, "tv") == 0.5
    assert divergence([], [], "tv") == 0.0


def test_not_served_is_a_value() -> None:
    assert not judge("version", ("not_served", None), ("not_served", None)).changed
    verdict = judge("version", ("not_served", None), ("ok", {"version": "0.33.0"}))
    assert verdict.changed and verdict.before == "not served" and "0.33.0" in verdict.after
    assert judge("logprobs", ("ok", [{"a": 0.0}]), ("not_served", None)).changed


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
    )
)
def test_equal_values_never_drift_and_digest_alike(value: object) -> None:
    assert not judge("models", ("ok", value), ("ok", value)).changed
    assert digest("ok", value) == digest("ok", value)


@given(
    st.recursive(
        st.integers() | st.text(), lambda c: st.lists(c, max_size=50) | st.dictionaries(st.text(max_size=5), c)
    ),
    st.recursive(
        st.integers() | st.text(), lambda c: st.lists(c, max_size=50) | st.dictionaries(st.text(max_size=5), c)
    ),
)
def test_diffs_are_capped_and_clean(before: object, after: object) -> None:
    for text in render_diff(before, after):
        assert len(text) <= MAX_DIFF_CHARS and "\x00" not in text


def test_diffs_show_the_first_difference() -> None:
    assert render_diff([{"id": "m", "max_model_len": 8192}], [{"id": "m", "max_model_len": 4096}]) == (
        "[0].max_model_len=8192",
        "[0].max_model_len=4096",
    )
    before, after = render_diff([[1, 2, 3, 4, 5, 6, 7, 8, 9]], [[1, 2, 3, 4, 5, 6, 70, 8, 9]])
    assert before == "[0][6] of 9: …[3, 4, 5, 6, 7, 8, 9]" and after == "[0][6] of 9: …[3, 4, 5, 6, 70, 8, 9]"
    before, after = render_diff({"rendered": "<|system|>\nhi<|user|>"}, {"rendered": "<|user|>"})
    assert before.startswith("rendered at char 2: ") and '"<|system|>' in before


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda c: st.lists(c, max_size=30) | st.dictionaries(st.text(max_size=12), c, max_size=8),
    max_leaves=200,
)


@given(
    st.dictionaries(st.sampled_from(["choices", "logprobs", "content"]), _JSON)
    | _JSON.filter(lambda v: isinstance(v, dict))
)
def test_hostile_logprobs_parse_into_bounded_distributions(body: dict[str, object]) -> None:
    data = {"choices": [{"logprobs": {"content": [body, {"top_logprobs": [body] * 40}]}}]}
    for position in _top_logprobs(data, 4, 5):
        assert len(position) <= 5 and all(-1e4 <= lp <= 0.0 for lp in position.values())
        assert 0.0 <= total_variation(position, {}) <= 1.0


@given(_JSON)
def test_any_value_is_bounded_and_storable(value: object) -> None:
    bounded = _bounded(value)
    text = json.dumps(bounded, sort_keys=True, ensure_ascii=False)
    assert len(text) <= 64 * 1024
