"""`doctor` and `drift` alerts: what the producers hand the engine, and what one observation says.

The scheduled doctor and the deployment fingerprint depend on `DeploymentSink` (the engine
implements it), never on the engine itself. Each `DeploymentObservation` is one check or one
component of one target; the producer already decided whether the condition holds (`active`), so
the rule only routes and times it. Its text fills the annotation templates:

    {check} (doctor) / {component} (drift)   what the alert is about
    {detail}                                 the producer's one-line summary of this run
    {before}, {after}                        the reference verdict or baseline value, and this run's
    {diff}                                   before/after as a unified diff (`-old` / `+new` lines)
    {fix}                                    the doctor's fix for this check, or how to accept a drift
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Protocol

from monitor.alerts.rules import Observation
from monitor.alerts.state import AlertRecord
from monitor.config.alerts import DEPLOYMENT_KEY_LABELS
from monitor.deployment import DeploymentObservation

__all__ = ["DIFF_CONTEXT_LINES", "DeploymentSink", "diff", "held", "observe"]

# A chat template is dozens of lines; one line of context around each change is enough to place it.
DIFF_CONTEXT_LINES = 1


class DeploymentSink(Protocol):
    """Where the scheduled doctor and the fingerprint send their observations (`AlertEngine`)."""

    async def on_deployment(self, observations: Sequence[DeploymentObservation]) -> None: ...


def diff(before: str, after: str) -> str:
    """`before` -> `after` as unified-diff lines without the file header ("" when they are equal)."""
    if before == after:
        return ""
    old, new = before.splitlines() or [""], after.splitlines() or [""]
    if len(old) == 1 and len(new) == 1:
        return f"-{old[0]}\n+{new[0]}"
    lines = difflib.unified_diff(old, new, lineterm="", n=DIFF_CONTEXT_LINES)
    return "\n".join(line for line in lines if not line.startswith(("---", "+++")))


def observe(obs: DeploymentObservation) -> Observation:
    """The rule-side reading of one observation: the condition and the template fields."""
    context = {
        DEPLOYMENT_KEY_LABELS[obs.kind]: obs.key,
        "detail": obs.summary,
        "before": obs.before,
        "after": obs.after,
        "diff": diff(obs.before, obs.after),
        "fix": obs.fix or "",
    }
    return Observation(obs.active, None, None, context)


def held(prev: AlertRecord) -> Observation:
    """The timer's reading between two runs: the last observation's condition, as the state records it.

    Pending means it held; firing holds unless it cleared (`clear_since`, counting down
    `keep_firing_for_s`). Derived from the stored state, so a restart reads the same.
    """
    met = prev.state == "pending" or (prev.state == "firing" and prev.clear_since is None)
    return Observation(met, None, None)
