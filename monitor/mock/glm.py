"""A toy GLM-4-9B-Chat tokenizer and chat template.

It is not the real tiktoken vocabulary, but it is deterministic, reversible and used for
everything (usage counts, `/tokenize`, streaming), so the mock is self-consistent:

* special tokens keep their real GLM-4 ids (wire reference §6.1);
* a BMP character (CJK, punctuation, a lone ASCII char) is one token whose id is its code point;
* ASCII words are split into pieces of at most two characters (`" hello"` -> `" h" "el" "lo"`);
* characters outside the BMP (emoji) fall back to one token per UTF-8 byte, so streaming them
  yields empty deltas until the character is complete, like vLLM's incremental detokenizer.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "ADDED_IDS",
    "ASSISTANT",
    "EOS",
    "GMASK",
    "OBSERVATION",
    "SOP",
    "SPECIAL_IDS",
    "USER",
    "IncrementalDecoder",
    "decode",
    "encode",
    "is_special",
    "message_text",
    "render_chat",
    "token_str",
]

EOS = 151329  # <|endoftext|>, the tokenizer's only EOS
GMASK = 151331
SOP = 151333
USER = 151336
ASSISTANT = 151337
OBSERVATION = 151338

SPECIAL_IDS: dict[str, int] = {
    "<|endoftext|>": EOS,
    "[MASK]": 151330,
    "[gMASK]": GMASK,
    "[sMASK]": 151332,
    "<sop>": SOP,
    "<eop>": 151334,
    "<|system|>": 151335,
    "<|user|>": USER,
    "<|assistant|>": ASSISTANT,
    "<|observation|>": OBSERVATION,
}
_SPECIAL_STRS = {token_id: text for text, token_id in SPECIAL_IDS.items()}
# GLM-4.5-style added tokens of the reasoning flavours (monitor/mock/reasoning.py). They are not
# special, so skip_special_tokens keeps their text, as the real parsers need. `encode` never
# produces them: only the reasoning model writes them, by id.
ADDED_IDS: dict[str, int] = {
    "<think>": 151350,
    "</think>": 151351,
    "<tool_call>": 151352,
    "</tool_call>": 151353,
    "<arg_key>": 151356,
    "</arg_key>": 151357,
    "<arg_value>": 151358,
    "</arg_value>": 151359,
}
_ADDED_STRS = {token_id: text for text, token_id in ADDED_IDS.items()}

_PAIR_BASE = 0x10000  # two ASCII chars a, b -> _PAIR_BASE + a * 128 + b
_BYTE_BASE = _PAIR_BASE + 128 * 128  # byte fallback: _BYTE_BASE + byte
_SPECIAL_RE = re.compile("|".join(re.escape(s) for s in SPECIAL_IDS))
# Word pieces: an optional space glued to letters, single digits, whitespace runs, other chars.
_PIECE_RE = re.compile(r" ?[A-Za-z']+|[0-9]|\s+|.", re.DOTALL)


def is_special(token_id: int) -> bool:
    return token_id in _SPECIAL_STRS


def _encode_plain(text: str, out: list[int]) -> None:
    for match in _PIECE_RE.finditer(text):
        piece = match.group()
        if piece.isascii():
            for start in range(0, len(piece), 2):
                pair = piece[start : start + 2]
                out.append(ord(pair) if len(pair) == 1 else _PAIR_BASE + ord(pair[0]) * 128 + ord(pair[1]))
            continue
        for char in piece:
            code = ord(char)
            if code < 0x10000:
                out.append(code)
            else:
                out.extend(_BYTE_BASE + byte for byte in char.encode())


def encode(text: str, *, allow_special: bool = True, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`; `add_special_tokens` prepends `[gMASK]<sop>` as GLM-4's tokenizer does."""
    out = [GMASK, SOP] if add_special_tokens else []
    if not allow_special:
        _encode_plain(text, out)
        return out
    position = 0
    for match in _SPECIAL_RE.finditer(text):
        _encode_plain(text[position : match.start()], out)
        out.append(SPECIAL_IDS[match.group()])
        position = match.end()
    _encode_plain(text[position:], out)
    return out


def _token_bytes(token_id: int) -> bytes:
    if token_id in _SPECIAL_STRS:
        return _SPECIAL_STRS[token_id].encode()
    if token_id in _ADDED_STRS:
        return _ADDED_STRS[token_id].encode()
    if _BYTE_BASE <= token_id < _BYTE_BASE + 256:
        return bytes([token_id - _BYTE_BASE])
    if _PAIR_BASE <= token_id < _BYTE_BASE:
        offset = token_id - _PAIR_BASE
        return bytes([offset // 128, offset % 128])
    if 0 <= token_id < 0x110000 and not 0xD800 <= token_id < 0xE000:
        return chr(token_id).encode()
    return b"\xef\xbf\xbd"  # U+FFFD for ids outside the toy vocabulary


def token_str(token_id: int) -> str:
    """The string of one token, as in `/tokenize`'s `token_strs` (byte tokens shown as `<0xNN>`)."""
    if _BYTE_BASE <= token_id < _BYTE_BASE + 256:
        return f"<0x{token_id - _BYTE_BASE:02X}>"
    return _token_bytes(token_id).decode(errors="replace")


def decode(token_ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
    """Plain decode; `/detokenize` keeps special tokens (§4), generation skips them (§5)."""
    data = b"".join(
        _token_bytes(token_id) for token_id in token_ids if not (skip_special_tokens and is_special(token_id))
    )
    return data.decode(errors="replace")


class IncrementalDecoder:
    """Turns one token at a time into text, holding back incomplete UTF-8 sequences."""

    def __init__(self, *, skip_special_tokens: bool) -> None:
        self._skip_special = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        if self._skip_special and is_special(token_id):
            return ""
        return self._utf8.decode(_token_bytes(token_id))


def message_text(content: object) -> str:
    """The text of a chat message `content`: a string, or the `text` parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [part.get("text") for part in content if isinstance(part, Mapping)]
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def render_chat(messages: Sequence[Mapping[str, object]], *, add_generation_prompt: bool = True) -> str:
    """GLM-4's chat template (tokenizer_config.json, §6.1), without the tools branch."""
    parts = ["[gMASK]<sop>"]
    for message in messages:
        text = message_text(message.get("content"))
        if text:
            parts.append(f"<|{message.get('role')}|>\n{text}")
    if add_generation_prompt:
        parts.append("<|assistant|>")
    return "".join(parts)
