"""Prompts for load tests: a built-in mixed Chinese/English set, or a JSONL (or JSON array) file.

Each line is one of
* ``{"messages": [{"role": "user", "content": "..."}, ...]}`` (OpenAI chat);
* ``{"prompt": "..."}`` (completion);
* ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}``
  (ShareGPT): turns up to the last human one become the chat messages.

Any line may add ``"golden": "the known-good answer"`` (or ``{"answer": ..., "min_similarity": 0.8}``):
the Locust users grade each successful reply to it by lexical similarity (``monitor.golden.lexical``,
no network call per request), which gives the golden-answer pass rate (``quality_rate``) per step.

Every prompt serves both endpoints: a chat-only prompt gives its last user message to
/v1/completions, and a completion-only prompt becomes one user message for chat.
Pure data and file reading only; the Locust process imports this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError
from monitor.textfile import read_text_file

__all__ = ["BUILTIN_PROMPTS", "Prompt", "load_prompts", "parse_prompt"]

_ROLES = {"system", "user", "assistant", "tool"}
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MAX_PROMPTS = 100_000
# ShareGPT_V3_unfiltered_cleaned_split.json, vLLM bench's usual dataset, is about 670 MB.
MAX_PROMPTS_BYTES = 1024 * 1024 * 1024
DEFAULT_MIN_SIMILARITY = 0.8  # the same default as a probe's expect.golden


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs for chat
    text: str  # the completion prompt
    golden: str | None = None  # the known-good answer replies are graded against
    min_similarity: float = DEFAULT_MIN_SIMILARITY

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


def _from_text(text: str) -> Prompt:
    return Prompt((("user", text),), text)


# Short questions whose replies fit in the default 128 tokens on real chat models; the mix of
# languages exercises multi-byte UTF-8 in the stream.
BUILTIN_PROMPTS: tuple[Prompt, ...] = tuple(
    _from_text(text)
    for text in (
        "你好",
        "Hello!",
        "用一句话介绍一下你自己。",
        "What is the capital of France? Answer in one sentence.",
        "请列出三种常见的水果。",
        "Give me two tips for writing clear emails.",
        "解释一下什么是机器学习，不超过五十个字。",
        "Summarize the plot of Romeo and Juliet in two sentences.",
    )
)


def parse_prompt(obj: Any) -> Prompt:
    """One decoded JSONL line as a Prompt; ValueError says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object with messages, prompt or conversations")
    prompt = _parse_text(obj)
    if "golden" not in obj:
        return prompt
    answer, min_similarity = _golden(obj["golden"])
    return replace(prompt, golden=answer, min_similarity=min_similarity)


def _golden(raw: Any) -> tuple[str, float]:
    if isinstance(raw, str):
        raw = {"answer": raw}
    if not isinstance(raw, dict) or set(raw) - {"answer", "min_similarity"}:
        raise ValueError("golden: must be the answer, or an object with answer and min_similarity")
    answer, threshold = raw.get("answer"), raw.get("min_similarity", DEFAULT_MIN_SIMILARITY)
    if not isinstance(answer, str) or not answer:
        raise ValueError("golden.answer: must be a non-empty string")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise ValueError("golden.min_similarity: must be a number from 0 to 1")
    return answer, float(threshold)


def _parse_text(obj: dict[str, Any]) -> Prompt:
    if "messages" in obj:
        return _from_messages(obj["messages"])
    if "prompt" in obj:
        text = obj["prompt"]
        if not isinstance(text, str) or not text:
            raise ValueError("prompt: must be a non-empty string")
        return _from_text(text)
    if "conversations" in obj:
        return _from_sharegpt(obj["conversations"])
    raise ValueError("expected a messages, prompt or conversations field")


def _from_messages(raw: Any) -> Prompt:
    if not isinstance(raw, list) or not raw:
        raise ValueError("messages: must be a non-empty list")
    messages: list[tuple[str, str]] = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}]: must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}].role: must be one of {sorted(_ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content: must be a string")
        messages.append((role, content))
    users = [content for role, content in messages if role == "user"]
    if not users:
        raise ValueError("messages: needs at least one user message")
    return Prompt(tuple(messages), users[-1])


def _from_sharegpt(raw: Any) -> Prompt:
    if not isinstance(raw, list) or not raw:
        raise ValueError("conversations: must be a non-empty list")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict):
            raise ValueError(f"conversations[{i}]: must be an object with from and value")
        role = _SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        value = turn.get("value")
        if role is None:
            raise ValueError(f"conversations[{i}].from: must be human, gpt or system")
        if not isinstance(value, str):
            raise ValueError(f"conversations[{i}].value: must be a string")
        turns.append((role, value))
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=-1)
    if last_user < 0:
        raise ValueError("conversations: needs at least one human turn")
    # The recorded answers after the last human turn are what the server should now produce.
    kept = tuple(turns[: last_user + 1])
    return Prompt(kept, kept[-1][1])


def load_prompts(path: Path) -> tuple[Prompt, ...]:
    """Read prompts from JSONL (or one JSON array); errors name ``FILE:LINE``."""
    text = read_text_file(path, "--prompts", MAX_PROMPTS_BYTES)
    if text.lstrip().startswith("["):
        return _load_array(path, text)
    prompts: list[Prompt] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompts.append(parse_prompt(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ConfigError(f"--prompts: {path}:{number}: {exc}") from None
        if len(prompts) >= MAX_PROMPTS:
            break
    if not prompts:
        raise ConfigError(f"--prompts: {path} has no prompts")
    return tuple(prompts)


def _load_array(path: Path, text: str) -> tuple[Prompt, ...]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--prompts: {path}: invalid JSON: {exc}") from None
    prompts: list[Prompt] = []
    for i, item in enumerate(items[:MAX_PROMPTS]):
        try:
            prompts.append(parse_prompt(item))
        except ValueError as exc:
            raise ConfigError(f"--prompts: {path}: item {i}: {exc}") from None
    if not prompts:
        raise ConfigError(f"--prompts: {path} has no prompts")
    return tuple(prompts)
