"""What every check gets: the client, what check 1 learned about the server, and shared helpers."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.checks_pipelines import budget_exhausted
from monitor.doctor.client import DoctorClient, Exchange
from monitor.doctor.remedies import Family
from monitor.results import CheckResult

# The incident's message (wire reference §6.2).
HELLO: list[dict[str, str]] = [{"role": "user", "content": "你好"}]
# Room left for a short prompt when a max_tokens value is fitted into a small context window.
_PROMPT_ROOM_TOKENS = 64


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What `/v1/models` said. `proceed` is False when nothing else can work (unknown model, no key)."""

    served: tuple[str, ...]
    model: str | None
    max_model_len: int | None
    proceed: bool = True


@dataclass(frozen=True, slots=True)
class Context:
    client: DoctorClient
    info: ServerInfo
    family: Family
    # Why chat-based checks cannot run (the server rejects chat requests; check 2 reports it).
    chat_blocked: str | None = None

    def fit(self, max_tokens: int) -> int:
        return fit_max_tokens(self.info, max_tokens)


def fit_max_tokens(info: ServerInfo, max_tokens: int) -> int:
    """`max_tokens` reduced so that a short prompt plus the reply fits in max_model_len.

    Otherwise a server with a small window would answer 400 and look like it has no chat template.
    """
    limit = info.max_model_len
    if limit is None:
        return max_tokens
    return max(1, min(max_tokens, limit - min(_PROMPT_ROOM_TOKENS, limit // 2)))


def failed_check(exchange: Exchange, name: str) -> CheckResult | None:
    """The probe check `name` (run_on, template_leak, ...) if it failed on this reply."""
    return next((c for c in exchange.result.failed_checks() if c.name == name), None)


def reasoning_only(exchange: Exchange) -> bool:
    """The reply is all reasoning, no answer: the thinking used max_tokens (check 11 reports it, others defer)."""
    m = exchange.result.measurement
    return exchange.ok and m is not None and budget_exhausted(m)


def reasoning_note(exchange: Exchange) -> str:
    """`63 tokens of reasoning and no answer within max_tokens=64`, for the checks that defer to check 11."""
    m, limit = exchange.result.measurement, exchange.result.max_tokens
    used = m.reasoning_tokens if m is not None else 0
    within = f"within max_tokens={limit}" if limit is not None else "before the context window was full"
    return f"{used} tokens of reasoning and no answer {within}"
