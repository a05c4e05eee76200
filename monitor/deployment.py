"""What the scheduled doctor and the deployment fingerprint tell the alert engine (ground floor).

One `DeploymentObservation` per doctor check or fingerprint component per scheduled run. The
producer decides whether the observation is `active` (the alert condition holds): a doctor check
whose verdict is worse than its reference verdict, or a fingerprint component that differs from the
accepted baseline. `doctor` and `drift` alert rules route and time them (`for_s`, receivers,
silences); they do not judge them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["DeploymentKind", "DeploymentObservation"]

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
