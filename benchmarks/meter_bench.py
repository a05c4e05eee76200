"""How much CPU does StreamMeter cost per streamed response?

Builds realistic 128-token vLLM chat streams (role chunk, 127 content chunks of mixed
Chinese/English text, a finish chunk with the last text, a usage chunk, [DONE]), splits them
into reads of 1-3 events as a socket would deliver them, and times:

* the meter on that stream (raw UTF-8, as vLLM sends it);
* the meter on the same stream with ``\\uXXXX`` escapes (ensure_ascii servers);
* the meter on a /v1/completions stream (``"usage":null`` on every chunk);
* the same chat and completions streams with per-chunk usage (``continuous_usage_stats``:
  every chunk ends in its own ``"usage":{...}`` object);
* a reasoning model's chat stream (vLLM with ``--reasoning-parser``): 96 ``"reasoning"`` deltas,
  then 32 content deltas, with and without per-chunk usage (which then carries
  ``completion_tokens_details.reasoning_tokens``);
* a baseline that only splits events and ``json.loads`` each one.

Run: ``python benchmarks/meter_bench.py``. It prints the best and the median of several
repeats; on a shared machine the best is the better estimate of the meter's own cost.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import cpu_model

from monitor.meter import Endpoint, StreamMeter

TOKENS = 128
PIECES = ["你好", "，", "世界", "。", " the", " quick", " brown", " fox", "我们", "可以", " jumps", "😊", " over", "\n"]
STREAMS = 200  # distinct streams (ids differ), so no cache can carry over from one stream to the next


def _head(seed: int) -> dict[str, object]:
    return {"id": f"chatcmpl-{seed:032x}", "created": 1746809788 + seed, "model": "glm-4-9b-chat"}


def _dumps(obj: object, ensure_ascii: bool) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":")).encode() + b"\n\n"


def _usage(tokens: int, reasoning: int | None = None) -> dict[str, object]:
    usage: dict[str, object] = {"prompt_tokens": 12, "total_tokens": 12 + tokens, "completion_tokens": tokens}
    if reasoning is not None:  # vLLM sends the details only with a reasoning parser
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def chat_events(
    seed: int = 0, ensure_ascii: bool = False, per_chunk_usage: bool = False, reasoning: int = 0
) -> list[bytes]:
    """A chat stream; its first ``reasoning`` tokens are reasoning deltas, as a reasoning parser sends them."""
    rng = random.Random(seed)
    head = {**_head(seed), "object": "chat.completion.chunk"}
    details = reasoning or None

    def chunk(k: int, delta: dict[str, str], **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None, **extra}
        usage = {"usage": _usage(k, details and min(k, reasoning))} if per_chunk_usage else {}
        return _dumps({**head, "choices": [choice], **usage}, ensure_ascii)

    events = [chunk(0, {"role": "assistant", "content": ""})]
    events += [chunk(k, {"reasoning": rng.choice(PIECES)}) for k in range(1, reasoning + 1)]
    events += [chunk(k, {"content": rng.choice(PIECES)}) for k in range(reasoning + 1, TOKENS)]
    events.append(chunk(TOKENS, {"content": "。"}, finish_reason="length", stop_reason=None))
    events.append(_dumps({**head, "choices": [], "usage": _usage(TOKENS, details and reasoning)}, ensure_ascii))
    events.append(b"data: [DONE]\n\n")
    return events


def completion_events(seed: int = 0, per_chunk_usage: bool = False) -> list[bytes]:
    rng = random.Random(seed)
    head = {**_head(seed), "id": f"cmpl-{seed:032x}", "object": "text_completion"}

    def chunk(k: int, text: str, finish: str | None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
        return _dumps({**head, "choices": [choice], "usage": _usage(k) if per_chunk_usage else None}, False)

    events = [chunk(k, rng.choice(PIECES), None) for k in range(1, TOKENS)]
    events.append(chunk(TOKENS, "，", "length"))
    if per_chunk_usage:
        events.append(_dumps({**head, "choices": [], "usage": _usage(TOKENS)}, False))
    events.append(b"data: [DONE]\n\n")
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


def time_us(
    fn: Callable[[list[list[bytes]], Endpoint], None], streams: list[list[bytes]], endpoint: Endpoint
) -> list[float]:
    """Microseconds per stream, one value per run over all streams."""
    runs = []
    for _ in range(11):
        t0 = time.perf_counter()
        fn(streams, endpoint)
        runs.append((time.perf_counter() - t0) / len(streams) * 1e6)
    return runs


def main() -> None:
    print(f"machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} CPUs")
    print(f"python:  {sys.version.split()[0]} ({platform.python_implementation()})")
    seeds = range(STREAMS)
    cases: list[tuple[str, Callable[[list[list[bytes]], Endpoint], None], list[list[bytes]], Endpoint]] = [
        ("meter, chat, raw UTF-8", run_meter, [reads_of(chat_events(s), s) for s in seeds], "chat"),
        ("meter, chat, \\u-escaped", run_meter, [reads_of(chat_events(s, True), s) for s in seeds], "chat"),
        ("meter, completion", run_meter, [reads_of(completion_events(s), s) for s in seeds], "completion"),
        (
            "meter, chat, usage/chunk",
            run_meter,
            [reads_of(chat_events(s, per_chunk_usage=True), s) for s in seeds],
            "chat",
        ),
        (
            "meter, chat, \\u, usage/chunk",
            run_meter,
            [reads_of(chat_events(s, True, per_chunk_usage=True), s) for s in seeds],
            "chat",
        ),
        (
            "meter, completion, usage/chunk",
            run_meter,
            [reads_of(completion_events(s, per_chunk_usage=True), s) for s in seeds],
            "completion",
        ),
        ("meter, chat, reasoning", run_meter, [reads_of(chat_events(s, reasoning=96), s) for s in seeds], "chat"),
        (
            "meter, chat, reasoning, usage/chunk",
            run_meter,
            [reads_of(chat_events(s, per_chunk_usage=True, reasoning=96), s) for s in seeds],
            "chat",
        ),
        ("baseline json.loads, chat", run_baseline, [reads_of(chat_events(s), s) for s in seeds], "chat"),
    ]
    print(f"{STREAMS} distinct streams per run; us per stream (best / median), us per event (best)")
    for name, fn, streams, endpoint in cases:
        runs = time_us(fn, streams, endpoint)
        best, median = min(runs), statistics.median(runs)
        events = sum(read.count(b"\n\n") for read in streams[0])
        reads = sum(len(s) for s in streams) / len(streams)
        print(
            f"{name:36} {best:6.1f} / {median:6.1f} us/stream  {best / events:5.2f} us/event"
            f"  ({events} events in ~{reads:.0f} reads)"
        )


if __name__ == "__main__":
    main()
