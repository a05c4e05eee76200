"""Writing a workload plan: the JSONL file of requests the Locust processes read (``--llm-plan``).

One JSON object a line:

* a request: ``{"endpoint": "chat", "messages": [...]}`` or ``{"endpoint": "completion", "prompt": "..."}``,
  with ``"max_tokens"``, ``"extra"`` (merged into the body: ``ignore_eos``, ``min_tokens``),
  ``"input_tokens"`` (the planned prompt length, counted as ``info["token_source"]`` says) and
  ``"at_s"`` (a trace's arrival offset, already divided by the speedup; null otherwise);
* a session: ``{"endpoint": "chat", "session": {"system": str | null, "turns": [{"content",
  "max_tokens", "input_tokens"}]}, "extra": {...}}``; the user resends the whole history each turn.

Closed-loop users cycle through the requests; a trace replay sends each at its ``at_s``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from monitor.doctor.client import DoctorClient
from monitor.loadtest.tokenize import Counter, PromptBuilder, open_counter
from monitor.loadtest.traces import BLOCK_TOKENS, Trace
from monitor.loadtest.workload import (
    MAX_PLAN_ITEMS,
    MAX_TURNS,
    PLAN_ITEMS,
    PLAN_SESSIONS,
    Distribution,
    Plan,
    WorkloadSpec,
    parse_distribution,
)

__all__ = ["build_plan"]

SESSION_TURN_TOKENS = 32  # a session's user turn when --input-tokens is not given
_EOS_PROBE_TOKENS = 8


async def build_plan(spec: WorkloadSpec, params: Any, http: Any, api_key: str | None, workdir: Path) -> Plan:
    """Count lengths against the server, write the plan to ``workdir``; ``params`` is the run's LoadParams."""
    client = DoctorClient(http, params.target, api_key)
    counter = await open_counter(client, params.target.model, spec.tokenizer)
    rng = random.Random(spec.seed)
    builder = PromptBuilder(counter, seed=spec.seed if spec.seed is not None else rng.randrange(1 << 30))
    warnings: list[str] = []
    if counter.reason is not None:
        warnings.append(f"token counts: {counter.source} ({counter.reason})")
    if spec.tokenizer is not None and counter.source.startswith("server"):
        warnings.append(f"--tokenizer {spec.tokenizer} unused: the server counts its own tokens")
    extra, eos_note = await _eos_extra(client, spec, params, warnings)
    endpoints = ("chat", "completion") if params.endpoint == "both" else (params.endpoint,)
    out_dist = _dist(spec.output_tokens, "--output-tokens", params.max_tokens)
    in_dist = parse_distribution(spec.input_tokens, "--input-tokens") if spec.input_tokens else None
    prefixes = [
        (await builder.text(spec.prefix_tokens, f"prefix{i}"))[0] for i in range(spec.shared_prefixes)
    ]  # fmt: skip
    trace: Trace | None = None
    lines: list[dict[str, Any]] = []
    if spec.trace is not None:
        trace = spec.loaded_trace
        if trace is None:
            raise ValueError("build_plan needs the spec checked_spec returned (it reads the trace)")
        kind = "trace"
        lines = await _trace_lines(trace, spec, params, builder, counter, extra, endpoints)
    elif spec.turns is not None:
        kind = "sessions"
        turns = parse_distribution(spec.turns, "--turns", high=MAX_TURNS)
        lines = await _session_lines(turns, in_dist, out_dist, prefixes, builder, counter, extra, rng)
    else:
        kind = "synthetic"
        lines = await _synthetic_lines(in_dist, out_dist, prefixes, builder, counter, extra, endpoints, rng, params)
    path = workdir / "plan.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    if builder.inexact:
        warnings.append(f"{builder.inexact} prompts could not hit their length exactly (the nearest was kept)")
    if counter.fallbacks:
        warnings.append(f"{counter.fallbacks} counts fell back to the estimate (the server's /tokenize failed)")
    planned = sum(len(line["session"]["turns"]) if "session" in line else 1 for line in lines)
    info: dict[str, Any] = {
        "kind": kind, "token_source": counter.source, "requests_planned": planned,
        "input_tokens": spec.input_tokens, "output_tokens": spec.output_tokens, "ignore_eos": spec.ignore_eos,
        "eos": eos_note, "extra": extra or None, "template_tokens": counter.overhead or None,
        "sessions": {"turns": spec.turns, "count": len(lines)} if kind == "sessions" else None,
        "prefixes": {"count": spec.shared_prefixes, "tokens": spec.prefix_tokens} if spec.shared_prefixes else None,
        "trace": None if trace is None or spec.trace is None else {
            "path": str(spec.trace), "format": trace.format, "rows": len(trace.rows), "span_s": trace.span_s,
            "speedup": spec.trace_speedup, "skipped": trace.skipped, "planned": len(lines),
        },
        "tokenize_calls": counter.calls, "warnings": warnings,
    }  # fmt: skip
    return Plan(path, info)


def _dist(text: str | None, flag: str, default: int) -> Distribution:
    return parse_distribution(text if text else str(default), flag)


async def _eos_extra(
    client: DoctorClient, spec: WorkloadSpec, params: Any, warnings: list[str]
) -> tuple[dict[str, Any], str | None]:
    """``ignore_eos`` (and ``min_tokens`` where that is what works), after checking the server obeys."""
    if not spec.ignore_eos:
        return {}, None
    for extra in ({"ignore_eos": True}, {"ignore_eos": True, "min_tokens": _EOS_PROBE_TOKENS}):
        ex = await client.chat(
            "workload.ignore_eos", [{"role": "user", "content": "Hi"}], max_tokens=_EOS_PROBE_TOKENS,
            extra_body=extra, timeout_s=params.target.timeout_s,
        )  # fmt: skip
        m = ex.result.measurement
        if ex.ok and m is not None and m.completion_tokens == _EOS_PROBE_TOKENS:
            # min_tokens is set per request to its own max_tokens (_with_min).
            return {
                "ignore_eos": True,
                **({"min_tokens": 0} if "min_tokens" in extra else {}),
            }, "honoured: " + ", ".join(extra)
    note = "ignored: a probe reply ended before max_tokens; measured output lengths can be shorter than drawn"
    warnings.append(f"--ignore-eos: the server {note}")
    return {"ignore_eos": True}, note


def _with_min(extra: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {**extra, "min_tokens": max_tokens} if "min_tokens" in extra else extra


async def _request(
    endpoint: str, n_in: int | None, n_out: int, prefix: str | None, key: str, builder: PromptBuilder,
    counter: Counter, extra: dict[str, Any], at_s: float | None = None, text: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    planned: int | None = None
    if text is None:
        assert n_in is not None
        # The server adds its special tokens or chat template (measured on vLLM): the text is that much shorter.
        target = max(1, n_in - counter.overhead.get(endpoint, 0) - (0 if prefix is None else 0))
        text, got = await builder.text(target, key)
        planned = got + counter.overhead.get(endpoint, 0)
    elif n_in is not None:
        planned = n_in
    line: dict[str, Any] = {"endpoint": endpoint}
    if endpoint == "chat":
        msgs = ([{"role": "system", "content": prefix}] if prefix else []) + [{"role": "user", "content": text}]
        line["messages"] = msgs
    else:
        line["prompt"] = (prefix + "\n" + text) if prefix else text
    line.update(max_tokens=n_out, extra=_with_min(extra, n_out), input_tokens=planned, at_s=at_s)
    return line


async def _synthetic_lines(
    in_dist: Distribution | None, out_dist: Distribution, prefixes: list[str], builder: PromptBuilder,
    counter: Counter, extra: dict[str, Any], endpoints: tuple[str, ...], rng: random.Random, params: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    from monitor.loadtest.prompts import BUILTIN_PROMPTS, load_prompts

    prompts = load_prompts(params.prompts) if params.prompts is not None else BUILTIN_PROMPTS
    lines = []
    for i in range(PLAN_ITEMS):
        endpoint = endpoints[i % len(endpoints)]
        prefix = prefixes[i % len(prefixes)] if prefixes else None
        n_out = out_dist.draw(rng)
        if in_dist is None:
            text = prompts[i % len(prompts)].text
            lines.append(await _request(endpoint, None, n_out, prefix, f"r{i}", builder, counter, extra, text=text))
        else:
            lines.append(await _request(endpoint, in_dist.draw(rng), n_out, prefix, f"r{i}", builder, counter, extra))
    return lines


async def _session_lines(
    turns: Distribution, in_dist: Distribution | None, out_dist: Distribution, prefixes: list[str],
    builder: PromptBuilder, counter: Counter, extra: dict[str, Any], rng: random.Random,
) -> list[dict[str, Any]]:  # fmt: skip
    lines: list[dict[str, Any]] = []
    for s in range(PLAN_SESSIONS):
        items = []
        for k in range(turns.draw(rng)):
            n_in = in_dist.draw(rng) if in_dist is not None else SESSION_TURN_TOKENS
            text, got = await builder.text(n_in, f"s{s}t{k}")
            n_out = out_dist.draw(rng)
            items.append({"content": text, "max_tokens": n_out, "input_tokens": got})
        system = prefixes[s % len(prefixes)] if prefixes else None
        lines.append({"endpoint": "chat", "session": {"system": system, "turns": items}, "extra": extra})
    return lines


async def _trace_lines(
    trace: Trace, spec: WorkloadSpec, params: Any, builder: PromptBuilder, counter: Counter,
    extra: dict[str, Any], endpoints: tuple[str, ...],
) -> list[dict[str, Any]]:  # fmt: skip
    """The rows that arrive within the run, Mooncake's shared blocks as identical text."""
    blocks: dict[int, list[str]] = {}
    lines: list[dict[str, Any]] = []
    for i, row in enumerate(trace.rows):
        at_s = row.at_s / spec.trace_speedup
        if at_s > params.run_s or len(lines) >= MAX_PLAN_ITEMS:
            break
        endpoint = endpoints[i % len(endpoints)]
        if not row.hash_ids:
            lines.append(await _request(endpoint, row.input_tokens, row.output_tokens, None, f"t{i}", builder,
                                        counter, extra, at_s))  # fmt: skip
            continue
        words: list[str] = []
        left = row.input_tokens
        for h in row.hash_ids:
            if left <= 0:
                break
            if h not in blocks:
                text, _ = await builder.text(BLOCK_TOKENS, f"block{h}")
                blocks[h] = text.split(" ")
            block = blocks[h]
            take = block if left >= BLOCK_TOKENS else block[: max(1, round(len(block) * left / BLOCK_TOKENS))]
            words += take
            left -= BLOCK_TOKENS
        text = " ".join(words)
        if left > 0:
            text += " " + (await builder.text(left, f"tail{i}"))[0]
        got = await counter.count(text)
        lines.append(await _request(endpoint, got, row.output_tokens, None, f"t{i}", builder, counter, extra,
                                    at_s, text=text))  # fmt: skip
    return lines
