"""What the scheduled doctor and the deployment fingerprint tell the alert engine (ground floor).

One `DeploymentObservation` per doctor check or fingerprint component per scheduled run. The
producer decides whether the observation is `active` (the alert condition holds): a doctor check
whose verdict is worse than its reference verdict, or a fingerprint component that differs from the
accepted baseline. `doctor` and `drift` alert rules route and time them (`for_s`, receivers,
silences); they do not judge them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

__all__ = ["DeploymentKind", "DeploymentObservation", "fold"]

DeploymentKind = Literal["doctor", "drift"]


@dataclass(frozen=True, slots=True)
class DeploymentObservation:
    kind: DeploymentKind
    target: str
    key: str  # the doctor check id ("stop_tokens") or the fingerprint component ("chat_template")
    active: bool  # the condition holds: verdict worse than the reference, or component != baseline
    at: datetime
    summary: str  # one line, already cleaned and capped (server text is untrusted)
    before: str = ""  # the reference verdict or baseline value, rendered for a diff (capped)
    after: str = ""  # this run's verdict or value, rendered for a diff (capped)
    fix: str | None = None  # the doctor's fix for this check and family


# Drift components from the most to the least fundamental: when several change in one run, the first
# is taken as the cause (a new tokenizer also changes the template's token ids, the reply and its logprobs).
_CAUSE_ORDER: tuple[str, ...] = (
    "models", "version", "tokenizer", "chat_template", "sampling_defaults", "stop_behaviour", "reply", "logprobs",
)  # fmt: skip


def fold(observations: Sequence[DeploymentObservation]) -> list[DeploymentObservation]:
    """One scheduled run's observations as alerts should see them: one change, one alert.

    - A doctor check that got worse explains the fingerprint: every drift observation of that
      target is inactive this run (the doctor alert names the check and its fix; the changed
      components are listed in its summary).
    - Otherwise, of the components that changed in this run, the most fundamental one stays
      active and names the others ("also changed: reply, logprobs"); the others are inactive.
    Doctor observations pass through unchanged; the order of the input is kept.
    """
    out: list[DeploymentObservation] = []
    targets = {o.target for o in observations}
    failing = {t: [o.key for o in observations if o.target == t and o.kind == "doctor" and o.active] for t in targets}
    changed = {
        t: sorted(
            (o.key for o in observations if o.target == t and o.kind == "drift" and o.active),
            key=lambda k: _CAUSE_ORDER.index(k) if k in _CAUSE_ORDER else len(_CAUSE_ORDER),
        )
        for t in targets
    }
    for o in observations:
        drifted = changed[o.target]
        if o.kind == "doctor" and o.active and drifted:
            o = replace(o, summary=f"{o.summary} (fingerprint also changed: {', '.join(drifted)})")
        elif o.kind == "drift" and o.active and failing[o.target]:
            o = replace(o, active=False, summary=f"changed, explained by doctor check {failing[o.target][0]}")
        elif o.kind == "drift" and o.active and o.key != drifted[0]:
            o = replace(o, active=False, summary=f"changed with {drifted[0]}, which the alert names")
        elif o.kind == "drift" and o.active and len(drifted) > 1:
            o = replace(o, summary=f"{o.summary} (also changed: {', '.join(drifted[1:])})")
        out.append(o)
    return out
