#!/usr/bin/python3
"""A Qwen3-MoE checkpoint at Qwen3-30B-A3B's width for tests/bench/moe_bench.sh: hidden 2048,
vocab 151936, 32 heads of 128 (4 KV heads), experts of moe_intermediate_size 768, random bf16
weights, the tensor names and config.json fields of the real checkpoint (the table of
tests/python/family_models.py), one model.safetensors, Qwen 3's tokenizer, tied head.
Written last, config.json marks a complete checkpoint. Two layers: layer 0 dense (mlp_only_layers [0]) with intermediate_size = EXPERTS x 768, so that
the dense decode of the same rows reads the same head from the same file; layer 1 MoE with
EXPERTS routed experts (the real model has 128; the width per expert is what is real).
usage: make_moe_checkpoint.py OUT_DIR [experts]"""
import copy
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import family_models as fm  # noqa: E402
import fi_testlib as fl  # noqa: E402


def config(experts):
    tok, cfg, _, _, layout = fm.MOE_FAMILIES["qwen3_moe"]
    cfg = copy.deepcopy(cfg)
    cfg.update({"hidden_size": 2048, "moe_intermediate_size": 768, "intermediate_size": experts * 768,
                "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                "num_experts": experts, "num_experts_per_tok": min(8, experts), "num_hidden_layers": 2,
                "decoder_sparse_step": 1, "mlp_only_layers": [0], "max_window_layers": 2,
                "tie_word_embeddings": True})
    return tok, cfg, layout


def random_bf16(rng, shape, kind):
    """bf16 bits of 1 + 0.1 N(0, 1) (norms), N(0, 1) (the embedding) or N(0, 1/fan_in) (matrices),
    as family_models draws them; made 8192 rows at a time (the embedding is 311M values)."""
    out = np.empty(shape, np.uint16)
    scale = np.float32(0.1 if kind == "norm" else 1.0 if kind == "embed" else 1.0 / np.sqrt(shape[-1]))
    for r0 in range(0, shape[0], 8192):
        v = rng.standard_normal((min(8192, shape[0] - r0), *shape[1:]), dtype=np.float32) * scale
        out[r0:r0 + 8192] = fl.to_bf16_bits(v + 1 if kind == "norm" else v)
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    experts = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    tok, cfg, layout = config(experts)
    tdir = fm.tokenizer_dir(tok)
    if not os.path.exists(os.path.join(tdir, "tokenizer.json")):
        sys.exit(f"make_moe_checkpoint: {tdir}/tokenizer.json missing (launch/setup-deps.sh fetches it)")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape, kind in fm._moe_tensor_table(cfg, layout):
        if name == "lm_head.weight":  # tied: the embedding is the head
            continue
        tensors[name] = ("BF16", random_bf16(rng, shape, kind))
    fl.write_safetensors(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tdir, fn)):
            shutil.copyfile(os.path.join(tdir, fn), os.path.join(out, fn))
    print(f"{out}: Qwen3-MoE, hidden 2048, vocab {cfg['vocab_size']}, layer 0 dense ({experts * 768} rows), "
          f"layer 1 {experts} experts x 768")


if __name__ == "__main__":
    main()
