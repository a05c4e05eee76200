"""Workload parsing (length distributions, traces) and plan building against a real mock server."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from monitor.config import TargetSettings
from monitor.errors import ConfigError
from monitor.loadtest.params import LoadParams
from monitor.loadtest.plan import build_plan
from monitor.loadtest.traces import parse_trace
from monitor.loadtest.workload import WorkloadSpec, checked_spec, parse_distribution
from monitor.target_http import target_session
from tests.mockserver import MockProcess

lengths = st.integers(min_value=1, max_value=100_000)


@given(n=lengths, seed=st.integers(0, 1000))
def test_fixed_and_plain_numbers_draw_themselves(n: int, seed: int) -> None:
    rng = random.Random(seed)
    assert parse_distribution(str(n), "--input-tokens").draw(rng) == n
    assert parse_distribution(f"fixed:{n}", "--input-tokens").draw(rng) == n


@given(lo=lengths, span=st.integers(0, 1000), seed=st.integers(0, 1000))
def test_uniform_draws_stay_in_range(lo: int, span: int, seed: int) -> None:
    hi = min(lo + span, 1_000_000)
    got = parse_distribution(f"uniform:{lo}:{hi}", "--input-tokens").draw(random.Random(seed))
    assert lo <= got <= hi


@given(mean=st.integers(1, 5000), sd=st.integers(0, 5000), seed=st.integers(0, 1000))
def test_normal_is_clipped_to_one(mean: int, sd: int, seed: int) -> None:
    assert parse_distribution(f"normal:{mean}:{sd}", "--output-tokens").draw(random.Random(seed)) >= 1


@given(pairs=st.dictionaries(lengths, st.integers(1, 100), min_size=1, max_size=20), seed=st.integers(0, 100))
def test_empirical_draws_only_its_lengths(pairs: dict[int, int], seed: int) -> None:
    text = "empirical:" + ",".join(f"{k}={w}" for k, w in pairs.items())
    assert parse_distribution(text, "--input-tokens").draw(random.Random(seed)) in pairs


@given(text=st.text(max_size=30))
def test_any_text_parses_or_names_the_flag(text: str) -> None:
    try:
        parse_distribution(text, "--input-tokens")
    except ConfigError as exc:
        assert str(exc).startswith("--input-tokens: ")


def test_hist_file_json_and_csv(tmp_path: Path) -> None:
    (tmp_path / "h.json").write_text('{"10": 1, "20": 0}', encoding="utf-8")
    (tmp_path / "h.csv").write_text("length,weight\n30,1\n", encoding="utf-8")
    assert parse_distribution(f"hist:{tmp_path / 'h.json'}", "--input-tokens").draw(random.Random(0)) == 10
    assert parse_distribution(f"hist:{tmp_path / 'h.csv'}", "--input-tokens").draw(random.Random(0)) == 30


@pytest.mark.parametrize(
    ("bad", "message"),
    [("0", "out of range"), ("uniform:5:2", "LO <= HI"), ("normal:x:1", "not a number"), ("poisson:3", "is not N")],
)
def test_bad_distributions_are_named(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^--output-tokens: .*{message}"):
        parse_distribution(bad, "--output-tokens")


rows = st.lists(st.tuples(st.integers(0, 10**7), st.integers(1, 5000), st.integers(0, 5000)), min_size=1, max_size=30)


@given(rows=rows)
def test_burstgpt_keeps_rows_with_a_response(rows: list[tuple[int, int, int]]) -> None:
    text = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n" + "".join(
        f"{t / 10},ChatGPT,{i},{o},{i + o},Conversation log\n" for t, i, o in rows
    )
    kept = [r for r in rows if r[2] > 0]
    if not kept:
        with pytest.raises(ConfigError, match="no requests"):
            parse_trace(text)
        return
    trace = parse_trace(text)
    assert trace.format == "burstgpt" and len(trace.rows) == len(kept) and trace.skipped == len(rows) - len(kept)
    assert trace.rows[0].at_s == 0 and all(a.at_s <= b.at_s for a, b in zip(trace.rows, trace.rows[1:], strict=False))


@given(rows=rows)
def test_mooncake_offsets_are_seconds_from_the_first(rows: list[tuple[int, int, int]]) -> None:
    text = "".join(
        json.dumps({"timestamp": t, "input_length": i, "output_length": o + 1, "hash_ids": [1, 2]}) + "\n"
        for t, i, o in rows
    )
    trace = parse_trace(text, "auto")
    first = min(t for t, _, _ in rows)
    assert trace.format == "mooncake"
    assert sorted(r.at_s for r in trace.rows) == pytest.approx(sorted((t - first) / 1000 for t, _, _ in rows))


@given(junk=st.text(max_size=60))
def test_trace_errors_name_file_and_line(junk: str) -> None:
    try:
        parse_trace('{"timestamp": 0, "input_length": 5, "output_length": 5}\n' + junk, "mooncake", name="t.jsonl")
    except ConfigError as exc:
        assert str(exc).startswith("--trace: t.jsonl:")


def test_checked_spec_refuses_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^--prefix-tokens: "):
        checked_spec(WorkloadSpec(prefix_tokens=10))
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 5, "output_length": 5}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="^--turns: "):
        checked_spec(WorkloadSpec(trace=trace, turns="2"))
    assert checked_spec(WorkloadSpec(trace=trace)).trace_span_s == 1.0


async def test_plan_prompts_have_the_servers_token_counts(mock: MockProcess, tmp_path: Path) -> None:
    target = TargetSettings(name="m", base_url=mock.base_url, model="glm-4-9b-chat")
    spec = WorkloadSpec(input_tokens="uniform:20:60", output_tokens="7", ignore_eos=True, seed=3)
    params = LoadParams(target=target, api_key_env=None, endpoint="completion", users=1, workload=spec)
    async with target_session() as http:
        plan = await build_plan(spec, params, http, None, tmp_path)
        assert plan.info["token_source"] == "server /tokenize" and plan.info["ignore_eos"] is True
        lines = [json.loads(line) for line in plan.path.read_text(encoding="utf-8").splitlines()]
        assert len(lines) == plan.info["requests_planned"] and all(line["max_tokens"] == 7 for line in lines)
        for line in lines[:5]:
            # The planned length is what the server itself counts for the whole prompt (special tokens too).
            body = {"prompt": line["prompt"], "model": "glm-4-9b-chat"}
            async with http.post(mock.root_url + "/tokenize", json=body) as resp:
                assert (await resp.json())["count"] == line["input_tokens"]
