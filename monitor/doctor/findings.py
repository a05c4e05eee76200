"""What the doctor reports: one `Finding` per checklist item, and the `DoctorReport` that holds them.

Plain data and text helpers, no I/O. A finding carries its evidence (the request that decided it
and an excerpt of the response) and a concrete fix, so that a reader can act without re-running
anything by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.config.deployment import DOCTOR_CHECK_IDS
from monitor.results import ProbeResult

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "skip")
_RANK: dict[Status, int] = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}

# Checklist order: ids are stable (they name stored probes `doctor.<id>` and JSON entries); config owns them.
CHECK_IDS = DOCTOR_CHECK_IDS
TITLES: dict[str, str] = {
    "reachable": "Reachable, and the model is served",
    "chat_template": "Chat template applied",
    "endpoint_semantics": "Endpoint semantics: chat vs completions",
    "stop_tokens": "Stop tokens",
    "truncation": "Truncation by max_tokens",
    "streaming": "Streaming",
    "multi_turn": "Multi-turn context",
    "chinese_tokenization": "Chinese tokenization",
    "limits": "Limits and validation",
    "sampling_defaults": "Sampling defaults",
    "reasoning_parser": "Reasoning parser",
    "tool_parser": "Tool-call parser",
    "structured_output": "JSON schema enforced",
}

EXCERPT_CHARS = 120


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one checklist item.

    `informational` findings (endpoint semantics, truncation, sampling defaults) explain server
    behaviour; the report shows their evidence and advice even when they pass.
    """

    id: str
    status: Status
    summary: str
    request: str = ""
    response_excerpt: str = ""
    fix: str | None = None
    details: tuple[str, ...] = ()
    informational: bool = False

    @property
    def title(self) -> str:
        return TITLES[self.id]

    @property
    def number(self) -> int:
        return CHECK_IDS.index(self.id) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "evidence": {"request": self.request, "response_excerpt": self.response_excerpt},
            "fix": self.fix,
            "details": list(self.details),
        }


def skipped(check_id: str, reason: str) -> Finding:
    return Finding(check_id, "skip", f"skipped: {reason}")


def worst(*statuses: Status) -> Status:
    """The most severe status; `skip` only when nothing else is there."""
    return max(statuses, key=_RANK.__getitem__, default="skip")


@dataclass(frozen=True, slots=True)
class DoctorReport:
    target: str
    base_url: str
    model: str | None
    max_model_len: int | None
    findings: tuple[Finding, ...]
    results: tuple[ProbeResult, ...] = field(default=(), repr=False)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status == status)

    @property
    def exit_code(self) -> int:
        """0 with no failures (warnings are fine), 1 with any failure."""
        return 1 if self.count("fail") else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "target": {"name": self.target, "base_url": self.base_url},
            "model": self.model,
            "max_model_len": self.max_model_len,
            "checks": [f.to_json() for f in self.findings],
            "summary": {**{s: self.count(s) for s in STATUSES}, "exit_code": self.exit_code},
        }


def quote(text: str, chars: int = EXCERPT_CHARS) -> str:
    """`text` as a JSON string literal (newlines visible as \\n), cut at `chars` characters."""
    cut = text if len(text) <= chars else text[:chars] + "…"
    return json.dumps(cut, ensure_ascii=False)


def excerpt(result: ProbeResult, chars: int = EXCERPT_CHARS) -> str:
    """One line on what came back: the HTTP error, or finish reason, tokens and the start of the text."""
    if result.error_kind == "http_error":
        return result.error_detail or f"HTTP {result.http_status}"
    m = result.measurement
    if result.error_kind is not None:
        phase = f" ({result.timeout_phase})" if result.timeout_phase else ""
        got = f"; got {quote(m.text, chars)} before it" if m is not None and m.text else ""
        return f"{result.error_kind}{phase}: {result.error_detail}{got}"
    if m is None:
        return "no response"
    stop = f", stop_reason={m.stop_reason}" if m.stop_reason is not None else ""
    head = f"HTTP {result.http_status}, finish_reason={m.finish_reason}{stop}"
    thinking = ""
    if m.reasoning_text or m.reasoning_tokens:
        thinking = f" ({m.reasoning_tokens}{'~' if m.reasoning_tokens_estimated else ''} of them reasoning)"
    calls = "".join(f", tool call {c.name}({c.arguments[:60]})" for c in m.tool_calls)
    return f"{head}, {tokens(result)} tokens{thinking}: {quote(m.text, chars)}{calls}"


def tokens(result: ProbeResult) -> str:
    """Completion tokens, with `~` when estimated (the server sent no usage)."""
    m = result.measurement
    if m is None or m.completion_tokens is None:
        return "?"
    return f"{m.completion_tokens}{'~' if m.tokens_estimated else ''}"
