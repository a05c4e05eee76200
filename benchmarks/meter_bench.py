"""How much CPU does StreamMeter cost per streamed response?

Builds a realistic 128-token vLLM chat stream (role chunk, 128 content chunks of mixed
Chinese/English text, a finish chunk with the last text, a usage chunk, [DONE]), splits it
into reads of 1-3 events as a socket would deliver them, and times:

* the meter on that stream (raw UTF-8, as vLLM sends it);
* the meter on the same stream with ``\\uXXXX`` escapes (ensure_ascii servers);
* the meter on a /v1/completions stream (``"usage":null`` on every chunk);
* a baseline that only splits events and ``json.loads`` each one.

Run: ``python benchmarks/meter_bench.py``. Numbers are the best of several repeats.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.meter import Endpoint, StreamMeter

TOKENS = 128
PIECES = ["你好", "，", "世界", "。", " the", " quick", " brown", " fox", "我们", "可以", " jumps", "😊", " over", "\n"]
STREAMS = 200  # distinct streams (ids differ), so no cache can carry over from one stream to the next


def _head(seed: int) -> dict[str, object]:
    return {"id": f"chatcmpl-{seed:032x}", "created": 1746809788 + seed, "model": "glm-4-9b-chat"}


def _dumps(obj: object, ensure_ascii: bool) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":")).encode() + b"\n\n"


def chat_events(seed: int = 0, ensure_ascii: bool = False) -> list[bytes]:
    rng = random.Random(seed)
    head = {**_head(seed), "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, str], **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None, **extra}
        return _dumps({**head, "choices": [choice]}, ensure_ascii)

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": rng.choice(PIECES)}) for _ in range(TOKENS - 1)]
    events.append(chunk({"content": "。"}, finish_reason="length", stop_reason=None))
    usage = {"prompt_tokens": 12, "total_tokens": 12 + TOKENS, "completion_tokens": TOKENS}
    events.append(_dumps({**head, "choices": [], "usage": usage}, ensure_ascii))
    events.append(b"data: [DONE]\n\n")
    return events


def completion_events(seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    head = {**_head(seed), "id": f"cmpl-{seed:032x}", "object": "text_completion"}

    def chunk(text: str, finish: str | None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
        return _dumps({**head, "choices": [choice], "usage": None}, False)

    events = [chunk(rng.choice(PIECES), None) for _ in range(TOKENS - 1)]
    events += [chunk("，", "length"), b"data: [DONE]\n\n"]
    return events


def reads_of(events: list[bytes], seed: int = 0) -> list[bytes]:
    """Group events into socket reads of 1-3 events each."""
    rng = random.Random(seed)
    reads, i = [], 0
    while i < len(events):
        k = rng.randint(1, 3)
        reads.append(b"".join(events[i : i + k]))
        i += k
    return reads


def run_meter(streams: list[list[bytes]], endpoint: Endpoint) -> None:
    for reads in streams:
        meter = StreamMeter(endpoint, stream=True, start_s=0.0)
        now = 0.0
        for read in reads:
            now += 0.02
            meter.feed(read, now)
        meter.finish(now)


def run_baseline(streams: list[list[bytes]], endpoint: Endpoint) -> None:
    for reads in streams:
        buf = b""
        for read in reads:
            buf += read
            *events, buf = buf.split(b"\n\n")
            for event in events:
                payload = event[6:]
                if payload != b"[DONE]":
                    json.loads(payload)


def best_us(fn: Callable[[list[list[bytes]], Endpoint], None], streams: list[list[bytes]], endpoint: Endpoint) -> float:
    """Best of several runs over all streams, in microseconds per stream."""
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        fn(streams, endpoint)
        best = min(best, (time.perf_counter() - t0) / len(streams) * 1e6)
    return best


def main() -> None:
    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"python:  {sys.version.split()[0]} ({platform.python_implementation()})")
    seeds = range(STREAMS)
    cases: list[tuple[str, Callable[[list[list[bytes]], Endpoint], None], list[list[bytes]], Endpoint]] = [
        ("meter, chat, raw UTF-8", run_meter, [reads_of(chat_events(s), s) for s in seeds], "chat"),
        ("meter, chat, \\u-escaped", run_meter, [reads_of(chat_events(s, True), s) for s in seeds], "chat"),
        ("meter, completion", run_meter, [reads_of(completion_events(s), s) for s in seeds], "completion"),
        ("baseline json.loads, chat", run_baseline, [reads_of(chat_events(s), s) for s in seeds], "chat"),
    ]
    for name, fn, streams, endpoint in cases:
        us = best_us(fn, streams, endpoint)
        events = sum(read.count(b"\n\n") for read in streams[0])
        reads = sum(len(s) for s in streams) / len(streams)
        print(f"{name:28} {us:7.1f} us/stream {us / events:6.2f} us/event ({events} events, ~{reads:.0f} reads)")


if __name__ == "__main__":
    main()
