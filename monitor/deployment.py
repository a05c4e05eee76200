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

from monitor.config.deployment import FINGERPRINT_COMPONENTS

__all__ = ["DeploymentKind", "DeploymentObservation", "fold"]

# Fingerprint components, most fundamental first: of several that change together, the first is the cause.
_CAUSES = FINGERPRINT_COMPONENTS

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


def fold(observations: Sequence[DeploymentObservation]) -> list[DeploymentObservation]:
    """One scheduled run's observations as alerts should see them: one change, one alert.

    - Of the doctor checks that got worse in one run, the first (checklist order, the order the
      producer emits) stays active and names the others ("also worse: ..."): a server that lost
      its stop tokens fails stop_tokens, and replies that run on also break sampling_defaults and
      structured_output. The others are inactive for alerting; the doctor's report keeps them all.
    - A doctor check that got worse explains the fingerprint: every drift observation of that
      target is inactive this run (the doctor alert lists the changed components).
    - Otherwise, of the components that changed in this run, the most fundamental one stays
      active and names the others ("also changed: reply, logprobs"); the others are inactive.
    The order of the input is kept; the reports and stored findings are not affected.
    """
    out: list[DeploymentObservation] = []
    targets = {o.target for o in observations}
    failing = {t: [o.key for o in observations if o.target == t and o.kind == "doctor" and o.active] for t in targets}
    changed = {
        t: sorted(
            (o.key for o in observations if o.target == t and o.kind == "drift" and o.active),
            key=lambda k: _CAUSES.index(k) if k in _CAUSES else len(_CAUSES),
        )
        for t in targets
    }
    for o in observations:
        if o.active:
            o = _folded(o, failing[o.target], changed[o.target])
        out.append(o)
    return out


def _folded(o: DeploymentObservation, failing: list[str], drifted: list[str]) -> DeploymentObservation:
    """An active observation in the light of the others of its target in the same run."""
    if o.kind == "doctor":
        if o.key != failing[0]:
            return replace(o, active=False, summary=f"{o.summary} (worse with {failing[0]}, which the alert names)")
        notes = [f"also worse: {', '.join(failing[1:])}"] if len(failing) > 1 else []
        notes += [f"fingerprint also changed: {', '.join(drifted)}"] if drifted else []
        return replace(o, summary=f"{o.summary} ({'; '.join(notes)})") if notes else o
    if failing:
        return replace(o, active=False, summary=f"changed, explained by doctor check {failing[0]}")
    if o.key != drifted[0]:
        return replace(o, active=False, summary=f"changed with {drifted[0]}, which the alert names")
    return replace(o, summary=f"{o.summary} (also changed: {', '.join(drifted[1:])})") if len(drifted) > 1 else o
