"""vLLM 0.32's output parsers replayed on the mock's engine steps: reasoning, content and tool calls.

`parse(gen, setup)` gives both views vLLM builds from one output: the message of a non-streamed
reply, and the delta of every streamed engine step (None: vLLM sends no chunk for that step; the
last step always has one, `{}` when empty). Written from, and checked against, vLLM 0.32's
vllm/parser/abstract_parser.py (`DelegatingParser.parse`/`parse_delta`), vllm/parser/engine/
parser_engine.py with vllm/parser/glm47_moe.py (glm45), vllm/parser/qwen3.py with
vllm/tool_parsers/hermes_tool_parser.py (qwen3). The wire rules are listed in monitor/mock/reasoning.py.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.mock import glm
from monitor.mock.engine import Generation
from monitor.mock.reasoning import Setup

__all__ = ["Parsed", "ToolCall", "parse", "tool_call_id"]

_MARKER_RE = re.compile("(" + "|".join(re.escape(marker) for marker in glm.ADDED_IDS) + ")")
_ADDED = frozenset(glm.ADDED_IDS.values())
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"]+)"')
_ARGS_RE = re.compile(r'"arguments"\s*:\s*')
Delta = dict[str, Any]


def tool_call_id() -> str:
    """`make_tool_call_id()`: "chatcmpl-tool-" and vLLM's 16-hex-digit random_uuid()."""
    return f"chatcmpl-tool-{uuid.uuid4().int & (2**64 - 1):016x}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # a JSON document, as on the wire


@dataclass(slots=True)
class Parsed:
    reasoning: str | None
    content: str | None
    tool_calls: list[ToolCall]
    steps: list[Delta | None]
    reasoning_tokens: list[int]  # running count after each step (continuous usage)
    finish_reason: str  # non-streamed
    stream_finish_reason: str


@dataclass(slots=True)
class _Call:
    index: int
    name: str = ""
    body: str = ""  # hermes: the JSON text
    pairs: list[tuple[str, str]] = field(default_factory=list)  # glm: closed <arg_key>/<arg_value> pairs
    key: str = ""
    value: str | None = None  # glm: the open <arg_value>'s text
    mode: str = "name"
    name_sent: bool = False
    sent: str = ""
    closed: bool = False


def _types(prop: object) -> set[str]:
    declared = prop.get("type") if isinstance(prop, Mapping) else None
    return {declared} if isinstance(declared, str) else {t for t in declared or [] if isinstance(t, str)}


class _Replay:
    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.glm = setup.family == "glm45"
        self.phase = "reasoning" if setup.reasoning_parser and setup.thinking else "content"
        self.reasoning = ""
        self.content = ""
        self.calls: list[_Call] = []
        self.held_reasoning = ""  # glm: trailing whitespace, sent once more reasoning follows
        self.held_content = ""  # glm: leading whitespace-only content, sent with the first real text
        self.content_started = False

    # -- pieces of one step --------------------------------------------------------------------

    def _reasoning_piece(self, text: str, out: dict[str, str]) -> None:
        self.reasoning += text
        if self.glm:  # strip_trailing_reasoning_whitespace
            combined = self.held_reasoning + text
            text = combined.rstrip()
            self.held_reasoning = combined[len(text) :]
        out["reasoning"] = out.get("reasoning", "") + text

    def _content_piece(self, text: str, out: dict[str, str]) -> None:
        if self.calls and not self.glm:
            return  # hermes streams only the text before the first <tool_call>
        self.content += text
        if self.glm and self.setup.tool_parser and not self.content_started:
            combined = self.held_content + text
            if not combined.strip():
                self.held_content = combined
                return
            self.content_started, self.held_content, text = True, "", combined
        out["content"] = out.get("content", "") + text

    def _marker(self, marker: str, deltas: list[Delta]) -> bool:
        """Apply a marker in the current phase; False when it is plain text there."""
        if self.phase == "reasoning":
            if marker == "</think>":
                self.phase, self.held_reasoning = "content", ""
                return True
            return marker == "<think>"
        call = self.calls[-1] if self.calls and not self.calls[-1].closed else None
        if call is not None:
            return self._call_marker(call, marker, deltas)
        if not self.setup.tool_parser:
            return False
        if marker == "<tool_call>":
            self.held_content = ""
            self.calls.append(_Call(index=len(self.calls)))
            return True
        # glm45 with its reasoning parser absorbs a stray </think> in content.
        return self.glm and self.setup.reasoning_parser and marker == "</think>"

    def _call_marker(self, call: _Call, marker: str, deltas: list[Delta]) -> bool:
        if marker == "</tool_call>":
            call.closed = True
            self._finish_call(call, deltas)
            return True
        if not self.glm:
            return False
        if marker == "<arg_key>":
            if not call.name_sent:
                self._send_name(call, deltas)
            call.mode, call.key, call.value = "key", "", None
        elif marker == "</arg_key>":
            call.mode = "between"
        elif marker == "<arg_value>":
            call.mode, call.value = "value", ""
            self._stream_args(call, deltas)  # the key (and an opening quote) go out with the tag
        elif marker == "</arg_value>" and call.value is not None:
            call.pairs.append((call.key, call.value))
            call.mode, call.value = "between", None
        else:
            return False
        return True

    def _call_text(self, call: _Call, text: str) -> None:
        if not self.glm:
            call.body += text
        elif call.mode == "name":
            call.name += text
        elif call.mode == "key":
            call.key += text
        elif call.mode == "value" and call.value is not None:
            call.value += text

    # -- tool-call deltas -----------------------------------------------------------------------

    def _send_name(self, call: _Call, deltas: list[Delta], arguments: str | None = None) -> None:
        name = call.name.strip()
        if self.setup.tool_schemas and name not in self.setup.tool_schemas:
            return  # validate_tool_names (glm45); hermes takes any name
        call.name_sent = True
        function: Delta = {"name": name} if arguments is None else {"name": name, "arguments": arguments}
        deltas.append({"id": tool_call_id(), "type": "function", "index": call.index, "function": function})

    def _properties(self, call: _Call) -> Mapping[str, Any]:
        props = (self.setup.tool_schemas.get(call.name.strip()) or {}).get("properties")
        return props if isinstance(props, Mapping) else {}

    def _value(self, call: _Call, key: str, text: str) -> object:
        """The schema-typed value of a GLM <arg_value> (vLLM's `_fix_arg_types`): strings stay raw."""
        props = self._properties(call)
        if key not in props or _types(props[key]) == {"string"}:
            return text
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _glm_json(self, call: _Call, *, partial: bool, closed_only: bool = False) -> str:
        """The arguments so far; `partial` cuts after the last key (and keeps an open string open).

        Like vLLM's safe prefix: a non-string last value may still change, so it waits for the next
        key or the end of the call; a string value streams as it is written.
        """
        open_pair = [(call.key, call.value)] if call.value is not None and not closed_only else []
        pairs = [*call.pairs, *open_pair]
        if not partial:
            return json.dumps({k: self._value(call, k, v) for k, v in pairs}, ensure_ascii=False)
        if not pairs:
            return ""
        done = "".join(f"{self._pair(call, k, v)}, " for k, v in pairs[:-1])
        key, value = pairs[-1]
        prefix = "{" + done + json.dumps(key, ensure_ascii=False) + ": "
        props = self._properties(call)
        if not props or _types(props.get(key)) == {"string"}:
            prefix += json.dumps(value, ensure_ascii=False)[:-1]  # the string so far, still open
        return prefix

    def _pair(self, call: _Call, key: str, value: str) -> str:
        return f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(self._value(call, key, value), ensure_ascii=False)}"

    def _hermes_args(self, call: _Call) -> str | None:
        text = call.body.strip()
        match = _ARGS_RE.search(text)
        if match is None:
            return None
        tail = text[match.end() :]
        try:
            json.loads(text)
        except ValueError:
            return tail
        tail = tail.rstrip()
        return tail[:-1].rstrip() if tail.endswith("}") else tail

    def _stream_args(self, call: _Call, deltas: list[Delta]) -> None:
        if not call.name_sent:
            if self.glm:
                return
            found = _NAME_RE.search(call.body.strip())
            if found is None:
                return
            call.name = found.group(1)
            self._send_name(call, deltas)
        now = self._glm_json(call, partial=True) if self.glm else self._hermes_args(call)
        if now is None or len(now) <= len(call.sent) or (self.glm and not now.startswith(call.sent)):
            return
        diff, call.sent = now[len(call.sent) :], now
        deltas.append({"index": call.index, "function": {"arguments": diff}})

    def _finish_call(self, call: _Call, deltas: list[Delta]) -> None:
        if not self.glm:
            self._stream_args(call, deltas)
            return
        if call.value is not None:
            call.pairs.append((call.key, call.value))
            call.key, call.value = "", None
        final = self._glm_json(call, partial=False)
        if not call.name_sent:
            self._send_name(call, deltas, arguments=final)
        elif final.startswith(call.sent) and len(final) > len(call.sent):
            deltas.append({"index": call.index, "function": {"arguments": final[len(call.sent) :]}})
        call.sent = final

    # -- one engine step ------------------------------------------------------------------------

    def step(self, text: str, final: bool) -> Delta | None:
        out: dict[str, str] = {}
        deltas: list[Delta] = []
        was_reasoning = self.phase == "reasoning"
        for piece in _MARKER_RE.split(text):
            if not piece:
                continue
            if piece in glm.ADDED_IDS and self._marker(piece, deltas):
                continue
            call = self.calls[-1] if self.calls and not self.calls[-1].closed else None
            if self.phase == "reasoning":
                self._reasoning_piece(piece, out)
            elif call is not None:
                self._call_text(call, piece)
                self._stream_args(call, deltas)
            else:
                self._content_piece(piece, out)
        passthrough = self.phase == "content" and not self.setup.tool_parser and not was_reasoning
        if passthrough:
            out.setdefault("content", "")
        if final and self.held_content and not self.calls:
            out["content"] = self.held_content + out.get("content", "")
        if final and self.glm and self.calls and not self.calls[-1].closed:
            self._flush_cut_call(self.calls[-1], deltas)
        return self._delta(out, deltas)

    def _flush_cut_call(self, call: _Call, deltas: list[Delta]) -> None:
        """At the end of a stream cut inside a GLM call, vLLM closes it with its closed <arg_value>s."""
        final = self._glm_json(call, partial=False, closed_only=True)
        if not call.name_sent:
            self._send_name(call, deltas, arguments=final)
        elif final.startswith(call.sent) and len(final) > len(call.sent):
            deltas.append({"index": call.index, "function": {"arguments": final[len(call.sent) :]}})

    def _delta(self, out: dict[str, str], deltas: list[Delta]) -> Delta | None:
        delta: Delta = {}
        if "content" in out and (out["content"] or not self.setup.tool_parser):
            delta["content"] = out["content"]
        elif deltas and not self.glm:
            delta["content"] = None  # hermes builds DeltaMessage(content=None, tool_calls=[...])
        if out.get("reasoning") and self.setup.include_reasoning:
            delta["reasoning"] = out["reasoning"]
        if deltas:
            delta["tool_calls"] = deltas
        if delta and not self.setup.include_reasoning:
            # parse_delta assigns `reasoning = None`, which marks the field set: it is sent as null.
            delta = (
                {k: v for k, v in delta.items() if k == "content"}
                | {"reasoning": None}
                | ({"tool_calls": deltas} if deltas else {})
            )
        return delta or None


def parse(gen: Generation, setup: Setup) -> Parsed:
    """Both views of one choice: the non-streamed message and the streamed deltas."""
    replay = _Replay(setup)
    steps: list[Delta | None] = []
    counts: list[int] = []
    count = 0
    last = len(gen.deltas) - 1
    for index, text in enumerate(gen.deltas):
        in_reasoning = replay.phase == "reasoning"
        token = gen.token_ids[index] if index < len(gen.token_ids) else -1
        if in_reasoning and token not in _ADDED:
            count += 1
        delta = replay.step(text, index == last)
        steps.append({} if delta is None and index == last else delta)
        counts.append(count)
    return _message(replay, gen, steps, counts)


def _full_calls(replay: _Replay) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for call in replay.calls:
        if replay.glm:
            name = call.name.strip()
            if not name or (replay.setup.tool_schemas and name not in replay.setup.tool_schemas):
                continue
            # A call cut by max_tokens keeps only its closed <arg_value>s.
            calls.append(ToolCall(name, replay._glm_json(call, partial=False, closed_only=True)))
            continue
        try:
            found = json.loads(call.body)
            calls.append(ToolCall(found["name"], json.dumps(found["arguments"], ensure_ascii=False)))
        except (ValueError, KeyError, TypeError):
            return []  # hermes gives up on all calls, and the markup stays in content
    return calls


def _message(replay: _Replay, gen: Generation, steps: list[Delta | None], counts: list[int]) -> Parsed:
    setup = replay.setup
    calls = _full_calls(replay) if setup.tool_parser else []
    reasoning: str | None = replay.reasoning.rstrip() if replay.glm else replay.reasoning
    if not setup.reasoning_parser or not setup.include_reasoning or not reasoning:
        reasoning = None
    content: str | None = replay.content
    if setup.tool_parser and replay.calls and not calls and not replay.glm:
        content = _markup_text(replay)
    if calls and content is not None:
        content = content.strip() if replay.glm else (None if not content.strip() else content)
    if replay.glm and setup.tool_parser and replay.calls and content is not None and not content.strip():
        content = None  # whitespace before a (cut) call is dropped with the call's slot
    content = content or None
    if setup.tool_parser and setup.tool_choice in ("required", "named"):
        content = content or ""  # ChatMessage(content=content or "", tool_calls=...)
    base = gen.finish_reason
    full = base
    if setup.tool_parser and (
        (setup.tool_choice == "auto" and calls) or (setup.tool_choice == "required" and base == "stop")
    ):
        full = "tool_calls"
    streamed = any(step and step.get("tool_calls") for step in steps)
    stream = "tool_calls" if streamed and setup.tool_choice != "named" and base == "stop" else base
    return Parsed(reasoning, content, calls, steps, counts, full, stream)


def _markup_text(replay: _Replay) -> str:
    """hermes's content when its JSON does not parse: the whole output after reasoning, markup included."""
    text = replay.content
    for call in replay.calls:
        text += "<tool_call>" + call.body + ("</tool_call>" if call.closed else "")
    return text
