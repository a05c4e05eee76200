"""Model-family-specific fixes: which token ends a turn, and which server flags turn on each pipeline.

The family is guessed from the served model name and from markup seen in replies. The GLM-4 stop
remedy is the one from the incident (wire reference §6.1, §6.3): its tokenizer's only EOS is
`<|endoftext|>`, but a turn ends with `<|user|>` or `<|observation|>`.

The parser names below were read in the servers' own registries, not guessed:
- vLLM: `_REASONING_PARSERS_TO_REGISTER` in vllm/reasoning/__init__.py and `_TOOL_PARSERS_TO_REGISTER`
  in vllm/tool_parsers/__init__.py (vllm-project/vllm 0064cc9c); the 400s the doctor quotes come
  from `OnlineRenderer.render_chat` in vllm/renderers/online_renderer.py, and
  `ParserManager.get_tool_parser` in vllm/parser/parser_manager.py returns no tool parser unless both
  --enable-auto-tool-choice and --tool-call-parser are given (so tool_choice "required" needs them too).
  docs/features/tool_calling.md pairs the models with parsers (Qwen -> hermes, DeepSeek-R1-0528 ->
  deepseek_v3 plus examples/tool_chat_template_deepseekr1.jinja, GLM-4.5/4.6 -> glm45, GLM-4.7 -> glm47,
  gpt-oss -> openai); the structured-output backend is `StructuredOutputsConfig.backend` in
  vllm/config/structured_outputs.py, spelled --structured-outputs-config.backend.
- SGLang: `ReasoningParser.DetectorMap` in python/sglang/srt/parser/reasoning_parser.py (deepseek-r1,
  glm45, qwen3, gpt-oss; no glm47 entry, GLM-4.7 uses glm45), `FunctionCallParser.ToolCallParserEnum`
  in python/sglang/srt/function_call/function_call_parser.py (deepseekv3, glm45, glm47, gpt-oss,
  qwen25 = qwen), and `GRAMMAR_BACKEND_CHOICES` (xgrammar, outlines, llguidance, none) behind
  --grammar-backend in python/sglang/srt/server_args.py. SGLang needs no --enable-auto-tool-choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Family = Literal["glm", "glm45", "glm47", "qwen3", "deepseek_r1", "gpt_oss", "chatml", "llama3", "unknown"]
# How a family ends its turns: the stop-token and chat-template remedies know only these.
TurnFamily = Literal["glm", "chatml", "llama3", "unknown"]

GLM_STOP_TOKEN_IDS = (151329, 151336, 151338)  # <|endoftext|>, <|user|>, <|observation|>
LLAMA3_EOT_ID = 128009  # <|eot_id|>

_NAME_PATTERNS: tuple[tuple[Family, re.Pattern[str]], ...] = (
    ("glm47", re.compile(r"glm[-_ ]?4\.7", re.IGNORECASE)),
    ("glm45", re.compile(r"glm[-_ ]?4\.[56]", re.IGNORECASE)),
    ("glm", re.compile(r"glm", re.IGNORECASE)),
    ("gpt_oss", re.compile(r"gpt[-_ ]?oss", re.IGNORECASE)),
    ("deepseek_r1", re.compile(r"deepseek[-_ ]?r1", re.IGNORECASE)),
    # Qwen3 itself: Qwen3-Coder and Qwen3.5+ write XML calls (qwen3_coder/qwen3_xml), not hermes JSON.
    ("qwen3", re.compile(r"qwen[-_ ]?3(?![.\d])(?!.*coder)", re.IGNORECASE)),
    ("llama3", re.compile(r"llama[-_ ]?3", re.IGNORECASE)),
    ("chatml", re.compile(r"qwen|yi-|internlm|chatml|hermes|deepseek", re.IGNORECASE)),
)
_TOKEN_HINTS: tuple[tuple[Family, tuple[str, ...]], ...] = (
    ("glm45", ("<arg_key>", "<arg_value>")),
    ("glm", ("[gMASK]", "<sop>", "<|user|>", "<|observation|>")),
    ("gpt_oss", ("<|channel|>", "<|start|>assistant")),
    ("deepseek_r1", ("<｜tool▁calls▁begin｜>", "<｜end▁of▁sentence｜>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("llama3", ("<|eot_id|>", "<|start_header_id|>")),
)
# GLM-4-9B-Chat neither thinks nor writes <arg_key>: a GLM whose reply does is GLM-4.5 or later.
_GLM45_SIGNS = ("<think>", "</think>", "<arg_key>")


def detect_family(model: str | None, texts: tuple[str, ...] = ()) -> Family:
    """The model family, from the model name first, then from markup in replies."""
    for family, pattern in _NAME_PATTERNS:
        if model and pattern.search(model):
            if family == "glm" and any(sign in text for text in texts for sign in _GLM45_SIGNS):
                return "glm45"
            return family
    for family, hints in _TOKEN_HINTS:
        if any(hint in text for text in texts for hint in hints):
            return family
    return "unknown"


def turn_family(family: Family) -> TurnFamily:
    """The family's turn format: GLM-4.5+ end turns like GLM-4, Qwen3 is ChatML."""
    if family in ("glm", "glm45", "glm47"):
        return "glm"
    if family == "qwen3":
        return "chatml"
    if family in ("chatml", "llama3"):
        return family
    return "unknown"


def stop_token_fix(family: Family) -> str:
    """How to make the server stop at the end of the assistant's turn."""
    ids = ", ".join(str(i) for i in GLM_STOP_TOKEN_IDS)
    turns = turn_family(family)
    if turns == "glm":
        return (
            f"GLM-4 ends a turn with <|user|> or <|observation|>, which its tokenizer does not treat as EOS. Send "
            f"`stop_token_ids: [{ids}]` with every request, or fix the server once: put "
            f"`\"eos_token_id\": [{ids}]` in the model's generation_config.json and keep vLLM's "
            "`--generation-config auto` (the default since 0.8; not `--generation-config vllm`)."
        )
    if turns == "chatml":
        return (
            'ChatML models (Qwen, Yi, ...) end a turn with <|im_end|>: send `stop: ["<|im_end|>"]` (or its id in '
            "`stop_token_ids`), or list it in generation_config.json `eos_token_id` and keep "
            "`--generation-config auto`."
        )
    if turns == "llama3":
        return (
            f"Llama 3 ends a turn with <|eot_id|> ({LLAMA3_EOT_ID}): send `stop_token_ids: [{LLAMA3_EOT_ID}]`, or "
            "list it in generation_config.json `eos_token_id` and keep `--generation-config auto`."
        )
    return (
        "Add the model's end-of-turn token to `stop_token_ids` (ChatML `<|im_end|>`, Llama 3 `<|eot_id|>` = "
        f"{LLAMA3_EOT_ID}, GLM-4 [{ids}]), or list it in generation_config.json `eos_token_id` and keep "
        "vLLM's `--generation-config auto`."
    )


def chat_template_fix(family: Family) -> str:
    """How to give the server the model's chat template."""
    where = (
        "GLM-4: the template in the model's tokenizer_config.json; serve it with `--trust-remote-code`"
        if turn_family(family) == "glm"
        else "the template from the model's tokenizer_config.json"
    )
    return (
        f"Start the server with the model's own chat template: `--chat-template /path/to/template.jinja` ({where}), "
        "or update the model files so tokenizer_config.json defines `chat_template`."
    )


def leak_fix(family: Family) -> str:
    return (
        "Special tokens reach the reply text: the chat template does not match the model, or "
        "`skip_special_tokens` is false. " + chat_template_fix(family)
    )


# --- the server pipelines: reasoning parser, tool-call parser, structured output -------------------


@dataclass(frozen=True, slots=True)
class Parsers:
    """One family's parser flags, spelled for each server (None: the server has no parser for it)."""

    label: str
    vllm_reasoning: str | None
    vllm_tools: str | None
    sglang_reasoning: str | None
    sglang_tools: str | None


_AUTO = "--enable-auto-tool-choice --tool-call-parser"
PARSERS: dict[Family, Parsers] = {
    "glm45": Parsers("GLM-4.5/4.6", "--reasoning-parser glm45", f"{_AUTO} glm45",
                     "--reasoning-parser glm45", "--tool-call-parser glm45"),
    "glm47": Parsers("GLM-4.7", "--reasoning-parser glm47", f"{_AUTO} glm47",
                     "--reasoning-parser glm45", "--tool-call-parser glm47"),
    "qwen3": Parsers("Qwen3", "--reasoning-parser qwen3", f"{_AUTO} hermes",
                     "--reasoning-parser qwen3", "--tool-call-parser qwen25"),
    "deepseek_r1": Parsers("DeepSeek-R1", "--reasoning-parser deepseek_r1",
                           f"{_AUTO} deepseek_v3 --chat-template examples/tool_chat_template_deepseekr1.jinja",
                           "--reasoning-parser deepseek-r1", "--tool-call-parser deepseekv3"),
    "gpt_oss": Parsers("gpt-oss", "--reasoning-parser openai_gptoss", f"{_AUTO} openai",
                       "--reasoning-parser gpt-oss", "--tool-call-parser gpt-oss"),
}  # fmt: skip
_REASONING_NAMES = (
    "vLLM `--reasoning-parser NAME` (qwen3, glm45, glm47, deepseek_r1, openai_gptoss, ...); "
    "SGLang `--reasoning-parser NAME` (qwen3, glm45, deepseek-r1, gpt-oss, ...)"
)
_TOOL_NAMES = (
    f"vLLM `{_AUTO} NAME` (hermes for Qwen, glm45, glm47, deepseek_v3, openai for gpt-oss, llama3_json, "
    "mistral, ...); SGLang `--tool-call-parser NAME` (qwen25, glm45, glm47, deepseekv3, gpt-oss, llama3, ...)"
)


def _spelled(parsers: Parsers, vllm: str | None, sglang: str | None) -> str:
    return f"for {parsers.label}: vLLM `{vllm}`; SGLang `{sglang}`"


def reasoning_parser_fix(family: Family) -> str:
    """How to make the server put the thinking into `reasoning` and only the answer into `content`."""
    parsers = PARSERS.get(family)
    head = "Start the server with the model's reasoning parser, "
    tail = (
        ". The thinking then arrives in `reasoning` (vLLM 0.32; `reasoning_content` in older vLLM and SGLang) "
        "and `content` holds only the answer."
    )
    if parsers is None:
        return head + _REASONING_NAMES + tail
    return head + _spelled(parsers, parsers.vllm_reasoning, parsers.sglang_reasoning) + tail


def tool_parser_fix(family: Family) -> str:
    """How to make the server return calls in `tool_calls` (and accept tool_choice auto and required)."""
    parsers = PARSERS.get(family)
    head = "Start the server with the model's tool-call parser, "
    tail = ". Calls then arrive in `tool_calls` with finish_reason tool_calls."
    if parsers is not None:
        return head + _spelled(parsers, parsers.vllm_tools, parsers.sglang_tools) + tail
    if family == "glm":
        return (
            "To call tools with GLM-4-9B-Chat, parse its calls in the client: the GLM parsers of vLLM and SGLang "
            "(glm45, glm47) read the <tool_call>/<arg_key> markup of GLM-4.5 and later, not GLM-4-9B-Chat's format. "
            f"GLM-4.5+ is served with `{_AUTO} glm45` (SGLang `--tool-call-parser glm45`)."
        )
    return head + _TOOL_NAMES + tail


def tools_ignored_fix(family: Family) -> str:
    """The server accepts tools and ignores them: not even tool_choice required gets a call.

    vLLM refuses such requests (the 400s), so this is another server: llama.cpp's
    docs/function-calling.md (llama-server needs --jinja) and llama-cpp-python's llama_chat_format.py
    (its "chatml-function-calling" handler) say how those parse calls.
    """
    parsers = PARSERS.get(family)
    sglang = (
        f"`{parsers.sglang_tools}` for {parsers.label}"
        if parsers is not None
        else "`--tool-call-parser NAME` (qwen25, glm45, glm47, deepseekv3, gpt-oss, llama3, ...)"
    )
    return (
        "The server accepts `tools` and answers as if there were none (vLLM would refuse the request). "
        "llama.cpp's llama-server parses calls only with `--jinja`; llama-cpp-python only with a tool-calling chat "
        f"format (`--chat_format chatml-function-calling`); SGLang needs {sglang}."
    )


def structured_output_fix(family: Family) -> str:
    """How to make the server enforce `response_format` json_schema (guided decoding)."""
    parsers = PARSERS.get(family)
    reasoning = (
        f" With a reasoning model keep its reasoning parser on (vLLM `{parsers.vllm_reasoning}`, SGLang "
        f"`{parsers.sglang_reasoning}`): it tells the grammar where the thinking ends."
        if parsers is not None
        else ""
    )
    return (
        "vLLM enforces `response_format: {type: json_schema}` by guided decoding, on by default: check that no "
        "gateway drops `response_format`, upgrade an old vLLM, and choose the backend with "
        "`--structured-outputs-config.backend xgrammar` (or guidance; auto is the default). SGLang: "
        "`--grammar-backend xgrammar` (none turns it off). llama-cpp-python accepts only `text` and "
        "`json_object` (with a `schema`)." + reasoning
    )
