"""Load shapes as data: a list of stages, each holding or ramping to a level (users or requests/s).

The same stages drive both load models: Locust's ``LoadTestShape`` turns a level into a user
count (closed loop) and the open-loop scheduler turns it into an arrival rate. They travel to
the Locust process as text, ``"8@30s,~64@1m,8@30s"``: ``LEVEL@DURATION`` holds the level, and a
leading ``~`` ramps linearly from the previous level (0 at the start) to LEVEL over the stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitor.config import to_seconds
from monitor.errors import ConfigError

__all__ = [
    "SHAPES",
    "Stage",
    "build_shape",
    "format_stages",
    "level_at",
    "parse_stages",
    "stage_bounds",
    "sweep_stages",
    "total_duration_s",
]

SHAPES = ("ramp", "step", "spike")
STEP_COUNT = 5
SPIKE_BASE_FRACTION = 0.2
_STAGE = re.compile(r"^\s*(~)?\s*(\d+(?:\.\d+)?)\s*@\s*(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class Stage:
    duration_s: float
    level: float
    ramp: bool = False

    def __str__(self) -> str:
        return f"{'~' if self.ramp else ''}{self.level:g}@{self.duration_s:g}s"


def build_shape(kind: str, peak: float, duration_s: float) -> tuple[Stage, ...]:
    """A named shape reaching ``peak`` within ``duration_s``, or explicit stages (``8@30s,~64@1m``).

    * ``ramp``: linear from 0 to peak over the whole duration;
    * ``step``: five equal steps of peak/5, 2·peak/5, ... peak;
    * ``spike``: 20 % of peak, then peak for the middle fifth, then 20 % again.
    """
    if kind == "ramp":
        return (Stage(duration_s, peak, ramp=True),)
    if kind == "step":
        return tuple(Stage(duration_s / STEP_COUNT, peak * (i + 1) / STEP_COUNT) for i in range(STEP_COUNT))
    if kind == "spike":
        base = peak * SPIKE_BASE_FRACTION
        return (Stage(duration_s * 0.4, base), Stage(duration_s * 0.2, peak), Stage(duration_s * 0.4, base))
    if "@" in kind:
        return parse_stages(kind)
    raise ConfigError(f"--shape: unknown shape {kind!r} (use {', '.join(SHAPES)} or stages like 8@30s,~64@1m)")


def parse_stages(text: str, *, option: str = "--shape") -> tuple[Stage, ...]:
    stages: list[Stage] = []
    for number, part in enumerate(text.split(","), start=1):
        match = _STAGE.match(part)
        if match is None:
            raise ConfigError(f"{option}: stage {number} {part.strip()!r}: expected LEVEL@DURATION such as 16@30s")
        ramp, level, duration = match.groups()
        try:
            duration_s = to_seconds(duration)
        except ConfigError as exc:
            raise ConfigError(f"{option}: stage {number}: {exc}") from None
        if duration_s <= 0:
            raise ConfigError(f"{option}: stage {number} {part.strip()!r}: duration must be positive")
        stages.append(Stage(duration_s, float(level), ramp=bool(ramp)))
    return tuple(stages)


def format_stages(stages: tuple[Stage, ...]) -> str:
    return ",".join(str(stage) for stage in stages)


def sweep_stages(start: float, step: float, steps: int, step_s: float) -> tuple[Stage, ...]:
    """Rates start, start+step, ... (``steps`` of them), each held for ``step_s``."""
    return tuple(Stage(step_s, start + step * i) for i in range(steps))


def total_duration_s(stages: tuple[Stage, ...]) -> float:
    return sum(stage.duration_s for stage in stages)


def stage_bounds(stages: tuple[Stage, ...]) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of each stage, relative to the start of the test."""
    bounds, start = [], 0.0
    for stage in stages:
        bounds.append((start, start + stage.duration_s))
        start += stage.duration_s
    return bounds


def level_at(stages: tuple[Stage, ...], t_s: float) -> float | None:
    """The level ``t_s`` seconds into the test; None once every stage is over."""
    start, previous = 0.0, 0.0
    for stage in stages:
        end = start + stage.duration_s
        if t_s < end:
            if stage.ramp:
                return previous + (stage.level - previous) * max(0.0, t_s - start) / stage.duration_s
            return stage.level
        start, previous = end, stage.level
    return None
