"""Write the conformance tier's tiny Qwen2 model, offline: a GGUF for llama.cpp and an HF folder for vLLM.

The tokenizer and chat template are real: they come from the Qwen2 vocabulary that llama.cpp's sources
ship (`models/ggml-vocab-qwen2.gguf`). The weights are made here, small and deterministic, so that a
real server's real sampling produces text with a known shape:

* Attention and MLP outputs are zero, so the residual stream at each position is the embedding of the
  token there, and the next token depends on the current token alone (a bigram machine).
* A handful of tokens each own one embedding dimension; every other token shares dimension 0.
* The output head maps the chat template's last prompt token ("\\n" after "<|im_start|>assistant")
  along a chain that spells REPLY and then emits <|im_end|>, so chat replies end by themselves with
  finish_reason "stop". Any other token leads into a two-token filler loop, so completions (no chat
  template) run on until max_tokens: the incident's "continuation, not a reply".
* Logit margins are ~110, so the chain holds at any temperature and under repetition penalties.

Usage (run by build.sh):
    make_model.py gguf --vocab ggml-vocab-qwen2.gguf --out tiny-qwen2.gguf   # needs gguf, numpy
    make_model.py hf --vocab ggml-vocab-qwen2.gguf --out hf/                 # needs transformers
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# Byte-level BPE spellings (Ġ is a leading space, Ċ a newline) of the reply and the filler loop.
REPLY = ["Hello", "!", "ĠHow", "Ġcan", "ĠI", "Ġhelp", "?"]
FILLER = ["Ġthe", "Ġcat"]
TRIGGER = "Ċ"  # the chat template's generation prompt ends "<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"

HIDDEN = 128
HEADS = 2  # head size 64: vLLM's CPU attention has kernels for 32, 64, 80, 96, 112, 128 and up
KV_HEADS = 2
LAYERS = 2
FFN = 256
CONTEXT = 2048
LOGIT_SCALE = 10.0  # × sqrt(HIDDEN) after the final RMSNorm: a margin of ~113 logits


def _bigram_weights(tokens: list[str]) -> dict[str, Any]:
    import numpy as np

    index = {tok: i for i, tok in enumerate(tokens)}
    missing = [t for t in [*REPLY, *FILLER, TRIGGER, END_OF_TURN] if t not in index]
    if missing:
        raise SystemExit(f"the vocabulary lacks tokens {missing}")
    owners = [TRIGGER, *REPLY, *FILLER]
    dim = {tok: i + 1 for i, tok in enumerate(owners)}
    n_vocab = len(tokens)
    embed = np.zeros((n_vocab, HIDDEN), dtype=np.float32)
    embed[:, 0] = 1.0
    for tok, d in dim.items():
        embed[index[tok]] = 0.0
        embed[index[tok], d] = 1.0
    head = np.zeros((n_vocab, HIDDEN), dtype=np.float32)
    chain = [TRIGGER, *REPLY, END_OF_TURN]
    for cur, nxt in zip(chain, chain[1:], strict=False):
        head[index[nxt], dim[cur]] = LOGIT_SCALE
    first, second = FILLER
    head[index[first], 0] = LOGIT_SCALE  # any other token -> filler
    head[index[first], dim[second]] = LOGIT_SCALE
    head[index[second], dim[first]] = LOGIT_SCALE
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    head_dim = HIDDEN // HEADS
    layers = []
    for _ in range(LAYERS):
        layers.append(
            {
                "attn_norm": np.ones(HIDDEN, dtype=np.float32),
                "attn_q": rand(HIDDEN, HIDDEN),
                "attn_k": rand(KV_HEADS * head_dim, HIDDEN),
                "attn_v": rand(KV_HEADS * head_dim, HIDDEN),
                "attn_q.bias": np.zeros(HIDDEN, dtype=np.float32),
                "attn_k.bias": np.zeros(KV_HEADS * head_dim, dtype=np.float32),
                "attn_v.bias": np.zeros(KV_HEADS * head_dim, dtype=np.float32),
                "attn_output": np.zeros((HIDDEN, HIDDEN), dtype=np.float32),
                "ffn_norm": np.ones(HIDDEN, dtype=np.float32),
                "ffn_gate": rand(FFN, HIDDEN),
                "ffn_up": rand(FFN, HIDDEN),
                "ffn_down": np.zeros((HIDDEN, FFN), dtype=np.float32),
            }
        )
    return {"embed": embed, "head": head, "norm": np.ones(HIDDEN, dtype=np.float32), "layers": layers}


def write_gguf(vocab_path: Path, out: Path) -> None:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(vocab_path)
    tokens: list[str] = reader.fields["tokenizer.ggml.tokens"].contents()
    w = _bigram_weights(tokens)
    writer = gguf.GGUFWriter(out, arch="qwen2")
    writer.add_name("llm-monitor tiny qwen2 (bigram test weights)")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer.") or field.name == "tokenizer.ggml.eos_token_id":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    # Qwen2-Instruct ends a turn with <|im_end|>; say so, as its own GGUF conversions do.
    writer.add_eos_token_id(tokens.index(END_OF_TURN))
    writer.add_tensor("token_embd.weight", w["embed"])
    for i, layer in enumerate(w["layers"]):
        for name, arr in layer.items():
            full = f"blk.{i}.{name}" if name.endswith(".bias") else f"blk.{i}.{name}.weight"
            writer.add_tensor(full, np.ascontiguousarray(arr))
    writer.add_tensor("output_norm.weight", w["norm"])
    writer.add_tensor("output.weight", w["head"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _read_tokens(vocab_path: Path) -> list[str]:
    import gguf

    tokens: list[str] = gguf.GGUFReader(vocab_path).fields["tokenizer.ggml.tokens"].contents()
    return tokens


def write_hf(vocab_path: Path, out: Path) -> None:
    """The same weights as an HF Qwen2 folder; the tokenizer is converted by transformers' GGUF loader."""
    import numpy as np
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer, GenerationConfig

    tokens = _read_tokens(vocab_path)
    w = _bigram_weights(tokens)
    names = {
        "attn_norm": "input_layernorm.weight",
        "attn_q": "self_attn.q_proj.weight",
        "attn_k": "self_attn.k_proj.weight",
        "attn_v": "self_attn.v_proj.weight",
        "attn_q.bias": "self_attn.q_proj.bias",
        "attn_k.bias": "self_attn.k_proj.bias",
        "attn_v.bias": "self_attn.v_proj.bias",
        "attn_output": "self_attn.o_proj.weight",
        "ffn_norm": "post_attention_layernorm.weight",
        "ffn_gate": "mlp.gate_proj.weight",
        "ffn_up": "mlp.up_proj.weight",
        "ffn_down": "mlp.down_proj.weight",
    }
    tensors = {"model.embed_tokens.weight": w["embed"], "model.norm.weight": w["norm"], "lm_head.weight": w["head"]}
    for i, layer in enumerate(w["layers"]):
        for name, arr in layer.items():
            tensors[f"model.layers.{i}.{names[name]}"] = np.ascontiguousarray(arr)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    eot, eos = tokens.index(END_OF_TURN), tokens.index(END_OF_TEXT)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HIDDEN // HEADS,
        "max_position_embeddings": CONTEXT,
        "max_window_layers": LAYERS,
        "use_sliding_window": False,
        "sliding_window": None,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "vocab_size": len(tokens),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": eos,
        "eos_token_id": eot,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(vocab_path.parent, gguf_file=vocab_path.name)
    tok.eos_token = END_OF_TURN  # as Qwen2-Instruct's own tokenizer_config says
    tok.save_pretrained(out)
    # Qwen2-Instruct's generation_config.json stops on both; vLLM adds these as stop token ids.
    GenerationConfig(eos_token_id=[eot, eos], bos_token_id=eos, pad_token_id=eos).save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    g = sub.add_parser("gguf")
    g.add_argument("--vocab", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    h = sub.add_parser("hf")
    h.add_argument("--vocab", type=Path, required=True)
    h.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.what == "gguf":
        write_gguf(args.vocab, args.out)
    else:
        write_hf(args.vocab, args.out)


if __name__ == "__main__":
    main()
