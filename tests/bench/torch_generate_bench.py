#!/usr/bin/python3
"""The PyTorch baseline for `flashinterp generate`: the same Llama forward as
tests/python/torch_llama.py, in float32 (no TF32) with a KV cache, greedy, timed in tokens per
second, on the CPU or (--device cuda) on the GPU; prints "SKIPPED (no CUDA device)" without one.
usage: torch_generate_bench.py MODEL_DIR PROMPT_IDS(comma-separated) NEW_TOKENS [--device cuda]"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from torch_llama import TorchLlama  # noqa: E402


class CachedLlama(TorchLlama):
    def __init__(self, model_dir, device):
        super().__init__(model_dir)
        self.dev = device
        f = lambda t: None if t is None else t.float().contiguous().to(device)
        self.embed, self.head, self.final_norm = f(self.embed), f(self.head), f(self.final_norm)
        self.layers = [{k: f(v) for k, v in w.items()} for w in self.layers]
        self.inv_freq = f(self.inv_freq)

    def step(self, ids, cache, start):
        """Logits of the last position for new ids at positions start..; cache: per-layer (k, v)."""
        T = len(ids)
        x = self.embed[torch.tensor(ids, device=self.dev)]
        pos = torch.arange(start, start + T, dtype=torch.float32, device=self.dev)
        for li, w in enumerate(self.layers):
            h = self.norm(x, w["in_norm"])
            q, k, v = (h @ w[n].T for n in "qkv")
            q = self.rope(q.view(T, self.nh, self.hd).transpose(0, 1), pos)
            k = self.rope(k.view(T, self.nkv, self.hd).transpose(0, 1), pos)
            v = v.view(T, self.nkv, self.hd).transpose(0, 1)
            if cache[li] is not None:
                k, v = torch.cat([cache[li][0], k], 1), torch.cat([cache[li][1], v], 1)
            cache[li] = (k, v)
            rep = self.nh // self.nkv
            kk, vv = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
            S = kk.shape[1]
            mask = torch.full((T, S), float("-inf"), device=self.dev).triu(S - T + 1)
            att = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(self.hd) + mask, dim=-1)
            x = x + (att @ vv).transpose(0, 1).reshape(T, self.nh * self.hd) @ w["o"].T
            h = self.norm(x, w["post_norm"])
            x = x + (self.act(h @ w["gate"].T) * (h @ w["up"].T)) @ w["down"].T
        return self.norm(x[-1:], self.final_norm) @ self.head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("prompt_ids", help="comma-separated token ids")
    ap.add_argument("new_tokens", type=int)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("SKIPPED (no CUDA device)")
        return
    prompt, n = [int(i) for i in a.prompt_ids.split(",")], a.new_tokens
    torch.backends.cuda.matmul.allow_tf32 = False
    m = CachedLlama(a.model, torch.device(a.device))
    torch.set_grad_enabled(False)
    torch.set_num_threads(os.cpu_count())  # the same cores OpenBLAS uses in flashinterp
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    cache = [None] * len(m.layers)
    sync()
    t0 = time.time()
    logits = m.step(prompt, cache, 0)
    sync()
    out, pos = [], len(prompt)
    t1 = time.time()
    for _ in range(n):
        nxt = int(torch.argmax(logits[0]))
        out.append(nxt)
        logits = m.step([nxt], cache, pos)
        pos += 1
    sync()
    t2 = time.time()
    where = torch.cuda.get_device_name() if a.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} ({where}): prompt {len(prompt)} tokens "
          f"{t1 - t0:.3f} s, {n} new tokens in {t2 - t1:.3f} s = {n / (t2 - t1):.1f} tokens/s; ids {out[:8]}")


main()
