"""Mixture-of-experts checkpoints as they ship (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3 with MLA
and FP8 block scales; tests/python/family_models.py MOE_FAMILIES), and header-only copies of four
real shapes (Mixtral 8x22B, Qwen3-235B-A22B, DeepSeek-V3 in FP8, Llama 3.1 405B FP8):

- `inspect` reads each: the experts, the layers that are MoE by each family's rule (computed here
  by family_models.moe_layers, from transformers' modelling code), the neurons per group (dense,
  routed experts, shared experts), the decode's rows and GEMM FLOPs, all checked against numbers
  computed here from config.json;
- `decode --layers` of a dense layer alone (DeepSeek-V3's first_k_dense_replace layers in FP8,
  Qwen2-MoE's mlp_only_layers) agrees with the float64 numpy reference (fi_testlib.Reference);
  the expert groups of a whole decode (map format version 2) are test_decode_moe's;
- a missing expert tensor or an expert of the wrong shape is one error line naming the tensor.
The header-only copies are sparse files (a real header, no data); their inspect figures are
printed for the record.
"""
import json
import os
import re
import shutil
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import family_models as fm  # noqa: E402
import fi_testlib as t  # noqa: E402
from test_decode_reference import check_ranking  # noqa: E402

TOP_K = 8


def spans(flags, want=True):
    """Layer ids where flags[i] == want as "0-2,5"."""
    out, i = [], 0
    while i < len(flags):
        if flags[i] != want:
            i += 1
            continue
        j = i
        while j + 1 < len(flags) and flags[j + 1] == want:
            j += 1
        out.append(f"{i}-{j}" if j > i else f"{i}")
        i = j + 1
    return ",".join(out)


def groups(cfg):
    """[(name, layers, experts, neurons)] of one matrix, from config.json."""
    moe = fm.moe_layers(cfg)
    experts, n, shared = fm.moe_sizes(cfg)
    k = sum(moe)
    g = []
    if len(moe) - k:
        g.append(("dense", len(moe) - k, 1, cfg["intermediate_size"]))
    if k:
        g.append(("moe", k, experts, n))
    if k and shared:
        g.append(("shared", k, 1, shared))
    return g


def check_inspect(model, cfg, name, *args):
    out = t.run(["inspect", "--model", model, *args], timeout=600).stdout
    moe = fm.moe_layers(cfg)
    experts, n, shared = fm.moe_sizes(cfg)
    want = (f"experts    {experts} routed experts of {n} neurons, {cfg['num_experts_per_tok']} per token, "
            f"on {sum(moe)} of {len(moe)} layers ({spans(moe)})")
    t.check(want in out, f"{name}: inspect lacks {want!r}:\n{out}")
    if shared:
        t.check(f"shared: " in out and f", {shared} neurons" in out, f"{name}: no shared experts line:\n{out}")
    parts = "; ".join(f"{g} {L} layers x " + (f"{e} experts x " if e > 1 else "") + f"{N} = {L * e * N}"
                      for g, L, e, N in groups(cfg))
    t.check(f"neurons per matrix: {parts}" in out, f"{name}: inspect's groups, want {parts!r}:\n{out}")
    rows = sum(L * e * N for _, L, e, N in groups(cfg))
    m = re.search(r"per matrix: (\d+) rows, ([0-9.e+]+) GFLOP", out)
    t.check(m and int(m.group(1)) == rows, f"{name}: rows {m and m.group(1)}, want {rows}")
    flops = 2 * rows * cfg["vocab_size"] * cfg["hidden_size"] / 1e9
    t.check(abs(float(m.group(2)) - flops) <= 0.0051 * flops, f"{name}: GFLOP {m.group(2)}, want {flops:.4g}")
    if cfg["model_type"] == "deepseek_v3":
        t.check(f"multi-token prediction: 1 layer numbered from {cfg['num_hidden_layers']}" in out,
                f"{name}: the MTP layer is not named:\n{out}")
        t.check(f"MLA: q_lora_rank {cfg['q_lora_rank']}, kv_lora_rank {cfg['kv_lora_rank']}" in out, f"{name}: MLA line")
    return out


def check_plan(model, cfg, name):
    """inspect --sweep's "all of one matrix" counts every group's neurons (dense, routed, shared);
    the forward plan on one rank holds every layer tensor the forward loads (not the FP8 scales,
    not the MTP layer) plus the head and the embedding: as stored on a GPU, FP8 ones as fp32
    (4 bytes a parameter) on the CPU, which reads an untied embedding from disk."""
    out = t.run(["inspect", "--model", model, "--sweep", "--ranks", 1]).stdout
    moe = any(fm.moe_layers(cfg))
    rows = sum(L * e * N for _, L, e, N in groups(cfg)) if moe else cfg["num_hidden_layers"] * cfg["intermediate_size"]
    m = re.search(r"(\d+) neurons \(all of one matrix\)", out)
    t.check(m and int(m.group(1)) == rows, f"{name}: inspect --sweep's whole matrix {m and m.group(1)}, want {rows}")
    st = t.SafeTensors(model)
    gpu = cpu = 0
    for n in st.names():
        parts = n.split(".")
        in_layer = n.startswith("model.layers.") and int(parts[2]) < cfg["num_hidden_layers"]
        if n.endswith(("_scale", "_scale_inv")) or not (in_layer or n in ("lm_head.weight", "model.embed_tokens.weight")):
            continue
        b, e = st.where[n][1]["data_offsets"]
        fp8 = st.dtype(n).startswith("F8")
        gpu += e - b
        if n != "model.embed_tokens.weight" or cfg.get("tie_word_embeddings"):
            cpu += 4 * int(np.prod(st.shape(n))) if fp8 else e - b
    m = re.search(r"weights per rank \(checkpoint dtype; the CPU holds FP8 as fp32\): up to ([0-9.]+ \w+) on a GPU, "
                  r"([0-9.]+ \w+) on CPU", out)
    t.check(m is not None, f"{name}: no forward plan in\n{out}")
    for printed, want, what in ((m.group(1), gpu, "GPU"), (m.group(2), cpu, "CPU")):
        num, unit = printed.split()
        got = float(num) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
        t.check(abs(got - want) <= 0.051 * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit],
                f"{name}: {what} weights per rank {printed}, want {want} bytes")


def check_dense_decode(model, name, layer, tmp):
    """Decodes one dense layer of an MoE model; compares every matrix with float64 numpy."""
    ref = t.Reference(model)
    out = os.path.join(tmp, f"{name}-dense.h5")
    t.decode(model, out, "--matrices", "up,gate,down", "--top-k", TOP_K, "--layers", f"{layer}-{layer}",
             "--chunk-rows", 32, np_=2)
    worst = 0.0
    with h5py.File(out, "r") as f:
        for matrix in ("up", "gate", "down"):
            g = f[matrix]
            t.check(list(g.attrs["layers"]) == [layer], f"{name}: layers attr {g.attrs['layers']}")
            logits = ref.logits(matrix, layer, np.arange(g["top_ids"].shape[1]), "rms")
            err, _ = check_ranking(f"{name} /{matrix} layer {layer}", g["top_ids"][0],
                                   g["top_logits"][0].astype(np.float64), logits, TOP_K)
            lse = t.logsumexp(logits)
            scale = np.maximum(1.0, np.abs(logits).max(axis=1))
            lerr = float((np.abs(g["logsumexp"][0] - lse) / scale).max())
            t.check(lerr <= 1e-4, f"{name} /{matrix}: logsumexp off by {lerr:.3g}")
            worst = max(worst, err, lerr)
    print(f"  {name:12s} dense layer {layer}: worst logit/lse error {worst:.1e} of the row's scale", flush=True)


def edited_copy(name, tmp, field, delta):
    """A copy of family `name`'s checkpoint whose config.json has `field` increased by delta;
    returns (directory, the edited config)."""
    bad = os.path.join(tmp, f"{name}-bad")
    shutil.copytree(fm.cached(name), bad)
    with open(os.path.join(bad, "config.json")) as f:
        cfg = json.load(f)
    cfg[field] += delta
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(cfg, f)
    return bad, cfg


def check_bad_experts(tmp):
    """A config naming one more expert than the checkpoint has, and an expert of the wrong width."""
    bad, cfg = edited_copy("mixtral", tmp, "num_local_experts", 1)
    e = cfg["num_local_experts"] - 1
    p = t.run(["inspect", "--model", bad], check=False)
    t.check(t.one_line_error(p, "missing tensor", f"block_sparse_moe.experts.{e}."),
            f"missing expert: {p.stderr!r}")
    bad, _ = edited_copy("qwen3_moe", tmp, "moe_intermediate_size", 8)
    p = t.run(["inspect", "--model", bad], check=False)
    t.check(t.one_line_error(p, "mlp.experts.0.", "moe_intermediate_size="), f"wrong expert width: {p.stderr!r}")


# --- header-only copies of real shapes ---------------------------------------------------------

DTYPE_SIZE = {"BF16": 2, "F32": 4, "F8_E4M3": 1}


def write_header_only(out_dir, cfg, table, quant):
    """The checkpoint's safetensors files with real headers and sparse data (no disk used), one
    shard per layer as the real ones split about there; quant: None, "block" (DeepSeek: F8_E4M3
    with F32 weight_scale_inv per 128 x 128) or "row" (fbgemm: F8_E4M3 with F32 weight_scale [out, 1])."""
    os.makedirs(out_dir, exist_ok=True)
    shards, cur, layer = [], [], None
    for name, shape, kind in table:
        m = re.match(r"model\.layers\.(\d+)\.", name)
        key = m.group(1) if m else None
        if cur and key != layer:
            shards.append(cur)
            cur = []
        layer = key
        q = quant and kind == "matrix" and fm._fp8_targets(name, quant)
        cur.append((name, shape, "F8_E4M3" if q else "BF16"))
        if q and quant == "block":
            cur.append((name + "_scale_inv", (-(-shape[0] // 128), -(-shape[1] // 128)), "F32"))
        elif q:
            cur.append((name + "_scale", (shape[0], 1), "F32"))
    shards.append(cur)
    weight_map, total = {}, 0
    for k, tensors in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, pos = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, dt in tensors:
            n = int(np.prod(shape, dtype=np.int64)) * DTYPE_SIZE[dt]
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + n]}
            pos += n
            weight_map[name] = fname
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(os.path.join(out_dir, fname), "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            f.truncate(8 + len(raw) + pos)
        total += pos
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def real_shapes():
    """(name, config.json, tokenizer) of four published checkpoints (their config fields as
    published; the tokenizer stands in for the inventory's vocab line only)."""
    mixtral = {"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
               "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 6144, "initializer_range": 0.02,
               "intermediate_size": 16384, "max_position_embeddings": 65536, "model_type": "mixtral",
               "num_attention_heads": 48, "num_experts_per_tok": 2, "num_hidden_layers": 56,
               "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": False,
               "rms_norm_eps": 1e-05, "rope_theta": 1000000, "router_aux_loss_coef": 0.001,
               "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
               "vocab_size": 32000}
    qwen3 = {"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
             "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
             "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288,
             "max_position_embeddings": 40960, "max_window_layers": 94, "mlp_only_layers": [],
             "model_type": "qwen3_moe", "moe_intermediate_size": 1536, "norm_topk_prob": True,
             "num_attention_heads": 64, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 94,
             "num_key_value_heads": 4, "output_router_logits": False, "rms_norm_eps": 1e-06,
             "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
             "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
             "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}
    deepseek = {"architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
                "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432,
                "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3",
                "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
                "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 128,
                "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
                "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
                "qk_rope_head_dim": 64,
                "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                        "weight_block_size": [128, 128]},
                "rms_norm_eps": 1e-06,
                "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                                 "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},
                "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
                "tie_word_embeddings": False, "topk_group": 4, "topk_method": "noaux_tc",
                "torch_dtype": "bfloat16", "v_head_dim": 128, "vocab_size": 129280}
    llama405 = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
                "hidden_size": 16384, "initializer_range": 0.02, "intermediate_size": 53248,
                "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
                "num_attention_heads": 128, "num_hidden_layers": 126, "num_key_value_heads": 8,
                "pretraining_tp": 1,
                "quantization_config": {"activation_scale_ub": 1200.0, "quant_method": "fbgemm_fp8",
                                        "modules_to_not_convert": ["lm_head"]},
                "rms_norm_eps": 1e-05,
                "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
                "vocab_size": 128256}
    return [("Mixtral-8x22B", mixtral, None, "llama2"),
            ("Qwen3-235B-A22B", qwen3, None, "qwen3"),
            ("DeepSeek-V3", deepseek, "block", "deepseek_v3"),
            ("Llama-3.1-405B-FP8", llama405, "row", "llama3_1")]


def check_real_shapes(tmp):
    for name, cfg, quant, tok in real_shapes():
        d = os.path.join(tmp, name)
        if cfg["model_type"] == "llama":
            table = fm._tensor_table(cfg, {})
        else:
            table = fm._moe_tensor_table(cfg, {"qk_norm": "head"} if cfg["model_type"] == "qwen3_moe" else {})
        write_header_only(d, cfg, table, quant)
        shutil.copyfile(os.path.join(fm.tokenizer_dir(tok), "tokenizer.json"), os.path.join(d, "tokenizer.json"))
        if cfg["model_type"] == "llama":
            out = t.run(["inspect", "--model", d, "--ranks", 8], timeout=600).stdout
        else:
            out = check_inspect(d, cfg, name, "--ranks", 8)
        # the bytes a decode of all three matrices reads, from the config: every MLP weight once
        # (1 byte in FP8, 2 in bf16)
        L, H = cfg["num_hidden_layers"], cfg["hidden_size"]
        if cfg["model_type"] == "llama":
            neurons = L * cfg["intermediate_size"]
        else:
            moe = fm.moe_layers(cfg)
            experts, n, shared = fm.moe_sizes(cfg)
            neurons = sum(experts * n + shared if m else cfg["intermediate_size"] for m in moe[:L])
        want = 3 * neurons * H * (1 if quant else 2) / 2**30
        got = re.search(r"^read +the decoded matrices: ([0-9.]+) GiB", out, re.M)
        t.check(got and abs(float(got.group(1)) - want) <= 0.06 + 1e-3 * want,
                f"{name}: inspect's read line {got and got.group(0)!r}, want {want:.1f} GiB")
        keep = [x for x in out.splitlines() if x.split(" ", 1)[0] in ("experts", "decode", "ranks", "memory", "time", "read")
                or x.startswith("           ")]
        print(f"  {name} (header-only copy), inspect --ranks 8:\n    " + "\n    ".join(keep), flush=True)
        shutil.rmtree(d)


def main():
    with t.tempdir() as tmp:
        for name, (_, cfg, _, _, _) in fm.MOE_FAMILIES.items():
            model = fm.cached(name)
            check_inspect(model, cfg, name)
            check_plan(model, cfg, name)
        with open(os.path.join(fm.cached("llama3_fp8"), "config.json")) as f:
            check_plan(fm.cached("llama3_fp8"), json.load(f), "llama3_fp8")  # FP8 per-row scales, dense
        check_dense_decode(fm.cached("deepseek_v3"), "deepseek_v3", 0, tmp)
        check_dense_decode(fm.cached("qwen2_moe"), "qwen2_moe", 1, tmp)
        check_bad_experts(tmp)
        check_real_shapes(tmp)


if __name__ == "__main__":
    t.main(main)
