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

from monitor.mock.config import MockFlavor
from monitor.mock.engine import Generation

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


def _full_usage(prompt_tokens: int, generations: Sequence[Generation]) -> dict[str, Any]:
    completion_tokens = sum(len(gen.token_ids) for gen in generations)
    usage: dict[str, Any] = _usage(prompt_tokens, completion_tokens)
    return {**usage, "prompt_tokens_details": None, "completion_tokens_details": None}


def chat_body(
    request_id: str,
    created: int,
    model: str,
    prompt_tokens: int,
    generations: Sequence[Generation],
    system_fingerprint: str | None,
) -> dict[str, Any]:
    # ChatMessage drops `tool_calls` when it is empty; `reasoning` replaced `reasoning_content` (§9).
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
                "reasoning": None,
            },
            "logprobs": None,
            "finish_reason": gen.finish_reason,
            "stop_reason": gen.stop_reason,
            "token_ids": None,
            "routed_experts": None,
        }
        for index, gen in enumerate(generations)
    ]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": system_fingerprint,
        "usage": _full_usage(prompt_tokens, generations),
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
    ) -> None:
        self.chat = chat
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

    def _usage(self, completion_tokens: int | None, *, details: bool = False) -> bytes:
        if completion_tokens is None:
            return b',"usage":null' if self.openai and not self.chat else b""
        p = self.prompt_tokens
        usage = b',"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d' % (
            p,
            p + completion_tokens,
            completion_tokens,
        )
        # Chat's continuous usage sets completion_tokens_details (to None) explicitly; completions' does not.
        return usage + (b',"completion_tokens_details":null}' if details and not self.openai else b"}")

    def role(self, index: int, usage: int | None) -> bytes:
        """The chat role chunk, sent with the first token (§1.4 item 1)."""
        extra = b"" if self.openai else b',"prompt_token_ids":null,"prompt_text":null'
        return self._event(
            self.head
            + b'{"index":%d,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]' % index
            + self._usage(usage, details=True)
            + extra
        )

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

    def usage(self, completion_tokens: int) -> bytes:
        """The usage-only chunk (`choices: []`), dumped with exclude_none (§1.4 item 4)."""
        return self._event(self.head + b"]" + self._usage(completion_tokens) + self.fingerprint)

    def error(self, message: str) -> bytes:
        # Mid-stream errors use plain json.dumps: spaces and ASCII escapes (§3.4; not verified on 0.32).
        return b"data: " + json.dumps(error_body(message, "BadRequestError", 400)).encode() + self.sep

    def done(self) -> bytes:
        return b"data: [DONE]" + self.sep
