"""Coverage-guided fuzzing of the stream meter with atheris (libFuzzer for Python).

    python tests/fuzz_meter_atheris.py -max_total_time=60        # a minute
    python tests/fuzz_meter_atheris.py -runs=100000 corpus_dir/   # a fixed number of inputs, keep a corpus

Each input picks an endpoint, streaming or not, and cuts the rest of its bytes into reads at
fuzzer-chosen points. A crash is any exception out of the meter, a failure kind the meter does not
own, or an answer from its catch-all ("meter internal error"). tests/test_meter_fuzz.py runs this
for a few seconds when atheris is installed; it is an optional dependency (pip install atheris).
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from monitor.meter import Endpoint, StreamMeter

SEEDS = (
    b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\ndata: [DONE]\n\n',
    b'{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}]}',
    b'data: {"error":{"message":"boom","code":500}}\n\n',
)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    endpoint: Endpoint = "chat" if fdp.ConsumeBool() else "completion"
    stream = fdp.ConsumeBool()
    seed = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)] if fdp.ConsumeBool() else b""
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 8)))
    body = seed + fdp.ConsumeBytes(fdp.remaining_bytes())
    meter = StreamMeter(endpoint, stream=stream, start_s=0.0)
    start = 0
    for i, at in enumerate([*cuts, len(body)]):
        meter.feed(body[start:at], 0.01 * (i + 1))
        start = max(start, at)
    m = meter.finish(1.0)
    if m.error_kind not in (None, "bad_response", "stream_error"):
        raise AssertionError(f"unknown error kind {m.error_kind!r}")
    if m.error_detail is not None and "internal error" in m.error_detail:
        raise AssertionError(m.error_detail)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
