"""An independent PyTorch (float64) Llama-family forward for the forward-pass checks, written
from the architecture (HF LlamaForCausalLM, Qwen2 biases, Gemma norms), sharing no code with the
C++ binary; weights come through fi_testlib's own numpy safetensors reader.
"""
import math

import torch

import fi_testlib as fl


class TorchLlama:
    def __init__(self, model_dir):
        st = fl.SafeTensors(model_dir)
        cfg = fl.load_config(model_dir)
        t = lambda name: torch.from_numpy(st.get(name))  # float64, exact widening
        self.gemma = cfg["model_type"] == "gemma"
        self.H = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.H // self.nh
        self.eps = cfg["rms_norm_eps"]
        act = cfg.get("hidden_activation", "gelu_pytorch_tanh") if self.gemma else cfg.get("hidden_act", "silu")
        self.act = {"silu": torch.nn.functional.silu,
                    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[act]
        tied = cfg.get("tie_word_embeddings", self.gemma)
        self.embed = t("model.embed_tokens.weight")
        self.head = self.embed if tied else t("lm_head.weight")
        self.final_norm = t("model.norm.weight")
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            w = {k: t(p + n) for k, n in [
                ("in_norm", "input_layernorm.weight"), ("post_norm", "post_attention_layernorm.weight"),
                ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"),
                ("v", "self_attn.v_proj.weight"), ("o", "self_attn.o_proj.weight"),
                ("gate", "mlp.gate_proj.weight"), ("up", "mlp.up_proj.weight"),
                ("down", "mlp.down_proj.weight")]}
            for b in "qkv":
                name = p + f"self_attn.{b}_proj.bias"
                w[b + "_bias"] = t(name) if name in st.where else None
            self.layers.append(w)
        self.inv_freq = self._inv_freq(cfg)

    def _inv_freq(self, cfg):
        """HF's default RoPE frequencies, then the llama3 rope_scaling rule."""
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
        rs = cfg.get("rope_scaling") or {}
        if rs.get("rope_type", rs.get("type")) != "llama3":
            return inv
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return torch.where(medium, smoothed, scaled)

    def norm(self, x, w):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * (1 + w) if self.gemma else x * w

    def rope(self, x, pos):  # x: [heads, T, hd]
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        half = self.hd // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * emb.cos() + rotated * emb.sin()

    def logits(self, ids, clamps=(), site="act"):
        """[T, V] float64 logits of every position; clamps: (layer, neuron, value) triples."""
        T = len(ids)
        x = self.embed[torch.tensor(ids)]
        if self.gemma:
            x = x * math.sqrt(self.H)
        pos = torch.arange(T, dtype=torch.float64)
        mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
        for li, w in enumerate(self.layers):
            h = self.norm(x, w["in_norm"])
            q, k, v = (h @ w[n].T + (w[n + "_bias"] if w[n + "_bias"] is not None else 0) for n in "qkv")
            q = self.rope(q.view(T, self.nh, self.hd).transpose(0, 1), pos)
            k = self.rope(k.view(T, self.nkv, self.hd).transpose(0, 1), pos)
            v = v.view(T, self.nkv, self.hd).transpose(0, 1)
            k = k.repeat_interleave(self.nh // self.nkv, dim=0)  # query head h reads kv head h // group
            v = v.repeat_interleave(self.nh // self.nkv, dim=0)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.hd) + mask, dim=-1)
            x = x + (att @ v).transpose(0, 1).reshape(T, self.nh * self.hd) @ w["o"].T
            h = self.norm(x, w["post_norm"])
            g, u = h @ w["gate"].T, h @ w["up"].T
            for cl, n, val in clamps:
                if cl == li and site == "up":
                    u[:, n] = val
            a = self.act(g) * u
            for cl, n, val in clamps:
                if cl == li and site == "act":
                    a[:, n] = val
            x = x + a @ w["down"].T
        return self.norm(x, self.final_norm) @ self.head.T

    def greedy(self, ids, steps, clamps=(), site="act"):
        """New ids of a greedy continuation, recomputing the whole sequence each step (no cache)."""
        ids, out = list(ids), []
        for _ in range(steps):
            nxt = int(torch.argmax(self.logits(ids, clamps, site)[-1]))
            out.append(nxt)
            ids.append(nxt)
        return out
