"""Bytes on the wire: vLLM 0.10.1+ response bodies and SSE chunks, key order included (§1, §2).

Streamed chunks are assembled from prebuilt byte templates plus an escaped delta, because a
`json.dumps` per token would dominate the mock's cost in zero-latency mode.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from monitor.mock.config import MockFlavor
from monitor.mock.engine import Generation

__all__ = ["ChunkRenderer", "chat_body", "completion_body", "dumps", "error_body", "malformed"]


def dumps(obj: object, flavor: MockFlavor = "vllm") -> bytes:
    """Starlette's JSONResponse encoding: compact, raw UTF-8 (§1.2); the OpenAI flavour escapes."""
    return json.dumps(obj, ensure_ascii=flavor == "openai", separators=(",", ":")).encode()


def error_body(message: str, error_type: str, status: int) -> dict[str, Any]:
    """The nested error envelope of vLLM >= 0.10.1 (§3.1)."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": status}}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    # UsageInfo declaration order: prompt, total, completion (§1.2).
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def chat_body(
    request_id: str, created: int, model: str, prompt_tokens: int, generations: Sequence[Generation]
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {
            "index": index,
            "message": {
                "role": "assistant",
                "content": gen.text,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "tool_calls": [],
                "reasoning_content": None,
            },
            "logprobs": None,
            "finish_reason": gen.finish_reason,
            "stop_reason": gen.stop_reason,
        }
        for index, gen in enumerate(generations)
    ]
    completion_tokens = sum(len(gen.token_ids) for gen in generations)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {**_usage(prompt_tokens, completion_tokens), "prompt_tokens_details": None},
        "prompt_logprobs": None,
        "kv_transfer_params": None,
    }


def completion_body(
    request_id: str, created: int, model: str, prompt_tokens: int, generations: Sequence[Generation]
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {
            "index": index,
            "text": gen.text,
            "logprobs": None,
            "finish_reason": gen.finish_reason,
            "stop_reason": gen.stop_reason,
            "prompt_logprobs": None,
        }
        for index, gen in enumerate(generations)
    ]
    completion_tokens = sum(len(gen.token_ids) for gen in generations)
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {**_usage(prompt_tokens, completion_tokens), "prompt_tokens_details": None},
        "kv_transfer_params": None,
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
    """Renders the SSE events of one streamed request (chat or completions, either flavour)."""

    def __init__(
        self, *, chat: bool, request_id: str, created: int, model: str, prompt_tokens: int, flavor: MockFlavor
    ) -> None:
        self.chat = chat
        self.request_id = request_id
        self.openai = flavor == "openai"
        self.escape = _escape_ascii if self.openai else _escape
        self.sep = b"\r\n\r\n" if self.openai else b"\n\n"
        self.prompt_tokens = prompt_tokens
        obj = "chat.completion.chunk" if chat else "text_completion"
        self.head = b'data: {"id":%s,"object":"%s","created":%d,"model":%s,"choices":[' % (
            self.escape(request_id),
            obj.encode(),
            created,
            self.escape(model),
        )
        # Completions chunks are dumped with exclude_unset=False, so they carry null
        # logprobs/finish_reason/stop_reason and "usage":null; chat chunks do not (§1.4, §2).
        self.text_key = b'"delta":{"content":' if chat else b'"text":'
        self.text_end = b"}" if chat else b""
        self.open_tail = (
            b',"logprobs":null,"finish_reason":null}]'
            if chat
            else (b',"logprobs":null,"finish_reason":null,"stop_reason":null}]')
        )

    def _event(self, body: bytes) -> bytes:
        return body + b"}" + self.sep

    def _usage(self, completion_tokens: int | None) -> bytes:
        if completion_tokens is None:
            return b"" if self.chat else b',"usage":null'
        p = self.prompt_tokens
        return b',"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}' % (
            p,
            p + completion_tokens,
            completion_tokens,
        )

    def role(self, index: int, usage: int | None) -> bytes:
        """The chat role chunk, sent with the first token (§1.4 item 1)."""
        return self._event(
            self.head
            + b'{"index":%d,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]' % index
            + self._usage(usage)
        )

    def content(self, index: int, delta: str, usage: int | None) -> bytes:
        return self._event(
            self.head
            + b'{"index":%d,' % index
            + self.text_key
            + self.escape(delta)
            + self.text_end
            + self.open_tail
            + self._usage(usage)
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
        body = (
            b'{"index":%d,' % index
            + self.text_key
            + self.escape(delta)
            + self.text_end
            + b',"logprobs":null,"finish_reason":%s,"stop_reason":%s}]' % (reason, stop_reason)
        )
        return [self._event(self.head + body + self._usage(usage))]

    def usage(self, completion_tokens: int) -> bytes:
        """The usage-only chunk (`choices: []`), dumped with exclude_none (§1.4 item 4)."""
        return self._event(self.head + b"]" + self._usage(completion_tokens))

    def error(self, message: str) -> bytes:
        # Mid-stream errors use plain json.dumps: spaces and ASCII escapes (§3.4).
        return b"data: " + json.dumps(error_body(message, "BadRequestError", 400)).encode() + self.sep

    def done(self) -> bytes:
        return b"data: [DONE]" + self.sep
