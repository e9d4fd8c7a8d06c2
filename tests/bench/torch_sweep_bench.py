#!/usr/bin/python3
"""The PyTorch baseline for `flashinterp sweep` (a benchmark, not a test): the same work as a
finished sweep file of a Llama-layout model, done by an ordinary float32 PyTorch loop and timed.
Fair to torch the way the sweep is fair to itself: each prompt's hidden states entering a layer
are computed once and reused for every neuron of that layer (advanced as the neurons go up the
model), and a neuron's values run as one batch [values, T, hidden] per prompt (one weight read for
all), attention too (written out: Debian's torch 1.13 has no scaled_dot_product_attention);
threads = this process's affinity mask. It then checks its deltas against the file's (the two
must agree to ~1e-3, else the comparison is of different work). Prints the times and neurons/s of the neuron loop (the model load and the
unclamped runs apart). usage: torch_sweep_bench.py MODEL_DIR SWEEP_FILE"""
import argparse
import json
import math
import os
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import fi_testlib as fl  # noqa: E402
from torch_llama import rope_inv_freq  # noqa: E402


def tensor_f32(st, name):
    """A checkpoint tensor as float32 (bf16 widened exactly), without a float64 copy."""
    path, info, off = st.where[name]
    b, e = info["data_offsets"]
    dt = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[info["dtype"]]
    a = np.fromfile(path, dtype=dt, count=(e - b) // np.dtype(dt).itemsize, offset=off + b)
    a = (a.astype(np.uint32) << 16).view(np.float32) if info["dtype"] == "BF16" else a.astype(np.float32)
    return torch.from_numpy(a.reshape(info["shape"]))


class Llama32:
    def __init__(self, d):
        st, cfg = fl.SafeTensors(d), fl.load_config(d)
        self.H, self.nh = cfg["hidden_size"], cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.H // self.nh
        self.eps, self.cfg = cfg["rms_norm_eps"], cfg
        g = lambda n: tensor_f32(st, n)
        self.embed = g("model.embed_tokens.weight")
        self.head = self.embed if cfg.get("tie_word_embeddings") else g("lm_head.weight")
        self.final_norm = g("model.norm.weight")
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            self.layers.append({k: g(p + n) for k, n in [
                ("in_norm", "input_layernorm.weight"), ("post_norm", "post_attention_layernorm.weight"),
                ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"),
                ("v", "self_attn.v_proj.weight"), ("o", "self_attn.o_proj.weight"),
                ("gate", "mlp.gate_proj.weight"), ("up", "mlp.up_proj.weight"), ("down", "mlp.down_proj.weight")]})

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, T):  # x [B, heads, T, hd], halves rotated (HF)
        inv, att = rope_inv_freq(self.cfg, self.hd, T, False)
        f = torch.outer(torch.arange(T, dtype=torch.float64), inv)
        cos, sin = (torch.cat([f, f], -1).cos() * att).float(), (torch.cat([f, f], -1).sin() * att).float()
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def layer(self, li, x, clamp=None, site="act"):
        """Layer li on x [B, T, H]; clamp: (neuron, values [B]) sets that neuron per sequence."""
        w, (B, T, H) = self.layers[li], x.shape
        h = self.norm(x, w["in_norm"])
        q = self.rope((h @ w["q"].T).view(B, T, self.nh, self.hd).transpose(1, 2), T)
        k = self.rope((h @ w["k"].T).view(B, T, self.nkv, self.hd).transpose(1, 2), T)
        v = (h @ w["v"].T).view(B, T, self.nkv, self.hd).transpose(1, 2)
        rep = self.nh // self.nkv
        s = q @ k.repeat_interleave(rep, 1).transpose(-1, -2) / math.sqrt(self.hd)
        s = s + torch.full((T, T), float("-inf")).triu(1)
        a = torch.softmax(s, -1) @ v.repeat_interleave(rep, 1)
        x = x + a.transpose(1, 2).reshape(B, T, self.nh * self.hd) @ w["o"].T
        h = self.norm(x, w["post_norm"])
        g, u = F.silu(h @ w["gate"].T), h @ w["up"].T
        if clamp is not None and site == "up":
            u[:, :, clamp[0]] = clamp[1][:, None]
        m = g * u
        if clamp is not None and site == "act":
            m[:, :, clamp[0]] = clamp[1][:, None]
        return x + m @ w["down"].T

    def logp(self, x):  # x [B, H] -> log-softmax of the logits [B, V], float64
        return torch.log_softmax((self.norm(x, self.final_norm) @ self.head.T).double(), -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("sweep")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    with h5py.File(a.sweep, "r") as f:
        layers, neurons, tops = f["layer"][()], f["neuron"][()], f["top_tokens"][()]
        values, want = torch.tensor(f["values"][()]), f["delta"][()]
        plen, pids = f["prompt_len"][()], f["prompt_ids"][()]
        site = f.attrs["clamp_site"]
        site = site.decode() if isinstance(site, bytes) else str(site)
    prompts = [torch.tensor(pids[p, :plen[p]].astype(np.int64)) for p in range(len(plen))]
    t0 = time.time()
    m = Llama32(a.model)
    t1 = time.time()
    base = []  # the unclamped runs
    for ids in prompts:
        x = m.embed[ids][None]
        for li in range(len(m.layers)):
            x = m.layer(li, x)
        base.append(m.logp(x[:, -1])[0])
    t2 = time.time()
    K, nv, P = len(neurons), len(values), len(prompts)
    got = np.zeros((K, nv, P), np.float32)
    pre, at = None, -1  # each prompt's states entering layer `at`
    for k in range(K):
        L, n, t = int(layers[k]), int(neurons[k]), int(tops[k, 0])
        if pre is None or L < at:
            pre, at = [m.embed[ids][None] for ids in prompts], 0
        while at < L:
            pre = [m.layer(at, x) for x in pre]
            at += 1
        for p in range(P):
            x = m.layer(L, pre[p].expand(nv, -1, -1).contiguous(), (n, values), site)
            for li in range(L + 1, len(m.layers)):
                x = m.layer(li, x)
            got[k, :, p] = (m.logp(x[:, -1])[:, t] - base[p][t]).numpy()
    t3 = time.time()
    err = float(np.abs(got - want).max())
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "neurons": K,
                      "values": nv, "prompts": P, "load_s": round(t1 - t0, 2), "unclamped_s": round(t2 - t1, 2),
                      "loop_s": round(t3 - t2, 2), "neurons_per_s": round(K / (t3 - t2), 4),
                      "max_delta_diff_vs_file": err}))
    if err > 2e-3:
        sys.exit(f"torch_sweep_bench: deltas differ from {a.sweep} by {err:.3g}: not the same work")


main()
