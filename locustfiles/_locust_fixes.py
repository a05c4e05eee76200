"""Work-arounds for Locust's own defects, applied when the locustfiles are imported.

A worker that receives a spawn message keeps the master's custom options with a comprehension that
calls ``locust.argument_parser.default_args_dict()`` once per option (Locust 2.47,
``WorkerRunner.handle_message``): each call builds Locust's whole argument parser and parses an
empty command line, about 20 ms on an idle core. With Locust's 56 options and the ``--llm-*`` ones
that is over 1.5 s of CPU in the worker's message loop, during which it sends no heartbeat and
spawns no user. On a busy machine it took past Locust's three-heartbeat limit: the master marked
both workers missing and a 3 s run finished no request.

The defaults depend only on Locust's own options and the ``LOCUST_*`` environment, neither of which
changes while the process runs, so they are built once; each caller gets its own copy.
"""

from __future__ import annotations

from locust import argument_parser

import functools
from typing import Any

__all__ = ["apply"]

_defaults = functools.cache(argument_parser.default_args_dict)


def _default_args_dict() -> dict[str, Any]:
    return dict(_defaults())


def apply() -> None:
    """Idempotent: ``locust.runners`` looks the module attribute up on every call."""
    argument_parser.default_args_dict = _default_args_dict
