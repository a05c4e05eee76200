"""Pure comparison of a reading with its baseline: digests, human-readable diffs, TV/KL over the top-k.

Every component but `logprobs` drifts when its canonical value differs at all. Logprobs drift only
when the mean per-token divergence of the top-k distributions passes the configured threshold: the
floats move under batching, the distributions do not.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from monitor.untrusted import Untrusted

__all__ = [
    "MAX_DIFF_CHARS",
    "Verdict",
    "canonical",
    "digest",
    "divergence",
    "judge",
    "kl",
    "render_diff",
    "total_variation",
]

MAX_DIFF_CHARS = 400
_CONTEXT_CHARS = 60
_CONTEXT_ITEMS = 4
_REST = "\x00rest"  # the probability mass outside the top-k, so each position is a whole distribution
_KL_FLOOR = 1e-6  # a token one side never saw: KL needs a floor, or it is infinite


@dataclass(frozen=True, slots=True)
class Verdict:
    changed: bool
    before: str  # rendered baseline, around the first difference (capped)
    after: str
    detail: str = ""  # for logprobs: "tv 0.031 <= 0.2"


def canonical(status: str, value: Any) -> str:
    """The stored form: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps({"status": status, "value": value}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(status: str, value: Any) -> str:
    return hashlib.sha256(canonical(status, value).encode()).hexdigest()


def _distribution(position: dict[str, float]) -> dict[str, float]:
    probs = {token: math.exp(lp) for token, lp in position.items()}
    total = sum(probs.values())
    if total > 1.0:  # rounding (or a server that renormalised): scale back to a distribution
        probs = {t: p / total for t, p in probs.items()}
        total = 1.0
    probs[_REST] = max(0.0, 1.0 - total)
    return probs


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the L1 distance between two top-k logprob maps, each completed by its remaining mass."""
    a, b = _distribution(p), _distribution(q)
    return 0.5 * sum(abs(a.get(t, 0.0) - b.get(t, 0.0)) for t in a.keys() | b.keys())


def kl(p: dict[str, float], q: dict[str, float]) -> float:
    """KL(p || q) over the union of the top-k and the remaining mass, both smoothed by `_KL_FLOOR`.

    A token one side never listed would make KL infinite; additive smoothing of both sides over the
    same support keeps it finite, zero for identical inputs and never negative.
    """
    a, b = _distribution(p), _distribution(q)
    support = a.keys() | b.keys()
    norm = 1.0 + _KL_FLOOR * len(support)
    total = 0.0
    for t in support:
        pa, qb = (a.get(t, 0.0) + _KL_FLOOR) / norm, (b.get(t, 0.0) + _KL_FLOOR) / norm
        total += pa * math.log(pa / qb)
    return max(0.0, total)


def divergence(before: list[dict[str, float]], after: list[dict[str, float]], metric: Literal["tv", "kl"]) -> float:
    """Mean per-position divergence; a position only one side has counts as entirely different."""
    n = max(len(before), len(after))
    if n == 0:
        return 0.0
    fn = total_variation if metric == "tv" else kl
    missing = 1.0 if metric == "tv" else -math.log(_KL_FLOOR)
    total = 0.0
    for i in range(n):
        total += fn(before[i], after[i]) if i < len(before) and i < len(after) else missing
    return total / n


def judge(
    component: str,
    baseline: tuple[str, Any],
    reading: tuple[str, Any],
    *,
    metric: Literal["tv", "kl"] = "tv",
    threshold: float = 0.2,
) -> Verdict:
    """Does `reading` (status, value) differ from `baseline` (status, value)?"""
    (b_status, b_value), (r_status, r_value) = baseline, reading
    if component == "logprobs" and b_status == r_status == "ok":
        score = divergence(b_value, r_value, metric)
        detail = f"{metric} {score:.3f} {'>' if score > threshold else '<='} {threshold:g}"
        if score <= threshold:
            return Verdict(False, "", "", detail)
        before, after = render_diff(_top_tokens(b_value), _top_tokens(r_value))
        return Verdict(True, before, after, detail)
    if canonical(b_status, b_value) == canonical(r_status, r_value):
        return Verdict(False, "", "")
    if b_status != r_status:
        return Verdict(True, _cap(_show(b_status, b_value)), _cap(_show(r_status, r_value)))
    before, after = render_diff(b_value, r_value)
    return Verdict(True, before, after)


def _top_tokens(positions: list[dict[str, float]]) -> list[str]:
    """Each position's most likely tokens with their probabilities, for a readable logprob diff."""
    out = []
    for position in positions:
        best = sorted(position.items(), key=lambda kv: -kv[1])[:3]
        out.append(" ".join(f"{t!r}:{math.exp(lp):.2f}" for t, lp in best))
    return out


def _show(status: str, value: Any) -> str:
    return "not served" if status == "not_served" else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _cap(text: str) -> str:
    clean = Untrusted().text(text)
    return clean if len(clean) <= MAX_DIFF_CHARS else clean[: MAX_DIFF_CHARS - 1] + "…"


def render_diff(before: Any, after: Any, path: str = "") -> tuple[str, str]:
    """The two values around their first difference: `max_model_len=8192` / `max_model_len=4096`."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys(), key=str):
            if key not in before or key not in after or canonical("", before[key]) != canonical("", after[key]):
                sub = f"{path}.{key}" if path else str(key)
                if key not in before:
                    return _cap(f"{sub} absent"), _cap(f"{sub}={_short(after[key])}")
                if key not in after:
                    return _cap(f"{sub}={_short(before[key])}"), _cap(f"{sub} absent")
                return render_diff(before[key], after[key], sub)
    if isinstance(before, list) and isinstance(after, list):
        i = next(
            (i for i, (x, y) in enumerate(zip(before, after, strict=False)) if x != y), min(len(before), len(after))
        )
        if all(isinstance(v, dict | list) for v in (before[i : i + 1] + after[i : i + 1])) and i < min(
            len(before), len(after)
        ):
            return render_diff(before[i], after[i], f"{path}[{i}]")
        lo = max(0, i - _CONTEXT_ITEMS)
        where = f"{path}[{i}]" if path else f"[{i}]"
        return (
            _cap(f"{where} of {len(before)}: …{_short(before[lo : i + _CONTEXT_ITEMS])}"),
            _cap(f"{where} of {len(after)}: …{_short(after[lo : i + _CONTEXT_ITEMS])}"),
        )
    if isinstance(before, str) and isinstance(after, str):
        i = next(
            (i for i, (x, y) in enumerate(zip(before, after, strict=False)) if x != y), min(len(before), len(after))
        )
        lo = max(0, i - _CONTEXT_CHARS)
        where = f"{path} at char {i}: " if path else f"at char {i}: "
        return (
            _cap(where + json.dumps(before[lo : i + _CONTEXT_CHARS], ensure_ascii=False)),
            _cap(where + json.dumps(after[lo : i + _CONTEXT_CHARS], ensure_ascii=False)),
        )
    prefix = f"{path}=" if path else ""
    return _cap(prefix + _short(before)), _cap(prefix + _short(after))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 2 * _CONTEXT_CHARS else text[: 2 * _CONTEXT_CHARS] + "…"
