"""What the toy GLM-4-9B-Chat "model" would sample: an endless stream of token ids.

A chat reply is `"\\n" + answer` (GLM writes an empty metadata line first, §6.1) followed by
`<|user|>`. Nothing stops the stream there: it goes on with a dialogue the model writes for
both sides, exactly what vLLM shows when the stop ids are missing (§6.2, §6.3 items 1-3).
Stopping is the engine's job (`engine.py`), not this module's.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence

from monitor.mock import glm

__all__ = ["answer", "chat_tokens", "choose", "completion_tokens", "continuation"]

_GREETINGS = {"你好", "您好", "hi", "hello", "hey", "hello there"}
GREETING_ZH = "你好👋！我是人工智能助手 ChatGLM，很高兴见到你，欢迎问我任何问题。"
GREETING_EN = "Hello 👋! I'm ChatGLM, an AI assistant. Nice to meet you, feel free to ask me any questions."

_ANSWERS_ZH = (
    "当然可以！这是一个很好的问题。简单来说，答案取决于具体情况，但一步一步地分析通常会很有帮助。如果你能提供更多细节，我可以给出更具体的建议。",
    "我明白你的意思。首先，我们需要弄清楚问题的关键点；其次，列出可能的解决方案；最后，比较它们的优缺点并做出选择。希望这对你有所帮助！",
    "这是一个有趣的话题。从不同的角度来看，它既有优点也有挑战。总的来说，我建议先从小处着手，逐步积累经验。",
)
_ANSWERS_EN = (
    "Sure! That's a great question. In short, it depends on the context, but breaking the problem into "
    "small steps usually helps. If you share more details, I can give you a more specific answer.",
    "I understand. First, identify the key constraints; second, list the possible options; finally, "
    "compare their trade-offs and pick the one that fits best. I hope this helps!",
    "That's an interesting topic. There are advantages and challenges from different perspectives. "
    "Overall, I'd suggest starting small and iterating.",
)
# The turns the model invents when nothing stops it, and the role words it writes before each
# one; with the markers skipped, the role words are what stays visible (§6.2).
_NEXT_TURNS_ZH = (
    ("你还能做些什么？", "我可以回答问题、写作、翻译、总结文章，还可以陪你聊天。"),
    ("谢谢你！", "不客气！如果还有其他问题，随时问我。"),
)
_NEXT_TURNS_EN = (
    ("What else can you do?", "I can answer questions, write, translate and summarize."),
    ("Thank you!", "You're welcome! Feel free to ask me anything else."),
)
_ROLES_ZH = ("用户：", "助手：")
_ROLES_EN = ("User: ", "Assistant: ")
# Raw continuations for /v1/completions, which applies no template (§6.2).
_CONTINUATIONS_ZH = (
    "，我是一个学生，今天想和大家分享一下我的学习经历。我从小就喜欢读书，每天放学后都会去图书馆看书。",
    "的问题，我们需要从多个方面来考虑。首先是时间，其次是成本，最后还要考虑大家的意见。",
)
_CONTINUATIONS_EN = (
    " and welcome to our website. We are a small team of engineers who love building useful tools.",
    " is one of the most common questions we hear. The short answer is that it depends on your goals.",
)

_NAME_ZH = re.compile(r"我叫(?!什么)([^\s，,。.！!？?、]{1,12})")
_NAME_EN = re.compile(r"\bmy name is ([A-Za-z][\w-]{0,30})", re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u9fff]")


def choose(key: str, options: int) -> int:
    """A stable index in `range(options)` derived from `key` (not Python's salted `hash`)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % options


def _name_in(texts: Sequence[str]) -> str | None:
    for text in reversed(texts):
        match = _NAME_ZH.search(text) or _NAME_EN.search(text)
        if match:
            return match.group(1)
    return None


def answer(user_texts: Sequence[str], key: str) -> tuple[str, bool]:
    """The visible reply (without the leading newline) and whether it is Chinese."""
    last = user_texts[-1].strip() if user_texts else ""
    chinese = bool(_CJK.search(last))
    bare = last.rstrip("!！.。~～ ").lower()
    if bare in _GREETINGS:
        return (GREETING_ZH if chinese else GREETING_EN), chinese
    if "我叫什么" in last or "我的名字是什么" in last or re.search(r"what(?:'s| is) my name", last, re.I):
        name = _name_in(user_texts[:-1])
        if chinese:
            return (f"你叫{name}。" if name else "抱歉，你还没有告诉我你的名字。"), True
        return (f"Your name is {name}." if name else "Sorry, you haven't told me your name yet."), False
    own_name = _name_in([last])
    if own_name:
        if chinese:
            return f"你好，{own_name}！很高兴认识你。有什么我可以帮你的吗？", True
        return f"Nice to meet you, {own_name}! How can I help you today?", False
    answers = _ANSWERS_ZH if chinese else _ANSWERS_EN
    return answers[choose(key, len(answers))], chinese


def chat_tokens(messages: Sequence[Mapping[str, object]], key: str, *, leak_special: bool) -> Iterator[int]:
    """The model's endless output for a chat prompt; `key` picks among canned answers."""
    user_texts = [glm.message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    text, chinese = answer(user_texts, key)
    turns = _NEXT_TURNS_ZH if chinese else _NEXT_TURNS_EN
    reply = glm.encode("\n" + text, allow_special=False)
    if leak_special:
        # A wrong template makes the model *write* the markers as text, so they survive
        # skip_special_tokens; the real <|user|> still ends the reply.
        user, bot = turns[0]
        reply += glm.encode(f"<|user|>\n{user}<|assistant|>\n{bot}", allow_special=False)
    return itertools.chain(reply, continuation(chinese))


def continuation(chinese: bool) -> Iterator[int]:
    """What the model writes after its turn when nothing stops it: both sides of a dialogue (§6.2)."""
    turns = _NEXT_TURNS_ZH if chinese else _NEXT_TURNS_EN
    user_role, bot_role = _ROLES_ZH if chinese else _ROLES_EN
    encoded = [
        (glm.encode(f"\n{user_role}{user}", allow_special=False), glm.encode(f"\n{bot_role}{bot}", allow_special=False))
        for user, bot in turns
    ]
    for user_ids, bot_ids in itertools.cycle(encoded):
        yield glm.USER
        yield from user_ids
        yield glm.ASSISTANT
        yield from bot_ids


def completion_tokens(prompt: str, key: str) -> Iterator[int]:
    """The model's endless raw continuation of `prompt` (no chat template, §6.2)."""
    options: Sequence[str] = _CONTINUATIONS_ZH if _CJK.search(prompt) else _CONTINUATIONS_EN
    if prompt.strip() in _GREETINGS and _CJK.search(prompt):
        options = _CONTINUATIONS_ZH[:1]  # "你好" -> "，我是一个学生，..." (§6.2)
    text = options[choose(key, len(options))]
    return itertools.cycle(glm.encode(text, allow_special=False))
