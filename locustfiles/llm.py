"""Closed-loop load on an OpenAI-compatible server: N users, each sending its next request as soon as
the previous reply has finished (chat and completion alternately by default, streaming).

Measures, per endpoint, time to first token, every inter-token gap, end-to-end latency, output
tokens per second, truncation and reply checks, with the same meter as llm-monitor's probes.
Results show up in Locust's statistics as ``E2E chat``, ``TTFT chat``, ``ITL chat`` and
``tokens/s chat`` (see locustfiles/_common.py for what each entry holds).

Run (``--host`` is the server root; ``http://127.0.0.1:8000/v1`` works too)::

    locust -f locustfiles/llm.py --host http://127.0.0.1:8000                      # web UI
    locust -f locustfiles/llm.py --host http://127.0.0.1:8000 --headless -u 16 -r 4 -t 1m \
        --llm-endpoint chat --llm-max-tokens 256 --llm-prompts prompts.jsonl

``llm-monitor loadtest`` runs this file headless and adds SLOs, history and reports.
"""

from __future__ import annotations

from locust import run_single_user, task

import time

from _common import LLMUser
from _sessions import run_session
from _turns import wait_quiet


class LLMChatCompletionUser(LLMUser):
    """Sends one request after another, cycling through prompts and endpoints."""

    def on_start(self) -> None:
        self.turn = 0

    @task
    def generate(self) -> None:
        # In a burst of replies, reading (and timing) tokens comes before starting new requests.
        if self.cfg.sessions:
            run_session(self)  # a planned conversation (--turns): the history is resent each turn
            return
        wait_quiet()
        endpoints = self.cfg.endpoints
        self.turn += 1
        self.send(endpoints[self.turn % len(endpoints)], self.turn // len(endpoints), time.perf_counter())


if __name__ == "__main__":
    run_single_user(LLMChatCompletionUser)
