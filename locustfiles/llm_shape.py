"""A load shape for locustfiles/llm.py: user counts that follow ``--llm-stages`` (hold or ramp).

Not a scenario on its own: load it next to the users, comma-separated, and describe the stages
as ``USERS@DURATION`` (``~`` ramps linearly from the previous stage)::

    locust -f locustfiles/llm.py,locustfiles/llm_shape.py --host http://127.0.0.1:8000 --headless \
        --llm-stages "4@30s,~64@2m,64@1m,4@30s"

The test stops when the last stage ends. ``llm-monitor loadtest --shape ramp|step|spike`` builds
the stages from ``--users`` and ``--duration``.
"""

from __future__ import annotations

from locust import LoadTestShape

import math

import _common  # noqa: F401  (registers the --llm-* options)

from monitor.loadtest.shapes import Stage, level_at, parse_stages

# Users are started at least this fast, and faster when a ramp needs it.
MIN_SPAWN_RATE = 10.0


class LLMStagesShape(LoadTestShape):
    """``tick()`` returns the user count of the current stage, or None after the last one."""

    stages: tuple[Stage, ...] | None = None

    def tick(self) -> tuple[int, float] | None:
        if self.stages is None:
            options = self.runner.environment.parsed_options if self.runner is not None else None
            spec = options.llm_stages if options is not None else ""
            if not spec:
                raise ValueError("locustfiles/llm_shape.py needs --llm-stages, for example 4@30s,~64@2m")
            self.stages = parse_stages(spec, option="--llm-stages")
        level = level_at(self.stages, self.get_run_time())
        if level is None:
            return None
        steepest = max((s.level / s.duration_s for s in self.stages if s.ramp), default=0.0)
        return math.ceil(level), max(MIN_SPAWN_RATE, 2 * steepest)
