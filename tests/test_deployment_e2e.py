"""Issue 15's done-when, end to end in the daemon against the real mock process: every deployment
knob flipped at run time (`POST /_mock/config`) makes exactly one `doctor` or `drift` alert fire and
reach a real webhook receiver, and resolve when the knob is put back; an unchanged mock fires none
over a long run.

The scheduled job (doctor + fingerprint) is run with `run_now`, the very job the scheduler calls
every `interval_s` (whose 60 s floor stays); rules, engine, outbox and dispatcher are the daemon's.
"""

from __future__ import annotations

from typing import Any

import pytest

from monitor.config import parse_settings
from tests.conftest import chat_probe
from tests.mockserver import MockProcess
from tests.receivers import WebhookReceiver
from tests.test_daemon import run_daemon_in_task, wait_for

MODEL = "glm-4-9b-chat"
UNCHANGED_RUNS = 40
# knob -> the one alert it must raise: (rule, label, value). Several checks or components may see one
# knob (no_stop_tokens breaks stop_tokens, sampling_defaults and structured_output); one alert names it.
KNOBS: list[tuple[dict[str, Any], tuple[str, str, str]]] = [
    ({"no_chat_template": True}, ("doc", "check", "chat_template")),
    ({"no_stop_tokens": True}, ("doc", "check", "stop_tokens")),
    ({"leak_special_tokens": True}, ("doc", "check", "chat_template")),
    ({"default_max_tokens": 3}, ("doc", "check", "sampling_defaults")),
    ({"max_model_len": 4096}, ("drift", "component", "models")),
    ({"server_version": "0.33.1"}, ("drift", "component", "version")),
    ({"chat_template_variant": "no_system"}, ("drift", "component", "chat_template")),
    ({"tokenizer_variant": 1}, ("drift", "component", "tokenizer")),
    ({"weights_variant": 1}, ("drift", "component", "reply")),
]


def _seen(received: list[Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for r in received:
        labels = r.json["alert"]["labels"]
        key = "check" if "check" in labels else "component"
        out.append((r.json["status"], labels["alertname"], key, labels.get(key, "")))
    return out


@pytest.mark.timeout(600)
async def test_each_knob_one_alert_at_the_webhook_and_none_unchanged(mock: MockProcess, sqlite_db_url: str) -> None:
    async with WebhookReceiver() as hook:
        settings = parse_settings(
            {
                "storage": {"url": sqlite_db_url},
                "targets": [{"name": "mock", "base_url": mock.base_url, "model": MODEL, "doctor": {}}],
                "probes": [chat_probe(interval_s=3600, max_tokens=64)],
                "rules": [{"name": "doc", "kind": "doctor"}, {"name": "drift", "kind": "drift"}],
                "receivers": [{"name": "hook", "url": hook.url}],
                "api": {"port": 0},
                "daemon": {"shutdown_grace_s": 5},
            }
        )
        async with run_daemon_in_task(settings) as daemon:
            job = daemon._running().doctor
            for _ in range(UNCHANGED_RUNS):  # the first run sets the references and the baseline
                await job.run_now("mock")
            assert _seen(hook.received) == [], "an unchanged mock raised alerts"
            got: dict[str, list[tuple[str, str, str, str]]] = {}
            for knob, _ in KNOBS:
                before = len(hook.received)
                mock.configure(**knob)
                await job.run_now("mock")
                await wait_for(lambda b=before: len(hook.received) > b, what=f"an alert for {knob}")  # type: ignore[misc]
                await job.run_now("mock")  # still changed: still firing, not notified again
                mock.reset()
                await job.run_now("mock")
                await wait_for(
                    lambda b=before: any(s == "resolved" for s, *_ in _seen(hook.received[b:])),  # type: ignore[misc]
                    what=f"the resolution for {knob}",
                )
                await job.run_now("mock")  # back to the baseline: quiet
                got[repr(knob)] = _seen(hook.received[before:])
            expected = {
                repr(knob): [("firing", rule, key, value), ("resolved", rule, key, value)]
                for knob, (rule, key, value) in KNOBS
            }
            assert got == expected
