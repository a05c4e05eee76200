"""`monitor.deployment.fold`: one change in a scheduled run makes one active observation."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, strategies as st

from monitor.config.deployment import DOCTOR_CHECK_IDS, FINGERPRINT_COMPONENTS
from monitor.deployment import DeploymentObservation, fold

AT = datetime(2026, 12, 2, tzinfo=UTC)


def _obs(kind: str, key: str, active: bool, target: str = "t") -> DeploymentObservation:
    return DeploymentObservation(kind, target, key, active, AT, f"{key} summary")  # type: ignore[arg-type]


def test_the_most_fundamental_changed_component_names_the_others() -> None:
    run = [_obs("drift", c, c in {"tokenizer", "reply", "logprobs"}) for c in FINGERPRINT_COMPONENTS]
    out = fold(run)
    assert [o.key for o in out if o.active] == ["tokenizer"]
    tokenizer = next(o for o in out if o.key == "tokenizer")
    assert "also changed: reply, logprobs" in tokenizer.summary
    assert next(o for o in out if o.key == "reply").summary == "changed with tokenizer, which the alert names"


def test_a_worse_doctor_check_explains_the_fingerprint() -> None:
    run = [_obs("doctor", "stop_tokens", True), _obs("doctor", "truncation", False)]
    run += [_obs("drift", c, c in {"stop_behaviour", "reply"}) for c in FINGERPRINT_COMPONENTS]
    out = fold(run)
    assert [(o.kind, o.key) for o in out if o.active] == [("doctor", "stop_tokens")]
    assert "fingerprint also changed: stop_behaviour, reply" in out[0].summary


def test_the_first_worse_doctor_check_names_the_others() -> None:
    run = [_obs("doctor", c, c in {"stop_tokens", "sampling_defaults", "structured_output"}) for c in DOCTOR_CHECK_IDS]
    out = fold(run)
    assert [o.key for o in out if o.active] == ["stop_tokens"]
    assert "also worse: sampling_defaults, structured_output" in out[3].summary
    assert all(
        o.summary.endswith("(worse with stop_tokens, which the alert names)")
        for o in out
        if o.key in {"sampling_defaults", "structured_output"}
    )


def test_targets_are_folded_apart() -> None:
    run = [_obs("drift", "models", True, "a"), _obs("drift", "reply", True, "b"), _obs("doctor", "limits", True, "a")]
    out = fold(run)
    assert [(o.target, o.key) for o in out if o.active] == [("b", "reply"), ("a", "limits")]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["doctor", "drift"]),
            st.sampled_from(DOCTOR_CHECK_IDS + FINGERPRINT_COMPONENTS),
            st.booleans(),
            st.sampled_from(["a", "b"]),
        ),
        max_size=30,
    )
)
def test_fold_never_activates_and_keeps_at_most_one_drift_per_target(raw: list[tuple[str, str, bool, str]]) -> None:
    run = [_obs(kind, key, active, target) for kind, key, active, target in raw]
    out = fold(run)
    assert [(o.kind, o.target, o.key) for o in out] == [(o.kind, o.target, o.key) for o in run]
    assert all(o.active <= i.active for o, i in zip(out, run, strict=True))
    for target in ("a", "b"):
        # One active key per target: a doctor check if any got worse, else one drift component.
        active_keys = {(o.kind, o.key) for o in out if o.target == target and o.active}
        assert len(active_keys) <= 1
        worse = [o.key for o in run if o.target == target and o.kind == "doctor" and o.active]
        if worse:
            assert active_keys == {("doctor", worse[0])}
