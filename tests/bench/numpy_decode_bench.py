#!/usr/bin/python3
"""The obvious alternative to `flashinterp decode` on CPU: numpy doing the same work on one layer
(default 0) of up_proj (rms norm, chunked fp32 matmul against the LM-head, logsumexp, argpartition top-k).
With "bare": only the load and the chunked fp32 matmul (numpy's bare sgemm + load). A layer that
is an MoE layer (Qwen-MoE names; tests/bench/moe_bench.sh): the routed experts' up rows, expert
after expert, each cut into chunks as the decode's items are.
usage: numpy_decode_bench.py MODEL_DIR [rows] [chunk_rows] [top_k] [bare|full] [layer]"""
import json, struct, sys, time
import numpy as np

def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    return hdr, 8 + n

def load(dirname, name, rows=None):
    hdr, base = tensors(dirname + "/model.safetensors")
    t = hdr[name]
    b, e = t["data_offsets"]
    shape = t["shape"]
    width = {"BF16": 2, "F16": 2, "F32": 4}[t["dtype"]]
    count = np.prod(shape) if rows is None else rows * shape[1]
    raw = np.fromfile(dirname + "/model.safetensors", dtype=np.uint8, count=int(count) * width, offset=base + b)
    if t["dtype"] == "BF16":
        a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif t["dtype"] == "F16":
        a = raw.view(np.float16).astype(np.float32)
    else:
        a = raw.view(np.float32)
    return a.reshape(-1, *shape[1:]) if len(shape) > 1 else a

def main():
    d = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    chunk = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    k = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    bare = len(sys.argv) > 5 and sys.argv[5] == "bare"
    layer = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    t0 = time.time()
    cfg = json.load(open(d + "/config.json"))
    head = "model.embed_tokens.weight" if cfg.get("tie_word_embeddings") else "lm_head.weight"
    wu = np.ascontiguousarray(load(d, head))
    gamma = load(d, "model.norm.weight")
    dense = f"model.layers.{layer}.mlp.up_proj.weight"
    if dense in tensors(d + "/model.safetensors")[0]:
        xs = [load(d, dense, rows)]
    else:  # [rows, H] as per-expert blocks of moe_intermediate_size
        n = cfg["moe_intermediate_size"]
        xs = [load(d, f"model.layers.{layer}.mlp.experts.{e}.up_proj.weight", min(n, rows - e * n))
              for e in range(-(-rows // n))]
    t_load = time.time()
    eps = cfg["rms_norm_eps"]
    ids = np.empty((rows, k), np.int64)
    lses = np.empty(rows, np.float32)
    chunks = [(x, r0) for x in xs for r0 in range(0, len(x), chunk)]
    o = 0  # rows done
    for x, r0 in chunks:
        xc = x[r0:r0 + chunk]
        xn = xc / np.sqrt((xc.astype(np.float64) ** 2).mean(axis=1, keepdims=True) + eps).astype(np.float32) * gamma
        logits = xn @ wu.T
        o += len(xc)
        if bare:
            continue
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        top = np.argpartition(-logits, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(logits, top, 1), axis=1, kind="stable")
        ids[o - len(xc):o] = np.take_along_axis(top, order, 1)
        lses[o - len(xc):o] = lse
    t1 = time.time()
    print(f"numpy{' bare sgemm' if bare else ''}: rows {rows}, load {t_load - t0:.2f} s, compute {t1 - t_load:.2f} s, total {t1 - t0:.2f} s "
          f"(numpy {np.__version__}, {2 * rows * wu.shape[0] * wu.shape[1] / (t1 - t_load) / 1e9:.1f} GFLOP/s)")

main()
