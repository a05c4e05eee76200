"""Lexical similarity: character n-gram cosine, with no model and no network.

What it measures: how much of the same surface text two strings share. Both are NFKC-normalised,
case-folded, stripped of punctuation and whitespace runs, then cut into character 2- and
3-grams (1-grams too when either text is shorter than three characters); the score is the cosine of
the two n-gram count vectors. Character n-grams need no word splitter, so Chinese ("你好") scores as
well as English. Single characters are left out otherwise: any two English texts share most
letters, and with them unrelated answers scored 0.8.

Failure modes (why `method: model` or `embeddings` exist): a paraphrase with other words scores
low; a negation ("is" / "is not") or a swapped number scores high; a long reply around a short
golden answer dilutes the score (set `min_similarity` from a known-good reply, not from 1.0).
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter

__all__ = ["MAX_CHARS", "lexical_similarity", "normalise"]

# Both sides are cut before n-gramming: a megabyte reply must not cost seconds on the loop.
MAX_CHARS = 20_000
_N = (2, 3)
_SHORT_CHARS = 3


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols dropped, whitespace folded to single spaces."""
    folded = unicodedata.normalize("NFKC", text[:MAX_CHARS]).casefold()
    kept = "".join(ch if unicodedata.category(ch)[0] in "LN" else " " for ch in folded)
    return " ".join(kept.split())


def _grams(text: str, sizes: tuple[int, ...]) -> Counter[str]:
    grams: Counter[str] = Counter()
    for n in sizes:
        grams.update(text[i : i + n] for i in range(len(text) - n + 1))
    return grams


def lexical_similarity(a: str, b: str) -> float:
    """Cosine of the character 2-3-gram counts of `a` and `b`, in [0, 1]; two empty texts are identical (1)."""
    na, nb = normalise(a), normalise(b)
    if na == nb:
        return 1.0
    sizes = (1, *_N) if min(len(na), len(nb)) < _SHORT_CHARS else _N
    ga, gb = _grams(na, sizes), _grams(nb, sizes)
    if not ga or not gb:
        return 0.0
    # Summed in one fixed order, so swapping the arguments gives the very same float.
    dot = sum(ga[gram] * gb[gram] for gram in sorted(ga.keys() & gb.keys()))
    norm = math.sqrt(sum(c * c for c in ga.values())) * math.sqrt(sum(c * c for c in gb.values()))
    return max(0.0, min(1.0, dot / norm))
