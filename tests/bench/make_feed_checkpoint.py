#!/usr/bin/env python3
"""A checkpoint for feed_bench: the up_proj of every layer at a Llama shape (default 8B: 32 layers
of [14336, 4096] bf16, 3.76 GB), random finite bf16, in the real layout (model-0000k-of-0000n
.safetensors shards and model.safetensors.index.json). Only what the reader reads: no other tensor.
usage: make_feed_checkpoint.py OUT_DIR [layers] [intermediate] [hidden] [shards]"""
import json
import os
import struct
import sys

import numpy as np


def main():
    out = sys.argv[1]
    given = [int(a) for a in sys.argv[2:6]]
    layers, inter, hidden, shards = given + [32, 14336, 4096, 4][len(given):]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    per = (layers + shards - 1) // shards
    weight_map = {}
    for s in range(shards):
        ls = range(s * per, min(layers, (s + 1) * per))
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, off = {}, 0
        for l in ls:
            n = inter * hidden * 2
            header[f"model.layers.{l}.mlp.up_proj.weight"] = {"dtype": "BF16", "shape": [inter, hidden],
                                                              "data_offsets": [off, off + n]}
            weight_map[f"model.layers.{l}.mlp.up_proj.weight"] = name
            off += n
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(out, name), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for l in ls:
                # exponent's top bit clear: every value finite (|x| < 2)
                f.write((rng.integers(0, 1 << 16, inter * hidden, dtype=np.uint16) & 0xBFFF).tobytes())
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
                   "num_hidden_layers": layers, "torch_dtype": "bfloat16"}, f)


if __name__ == "__main__":
    main()
