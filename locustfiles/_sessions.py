"""Multi-turn sessions for closed-loop users: each user keeps its conversation and resends the history.

Turn 1 sends ``[system prefix?, user 1]``; the reply's text is appended as the assistant's message,
turn 2 resends the whole history plus user 2, and so on. A failed turn ends the session (its
history is no longer what a real client would send). Each request carries ``Request(turn=k)``,
so TTFT is recorded by turn number (summary["turns"]).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

from _requests import Request, Session, config
from _turns import wait_quiet

_NEXT = itertools.count()


def next_session() -> Session:
    """Sessions are shared by the process's users in turn (a session may be replayed when they run out)."""
    sessions = config().sessions
    return sessions[next(_NEXT) % len(sessions)]


def turns(session: Session) -> Iterator[tuple[int, Request, list[dict[str, str]]]]:
    """(turn number, request, history so far); the caller appends the assistant reply to the history."""
    cfg = config()
    assert cfg.paths is not None
    history: list[dict[str, str]] = [{"role": "system", "content": session.system}] if session.system else []
    for k, turn in enumerate(session.turns, 1):
        history.append({"role": "user", "content": turn.content})
        body = cfg.chat_body(history, turn.max_tokens, session.extra)
        yield k, Request(cfg.paths["chat"], body, turn=k), history


def run_session(user: object) -> None:
    """One whole conversation for ``user`` (an LLMUser)."""
    from _common import LLMUser

    assert isinstance(user, LLMUser)
    for _k, request, history in turns(next_session()):
        wait_quiet()
        m = user.send("chat", 0, time.perf_counter(), request=request)
        if m is None:
            return
        history.append({"role": "assistant", "content": m.text})
