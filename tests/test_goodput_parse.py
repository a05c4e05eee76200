"""Per-request goodput clauses (``--goodput``): both syntaxes, and one-line errors for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from monitor.errors import ConfigError
from monitor.loadtest.goodput import CLAUSE_METRICS, RequestClause, format_goodput, parse_goodput

_limits = st.floats(min_value=0.001, max_value=1e7, allow_nan=False, allow_infinity=False)
_clauses = st.lists(
    st.tuples(st.sampled_from(CLAUSE_METRICS), _limits), min_size=1, max_size=4, unique_by=lambda c: c[0]
)


@given(_clauses)
def test_our_syntax_round_trips(clauses: list[tuple[str, float]]) -> None:
    parsed = parse_goodput(",".join(f"{m}<={limit!r}" for m, limit in clauses))
    assert parsed == tuple(RequestClause(m, limit) for m, limit in clauses)
    # format_goodput rounds to %g: parsing it again gives the same metrics, limits within %g's precision.
    again = parse_goodput(format_goodput(parsed))
    assert [c.metric for c in again] == [c.metric for c in parsed]
    assert all(abs(a.limit_ms - b.limit_ms) <= 1e-5 * b.limit_ms for a, b in zip(again, parsed, strict=True))


def test_vllm_syntax_means_the_same() -> None:
    assert parse_goodput("ttft:500 tpot:50 e2el:10000") == parse_goodput("ttft_ms<=500,tpot_ms<=50,e2e_ms<=10000")


@given(st.text(max_size=40))
def test_anything_else_is_a_config_error_or_a_valid_spec(text: str) -> None:
    try:
        parsed = parse_goodput(text)
    except ConfigError as exc:
        assert str(exc).startswith("--goodput:") and "\n" not in str(exc)
    else:
        assert parsed and all(c.metric in CLAUSE_METRICS and c.limit_ms > 0 for c in parsed)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "--goodput: empty"),
        ("ttft_ms<=0", "must be a positive number"),
        ("ttft_ms<=inf", "must be a positive number"),
        ("ttft_ms<=fast", "is not a number"),
        ("latency_ms<=5", "unknown metric 'latency_ms'"),
        ("ttft_ms<=5,ttft_ms<=6", "ttft_ms is given twice"),
        ("ttft_ms>=5", "expected METRIC<=MS"),
    ],
)
def test_bad_clauses_name_the_clause(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_goodput(spec)
