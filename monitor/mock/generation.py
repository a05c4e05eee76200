"""`POST /v1/chat/completions` and `POST /v1/completions`: vLLM's validation order, then replies.

Order of checks, as in vLLM 0.32's `chat_completion/serving.py` / `completion/serving.py`: body
parsing (400 "Bad Request"), model (404), chat template, prompt length (§9: only a prompt over the
context is an error; max_tokens is clamped to the rest), sampling params (§3.2).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from aiohttp import web

from monitor.mock import deployment, glm, parsers, reasoning, replies, schema, wire
from monitor.mock.config import VLLM_VERSION, MockConfig
from monitor.mock.engine import Generation, SamplingRules, generate
from monitor.mock.parsers import Parsed
from monitor.mock.protocol import (
    ChatRequest,
    CompletionRequest,
    RequestError,
    ServerFailure,
    StreamOptions,
    check_context,
    check_json_content_type,
    check_model,
    check_sampling,
    clamp_max_tokens,
    parse_body,
)
from monitor.mock.state import STATE_KEY, MockState, TimingRecord
from monitor.mock.stream import StreamPlan, abort_connection, hang, send_error_stream, send_stream, write_body

__all__ = ["chat_completions", "completions"]

NO_CHAT_TEMPLATE = (
    "As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat "
    "template if the tokenizer does not define one."
)


@dataclass(frozen=True, slots=True)
class _Prepared:
    prompt_tokens: int
    generations: list[Generation]
    stream: bool
    stream_options: StreamOptions | None
    parsed: list[Parsed] | None = None  # the reasoning/tool parsers' view, one per choice
    reasoning_details: bool = False  # usage itemises reasoning tokens
    engine_error: str | None = None  # rejected by the engine (a bad JSON schema): 400, or an SSE error event
    top_logprobs: int | None = None  # chat asked for logprobs (non-streamed replies carry them)


def _rules(request: ChatRequest | CompletionRequest, max_tokens: int, config: MockConfig) -> SamplingRules:
    return SamplingRules(
        max_tokens=max_tokens,
        stop=tuple(request.stop_strings),
        stop_token_ids=tuple(request.stop_token_ids or ()),
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
        skip_special_tokens=request.skip_special_tokens,
        include_stop_str_in_output=request.include_stop_str_in_output,
        generation_config_stop_ids=not config.no_stop_tokens,
    )


def _reply_key(config: MockConfig, request: ChatRequest | CompletionRequest, choice: int, prompt: str) -> str:
    # Greedy decoding gives n identical choices; sampling gives each choice its own canned answer.
    sampled_choice = choice if request.temperature != 0 else 0
    return f"{config.seed}:{request.seed}:{sampled_choice}:{prompt}{deployment.weights_key(config)}"


def _check_context(prompt_tokens: int, config: MockConfig, *, text_prompt: bool) -> None:
    if config.oversize_500 and prompt_tokens > config.max_model_len:
        raise ServerFailure
    check_context(prompt_tokens, config.max_model_len, text_prompt=text_prompt)


def _schema_error(request: ChatRequest, config: MockConfig, found: reasoning.Setup) -> str | None:
    response_format = request.response_format
    if config.ignore_response_format or response_format is None or response_format.json_schema is None:
        return None
    if found.tool_parser and found.tool_choice in ("required", "named"):
        return None  # vLLM drops response_format when the tool choice forces a call
    return schema.grammar_error(response_format.json_schema.json_schema or {})


def _prepare_chat(body: bytes, config: MockConfig) -> _Prepared:
    request = parse_body(body, ChatRequest)
    check_model(request.model, config.model)
    found = reasoning.setup(config, request)  # tool-choice 400s come before the template (render_chat)
    if config.no_chat_template:
        # Preprocessing errors are built as f"{e} {e.__cause__}", hence " None" (§3.2).
        raise RequestError(f"{NO_CHAT_TEMPLATE} None")
    messages = request.message_dicts()
    rendered = deployment.template_messages(config, messages)
    prompt = glm.render_chat(rendered, add_generation_prompt=request.add_generation_prompt)
    prompt_tokens = len(glm.encode(prompt)) + len(reasoning.prompt_suffix(found))
    _check_context(prompt_tokens, config, text_prompt=True)
    # Chat's default max_tokens is the rest of the context window (§5); a larger one is clamped (§9).
    # ... unless generation_config.json sets a max_new_tokens (`default_max_tokens`).
    requested = request.max_completion_tokens or request.max_tokens
    if requested is None:
        requested = config.default_max_tokens
    max_tokens = clamp_max_tokens(requested, prompt_tokens, config.max_model_len)
    check_sampling(request, max_tokens)
    rules = _rules(request, max_tokens, config)
    generations = []
    for i in range(request.n):
        key = _reply_key(config, request, i, prompt)
        reply = reasoning.decide(config, request, found, messages, key)
        if found.family is None and reply.kind == "text":
            tokens = replies.chat_tokens(messages, key, leak_special=config.leak_special_tokens)
        else:
            tokens = reasoning.model_tokens(reply, found.family)
        generations.append(generate(tokens, rules))
    return _Prepared(
        prompt_tokens,
        generations,
        bool(request.stream),
        request.stream_options,
        parsed=[parsers.parse(gen, found) for gen in generations] if found.parsed else None,
        reasoning_details=found.reasoning_parser and not config.no_reasoning_usage,
        engine_error=_schema_error(request, config, found),
        top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
    )


def _prepare_completion(body: bytes, config: MockConfig) -> _Prepared:
    request = parse_body(body, CompletionRequest)
    check_model(request.model, config.model)
    if request.suffix is not None:
        raise RequestError("suffix is only supported for models with FIM completion rendering", param="suffix")
    prompts = request.prompts()
    for _, prompt_ids in prompts:
        _check_context(len(prompt_ids), config, text_prompt=request.has_text_prompt)
    longest = max(len(ids) for _, ids in prompts)
    check_sampling(request, clamp_max_tokens(request.max_tokens, longest, config.max_model_len))
    generations = []
    for text, prompt_ids in prompts:
        rules = _rules(request, clamp_max_tokens(request.max_tokens, len(prompt_ids), config.max_model_len), config)
        for i in range(request.n):
            key = _reply_key(config, request, i, text)
            generations.append(generate(replies.completion_tokens(text, key), rules))
    prompt_tokens = sum(len(ids) for _, ids in prompts)
    return _Prepared(prompt_tokens, generations, bool(request.stream), request.stream_options)


def _fingerprint(config: MockConfig) -> str | None:
    return None if config.flavor == "openai" else wire.fingerprint(VLLM_VERSION, config.model)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, chat=False)


async def _serve(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    config = state.config
    received_s, start_s = time.time(), time.monotonic()
    check_json_content_type(request.headers.get("Content-Type", ""))
    body = await request.read()
    prepared = _prepare_chat(body, config) if chat else _prepare_completion(body, config)
    error_die, malformed_die = state.roll()
    if error_die < config.error_rate:
        raise ServerFailure
    # vLLM 0.32's random_uuid() is 16 hex digits (64 bits).
    suffix = request.headers.get("X-Request-Id") or f"{uuid.uuid4().int & (2**64 - 1):016x}"
    request_id = ("chatcmpl-" if chat else "cmpl-") + suffix
    if prepared.engine_error is not None:
        if not prepared.stream:
            raise RequestError(prepared.engine_error)
        return await send_error_stream(
            request, _renderer(config, chat, request_id, received_s, prepared), prepared.engine_error
        )
    record = (
        state.timings.start(suffix, stream=prepared.stream, received_s=received_s) if config.record_timings else None
    )
    generations = prepared.generations
    planned_tokens = prepared.prompt_tokens + sum(len(gen.token_ids) for gen in generations)
    # Queued behind --max-num-seqs (if set) until a slot frees: the wait is part of TTFT, as in vLLM.
    async with state.batch.slot(config.max_num_seqs):
        metrics = state.metrics
        metrics.running += 1
        metrics.inflight_tokens += planned_tokens
        completed = False
        try:
            malformed = malformed_die < config.malformed_rate
            if prepared.stream:
                options = prepared.stream_options
                renderer = _renderer(config, chat, request_id, received_s, prepared)
                plan = StreamPlan(
                    renderer=renderer,
                    generations=generations,
                    include_usage=renderer.include_usage,
                    continuous_usage=renderer.include_usage and bool(options and options.continuous_usage_stats),
                    malformed=malformed,
                    parsed=prepared.parsed,
                )
                resp, first_token_s, completed = await send_stream(request, state, plan, record)
            else:
                resp, first_token_s, completed = await _send_full(
                    request, state, chat, request_id, prepared, malformed, record
                )
            if first_token_s is not None:
                metrics.ttft.observe(first_token_s - start_s)
            return resp
        finally:
            metrics.running -= 1
            metrics.inflight_tokens -= planned_tokens
            reasons = [gen.finish_reason for gen in generations] if completed else ["abort"] * len(generations)
            metrics.finish(reasons, prepared.prompt_tokens, planned_tokens - prepared.prompt_tokens if completed else 0)
            metrics.e2e.observe(time.monotonic() - start_s)


def _renderer(
    config: MockConfig, chat: bool, request_id: str, received_s: float, prepared: _Prepared
) -> wire.ChunkRenderer:
    options = prepared.stream_options
    return wire.ChunkRenderer(
        chat=chat,
        request_id=request_id,
        created=int(received_s),
        model=config.model,
        prompt_tokens=prepared.prompt_tokens,
        flavor=config.flavor,
        include_usage=bool(options and options.include_usage) and not config.no_stream_usage,
        system_fingerprint=_fingerprint(config),
        reasoning_field=config.reasoning_field,
        reasoning_details=prepared.reasoning_details,
    )


async def _send_full(
    request: web.Request,
    state: MockState,
    chat: bool,
    request_id: str,
    prepared: _Prepared,
    malformed: bool,
    record: TimingRecord | None,
) -> tuple[web.StreamResponse, float | None, bool]:
    """A non-streamed response; faults that count tokens apply to the hidden generation.

    All tokens leave at once, so the timing record gets a single send time.
    """
    config = state.config
    steps = max(len(gen.deltas) for gen in prepared.generations)
    if config.stall_after is not None and config.stall_after < steps:
        await hang(request, state)
        return web.Response(status=500), None, False
    if config.disconnect_after is not None and config.disconnect_after < steps:
        abort_connection(request)
        return web.Response(status=500), None, False
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    first_token_s = time.monotonic()
    itl_s = config.itl_ms / 1000
    if config.error_event_after is not None and config.error_event_after < steps:
        if itl_s:
            await asyncio.sleep(itl_s * config.error_event_after)
        # A non-streaming generator error is returned as an ordinary 400 (§3.4).
        raise RequestError(f"Mock engine error after {config.error_event_after} tokens (error_event_after).")
    if itl_s:
        await asyncio.sleep(itl_s * (steps - 1))
    state.metrics.itl.observe_many(itl_s, steps - 1)
    created = int(time.time())
    args = (request_id, created, config.model, prepared.prompt_tokens, prepared.generations, _fingerprint(config))
    if chat:
        payload = wire.chat_body(
            *args,
            parsed=prepared.parsed,
            reasoning_field=config.reasoning_field,
            reasoning_details=prepared.reasoning_details,
        )
        if prepared.top_logprobs is not None:
            for choice, gen in zip(payload["choices"], prepared.generations, strict=True):
                choice["logprobs"] = deployment.chat_logprobs(gen, prepared.top_logprobs, config, state.noise)
    else:
        payload = wire.completion_body(*args)
    body = wire.dumps(payload, config.flavor)
    if malformed:
        body = wire.malformed(body)
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.content_length = len(body)
    await resp.prepare(request)
    await _write_recorded(resp, body, config.drip_bytes_per_s, record)
    return resp, first_token_s, True


async def _write_recorded(
    resp: web.StreamResponse, body: bytes, drip: float | None, record: TimingRecord | None
) -> None:
    """A non-streamed reply's one send: its clock read just before the write and just after it returned."""
    if record is not None:
        record.token_times_s.append(time.time())
    await write_body(resp, body, drip)
    if record is not None:
        record.token_written_s.append(time.time())
