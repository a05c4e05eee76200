"""What a load run cost: its token counts at the target's price (`targets[].price`).

Successful replies only: a failed request's tokens are not known. When some replies' token
counts were estimated (the server sent no usage), the cost is an estimate and says so.
"""

from __future__ import annotations

from typing import Any

from monitor.config.deployment import PriceSettings
from monitor.loadtest.window import Window

__all__ = ["cost_metrics", "cost_summary", "quality_cost_notes"]


def cost_metrics(window: Window, price: PriceSettings | None) -> dict[str, float | None]:
    """`cost`, `cost_per_1k_requests` and `cost_per_correct` over `window` (None without a price or data)."""
    if price is None:
        return dict.fromkeys(("cost", "cost_per_1k_requests", "cost_per_correct"))
    total = price.cost(window.input_tokens, window.output_tokens) or 0.0
    ok = window.requests - window.failures
    return {
        "cost": total,
        "cost_per_1k_requests": 1000 * total / ok if ok else None,
        # Per golden answer passed: what one correct answer costs, all replies paid for.
        "cost_per_correct": total / window.golden_passed if window.golden_passed else None,
    }


def cost_summary(window: Window, price: PriceSettings | None) -> dict[str, Any] | None:
    """The run's `cost` block for its summary, or None when the target has no price."""
    if price is None:
        return None
    return {
        **cost_metrics(window, price),
        "currency": price.currency,
        "input_tokens": window.input_tokens,
        "output_tokens": window.output_tokens,
        "estimated": window.estimated_tokens > 0,
    }


def quality_cost_notes(summary: dict[str, Any]) -> list[str]:
    """Plain-text lines on the golden-answer pass rate and the cost, for the printed and the HTML report."""
    notes = []
    golden = summary.get("golden")
    if golden and golden.get("graded"):
        graded, passed = int(golden["graded"]), int(golden.get("passed") or 0)
        notes.append(
            f"golden answers: {100 * passed / graded:.1f}% passed ({passed:,} of {graded:,} replies; "
            "lexical similarity, graded by the load generator)"
        )
    cost = summary.get("cost")
    if cost:
        currency = cost["currency"]
        parts = [f"cost: {cost['cost']:.6g} {currency}"]
        if cost.get("cost_per_1k_requests") is not None:
            parts.append(f"{cost['cost_per_1k_requests']:.6g} {currency} per 1k requests")
        if cost.get("cost_per_correct") is not None:
            parts.append(f"{cost['cost_per_correct']:.6g} {currency} per correct answer")
        tokens = f"from {cost['input_tokens']:,} input + {cost['output_tokens']:,} output tokens"
        notes.append(", ".join(parts) + f" ({tokens}{', estimated' if cost.get('estimated') else ''})")
    return notes
