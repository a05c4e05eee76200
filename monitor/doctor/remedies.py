"""Model-family-specific fixes: which token ends a turn, and how to make vLLM stop on it.

The family is guessed from the served model name and from special tokens seen in replies. The
GLM-4 remedy is the one from the incident (wire reference §6.1, §6.3): its tokenizer's only EOS is
`<|endoftext|>`, but a turn ends with `<|user|>` or `<|observation|>`.
"""

from __future__ import annotations

import re
from typing import Literal

Family = Literal["glm", "chatml", "llama3", "unknown"]

GLM_STOP_TOKEN_IDS = (151329, 151336, 151338)  # <|endoftext|>, <|user|>, <|observation|>
LLAMA3_EOT_ID = 128009  # <|eot_id|>

_NAME_PATTERNS: tuple[tuple[Family, re.Pattern[str]], ...] = (
    ("glm", re.compile(r"glm", re.IGNORECASE)),
    ("llama3", re.compile(r"llama[-_ ]?3", re.IGNORECASE)),
    ("chatml", re.compile(r"qwen|yi-|internlm|chatml|hermes|deepseek", re.IGNORECASE)),
)
_TOKEN_HINTS: tuple[tuple[Family, tuple[str, ...]], ...] = (
    ("glm", ("[gMASK]", "<sop>", "<|user|>", "<|observation|>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("llama3", ("<|eot_id|>", "<|start_header_id|>")),
)


def detect_family(model: str | None, texts: tuple[str, ...] = ()) -> Family:
    """GLM, ChatML (Qwen and friends) or Llama 3, from the model name first, then leaked tokens."""
    for family, pattern in _NAME_PATTERNS:
        if model and pattern.search(model):
            return family
    for family, hints in _TOKEN_HINTS:
        if any(hint in text for text in texts for hint in hints):
            return family
    return "unknown"


def stop_token_fix(family: Family) -> str:
    """How to make the server stop at the end of the assistant's turn."""
    ids = ", ".join(str(i) for i in GLM_STOP_TOKEN_IDS)
    if family == "glm":
        return (
            f"GLM-4 ends a turn with <|user|> or <|observation|>, which its tokenizer does not treat as EOS. Send "
            f"`stop_token_ids: [{ids}]` with every request, or fix the server once: put "
            f"`\"eos_token_id\": [{ids}]` in the model's generation_config.json and keep vLLM's "
            "`--generation-config auto` (the default since 0.8; not `--generation-config vllm`)."
        )
    if family == "chatml":
        return (
            'ChatML models (Qwen, Yi, ...) end a turn with <|im_end|>: send `stop: ["<|im_end|>"]` (or its id in '
            "`stop_token_ids`), or list it in generation_config.json `eos_token_id` and keep "
            "`--generation-config auto`."
        )
    if family == "llama3":
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
        if family == "glm"
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
