#!/usr/bin/python3
"""Writes a Llama 3.1 8B or 70B checkpoint *layout* whose weights are a sparse file (holes read as
zeros, no disk used): a real config.json and a safetensors header of every tensor in bf16, for
`flashinterp inspect --model DIR --sweep` (the sweep's cost model) at real scale. Not a model: do
not run a forward on it. usage: sparse_llama.py OUT_DIR 8b|70b
"""
import json
import os
import struct
import sys

SHAPES = {  # FACTS.md: Llama 3.1
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32),
    "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64),
}


def main(out, size):
    s = SHAPES[size]
    H, I, L, nh, nkv, V = (s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"],
                           s["num_attention_heads"], 8, 128256)
    hd = H // nh
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=V, num_key_value_heads=nkv,
               rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072, tie_word_embeddings=False,
               hidden_act="silu", torch_dtype="bfloat16", bos_token_id=128000, eos_token_id=128001,
               rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8192), **s)
    tensors = [("model.embed_tokens.weight", [V, H])]
    for i in range(L):
        p = f"model.layers.{i}."
        tensors += [(p + "input_layernorm.weight", [H]), (p + "post_attention_layernorm.weight", [H]),
                    (p + "self_attn.q_proj.weight", [nh * hd, H]), (p + "self_attn.k_proj.weight", [nkv * hd, H]),
                    (p + "self_attn.v_proj.weight", [nkv * hd, H]), (p + "self_attn.o_proj.weight", [H, nh * hd]),
                    (p + "mlp.gate_proj.weight", [I, H]), (p + "mlp.up_proj.weight", [I, H]),
                    (p + "mlp.down_proj.weight", [H, I])]
    tensors += [("model.norm.weight", [H]), ("lm_head.weight", [V, H])]
    header, off = {}, 0
    for name, shape in tensors:
        n = 2
        for d in shape:
            n *= d
        header[name] = dict(dtype="BF16", shape=shape, data_offsets=[off, off + n])
        off += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + off)  # the weights: one hole
    print(f"{out}: Llama 3.1 {size} layout, {off / 2**30:.1f} GiB of (sparse) bf16 weights")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
