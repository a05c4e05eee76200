"""Quality checks on a finished measurement: the failures that answer HTTP 200, fast, and wrong.

Pure functions, no I/O. Each check returns a `CheckResult(name, passed, detail)`.
"""

from __future__ import annotations

import json
import re

from monitor.checks_pipelines import budget_exhausted, excerpt, pipeline_checks
from monitor.config import Expect, ProbeSettings
from monitor.meter import StreamMeasurement
from monitor.results import CheckResult

# Chat-template and special tokens of the common model families (GLM-4, ChatML/Qwen, Llama 2/3,
# Mistral, Gemma, Phi). None of them belongs in a reply that vLLM decoded with skip_special_tokens.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|user|>", "<|assistant|>", "<|system|>", "<|observation|>", "[gMASK]", "<sop>", "<eop>",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|begin_of_text|>", "</s>", "<s>", "[INST]", "[/INST]",
    "<start_of_turn>", "<end_of_turn>", "<|end|>", "<|assistant_end|>",
)  # fmt: skip

# A role marker at the start of a line, after the reply began: the model is writing the next turn.
_RUN_ON = re.compile(
    r"\n[ \t]*(?:User|USER|Human|HUMAN|Q|Question|用户|问|提问者|Assistant|ASSISTANT|AI|助手)[ \t]*[:：]"
)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


def run_checks(probe: ProbeSettings, m: StreamMeasurement) -> tuple[CheckResult, ...]:
    """All built-in checks, the pipeline checks (reasoning, tools, JSON), then the probe's `expect` assertions.

    When reasoning used the whole budget, `answer_empty` reports it (with the token split) and the
    generic `truncated` and `empty_reply` pass saying so: one cause, one failed check to alert on.
    """
    if probe.endpoint == "chat" and budget_exhausted(m):
        deferred = "reasoning used the budget and no answer came: see answer_empty"
        checks = [CheckResult("truncated", True, deferred), check_template_leak(m.text),
                  check_run_on(m.text), CheckResult("empty_reply", True, deferred)]  # fmt: skip
    else:
        run_on = check_run_on(m.text)
        checks = [
            check_truncated(probe, m, ran_on=not run_on.passed),
            check_template_leak(m.text),
            run_on,
            check_empty_reply(m.text, tool_calls=len(m.tool_calls)),
        ]
    checks.extend(pipeline_checks(probe, m))
    checks.extend(check_expect(probe.expect, m))
    return tuple(checks)


def check_truncated(probe: ProbeSettings, m: StreamMeasurement, *, ran_on: bool = False) -> CheckResult:
    """finish_reason `length` fails chat probes; on completions it is recorded unless `expect` forbids it.

    `ran_on` says the reply went on into the next turn: then the length limit only stopped a reply
    that should have stopped by itself, and raising max_tokens would not help.
    """
    if m.finish_reason != "length":
        return CheckResult("truncated", True, f"finish_reason={m.finish_reason}")
    limit = probe.max_tokens or _int(probe.sampling.get("max_completion_tokens"))
    if ran_on:
        where = f"max_tokens={limit}" if limit is not None else "the length limit"
        cause = f"the reply ran on into the next turn until {where} stopped it; the stop tokens are missing"
    elif limit is not None:
        used = f"{m.completion_tokens}{'~' if m.tokens_estimated else ''}" if m.completion_tokens is not None else "?"
        cause = f"max_tokens={limit} was the cause ({used} tokens generated); raise it or leave it unset"
    elif probe.endpoint == "completion":
        cause = "no max_tokens set: the server's default limit ended it (vLLM /v1/completions defaults to 16)"
    else:
        cause = "no max_tokens set: the context window (max_model_len) or a server-side cap ended it"
    allowed = probe.expect.finish_reason_in
    if probe.endpoint == "completion" and (allowed is None or "length" in allowed):
        return CheckResult("truncated", True, f"recorded, not a failure for a completion probe: {cause}")
    if probe.endpoint == "chat" and allowed is not None and "length" in allowed:
        return CheckResult("truncated", True, f"allowed by expect.finish_reason_in: {cause}")
    return CheckResult("truncated", False, f"reply cut off (finish_reason=length): {cause}")


def check_template_leak(text: str) -> CheckResult:
    found = [tok for tok in SPECIAL_TOKENS if tok in text]
    if not found:
        return CheckResult("template_leak", True, "no special tokens in the reply")
    where = text.find(found[0])
    return CheckResult(
        "template_leak",
        False,
        f"special tokens in the reply: {', '.join(found)} (at char {where}: {excerpt(text, where)}); "
        "check the chat template and skip_special_tokens",
    )


def check_run_on(text: str) -> CheckResult:
    """The reply writes the user's next turn: a role marker or turn token after the reply started."""
    body = text.lstrip()
    match = _RUN_ON.search(body)
    where = match.start() if match else -1
    for tok in ("<|user|>", "<|observation|>", "<|im_start|>", "<start_of_turn>", "[INST]"):
        pos = body.find(tok, 1)
        if pos > 0 and (where < 0 or pos < where):
            where = pos
    if where < 0:
        return CheckResult("run_on", True, "the reply does not continue into another turn")
    return CheckResult(
        "run_on",
        False,
        f"the reply goes on to write the next turn at char {where}: {excerpt(body, where)}; "
        "the server is missing the model's stop tokens",
    )


def check_empty_reply(text: str, *, tool_calls: int = 0) -> CheckResult:
    if not text.strip() and tool_calls:
        return CheckResult("empty_reply", True, f"no text: the reply is {tool_calls} tool call(s)")
    if text.strip():
        return CheckResult("empty_reply", True, f"{len(text)} chars")
    return CheckResult("empty_reply", False, "the reply is empty" if not text else "the reply is only whitespace")


def check_expect(expect: Expect, m: StreamMeasurement) -> list[CheckResult]:
    text = m.text
    out: list[CheckResult] = []
    for needle in expect.contains:
        ok = needle in text
        out.append(CheckResult("expect.contains", ok, f"{'found' if ok else 'missing'} {needle!r}"))
    for needle in expect.not_contains:
        ok = needle not in text
        detail = f"absent {needle!r}" if ok else f"found {needle!r}: {excerpt(text, text.find(needle))}"
        out.append(CheckResult("expect.not_contains", ok, detail))
    if expect.regex is not None:
        ok = re.search(expect.regex, text) is not None
        out.append(CheckResult("expect.regex", ok, f"{'matches' if ok else 'no match for'} /{expect.regex}/"))
    if expect.json_valid:
        out.append(_json_check(text))
    if expect.min_chars is not None:
        ok = len(text) >= expect.min_chars
        out.append(CheckResult("expect.min_chars", ok, f"{len(text)} chars (min {expect.min_chars})"))
    if expect.max_chars is not None:
        ok = len(text) <= expect.max_chars
        out.append(CheckResult("expect.max_chars", ok, f"{len(text)} chars (max {expect.max_chars})"))
    if expect.cjk_ratio_min is not None:
        ratio = cjk_ratio(text)
        ok = ratio >= expect.cjk_ratio_min
        out.append(CheckResult("expect.cjk_ratio_min", ok, f"CJK ratio {ratio:.2f} (min {expect.cjk_ratio_min})"))
    if expect.max_ttft_ms is not None:
        out.append(_limit("expect.max_ttft_ms", m.ttft_ms, expect.max_ttft_ms, "TTFT"))
    if expect.max_latency_ms is not None:
        out.append(_limit("expect.max_latency_ms", m.latency_ms, expect.max_latency_ms, "latency"))
    if expect.finish_reason_in is not None:
        ok = m.finish_reason in expect.finish_reason_in
        want = expect.finish_reason_in
        out.append(CheckResult("expect.finish_reason_in", ok, f"finish_reason={m.finish_reason} (want {want})"))
    return out


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among the non-space characters."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(1 for c in chars if _CJK.match(c)) / len(chars)


def _json_check(text: str) -> CheckResult:
    try:
        json.loads(text)
    except ValueError as exc:
        return CheckResult("expect.json_valid", False, f"not valid JSON: {exc}")
    return CheckResult("expect.json_valid", True, "valid JSON")


def _limit(name: str, value: float | None, limit: float, label: str) -> CheckResult:
    if value is None:
        return CheckResult(name, False, f"{label} was not measured")
    return CheckResult(name, value <= limit, f"{label} {value:.1f} ms (max {limit:g} ms)")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
