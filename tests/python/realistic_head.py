"""Synthetic Llama-layout checkpoints whose LM-head has the structure of a trained one, for
measuring the bf16 GEMM's error (tests/bench/gemm_error.py, tests/python/test_gemm_bf16.py):
a strong common direction shared by every row, heavy-tailed row norms, clusters of near-duplicate
rows and a block of nearly identical "untrained" rows (Llama 3's reserved tokens), a final norm
with a few outlier channels, and neuron rows from flat to sharply peaked: random, heavy-tailed,
aligned with one token, with a cluster, with the common direction, with the untrained block.
One layer; the rows decoded are up_proj's. A byte-level tokenizer.json of V made-up tokens.
"""
import json
import os

import numpy as np

import fi_testlib as t


def lm_head(V, H, rng, common=1.0, s=0.02):
    """[V, H] float32 with entries of std ~s (0.02: |row| ~ 0.02 sqrt(H), as in Llama 3 8B)."""
    u = rng.standard_normal(H)
    u /= np.linalg.norm(u)
    norms = np.exp(rng.normal(0.0, 0.45, V))                       # heavy-tailed row norms
    norms *= np.where(rng.random(V) < 0.01, 3.0, 1.0)              # a few much larger rows
    w = rng.standard_normal((V, H)).astype(np.float32) * (s * norms[:, None]).astype(np.float32)
    w += (common * s * np.sqrt(H) * (0.5 + 0.5 * rng.random(V)))[:, None].astype(np.float32) * u[None, :].astype(np.float32)
    # near-duplicate clusters (case and spacing variants of one word)
    n_clusters = max(1, V // 1000)
    for c in range(n_clusters):
        ids = rng.choice(V, size=12, replace=False)
        center = w[ids[0]].copy()
        w[ids] = center[None, :] + 0.05 * s * rng.standard_normal((len(ids), H)).astype(np.float32)
    # a block of untrained rows: nearly identical, small
    blk = slice(V - min(256, V // 8), V)
    base = 0.3 * s * rng.standard_normal(H).astype(np.float32)
    w[blk] = base[None, :] + 1e-3 * s * rng.standard_normal((blk.stop - blk.start, H)).astype(np.float32)
    return w, u


def gamma(H, rng):
    g = np.exp(rng.normal(np.log(2.0), 0.25, H))
    g[rng.choice(H, size=max(1, H // 512), replace=False)] = 8.0   # outlier channels
    return g.astype(np.float32)


def neuron_rows(R, w, u, rng):
    """[R, H]: six kinds of neuron vectors, in turn."""
    V, H = w.shape
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    rows = np.empty((R, H), np.float32)
    untrained = V - 1
    for r in range(R):
        kind = r % 6
        noise = rng.standard_normal(H)
        noise /= np.linalg.norm(noise)
        if kind == 0:      # random direction: a flat distribution
            v = noise
        elif kind == 1:    # heavy-tailed components (outlier dims)
            v = rng.standard_t(2.0, H)
            v /= np.linalg.norm(v)
        elif kind == 2:    # aligned with one token, alignment 0.05..0.25: peaked
            a = rng.uniform(0.05, 0.25)
            v = a * wn[rng.integers(V)] + np.sqrt(1 - a * a) * noise
        elif kind == 3:    # aligned with several tokens (a near-duplicate cluster, or random few)
            ids = rng.choice(V, size=8, replace=False)
            d = wn[ids].sum(axis=0)
            d /= np.linalg.norm(d)
            a = rng.uniform(0.1, 0.3)
            v = a * d + np.sqrt(1 - a * a) * noise
        elif kind == 4:    # along the common direction: every logit moves together
            a = rng.uniform(0.1, 0.5) * rng.choice([-1, 1])
            v = a * u + np.sqrt(1 - a * a) * noise
        else:              # towards the untrained block
            a = rng.uniform(0.05, 0.2)
            v = a * wn[untrained] + np.sqrt(1 - a * a) * noise
        rows[r] = v * rng.uniform(0.5, 2.0)
    return rows


def tokenizer(V):
    """A byte-level BPE tokenizer.json with V distinct made-up tokens (no merges)."""
    alphabet = [chr(c) for c in range(33, 127)]
    vocab = {}
    for i in range(V):
        s, n = "", i
        while True:
            s += alphabet[n % len(alphabet)]
            n //= len(alphabet)
            if n == 0:
                break
        vocab[s + "\u0120" * (i >= len(alphabet) ** 2)] = i
    return {"version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": vocab, "merges": []}}


def write_checkpoint(out_dir, V, H, R, seed=7, common=1.0, std=0.02):
    """Writes a one-layer tied bf16 checkpoint; returns out_dir. std: the LM-head's entries
    (smaller: smaller logits, flatter distributions)."""
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    w, u = lm_head(V, H, rng, common, std)
    up = neuron_rows(R, w, u, rng)
    small = rng.standard_normal((R, H)).astype(np.float32) * 0.02
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
           "intermediate_size": R, "num_hidden_layers": 1, "num_attention_heads": max(1, H // 128),
           "num_key_value_heads": max(1, H // 512), "vocab_size": V, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": True, "max_position_embeddings": 2048, "rope_theta": 500000.0,
           "hidden_act": "silu", "torch_dtype": "bfloat16"}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer(V), f)
    b = lambda a: ("BF16", t.to_bf16_bits(a))  # noqa: E731
    kv = cfg["num_key_value_heads"] * (H // cfg["num_attention_heads"])
    tensors = {
        "model.embed_tokens.weight": b(w),
        "model.norm.weight": b(gamma(H, rng)),
        "model.layers.0.input_layernorm.weight": b(np.ones(H, np.float32)),
        "model.layers.0.post_attention_layernorm.weight": b(np.ones(H, np.float32)),
        "model.layers.0.self_attn.q_proj.weight": b(np.zeros((H, H), np.float32)),
        "model.layers.0.self_attn.k_proj.weight": b(np.zeros((kv, H), np.float32)),
        "model.layers.0.self_attn.v_proj.weight": b(np.zeros((kv, H), np.float32)),
        "model.layers.0.self_attn.o_proj.weight": b(np.zeros((H, H), np.float32)),
        "model.layers.0.mlp.up_proj.weight": b(up),
        "model.layers.0.mlp.gate_proj.weight": b(small),
        "model.layers.0.mlp.down_proj.weight": b(small.T.copy()),
    }
    t.write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    return out_dir
