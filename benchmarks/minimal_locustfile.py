"""The baseline for benchmarks/loadgen.py: the smallest honest Locust file that streams completions.

What a user would write without llm-monitor: one ``FastHttpUser``, ``self.client.post(...,
stream=True)``, the SSE body read line by line as it arrives, ``json.loads`` on every event and
``time.time()`` when an event with text comes in. TTFT is the time the first non-empty ``data:``
event arrives. ``resp.stream.readline()`` hands each line over as soon as it is complete;
``iter_content(1024)`` would wait for 1,024 bytes and make the baseline a straw man.

With ``--trace-file PATH`` every request appends one JSON line: ``id`` (the ``X-Request-Id`` sent),
``start_wall``, ``first_token_wall``, ``token_walls`` (every text event, wall-clock seconds) and
``error``, so loadgen.py computes the error of both files against the mock's send times alike.

Run: ``locust -f benchmarks/minimal_locustfile.py --headless -u 32 -r 32 -t 15s --host http://127.0.0.1:8000``
"""

from __future__ import annotations

from locust import FastHttpUser, constant, events, run_single_user, task

import json
import time
import uuid
from typing import IO, Any

TRACE: list[IO[str]] = []


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--trace-file", default="", help="Append one JSON line per request to this file.")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every completion.")


@events.test_start.add_listener
def _open(environment: Any, **kw: Any) -> None:
    if environment.parsed_options.trace_file:
        TRACE.append(open(environment.parsed_options.trace_file, "a", encoding="utf-8"))


@events.quitting.add_listener
def _close(environment: Any, **kw: Any) -> None:
    for trace in TRACE:
        trace.close()


class CompletionUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def complete(self) -> None:
        rid = str(uuid.uuid4())
        body = {"prompt": "Hello", "max_tokens": self.environment.parsed_options.max_tokens, "stream": True,
                "ignore_eos": True}  # fmt: skip
        token_walls: list[float] = []
        error = None
        start_wall = time.time()
        with self.client.post(
            "/v1/completions", json=body, headers={"X-Request-Id": rid}, stream=True, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                error = f"HTTP {resp.status_code}"
                resp.failure(error)
            else:
                while line := resp.stream.readline(b"\n"):
                    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                        continue
                    if json.loads(line[6:])["choices"][0]["text"]:
                        token_walls.append(time.time())
                if not token_walls:
                    error = "no tokens"
                    resp.failure(error)
        if TRACE:
            first = token_walls[0] if token_walls else None
            record = {"id": rid, "start_wall": start_wall, "first_token_wall": first, "token_walls": token_walls,
                      "error": error}  # fmt: skip
            TRACE[0].write(json.dumps(record) + "\n")


if __name__ == "__main__":
    run_single_user(CompletionUser)
