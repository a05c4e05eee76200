"""Conformance: golden answers graded by a real server's own /v1/embeddings (llama-server --embeddings)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from monitor.config import parse_settings
from monitor.golden.grade import CHECK_NAME
from monitor.probes import Prober
from tests.realservers.servers import MODEL_NAME, SERVERS, RealServer

_LLAMA = SERVERS["llama-server"]
# The same server with its embeddings endpoint on (mean pooling over the chat model's states).
EMBEDDING_SERVER = dataclasses.replace(
    _LLAMA, name="llama-server-embeddings", argv=lambda root, port: [*_LLAMA.argv(root, port), "--embeddings",
                                                                     "--pooling", "mean"],
)  # fmt: skip


@pytest.fixture(name="server", scope="module")
def fix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    spec = EMBEDDING_SERVER.require()
    with RealServer(spec, tmp_path_factory.mktemp(spec.name)) as server:
        yield server


@pytest.fixture(name="session")
async def fix_session() -> AsyncIterator[aiohttp.ClientSession]:
    # llama-server closes idle keep-alive connections; a fresh connection per request sidesteps the race.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def test_the_targets_embeddings_grade_a_reply(server: RealServer, session: aiohttp.ClientSession,
                                                   tmp_path: Path) -> None:  # fmt: skip
    target = {"name": "llama", "base_url": server.base_url, "model": MODEL_NAME}
    ask = {"name": "ask", "target": "llama", "messages": [{"role": "user", "content": "Say hello."}],
           "max_tokens": 16, "temperature": 0}  # fmt: skip
    plain = parse_settings({"targets": [target], "probes": [ask]})
    first = await Prober(session).run(plain.targets[0], plain.probes[0])
    assert first.measurement is not None and first.measurement.text, first.error_detail
    golden = {"answer": first.measurement.text, "min_similarity": 0.9, "embeddings_model": MODEL_NAME}
    graded = parse_settings({"targets": [target], "probes": [{**ask, "expect": {"golden": golden}}]})
    r = await Prober(session).run(graded.targets[0], graded.probes[0])
    assert r.error_kind is None, r.error_detail
    (check,) = [c for c in r.checks if c.name == CHECK_NAME]
    # Temperature 0: the same reply, so the same vector, graded by the server's own embeddings.
    assert r.golden_method == "embeddings" and r.golden_similarity is not None, check.detail
    assert r.golden_similarity > 0.99 and r.golden_passed and check.passed
