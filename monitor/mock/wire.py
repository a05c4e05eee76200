"""Bytes on the wire: vLLM 0.32 response bodies and SSE chunks, key order included (§1, §2, §9).

Streamed chunks are assembled from prebuilt byte templates plus an escaped delta, because a
`json.dumps` per token would dominate the mock's cost in zero-latency mode.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from monitor.mock.config import MockFlavor, ReasoningField
from monitor.mock.engine import Generation
from monitor.mock.parsers import Parsed, tool_call_id

__all__ = ["ChunkRenderer", "chat_body", "completion_body", "dumps", "error_body", "fingerprint", "malformed"]


def dumps(obj: object, flavor: MockFlavor = "vllm") -> bytes:
    """Starlette's JSONResponse encoding: compact, raw UTF-8 (§1.2); the OpenAI flavour escapes."""
    return json.dumps(obj, ensure_ascii=flavor == "openai", separators=(",", ":")).encode()


def error_body(message: str, error_type: str, status: int, param: str | None = None) -> dict[str, Any]:
    """The nested error envelope (§3.1); vLLM 0.32 fills `param` for validation errors (§9)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


def fingerprint(version: str, model: str) -> str:
    """vLLM's default `system_fingerprint`: "vllm-<version>-<8 hex of the config hash>" (§9)."""
    return f"vllm-{version}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    # UsageInfo declaration order: prompt, total, completion (§1.2).
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def _full_usage(
    prompt_tokens: int, generations: Sequence[Generation], reasoning_tokens: int | None = None
) -> dict[str, Any]:
    completion_tokens = sum(len(gen.token_ids) for gen in generations)
    usage: dict[str, Any] = _usage(prompt_tokens, completion_tokens)
    # With a reasoning parser vLLM 0.32 itemises reasoning tokens (chat_completion/serving.py).
    details = None if reasoning_tokens is None else {"reasoning_tokens": reasoning_tokens}
    return {**usage, "prompt_tokens_details": None, "completion_tokens_details": details}


def _message(gen: Generation, parsed: Parsed | None, reasoning_field: ReasoningField) -> dict[str, Any]:
    # ChatMessage drops `tool_calls` when it is empty; `reasoning` replaced `reasoning_content` (§9).
    message: dict[str, Any] = {
        "role": "assistant",
        "content": gen.text if parsed is None else parsed.content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if parsed is not None and parsed.tool_calls:
        message["tool_calls"] = [
            {"id": tool_call_id(), "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in parsed.tool_calls
        ]
    message[reasoning_field] = None if parsed is None else parsed.reasoning
    return message


def chat_body(
    request_id: str,
    created: int,
    model: str,
    prompt_tokens: int,
    generations: Sequence[Generation],
    system_fingerprint: str | None,
    *,
    parsed: Sequence[Parsed] | None = None,
    reasoning_field: ReasoningField = "reasoning",
    reasoning_details: bool = False,
) -> dict[str, Any]:
    """A chat.completion body; `parsed` holds the reasoning/tool parsers' view of each choice."""
    views: list[Parsed | None] = list(parsed) if parsed else [None] * len(generations)
    choices: list[dict[str, Any]] = [
        {
            "index": index,
            "message": _message(gen, view, reasoning_field),
            "logprobs": None,
            "finish_reason": gen.finish_reason if view is None else view.finish_reason,
            "stop_reason": gen.stop_reason,
            "token_ids": None,
            "routed_experts": None,
        }
        for index, (gen, view) in enumerate(zip(generations, views, strict=True))
    ]
    reasoning_tokens = sum(view.reasoning_tokens[-1] for view in views if view and view.reasoning_tokens)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": system_fingerprint,
        "usage": _full_usage(prompt_tokens, generations, reasoning_tokens if reasoning_details else None),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def completion_body(
    request_id: str,
    created: int,
    model: str,
    prompt_tokens: int,
    generations: Sequence[Generation],
    system_fingerprint: str | None,
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {
            "index": index,
            "text": gen.text,
            "logprobs": None,
            "finish_reason": gen.finish_reason,
            "stop_reason": gen.stop_reason,
            "token_ids": None,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "routed_experts": None,
        }
        for index, gen in enumerate(generations)
    ]
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": system_fingerprint,
        "usage": _full_usage(prompt_tokens, generations),
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


@lru_cache(maxsize=8192)
def _escape(text: str) -> bytes:
    return encode_basestring(text).encode()


@lru_cache(maxsize=8192)
def _escape_ascii(text: str) -> bytes:
    return encode_basestring_ascii(text).encode()


def malformed(event_or_body: bytes) -> bytes:
    """Cut the JSON in half: a truncated event or body, as from a broken proxy."""
    if event_or_body.startswith(b"data: "):
        payload = event_or_body[6:].rstrip(b"\r\n")
        return b"data: " + payload[: len(payload) // 2] + event_or_body[6 + len(payload) :]
    return event_or_body[: len(event_or_body) // 2]


class ChunkRenderer:
    """Renders the SSE events of one streamed request (chat or completions, either flavour).

    vLLM 0.32 (§9): chat chunks are dumped with exclude_unset, so the role chunk carries null
    `prompt_token_ids`/`prompt_text`, content and finish chunks a null `token_ids`; completions chunks
    carry null `stop_reason`/`prompt_token_ids`/`token_ids` and no `usage` key. `system_fingerprint`
    goes on the finish chunks, or on the usage chunk when include_usage is on.
    """

    def __init__(
        self,
        *,
        chat: bool,
        request_id: str,
        created: int,
        model: str,
        prompt_tokens: int,
        flavor: MockFlavor,
        include_usage: bool = False,
        system_fingerprint: str | None = None,
        reasoning_field: ReasoningField = "reasoning",
        reasoning_details: bool = False,
    ) -> None:
        self.chat = chat
        self.flavor: MockFlavor = flavor
        self.reasoning_field = reasoning_field
        self.reasoning_details = reasoning_details
        self.request_id = request_id
        self.openai = flavor == "openai"
        self.escape = _escape_ascii if self.openai else _escape
        self.sep = b"\r\n\r\n" if self.openai else b"\n\n"
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage
        self.fingerprint = (
            b"" if system_fingerprint is None else b',"system_fingerprint":' + self.escape(system_fingerprint)
        )
        obj = "chat.completion.chunk" if chat else "text_completion"
        self.head = b'data: {"id":%s,"object":"%s","created":%d,"model":%s,"choices":[' % (
            self.escape(request_id),
            obj.encode(),
            created,
            self.escape(model),
        )
        self.text_key = b'"delta":{"content":' if chat else b'"text":'
        self.text_end = b"}" if chat else b""
        if self.openai:
            self.choice_tail = b"" if chat else b',"stop_reason":null'
        else:
            self.choice_tail = (
                b',"token_ids":null' if chat else b',"stop_reason":null,"prompt_token_ids":null,"token_ids":null'
            )

    def _event(self, body: bytes) -> bytes:
        return body + b"}" + self.sep

    def _usage(self, completion_tokens: int | None, *, details: bool = False, reasoning_tokens: int = 0) -> bytes:
        if completion_tokens is None:
            return b',"usage":null' if self.openai and not self.chat else b""
        p = self.prompt_tokens
        usage = b',"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d' % (
            p,
            p + completion_tokens,
            completion_tokens,
        )
        if not details or self.openai:
            return usage + b"}"
        # Chat's continuous usage sets completion_tokens_details explicitly (None without a reasoning
        # parser); completions' does not.
        if self.reasoning_details:
            return usage + b',"completion_tokens_details":{"reasoning_tokens":%d}}' % reasoning_tokens
        return usage + b',"completion_tokens_details":null}'

    def role(self, index: int, usage: int | None) -> bytes:
        """The chat role chunk, sent with the first token (§1.4 item 1)."""
        extra = b"" if self.openai else b',"prompt_token_ids":null,"prompt_text":null'
        return self._event(
            self.head
            + b'{"index":%d,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]' % index
            + self._usage(usage, details=True)
            + extra
        )

    def _delta_json(self, delta: dict[str, Any]) -> bytes:
        if self.reasoning_field != "reasoning" and "reasoning" in delta:
            delta = {(self.reasoning_field if k == "reasoning" else k): v for k, v in delta.items()}
        return dumps(delta, self.flavor)

    def parsed(self, index: int, delta: dict[str, Any], usage: int | None, reasoning_tokens: int = 0) -> bytes:
        """A chat chunk with a parsed delta: `content`, `reasoning` and/or `tool_calls` (DeltaMessage order)."""
        return self._event(
            self.head
            + b'{"index":%d,"delta":%s,"logprobs":null,"finish_reason":null' % (index, self._delta_json(delta))
            + self.choice_tail
            + b"}]"
            + self._usage(usage, details=True, reasoning_tokens=reasoning_tokens)
        )

    def parsed_final(
        self,
        index: int,
        delta: dict[str, Any],
        finish: tuple[str, int | str | None],
        usage: int | None,
        reasoning_tokens: int = 0,
    ) -> list[bytes]:
        """The finish chunk of a parsed choice; an empty delta is `{}` (the parser had nothing left)."""
        finish_reason, stop_reason = finish
        reason = json.dumps(finish_reason).encode()
        if self.openai:
            events = [self.parsed(index, delta, usage, reasoning_tokens)] if delta else []
            finish_body = b'{"index":%d,"delta":{},"logprobs":null,"finish_reason":%s}]' % (index, reason)
            return [*events, self._event(self.head + finish_body + self._usage(usage))]
        body = b'{"index":%d,"delta":%s,"logprobs":null,"finish_reason":%s,"stop_reason":%s,"token_ids":null}]' % (
            index,
            self._delta_json(delta),
            reason,
            json.dumps(stop_reason).encode(),
        )
        fingerprint = b"" if self.include_usage else self.fingerprint
        usage_bytes = self._usage(usage, details=True, reasoning_tokens=reasoning_tokens)
        return [self._event(self.head + body + usage_bytes + fingerprint)]

    def content(self, index: int, delta: str, usage: int | None) -> bytes:
        return self._event(
            self.head
            + b'{"index":%d,' % index
            + self.text_key
            + self.escape(delta)
            + self.text_end
            + b',"logprobs":null,"finish_reason":null'
            + self.choice_tail
            + b"}]"
            + self._usage(usage, details=self.chat)
        )

    def final(self, index: int, delta: str, gen: Generation, usage: int | None) -> list[bytes]:
        """vLLM sends the last text together with finish_reason (§1.4 item 3); OpenAI splits them."""
        reason = json.dumps(gen.finish_reason).encode()
        if self.openai:
            events = [self.content(index, delta, usage)] if delta else []
            empty = b'"delta":{}' if self.chat else b'"text":""'
            finish = b'{"index":%d,%s,"logprobs":null,"finish_reason":%s}]' % (index, empty, reason)
            return [*events, self._event(self.head + finish + self._usage(usage))]
        stop_reason = json.dumps(gen.stop_reason).encode()
        tail = b',"token_ids":null' if self.chat else b',"prompt_token_ids":null,"token_ids":null'
        body = (
            b'{"index":%d,' % index
            + self.text_key
            + self.escape(delta)
            + self.text_end
            + b',"logprobs":null,"finish_reason":%s,"stop_reason":%s' % (reason, stop_reason)
            + tail
            + b"}]"
        )
        fingerprint = b"" if self.include_usage else self.fingerprint
        return [self._event(self.head + body + self._usage(usage, details=self.chat) + fingerprint)]

    def usage(self, completion_tokens: int, reasoning_tokens: int = 0) -> bytes:
        """The usage-only chunk (`choices: []`), dumped with exclude_none (§1.4 item 4)."""
        details = self.chat and self.reasoning_details  # None details are dropped by exclude_none
        usage = self._usage(completion_tokens, details=details, reasoning_tokens=reasoning_tokens)
        return self._event(self.head + b"]" + usage + self.fingerprint)

    def error(self, message: str) -> bytes:
        # Mid-stream errors use plain json.dumps: spaces and ASCII escapes (§3.4; not verified on 0.32).
        return b"data: " + json.dumps(error_body(message, "BadRequestError", 400)).encode() + self.sep

    def done(self) -> bytes:
        return b"data: [DONE]" + self.sep
