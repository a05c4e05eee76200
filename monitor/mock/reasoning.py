"""Reasoning models, tool calls and structured output: what the mock "model" writes for a chat request.

Wire of vLLM 0.32 for these flavours, read in its 0.32.0 wheel and checked by feeding the mock's
engine steps to vLLM's own parser objects (every streamed delta, message and reasoning-token count
agreed). Files: vllm/entrypoints/openai/chat_completion/{serving.py,protocol.py},
vllm/entrypoints/generate/base/protocol.py (DeltaMessage, DeltaToolCall, DeltaFunctionCall,
ToolCall, FunctionCall), vllm/entrypoints/serve/engine/protocol.py (UsageInfo,
CompletionTokenUsageInfo), vllm/parser/{abstract_parser.py,parser_manager.py,glm47_moe.py,qwen3.py},
vllm/parser/engine/{parser_engine.py,streaming_parser_engine.py}, vllm/reasoning/__init__.py
(glm45 and qwen3 are adapters of those engines), vllm/tool_parsers/{abstract_tool_parser.py,
hermes_tool_parser.py,glm47_moe_tool_parser.py}, vllm/renderers/online_renderer.py,
vllm/renderers/chat_utils.py, vllm/sampling_params.py, vllm/v1/structured_output/backend_*.py.

Flavours (`reasoning_model`): "none" is GLM-4-9B-Chat without parsers (tools: the 400s below);
"glm45" is GLM-4.5 behind `--reasoning-parser glm45 --enable-auto-tool-choice --tool-call-parser
glm45`; "qwen3" is Qwen3 behind `--reasoning-parser qwen3 --enable-auto-tool-choice
--tool-call-parser hermes`. The markers are single added tokens (GLM-4.5-range ids, glm.ADDED_IDS).

What the model writes:
* glm45: `\n<think>R</think>\nANSWER` + <|user|> (stop_reason 151336); a call is
  `\n<think>R</think>\n<tool_call>NAME\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n</tool_call>`
  + <|observation|> (151338), V raw for strings, JSON otherwise. Thinking off (chat_template_kwargs
  `enable_thinking`/`thinking` false, or `reasoning_effort: "none"`): the prompt ends
  `\n<think></think>` and the model writes `\nANSWER`.
* qwen3: `<think>\nR\n</think>\n\nANSWER` + EOS (stop_reason null); a call is
  `<tool_call>\n{"name": N, "arguments": {...}}\n</tool_call>` after `</think>\n\n`. Thinking off
  (`enable_thinking` false or `reasoning_effort: "none"`): the prompt gets `<think>\n\n</think>\n\n`.
* JSON for `response_format` (json_schema: `schema.instance`; json_object: `{"answer": ...}`)
  follows `</think>` directly. Guided decoding starts at the first token when no reasoning parser
  says where thinking ends, so JSON and forced calls then come without thinking.
* Which call: a named tool_choice calls that tool, "required" the first tool, "auto" (or null,
  with tools) the first tool whose name, or a word of 4+ letters of it (split at `_`, `-`, digits and
  camelCase), appears in the last message when it is the user's, case-insensitively. A last message
  from a tool gets prose ("The tool returned: ..."). Arguments: `schema.instance(parameters)`.

Non-streamed message: `role, content, refusal, annotations, audio, function_call, [tool_calls],
reasoning` (`reasoning_field` renames the last one `reasoning_content`, as older vLLM and SGLang).
`reasoning` is the text inside the block (glm45 keeps the `\n` before `<think>` and strips trailing
whitespace; qwen3 verbatim), null without a reasoning parser or with `include_reasoning: false`.
`content` is the text after `</think>` (`\n...` glm45, `\n\n...` qwen3), null when empty; next to
calls glm45 strips it and qwen3 drops it when only whitespace; "" instead of null for required and
named tool_choice. `tool_calls`: `[{"id": "chatcmpl-tool-<16 hex>", "type": "function", "function":
{"name": N, "arguments": "<JSON, json.dumps separators>"}}]`. finish_reason "tool_calls" for auto
with a call and for required when the engine stopped; a named tool_choice keeps "stop".
usage.completion_tokens counts every token (markers and stop token included);
`completion_tokens_details: {"reasoning_tokens": N}` whenever a reasoning parser is configured (N:
the tokens inside the block, 0 with thinking off), null without one or with `no_reasoning_usage`.

Streamed: the role chunk, then one chunk per engine step for which the parser has a delta, in
DeltaMessage order `content, reasoning, tool_calls`: reasoning deltas first, then content. Steps
with only a marker, held-back whitespace (glm45: trailing reasoning whitespace, leading content
whitespace) or an unfinished tool name send no chunk; the finish chunk carries what is left, `{}`
when nothing. Tool calls: `{"id", "type": "function", "index": 0, "function": {"name"}}`, then
`{"index": 0, "function": {"arguments": FRAGMENT}}`:
* glm45: the name when the first `<arg_key>` arrives; the arguments as a growing JSON prefix: each
  `<arg_value>` sends its key (and, for a string-typed key, the opening quote), strings stream as
  written, other values wait for the next key, `</tool_call>` sends the rest. A stream cut inside a
  call is closed with its complete pairs. No `content` key.
* qwen3 (hermes): the name when its closing quote arrives; the arguments are the model's own text
  after `"arguments": ` (trailing whitespace held, the outer `}` dropped); every tool delta has
  `"content": null`; the `\n\n` after `</think>` is sent as content.
The fragments join to the non-streamed `arguments`. finish_reason "tool_calls" when tool deltas went
out and the engine stopped, except for a named tool_choice. With include_usage the usage chunk has
`completion_tokens_details: {"reasoning_tokens": N}`; continuous usage puts the running count on
every chunk. `include_reasoning: false` sends no reasoning, and every chunk's delta has
`"reasoning": null` (parse_delta assigns the field).

required / named tool_choice: hermes and glm45 declare an xgrammar structural-tag model, so with
VLLM_ENFORCE_STRICT_TOOL_CALLING (on by default) `supports_required_and_named` is False: the call is
forced in the model's own format and parsed, streamed too, by the auto parser, not by the JSON-list
guided-decoding path. The mock follows that path.

Modes:
* `no_reasoning_parser`: `<think>...</think>` stays in content (streamed as content), reasoning null,
  completion_tokens_details null; calls are still extracted.
* `no_tool_parser`: tools are accepted and calls stay text in content in the model's format; no
  tool_calls, finish_reason "stop", plain content deltas, the last `{"content": ""}`. (vLLM 0.32
  without a tool-call parser rejects tool_choice auto/required/named with a 400 instead, which is
  what reasoning_model "none" answers; this mode is a server or gateway that takes `tools` and
  never parses.)
* `ignore_response_format`: prose, whatever `response_format` asks.
* `reasoning_budget_exhaust`: thinking never ends: finish_reason "length", content null, all the
  text in reasoning.
* A schema the grammar backend rejects: 400 BadRequestError "Grammar error: ..." (schema.py);
  streamed, 200 with one `data: {"error": ...}` event and `[DONE]` (the engine validates when the
  stream's generator first runs). `json_schema` without `json_schema`: 400 "When response_format
  type is 'json_schema', the 'json_schema' field must be provided. (parameter=response_format)".
* No tool-call parser (reasoning_model "none"): tool_choice "auto" is the recorded 400; "required" and
  named are 400 `tool_choice="required" requires --tool-call-parser to be set` and
  `tool_choice=function "NAME" requires --tool-call-parser to be set`. The request checks of
  `check_tool_usage` (empty tools, tool_choice without tools, an unknown named tool) apply to all.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.mock import glm, replies, schema
from monitor.mock.config import MockConfig
from monitor.mock.protocol import ChatRequest, RequestError

__all__ = ["AUTO_TOOLS", "Reply", "Setup", "decide", "model_tokens", "prompt_suffix", "setup"]

Family = Literal["glm45", "qwen3"]
ReplyKind = Literal["text", "json", "tool"]
ToolChoiceKind = Literal["none", "auto", "required", "named"]

AUTO_TOOLS = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
THINK, END_THINK = glm.ADDED_IDS["<think>"], glm.ADDED_IDS["</think>"]
TOOL_CALL, END_TOOL_CALL = glm.ADDED_IDS["<tool_call>"], glm.ADDED_IDS["</tool_call>"]
ARG_KEY, END_ARG_KEY = glm.ADDED_IDS["<arg_key>"], glm.ADDED_IDS["</arg_key>"]
ARG_VALUE, END_ARG_VALUE = glm.ADDED_IDS["<arg_value>"], glm.ADDED_IDS["</arg_value>"]

_REASONING_EN = {
    "text": (
        "The user wrote a short message. I should reply helpfully and keep it brief.",
        "Let me work out what the user needs, then answer clearly in a few sentences.",
    ),
    "json": ("The reply has to be a JSON document that matches the requested schema, so I will fill in every field.",),
    "tool": ("The user is asking for something the {tool} tool can provide, so I will call it.",),
    "result": ("The tool has returned its result. I will summarise it for the user.",),
}
_REASONING_ZH = {
    "text": ("用户发来了一条消息。我应该简洁、有帮助地回答。", "我先弄清楚用户需要什么，然后用几句话清楚地回答。"),
    "json": ("回复必须是符合所要求模式的 JSON 文档，所以我会填写每个字段。",),
    "tool": ("用户需要的信息可以通过 {tool} 工具获得，所以我会调用它。",),
    "result": ("工具已经返回了结果。我会为用户总结一下。",),
}
# Thinking that never concludes: the reasoning-budget incident.
_ENDLESS_EN = (
    "Let me think about this carefully. ",
    "First, consider what is being asked. ",
    "On the other hand, there may be another way to look at it. ",
    "Let me reconsider the previous step. ",
)
_ENDLESS_ZH = (
    "让我仔细想一想。",
    "首先，考虑一下问题到底是什么。",
    "另一方面，也许还有别的角度。",
    "让我重新检查上一步。",
)
_NAME_WORD = re.compile(r"[A-Za-z][a-z]*|[0-9]+")


@dataclass(frozen=True, slots=True)
class Setup:
    """The server's parsers and the request's switches: everything the output parsers need."""

    family: Family | None  # None: GLM-4-9B-Chat, no parsers at all
    reasoning_parser: bool
    tool_parser: bool
    thinking: bool  # the chat template leaves a reasoning block open
    tool_choice: ToolChoiceKind
    include_reasoning: bool = True
    tool_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def parsed(self) -> bool:
        """Whether vLLM runs a parser over the output (else every delta is plain content)."""
        return self.family is not None and (self.reasoning_parser or self.tool_parser)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the model decided to write, before the engine's stop rules."""

    kind: ReplyKind
    body: str = ""  # the answer text, or the JSON document
    tool: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    think: bool = False
    reasoning: str = ""
    endless: bool = False  # reasoning that never ends
    chinese: bool = False


def setup(config: MockConfig, request: ChatRequest) -> Setup:
    """The parsers vLLM would run for `request`; raises vLLM 0.32's 400s for tools it cannot parse."""
    family: Family | None = None if config.reasoning_model == "none" else config.reasoning_model
    tool_parser = family is not None and not config.no_tool_parser
    choice: ToolChoiceKind = "none"
    if request.tools and request.tool_choice != "none":
        choice = "named" if request.named_tool else ("required" if request.tool_choice == "required" else "auto")
    if request.tool_choice not in (None, "none") and family is None:
        # online_renderer.render_chat: no tool-call parser (no_tool_parser accepts the request instead).
        if request.tool_choice == "auto":
            raise RequestError(AUTO_TOOLS)
        wanted = f'function "{request.named_tool}"' if request.named_tool else f'"{request.tool_choice}"'
        raise RequestError(f"tool_choice={wanted} requires --tool-call-parser to be set")
    kwargs = request.template_kwargs()
    if family == "glm45":
        flags = [kwargs.get("thinking"), kwargs.get("enable_thinking")]
        thinking = all(flag is None for flag in flags) or any(bool(flag) for flag in flags)
    else:
        thinking = bool(kwargs.get("enable_thinking", True))
    schemas = {tool.function.name: tool.function.parameters or {} for tool in request.tools or []}
    return Setup(
        family=family,
        reasoning_parser=family is not None and not config.no_reasoning_parser,
        tool_parser=tool_parser,
        thinking=family is not None and thinking,
        tool_choice=choice,
        include_reasoning=request.include_reasoning,
        tool_schemas=schemas,
    )


def prompt_suffix(found: Setup) -> list[int]:
    """What the template appends after the generation prompt when thinking is off (`enable_thinking`)."""
    if found.family is None or found.thinking:
        return []
    if found.family == "glm45":
        return [*glm.encode("\n", allow_special=False), THINK, END_THINK]
    return [THINK, *glm.encode("\n\n", allow_special=False), END_THINK, *glm.encode("\n\n", allow_special=False)]


def _mentions(tool: str, text: str) -> bool:
    """The auto rule: the tool's name, or a word of 4+ letters of it, appears in the text (any case)."""
    lowered = text.lower()
    words = [word.lower() for word in _NAME_WORD.findall(tool)]
    return tool.lower() in lowered or any(len(word) >= 4 and word in lowered for word in words)


def _chosen_tool(request: ChatRequest, found: Setup, messages: Sequence[Mapping[str, object]]) -> str | None:
    tools = [tool.function.name for tool in request.tools or []]
    if found.tool_choice == "named":
        return request.named_tool
    if found.tool_choice == "required":
        return tools[0]
    if found.tool_choice == "auto" and messages and messages[-1].get("role") == "user":
        last = glm.message_text(messages[-1].get("content"))
        return next((name for name in tools if _mentions(name, last)), None)
    return None


def _json_body(request: ChatRequest, answer: str) -> str | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object" or response_format.json_schema is None:
        return json.dumps({"answer": answer}, ensure_ascii=False)
    return json.dumps(schema.instance(response_format.json_schema.json_schema or {}), ensure_ascii=False)


def decide(
    config: MockConfig, request: ChatRequest, found: Setup, messages: Sequence[Mapping[str, object]], key: str
) -> Reply:
    """The reply the model writes: a tool call, a JSON document or prose, with or without thinking.

    Guided decoding (JSON, a forced tool call) starts at the first token when no reasoning parser
    tells the engine where thinking ends, so the model cannot think first.
    """
    user_texts = [glm.message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    answer, chinese = replies.answer(user_texts, key)
    texts = _REASONING_ZH if chinese else _REASONING_EN
    tool = _chosen_tool(request, found, messages)
    json_body = None if config.ignore_response_format else _json_body(request, answer)
    kind: ReplyKind = "tool" if tool is not None else ("json" if json_body is not None else "text")
    reasoning_kind: str = kind
    if kind == "text" and messages and messages[-1].get("role") == "tool":
        result = glm.message_text(messages[-1].get("content"))[:200]
        answer = f"工具返回的结果是：{result}" if chinese else f"The tool returned: {result}"
        reasoning_kind = "result"
    forced = kind == "json" or (kind == "tool" and found.tool_choice in ("required", "named") and found.tool_parser)
    think = found.thinking and (found.reasoning_parser or not forced)
    options = texts[reasoning_kind]
    reasoning = options[replies.choose(key, len(options))].format(tool=tool)
    arguments: Mapping[str, Any] = {}
    if tool is not None:
        generated = schema.instance(found.tool_schemas.get(tool) or {"type": "object"})
        arguments = generated if isinstance(generated, dict) else {}
    return Reply(
        kind=kind,
        body=json_body if kind == "json" and json_body is not None else answer,
        tool=tool or "",
        arguments=arguments,
        think=think,
        reasoning=reasoning,
        endless=think and config.reasoning_budget_exhaust,
        chinese=chinese,
    )


def _text(text: str) -> list[int]:
    return glm.encode(text, allow_special=False)


def _glm_call(reply: Reply) -> list[int]:
    """GLM-4.5's call format: `<tool_call>name\\n<arg_key>k</arg_key>\\n<arg_value>v</arg_value>\\n</tool_call>`."""
    out = [TOOL_CALL, *_text(reply.tool + "\n")]
    for name, value in reply.arguments.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out += [ARG_KEY, *_text(name), END_ARG_KEY, *_text("\n"), ARG_VALUE, *_text(shown), END_ARG_VALUE]
        out += _text("\n")
    return [*out, END_TOOL_CALL]


def _hermes_call(reply: Reply) -> list[int]:
    """Qwen3's (hermes) call format: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`."""
    call = json.dumps({"name": reply.tool, "arguments": reply.arguments}, ensure_ascii=False)
    return [TOOL_CALL, *_text(f"\n{call}\n"), END_TOOL_CALL]


def _endless(chinese: bool) -> Iterator[int]:
    return itertools.cycle(_text("".join(_ENDLESS_ZH if chinese else _ENDLESS_EN)))


def model_tokens(reply: Reply, family: Family | None) -> Iterator[int]:
    """The model's endless token stream for `reply` in the family's format; the engine stops it.

    GLM-4.5 writes `\\n<think>…</think>\\n` and ends a turn on <|user|> (a call on <|observation|>);
    Qwen3 writes `<think>\\n…\\n</think>\\n\\n` and ends on its EOS. JSON follows `</think>` directly:
    the grammar allows nothing else.
    """
    head: list[int] = []
    if family == "glm45" and reply.think:
        head = [*_text("\n"), THINK, *_text(reply.reasoning)]
    elif family == "qwen3" and reply.think:
        head = [THINK, *_text(f"\n{reply.reasoning}\n")]
    if reply.endless:
        return itertools.chain(head, _endless(reply.chinese))
    if reply.think:
        head += [END_THINK, *_text("" if family == "glm45" or reply.kind == "json" else "\n\n")]
    if reply.kind == "tool":
        call = _glm_call(reply) if family == "glm45" else _hermes_call(reply)
        lead = _text("\n") if family == "glm45" else []
        body = [*lead, *call, glm.OBSERVATION if family == "glm45" else glm.EOS]
    elif reply.kind == "json":
        body = [*_text(reply.body), glm.USER if family != "qwen3" else glm.EOS]
    elif family == "qwen3":
        body = [*_text(reply.body), glm.EOS]
    else:
        body = [*_text("\n" + reply.body), glm.USER]
    return itertools.chain(head, body, replies.continuation(reply.chinese))
