"""Per-target deployment watching: `targets[].doctor` (the doctor and the deployment fingerprint on a
schedule), `targets[].metrics` (scraping the server's own Prometheus /metrics) and `targets[].price`
(what a million tokens cost).

All three are optional: a target without them is probed exactly as before.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from monitor.config.base import Crontab, Model, Seconds, choices

__all__ = [
    "DOCTOR_CHECK_IDS",
    "FINGERPRINT_COMPONENTS",
    "DoctorCheckId",
    "DoctorSchedule",
    "FingerprintComponent",
    "FingerprintSettings",
    "PriceSettings",
    "ScrapeSettings",
]

# The doctor's checklist, in report order. Ids are stable: they name stored probes `doctor.<id>`,
# JSON entries, `doctor` alert labels and `doctor.checks:` entries in the config.
DOCTOR_CHECK_IDS: tuple[str, ...] = (
    "reachable", "chat_template", "endpoint_semantics", "stop_tokens", "truncation",
    "streaming", "multi_turn", "chinese_tokenization", "limits", "sampling_defaults",
    "reasoning_parser", "tool_parser", "structured_output",
)  # fmt: skip

# What identifies a deployment, each compared on its own (a `drift` alert names the component), from
# the most to the least fundamental: when several change in one run, the first is taken as the cause
# (a new tokenizer also changes the template's token ids, the reply and its logprobs; see deployment.fold).
FINGERPRINT_COMPONENTS: tuple[str, ...] = (
    "models",  # /v1/models: ids, max_model_len, root
    "version",  # /version (vLLM), /props build info (llama.cpp) where served
    "tokenizer",  # token ids of fixed prompts through /tokenize
    "chat_template",  # the rendered fixed conversation (vLLM /tokenize with messages), else its prompt-token count
    "stop_behaviour",  # finish_reason and length of a reply that should end on its own
    "sampling_defaults",  # what comes back when temperature and max_tokens are omitted
    "reply",  # temperature 0 + seed: the reply text
    "logprobs",  # ... and the top-k logprobs of its first tokens, compared as distributions
)


def _no_repeats(values: list[str]) -> list[str]:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ValueError(f"{value!r} is listed twice")
    return values


def _known(names: tuple[str, ...], what: str) -> Any:
    def check(value: Any) -> Any:
        if value not in names:
            raise ValueError(f"unknown {what} {value!r} ({choices(set(names))})")
        return value

    return check


DoctorCheckId = Annotated[str, BeforeValidator(_known(DOCTOR_CHECK_IDS, "doctor check"))]
FingerprintComponent = Annotated[str, BeforeValidator(_known(FINGERPRINT_COMPONENTS, "fingerprint component"))]


class FingerprintSettings(Model):
    """`targets[].doctor.fingerprint`: which components to record, and how far logprobs may move."""

    enabled: bool = True
    components: list[FingerprintComponent] | None = Field(None, description="default: every component")
    # Logprob drift compares distributions over the top-k, never exact floats: batching alone moves them.
    logprob_tokens: int = Field(4, ge=1, le=32, description="first reply tokens whose top-k logprobs are compared")
    top_logprobs: int = Field(5, ge=1, le=20, description="k of the top-k")
    logprob_metric: Literal["tv", "kl"] = Field("tv", description="total variation or KL divergence")
    logprob_threshold: float = Field(0.2, gt=0, le=10, description="drift when the mean per-token divergence exceeds")
    seed: int = Field(1234, ge=0, le=2**31 - 1)

    @field_validator("components")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _no_repeats(value)

    @property
    def effective_components(self) -> tuple[str, ...]:
        return tuple(self.components) if self.components is not None else FINGERPRINT_COMPONENTS


class DoctorSchedule(Model):
    """`targets[].doctor`: run the doctor's checks (and record the fingerprint) on an interval or a cron."""

    interval_s: Seconds = Field(3600.0, ge=60, description="how often; the doctor sends about 17 requests")
    cron: Crontab | None = None
    jitter_s: Seconds = Field(0.0, ge=0)
    checks: list[DoctorCheckId] | None = Field(None, description="default: every check")
    fingerprint: FingerprintSettings = Field(default_factory=FingerprintSettings)

    @model_validator(mode="after")
    def _one_schedule(self) -> DoctorSchedule:
        if self.cron is not None and "interval_s" in self.model_fields_set:
            raise ValueError("give interval_s or cron, not both")
        return self

    @field_validator("checks")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _no_repeats(value)

    @property
    def effective_checks(self) -> tuple[str, ...]:
        return tuple(self.checks) if self.checks is not None else DOCTOR_CHECK_IDS


class ScrapeSettings(Model):
    """`targets[].metrics`: scrape the server's Prometheus exposition beside the probes."""

    url: str | None = Field(None, description="default: the base_url's origin + /metrics")
    interval_s: Seconds = Field(15.0, ge=1, description="Prometheus' usual scrape interval")
    timeout_s: Seconds = Field(5.0, gt=0, le=60)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="a larger exposition is a scrape error")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, for example http://127.0.0.1:8000/metrics")
        return value

    def resolved_url(self, base_url: str) -> str:
        """`url`, or the origin of `base_url` (scheme://host:port) + /metrics, where vLLM and llama.cpp serve it."""
        if self.url is not None:
            return self.url
        match = re.match(r"^(https?://[^/\s]+)", base_url)
        assert match is not None  # TargetSettings validated base_url
        return match[1] + "/metrics"


class PriceSettings(Model):
    """`targets[].price`: what the target costs per million tokens (cost per probe, per load run)."""

    input_per_1m: float = Field(ge=0, le=1_000_000, description="price of 1M prompt tokens")
    output_per_1m: float = Field(ge=0, le=1_000_000, description="price of 1M completion tokens (reasoning included)")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code, shown beside every cost")

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """The cost of one request, or None when neither token count is known."""
        if prompt_tokens is None and completion_tokens is None:
            return None
        return ((prompt_tokens or 0) * self.input_per_1m + (completion_tokens or 0) * self.output_per_1m) / 1e6
