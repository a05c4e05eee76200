"""The scraper against a real llama-server started with `--metrics` (one module-scoped server).

llama.cpp's names (`llamacpp:requests_processing`, `llamacpp:tokens_predicted_total`, ...) must map
to the same facts as vLLM's; what it does not expose (TTFT histograms, KV-cache usage in newer
builds) stays None instead of becoming 0. A request between two scrapes shows up as generated tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from monitor.config import TargetSettings
from monitor.server_metrics import interval
from monitor.server_metrics.scrape import Scraper
from tests.realservers.servers import MODEL_NAME, SERVERS, RealServer


@pytest.fixture(name="llama", scope="module")
def fix_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    spec = SERVERS["llama-server"].require()
    with RealServer(spec, tmp_path_factory.mktemp("llama-server")) as server:
        yield server


async def test_llama_server_metrics_are_read_and_differenced(llama: RealServer) -> None:
    target = TargetSettings.model_validate({"name": "llama", "base_url": llama.base_url, "metrics": {}})
    async with aiohttp.ClientSession() as session:
        scraper = Scraper(session, target, None)
        first = await scraper.scrape()
        assert first.sample is not None, first.error
        sources = dict(first.sample.sources)
        assert sources["requests_running"] == "llamacpp:requests_processing"
        assert sources["generation_tokens"].startswith("llamacpp:tokens_predicted")
        assert first.sample.histograms["ttft_s"] is None  # llama.cpp keeps no histograms

        body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}
        async with session.post(llama.base_url + "/chat/completions", json=body) as resp:
            assert resp.status == 200
            usage = (await resp.json())["usage"]
        await asyncio.sleep(0.1)
        second = await scraper.scrape()
        assert second.sample is not None, second.error
    elapsed_s = (second.at - first.at).total_seconds()
    values = interval(first.sample, second.sample, elapsed_s)
    assert values.generation_tokens_per_s is not None
    assert values.generation_tokens_per_s * elapsed_s == pytest.approx(usage["completion_tokens"], abs=1)
    assert values.requests_running == 0.0 and values.server_ttft_ms_p95 is None
