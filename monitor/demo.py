"""`llm-monitor demo`: the bundled mock on a free loopback port, probed once, stored in SQLite."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from aiohttp import web
from rich.console import Console

from monitor.mock.app import create_mock_app
from monitor.mock.config import MockConfig
from monitor.oneshot import probe_once
from monitor.report import print_results
from monitor.results import ProbeResult
from monitor.settings import DEFAULT_DB_URL, default_probes, load_settings, parse_settings

# Realistic-looking latencies for a 9B model on one GPU, so the table shows TTFT and ITL.
DEMO_TTFT_MS = 60.0
DEMO_ITL_MS = 12.0


async def _demo(db_url: str | None, port: int) -> tuple[str, str, list[ProbeResult]]:
    async with AsyncExitStack() as stack:
        runner = web.AppRunner(create_mock_app(MockConfig(ttft_ms=DEMO_TTFT_MS, itl_ms=DEMO_ITL_MS)), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        sockets = runner.addresses
        bound = sockets[0][1] if sockets else port
        base_url = f"http://127.0.0.1:{bound}/v1"
        settings = load_settings(base_url=base_url, model="glm-4-9b-chat", db_url=db_url)
        # The incident's second lesson: max_tokens 7 cuts a chat reply mid-sentence.
        raw = {
            "storage": settings.storage.model_dump(),
            "targets": [t.model_dump() for t in settings.targets],
            "probes": [
                *default_probes("default"),
                {"name": "chat-max-tokens-7", "target": "default", "messages": [{"role": "user", "content": "你好"}],
                 "max_tokens": 7, "stream": True},
            ],
        }  # fmt: skip
        settings = parse_settings(raw)
        return base_url, settings.storage.url, await probe_once(settings)


def run_demo(*, db_url: str | None, port: int) -> int:
    """Run the demo; returns 0 (the demo shows failures on purpose, they are not errors)."""
    console = Console()
    base_url, url, results = asyncio.run(_demo(db_url, port))
    console.print(f"Probed the bundled vLLM mock at {base_url} (model glm-4-9b-chat).", highlight=False)
    print_results(console, results)
    console.print(
        f"\nStored {len(results)} results in {url or DEFAULT_DB_URL}.\n"
        'The completion probes show the incident: /v1/completions applies no chat template, so "你好" gets a\n'
        "continuation, cut at vLLM's default of 16 tokens; chat-max-tokens-7 is cut mid-sentence.\n"
        "Next: llm-monitor mock --port 8000 --no-stop-tokens, then\n"
        "      llm-monitor probe --base-url http://127.0.0.1:8000/v1 --model glm-4-9b-chat",
        highlight=False,
    )
    return 0
