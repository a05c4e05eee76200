"""The changed deployments drift_soak.py restarts a server with: one thing different each, in a temp dir.

llama-server gets flags and GGUF variants written by make_model.py (the llama venv has gguf and
numpy); vLLM serves `workdir/model`, a symlink the changes repoint to a folder of symlinks to the
cached HF model with one file replaced, so /v1/models' `root` stays the same path throughout (the
weights behind an unchanged name, as in a real swap). The cached model is never written.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.realservers.servers import servers_root

__all__ = ["CHANGES", "Change", "vllm_model_link"]

ROOT = Path(__file__).resolve().parent.parent
# A template with a real-world bug: it drops the system message. Renders differently, replies alike.
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# make_model.py with one thing changed; argv: variant, gguf|hf, vocab, out.
_MAKE_VARIANT = """
import sys, gguf
from pathlib import Path
sys.path.insert(0, {realservers!r})
import make_model as m
variant, kind, vocab, out = sys.argv[1:5]
if variant == "weights-reply":
    m.REPLY = ["Hello", "!", "ĠHow", "Ġcan", "ĠI", "Ġassist", "?"]
elif variant == "weights-soft":
    m.LOGIT_SCALE = 1.0  # same argmax everywhere, much flatter distributions
elif variant == "tokenizer":
    add = gguf.GGUFWriter.add_key_value
    def patched(self, key, val, vtype, sub_type=None):
        if key == "tokenizer.ggml.merges":
            val = val[: len(val) // 2]  # an older tokenizer: half its BPE merges, same ids
        return add(self, key, val, vtype, sub_type=sub_type)
    gguf.GGUFWriter.add_key_value = patched
(m.write_gguf if kind == "gguf" else m.write_hf)(Path(vocab), Path(out))
"""

Argv = Callable[[list[str], Path], list[str]]


@dataclass
class Change:
    name: str
    expected: str  # the component that must drift ("-": none may)
    argv: Argv = lambda args, workdir: args
    prepare: Callable[[Path], None] = lambda workdir: None


def _make(variant: str, kind: str, out: Path) -> None:
    root = servers_root()
    venv = "llama-0.3.36" if kind == "gguf" else "vllm-0.32.0"
    python = root / venv / "venv" / "bin" / "python"
    vocab = root / "llama-0.3.36" / "vocab" / "ggml-vocab-qwen2.gguf"
    code = _MAKE_VARIANT.format(realservers=str(ROOT / "tests" / "realservers"))
    subprocess.run([str(python), "-c", code, variant, kind, str(vocab), str(out)], check=True, timeout=600)


def _set(flag: str, value: str) -> Argv:
    def edit(args: list[str], workdir: Path) -> list[str]:
        args = list(args)
        args[args.index(flag) + 1] = value
        return args

    return edit


def _add(*extra: str) -> Argv:
    return lambda args, workdir: [*args, *extra]


def _template(flag: str) -> Argv:
    def edit(args: list[str], workdir: Path) -> list[str]:
        path = workdir / "no-system.jinja"
        path.write_text(NO_SYSTEM_TEMPLATE, encoding="utf-8")
        return [*args, flag, str(path)]

    return edit


def _gguf(variant: str) -> Change:
    def prepare(workdir: Path) -> None:
        _make(variant, "gguf", workdir / f"{variant}.gguf")

    def argv(args: list[str], workdir: Path) -> list[str]:
        return _set("-m", str(workdir / f"{variant}.gguf"))(args, workdir)

    return Change("", "", argv, prepare)


def _named(change: Change, name: str, expected: str) -> Change:
    change.name, change.expected = name, expected
    return change


# --- vLLM: workdir/model -> workdir/hf-<variant>/ (symlinks to the cached files, one replaced) ---------


def vllm_model_link(workdir: Path, variant: str = "base") -> Path:
    """Point workdir/model at the variant's folder (built on first use) and return workdir/model."""
    folder = workdir / f"hf-{variant}"
    if not folder.exists():
        _build_hf(variant, folder)
    link = workdir / "model"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(folder, target_is_directory=True)
    return link


def _build_hf(variant: str, folder: Path) -> None:
    cached = servers_root() / "model" / "hf"
    if variant in ("weights-reply", "weights-soft"):
        _make(variant, "hf", folder)
        return
    folder.mkdir(parents=True)
    for path in cached.iterdir():
        (folder / path.name).symlink_to(path)
    if variant == "tokenizer":
        doc = json.loads((cached / "tokenizer.json").read_text(encoding="utf-8"))
        merges = doc["model"]["merges"]
        doc["model"]["merges"] = merges[: len(merges) // 2]  # an older tokenizer: half its BPE merges
        _replace(folder / "tokenizer.json", json.dumps(doc, ensure_ascii=False))
    elif variant == "stop":
        # The incident's misconfiguration: the end-of-turn token is not a stop token any more.
        eos = 151643  # <|endoftext|>
        for name, key, value in (
            ("generation_config.json", "eos_token_id", [eos]),
            ("config.json", "eos_token_id", eos),
            ("tokenizer_config.json", "eos_token", "<|endoftext|>"),
        ):
            doc = json.loads((cached / name).read_text(encoding="utf-8"))
            doc[key] = value
            _replace(folder / name, json.dumps(doc, indent=2))


def _replace(link: Path, text: str) -> None:
    link.unlink()
    link.write_text(text, encoding="utf-8")


def _vllm(variant: str, extra: Argv | None = None) -> Change:
    def prepare(workdir: Path) -> None:
        vllm_model_link(workdir, variant)

    return Change("", "", extra or (lambda args, workdir: args), prepare)


CHANGES: dict[str, list[Change]] = {
    "llama-server": [
        Change("restart, nothing changed", "-"),
        Change("chat template (no-system template file)", "chat_template", _template("--chat-template-file")),
        _named(_gguf("tokenizer"), "tokenizer (half the BPE merges)", "tokenizer"),
        _named(_gguf("weights-reply"), "model weights (reply says 'assist')", "reply"),
        _named(_gguf("weights-soft"), "model weights (same argmax, flatter logits)", "logprobs"),
        Change("stop tokens (--ignore-eos)", "stop_behaviour", _add("--ignore-eos")),
        Change("max_model_len (-c 2048 -> 1024)", "models", _set("-c", "1024")),
    ],
    "vllm": [
        _named(_vllm("base"), "restart, nothing changed", "-"),
        _named(
            _vllm("base", _template("--chat-template")), "chat template (--chat-template no-system)", "chat_template"
        ),
        _named(_vllm("tokenizer"), "tokenizer (half the BPE merges)", "tokenizer"),
        _named(_vllm("weights-reply"), "model weights (reply says 'assist')", "reply"),
        _named(_vllm("weights-soft"), "model weights (same argmax, flatter logits)", "logprobs"),
        _named(_vllm("stop"), "stop tokens (<|im_end|> not an eos any more)", "stop_behaviour"),
        _named(_vllm("base", _set("--max-model-len", "1024")), "max_model_len (2048 -> 1024)", "models"),
        _named(
            _vllm("base", _add("--override-generation-config", '{"max_new_tokens": 5}')),
            "sampling defaults (generation config max_new_tokens 5)",
            "sampling_defaults",
        ),  # fmt: skip
    ],
}
