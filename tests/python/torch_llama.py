"""An independent PyTorch (float64) forward of every dense family for the forward-pass checks,
written from the architectures as transformers describes them (Llama, Mistral's sliding window,
Qwen2's biases, Qwen 3's per-head q/k norms, Gemma's (1 + w) norms and sqrt(H) embedding scale,
Gemma 2/3's four norms, soft-caps, query_pre_attn_scalar and local/global layers, Phi-3's fused
projections, OLMo 2's post-norms and whole-width q/k norms) and every RoPE type of
modeling_rope_utils (llama3, linear, dynamic, yarn, longrope). It shares no code with the C++
binary; weights come through fi_testlib's own numpy safetensors reader, Gemma 3's text_config
with its class defaults through family_models.text_config.
"""
import math

import torch

import fi_testlib as fl
from family_models import text_config

SANDWICH = ("gemma2", "gemma3", "gemma3_text", "olmo2")  # post_attention_layernorm norms the attention output


def rope_inv_freq(cfg, hd, seq_len, local):
    """(inv_freq [hd/2], attention_factor) of a layer for a sequence of seq_len positions."""
    if local and cfg.get("rope_local_base_freq"):
        return 1.0 / cfg["rope_local_base_freq"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd), 1.0
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    base = cfg.get("rope_theta", 10000.0)
    max_pos = cfg.get("max_position_embeddings")
    exps = torch.arange(0, hd, 2, dtype=torch.float64) / hd
    if kind == "dynamic":  # NTK: the base grows once the sequence outgrows max_position_embeddings
        s = max(seq_len, max_pos)
        base = base * ((rs["factor"] * s / max_pos) - (rs["factor"] - 1)) ** (hd / (hd - 2))
    inv = 1.0 / base ** exps
    if kind in ("default", "dynamic"):
        return inv, 1.0
    if kind == "linear":
        return inv / rs["factor"], 1.0
    if kind == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        return torch.where(medium, smoothed, scaled), 1.0
    if kind == "yarn":
        factor = rs["factor"]
        orig = rs.get("original_max_position_embeddings") or max_pos
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def dim_of(rot):  # the dimension whose frequency turns `rot` times in orig positions
            return hd * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = dim_of(fast), dim_of(slow)
        if rs.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, hd - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(hd // 2, dtype=torch.float64) - lo) / (hi - lo)).clamp(0, 1)
        inv = inv / factor * ramp + inv * (1 - ramp)

        def mscale(s, m=1.0):
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
        att = rs.get("attention_factor")
        if att is None:
            att = (mscale(factor, rs["mscale"]) / mscale(factor, rs["mscale_all_dim"])
                   if rs.get("mscale") and rs.get("mscale_all_dim") else mscale(factor))
        return inv, att
    if kind == "longrope":
        orig = rs.get("original_max_position_embeddings") or cfg["original_max_position_embeddings"]
        ext = torch.tensor(rs["long_factor"] if seq_len > orig else rs["short_factor"], dtype=torch.float64)
        factor = max_pos / orig
        att = rs.get("attention_factor")
        if att is None:
            att = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig))
        return inv / ext, att
    raise ValueError(f"rope type {kind}")


def sliding_layers(cfg, n):
    """Which layers attend in a window of cfg['sliding_window'] keys (their own included)."""
    w, t = cfg.get("sliding_window"), cfg["model_type"]
    if not w:
        return [False] * n
    if cfg.get("layer_types"):
        return [x == "sliding_attention" for x in cfg["layer_types"]]
    if t == "gemma2":
        return [i % 2 == 0 for i in range(n)]
    if t in ("gemma3", "gemma3_text"):
        return [(i + 1) % cfg.get("sliding_window_pattern", 6) != 0 for i in range(n)]
    if t in ("mistral", "phi3"):
        return [True] * n
    if t in ("qwen2", "qwen3") and cfg.get("use_sliding_window"):
        return [i >= cfg.get("max_window_layers", 0) for i in range(n)]
    return [False] * n


class TorchLlama:
    def __init__(self, model_dir):
        st = fl.SafeTensors(model_dir)
        top = fl.load_config(model_dir)
        cfg = self.cfg = text_config(top)
        self.model_type = top["model_type"]
        t = lambda name: torch.from_numpy(st.get(name))  # float64, exact widening
        opt = lambda name: t(name) if name in st.where else None
        self.gemma = self.model_type.startswith("gemma")
        self.sandwich = self.model_type in SANDWICH
        self.H = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.hd = cfg.get("head_dim") or self.H // self.nh
        self.I = cfg["intermediate_size"]
        self.eps = cfg["rms_norm_eps"]
        act = (cfg.get("hidden_activation") or "gelu_pytorch_tanh") if self.gemma else cfg.get("hidden_act", "silu")
        self.act = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu,
                    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[act]
        gemma23 = self.gemma and self.model_type != "gemma"
        self.scale = ((cfg.get("query_pre_attn_scalar") if gemma23 else None) or self.hd) ** -0.5
        self.attn_cap = cfg.get("attn_logit_softcapping") if gemma23 else None
        self.final_cap = cfg.get("final_logit_softcapping") if gemma23 else None
        pre = next(p for p in ("model.", "language_model.model.", "model.language_model.")
                   if p + "embed_tokens.weight" in st.where)
        tied = cfg.get("tie_word_embeddings", self.gemma)
        self.embed = t(pre + "embed_tokens.weight")
        head = "language_model.lm_head.weight" if pre == "language_model.model." else "lm_head.weight"
        self.head = self.embed if tied else t(head)
        self.final_norm = t(pre + "norm.weight")
        self.layers = []
        n = cfg["num_hidden_layers"]
        self.sliding = sliding_layers(cfg, n)
        self.window = cfg.get("sliding_window")
        qd, kvd = self.nh * self.hd, self.nkv * self.hd
        for i in range(n):
            p = f"{pre}layers.{i}."
            w = {"in_norm": opt(p + "input_layernorm.weight"), "o": t(p + "self_attn.o_proj.weight"),
                 "down": opt(p + "mlp.down_proj.weight"),
                 "q_norm": opt(p + "self_attn.q_norm.weight"), "k_norm": opt(p + "self_attn.k_norm.weight"),
                 "post_ff": opt(p + "post_feedforward_layernorm.weight")}
            pal = t(p + "post_attention_layernorm.weight")
            if self.sandwich:
                w["post_attn"], w["pre_ff"] = pal, opt(p + "pre_feedforward_layernorm.weight")
            else:
                w["post_attn"], w["pre_ff"] = None, pal
            w["mla"] = None
            if p + "self_attn.kv_a_proj_with_mqa.weight" in st.where:  # DeepSeek's MLA
                w["mla"] = {n: opt(f"{p}self_attn.{n}.weight") for n in
                            ("q_proj", "q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa",
                             "kv_a_layernorm", "kv_b_proj")}
            elif p + "self_attn.qkv_proj.weight" in st.where:  # Phi-3: rows q, k, v
                qkv = t(p + "self_attn.qkv_proj.weight")
                w["q"], w["k"], w["v"] = qkv[:qd], qkv[qd:qd + kvd], qkv[qd + kvd:]
            else:
                for b in "qkv":
                    w[b] = t(p + f"self_attn.{b}_proj.weight")
            w["moe"] = None
            for router, experts, names in (("block_sparse_moe.gate.weight", "block_sparse_moe.experts.", ("w1", "w3", "w2")),
                                           ("mlp.gate.weight", "mlp.experts.", ("gate_proj", "up_proj", "down_proj"))):
                if p + router in st.where:  # a mixture-of-experts layer
                    E = st.shape(p + router)[0]
                    w["moe"] = {"router": t(p + router),
                                "experts": [tuple(t(f"{p}{experts}{e}.{m}.weight") for m in names) for e in range(E)],
                                "shared": next((tuple(t(f"{p}mlp.{g}.{m}_proj.weight") for m in ("gate", "up", "down"))
                                                for g in ("shared_expert", "shared_experts")
                                                if f"{p}mlp.{g}.gate_proj.weight" in st.where), None),
                                "bias": opt(p + "mlp.gate.e_score_correction_bias"),
                                "shared_gate": opt(p + "mlp.shared_expert_gate.weight")}
            if w["moe"]:
                pass
            elif p + "mlp.gate_up_proj.weight" in st.where:  # Phi-3: rows gate, up
                gu = t(p + "mlp.gate_up_proj.weight")
                w["gate"], w["up"] = gu[:self.I], gu[self.I:]
            else:
                w["gate"], w["up"] = t(p + "mlp.gate_proj.weight"), t(p + "mlp.up_proj.weight")
            for b in "qkv":
                w[b + "_bias"] = opt(p + f"self_attn.{b}_proj.bias")
            self.layers.append(w)

    def norm(self, x, w):
        if w is None:
            return x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * (1 + w) if self.gemma else x * w

    def rope(self, x, pos, inv, att):  # x: [heads, T, hd]
        freqs = pos[:, None] * inv[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        half = self.hd // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * (emb.cos() * att) + rotated * (emb.sin() * att)

    def attention(self, li, w, h, pos):
        T = h.shape[0]
        q, k, v = (h @ w[n].T + (w[n + "_bias"] if w[n + "_bias"] is not None else 0) for n in "qkv")
        if w["q_norm"] is not None and w["q_norm"].shape[0] != self.hd:  # OLMo 2: the whole width
            q, k = self.norm(q, w["q_norm"]), self.norm(k, w["k_norm"])
        q, k = q.view(T, self.nh, self.hd), k.view(T, self.nkv, self.hd)
        if w["q_norm"] is not None and w["q_norm"].shape[0] == self.hd:  # per head
            q, k = self.norm(q, w["q_norm"]), self.norm(k, w["k_norm"])
        inv, att = rope_inv_freq(self.cfg, self.hd, T, self.sliding[li])
        q = self.rope(q.transpose(0, 1), pos, inv, att)
        k = self.rope(k.transpose(0, 1), pos, inv, att)
        v = v.view(T, self.nkv, self.hd).transpose(0, 1)
        k = k.repeat_interleave(self.nh // self.nkv, dim=0)  # query head h reads kv head h // group
        v = v.repeat_interleave(self.nh // self.nkv, dim=0)
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        visible = (j <= i) & ((i - j < self.window) if self.sliding[li] else True)
        s = q @ k.transpose(-1, -2) * self.scale
        if self.attn_cap:
            s = torch.tanh(s / self.attn_cap) * self.attn_cap
        s = s.masked_fill(~visible, float("-inf"))
        return (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, self.nh * self.hd) @ w["o"].T

    def gated(self, h, gate, up, down, clamps, site):
        """down(act(gate h) * up h) with clamps [(neuron, value)] at site."""
        g, u = h @ gate.T, h @ up.T
        for n, val in clamps:
            if site == "up":
                u[:, n] = val
        a = self.act(g) * u
        for n, val in clamps:
            if site == "act":
                a[:, n] = val
        return a @ down.T

    def moe(self, m, h, clamps, site, force=()):
        """The MoE block as transformers' Mixtral/Qwen2-MoE/Qwen3-MoE modules compute it, here every
        expert on every token and weighted by the routing (zero where not routed): softmax over
        the router's logits, top num_experts_per_tok, renormalised where norm_topk_prob (Mixtral
        always); Qwen2-MoE adds sigmoid(shared_expert_gate h) * shared_expert(h). clamps:
        [(expert or "s", neuron, value)]; force: routed experts chosen at every position (their
        score set to +inf before the top-k, as --force-route)."""
        K = self.cfg["num_experts_per_tok"]
        if self.model_type == "deepseek_v3":  # DeepseekV3TopkRouter
            p = torch.sigmoid(h @ m["router"].T)
            choice = p + m["bias"]
            G, E = self.cfg["n_group"], p.shape[1]
            groups = choice.view(-1, G, E // G).topk(min(2, E // G), dim=-1)[0].sum(-1)
            keep = torch.zeros_like(groups).scatter(1, groups.topk(self.cfg["topk_group"], dim=-1)[1], 1)
            choice = choice.masked_fill(~keep.repeat_interleave(E // G, dim=1).bool(), 0.0)
            choice[:, list(force)] = float("inf")
            idx = choice.topk(K, dim=-1)[1]
            top = p.gather(1, idx)
            if self.cfg.get("norm_topk_prob"):
                top = top / (top.sum(-1, keepdim=True) + 1e-20)
            top = top * self.cfg.get("routed_scaling_factor", 1.0)
        else:
            p = torch.softmax(h @ m["router"].T, dim=-1)
            choice = p.clone()
            choice[:, list(force)] = float("inf")
            idx = choice.topk(K, dim=-1)[1]
            top = p.gather(1, idx)
            if self.model_type == "mixtral" or self.cfg.get("norm_topk_prob"):
                top = top / top.sum(-1, keepdim=True)
        weight = torch.zeros_like(p).scatter(1, idx, top)
        out = torch.zeros_like(h)
        for e, (g, u, d) in enumerate(m["experts"]):
            y = self.gated(h, g, u, d, [(n, v) for x, n, v in clamps if x == e], site)
            out = out + weight[:, e:e + 1] * y
        if m["shared"] is not None:
            y = self.gated(h, *m["shared"], [(n, v) for x, n, v in clamps if x == "s"], site)
            gate = torch.sigmoid(h @ m["shared_gate"].T) if m["shared_gate"] is not None else 1.0
            out = out + gate * y
        return out

    def mla(self, w, h, pos):
        """DeepSeek-V3's attention as DeepseekV3Attention computes it (eager), rope_interleave
        as the config says (default true), yarn's mscale_all_dim in the score scale."""
        c, m, T, nh = self.cfg, w["mla"], h.shape[0], self.nh
        nope, rope, vd, kvr = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
        q = (self.norm(h @ m["q_a_proj"].T, m["q_a_layernorm"]) @ m["q_b_proj"].T if m["q_a_proj"] is not None
             else h @ m["q_proj"].T).view(T, nh, nope + rope).transpose(0, 1)
        q_pass, q_rot = q[..., :nope], q[..., nope:]
        ckv = h @ m["kv_a_proj_with_mqa"].T
        kv = (self.norm(ckv[:, :kvr], m["kv_a_layernorm"]) @ m["kv_b_proj"].T).view(T, nh, nope + vd).transpose(0, 1)
        k_pass, v = kv[..., :nope], kv[..., nope:]
        k_rot = ckv[:, kvr:].view(1, T, rope)
        if c.get("rope_interleave", True):
            q_rot = q_rot.reshape(nh, T, rope // 2, 2).transpose(-1, -2).reshape(nh, T, rope)
            k_rot = k_rot.reshape(1, T, rope // 2, 2).transpose(-1, -2).reshape(1, T, rope)
        inv, att = rope_inv_freq(c, rope, T, False)
        freqs = pos[:, None] * inv[None, :]
        cos, sin = torch.cat([freqs, freqs], -1).cos() * att, torch.cat([freqs, freqs], -1).sin() * att
        rot = lambda x: x * cos + torch.cat([-x[..., rope // 2:], x[..., :rope // 2]], -1) * sin  # noqa: E731
        query = torch.cat([q_pass, rot(q_rot)], -1)
        key = torch.cat([k_pass, rot(k_rot).expand(nh, T, rope)], -1)
        scale = (nope + rope) ** -0.5
        rs = c.get("rope_scaling") or {}
        if rs.get("mscale_all_dim"):
            ms = 0.1 * rs["mscale_all_dim"] * math.log(rs["factor"]) + 1.0 if rs["factor"] > 1 else 1.0
            scale = scale * ms * ms
        s = (query @ key.transpose(-1, -2) * scale).masked_fill(~(torch.arange(T)[None, :] <= torch.arange(T)[:, None]),
                                                                float("-inf"))
        return (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(T, nh * vd) @ w["o"].T

    def logits(self, ids, clamps=(), site="act", force_route=False):
        """[T, V] float64 logits of every position; clamps: (layer, neuron, value) triples, or
        (layer, expert, neuron, value) with expert an index or "s" (the shared expert);
        force_route: the clamped routed experts are chosen at every position."""
        T = len(ids)
        x = self.embed[torch.tensor(ids)]
        if self.gemma:
            x = x * math.sqrt(self.H)
        pos = torch.arange(T, dtype=torch.float64)
        for li, w in enumerate(self.layers):
            attend = self.mla if w["mla"] else (lambda w_, h_, p_: self.attention(li, w_, h_, p_))
            x = x + self.norm(attend(w, self.norm(x, w["in_norm"]), pos), w["post_attn"])
            h = self.norm(x, w["pre_ff"])
            if w["moe"]:
                mine = [c[1:] for c in clamps if len(c) == 4 and c[0] == li]
                force = sorted({e for e, _, _ in mine if e != "s"}) if force_route else ()
                x = x + self.moe(w["moe"], h, mine, site, force)
                continue
            clamps3 = [c for c in clamps if len(c) == 3]
            g, u = h @ w["gate"].T, h @ w["up"].T
            for cl, n, val in clamps3:
                if cl == li and site == "up":
                    u[:, n] = val
            a = self.act(g) * u
            for cl, n, val in clamps3:
                if cl == li and site == "act":
                    a[:, n] = val
            x = x + self.norm(a @ w["down"].T, w["post_ff"])
        out = self.norm(x, self.final_norm) @ self.head.T
        if self.final_cap:
            out = torch.tanh(out / self.final_cap) * self.final_cap
        return out

    def greedy(self, ids, steps, clamps=(), site="act"):
        """New ids of a greedy continuation, recomputing the whole sequence each step (no cache)."""
        ids, out = list(ids), []
        for _ in range(steps):
            nxt = int(torch.argmax(self.logits(ids, clamps, site)[-1]))
            out.append(nxt)
            ids.append(nxt)
        return out


def check_sweep_row(s, k, values, logits, base, top, where):
    """Row k of a sweep file (its datasets in the dict s) against float64 torch: for each clamp
    value v and prompt p, logits(v, p) is torch's last-position logits with the neuron clamped to
    v, base[p] the unclamped log-softmax; delta, delta_top5, top1 and the score (the slope of the
    mean delta over the values) as docs/SWEEP_FORMAT.md defines them. Returns (want, top1, err, slope):
    the deltas [values, prompts], the top-1 flags, the worst delta error and torch's score."""
    import numpy as np
    want = np.zeros((len(values), len(base)))
    want5 = np.zeros_like(want)
    top1 = np.zeros(want.shape, dtype=bool)
    for v, val in enumerate(values):
        for p in range(len(base)):
            lg = logits(float(val), p)
            lp = torch.log_softmax(lg, 0).numpy()
            want[v, p] = lp[top[0]] - base[p][top[0]]
            want5[v, p] = np.mean(lp[top] - base[p][top])
            top1[v, p] = int(torch.argmax(lg)) == top[0]
    err = np.abs(s["delta"][k] - want).max()
    fl.check(err < 2e-3, f"{where}: delta off torch by {err}\n{s['delta'][k]}\n{want}")
    fl.check(np.abs(s["delta_top5"][k] - want5).max() < 2e-3, f"{where}: delta_top5 off torch")
    fl.check((s["top1"][k] == top1).all(), f"{where}: top-1 flags {s['top1'][k]} vs torch {top1}")
    slope = np.polyfit(np.array(values, float), want.mean(axis=1), 1)[0]
    fl.check(abs(s["score"][k] - slope) < 2e-4 + 1e-3 * abs(slope), f"{where}: score {s['score'][k]} vs torch slope {slope}")
    return want, top1, err, slope
