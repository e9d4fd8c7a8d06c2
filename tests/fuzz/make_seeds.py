#!/usr/bin/env python3
"""Seed corpora for the libFuzzer harnesses, made from a generated demo model (never committed).

usage: make_seeds.py MODEL_DIR SHARDED_DIR OUT_DIR
  MODEL_DIR    `flashinterp demo-model` output (single model.safetensors)
  SHARDED_DIR  the same with --shards 2 (index + two shards)
  OUT_DIR      gets safetensors/, index/, config/, tokenizer_json/ with a few small seeds each

The real files are too big to be good seeds (the LM-head alone is megabytes), so the safetensors
seeds keep the demo model's real header (names, dtypes, metadata, order) with every dimension
clamped small and the offsets recomputed; the tokenizer seeds keep the real Llama 3 structure
(pre-tokenizer, decoder, added tokens) with the first few hundred ids and the merges among them,
and so do the other families' (.cache/tokenizers, when set up: SentencePiece, NFC, Split chains).
Standard library only: runs with /usr/bin/python3.
"""
import json
import os
import struct
import sys

DTYPE_SIZE = {"BF16": 2, "F16": 2, "F32": 4}


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def safetensors_bytes(entries, metadata=None, fill=0x3C):
    """entries: [(name, dtype, shape)] -> a valid file, data contiguous, header 8-byte aligned."""
    header, off, data = {}, 0, bytearray()
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in entries:
        n = DTYPE_SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        data += bytes((fill + i) % 256 for i in range(n))
        off += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data)


def shrunk(path, limit):
    """The header of a real file as (name, dtype, shape) in data order, each dimension <= limit."""
    h = read_header(path)
    meta = h.pop("__metadata__", None)
    order = sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return [(k, v["dtype"], [min(d, limit) for d in v["shape"]]) for k, v in order], meta


def write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors_seeds(model, sharded, out):
    entries, meta = shrunk(os.path.join(model, "model.safetensors"), 3)
    write(out, "demo-shrunk.safetensors", safetensors_bytes(entries, meta))
    for name in sorted(os.listdir(sharded)):
        if name.endswith(".safetensors"):
            e, m = shrunk(os.path.join(sharded, name), 2)
            write(out, "demo-" + name, safetensors_bytes(e, m))
    # Every dtype, a scalar, an empty tensor, no metadata, and the empty header.
    write(out, "dtypes.safetensors", safetensors_bytes(
        [("a", "F32", [2, 3]), ("b", "F16", [3, 2]), ("c", "BF16", [4]), ("s", "F32", []),
         ("z", "BF16", [0, 5])], {"format": "pt"}))
    write(out, "empty.safetensors", safetensors_bytes([]))


def index_seeds(sharded, out):
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        index = json.load(f)
    write(out, "demo-index.json", json.dumps(index, indent=2))
    write(out, "demo-index-compact.json", json.dumps(index, separators=(",", ":")))
    no_meta = {"weight_map": index["weight_map"]}
    write(out, "demo-index-no-metadata.json", json.dumps(no_meta))


def config_seeds(model, out):
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    write(out, "demo-config.json", json.dumps(cfg, indent=2))
    variants = {
        "tied": {"tie_word_embeddings": True},
        "no-rope-scaling": {"rope_scaling": None, "head_dim": None, "num_key_value_heads": None},
        "old-rope-type": {"rope_scaling": {"type": "default"}},
        "gemma": {"model_type": "gemma", "hidden_activation": "gelu_pytorch_tanh"},
        "qwen2": {"model_type": "qwen2", "hidden_act": "silu", "rope_theta": 1000000.0},
    }
    for name, change in variants.items():
        c = dict(cfg)
        c.update(change)
        write(out, "demo-config-%s.json" % name, json.dumps(c))


def tokenizer_seeds(model, out, keep=300, added=8):
    with open(os.path.join(model, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    m = tok["model"]
    vocab = {k: v for k, v in m["vocab"].items() if v < keep}
    merges = []
    for mg in m["merges"]:
        left, right = mg.split(" ", 1) if isinstance(mg, str) else mg
        if left in vocab and right in vocab and left + right in vocab:
            merges.append(mg)
    small = dict(tok)
    small["model"] = dict(m, vocab=vocab, merges=merges)
    # The first added tokens, renumbered to follow the kept vocabulary (ids stay contiguous).
    small["added_tokens"] = [dict(a, id=keep + i) for i, a in enumerate(tok["added_tokens"][:added])]
    small["post_processor"] = None
    write(out, "llama3-small.json", json.dumps(small, ensure_ascii=False))
    minimal = {"model": {"type": "BPE", "vocab": {k: v for k, v in vocab.items() if v < 64}, "merges": []},
               "added_tokens": []}
    write(out, "minimal.json", json.dumps(minimal, ensure_ascii=False))
    restated = {"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": [{"id": 1, "content": "b"},
                                                                       {"id": 2, "content": "<|x|>"}]}
    write(out, "restated-added.json", json.dumps(restated))


def family_seeds(out, keep=300):
    """A small file per family in .cache/tokenizers (SentencePiece, NFC, several Splits, ...): the
    first ids and the byte tokens, renumbered contiguously, with the merges among them."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".cache", "tokenizers")
    for name in ("llama2", "qwen3", "gemma3", "deepseek_v3"):
        path = os.path.join(root, name, "tokenizer.json")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            tok = json.load(f)
        m = tok["model"]
        kept = sorted((v, k) for k, v in m["vocab"].items() if v < keep or (k.startswith("<0x") and len(k) == 6))
        new_id = {old: i for i, (old, _) in enumerate(kept)}
        vocab = {k: new_id[v] for v, k in kept}
        merges = []
        for mg in m["merges"]:
            left, right = mg.split(" ", 1) if isinstance(mg, str) else mg
            if left in vocab and right in vocab and left + right in vocab:
                merges.append(mg)
        small = dict(tok, post_processor=None)
        small["model"] = dict(m, vocab=vocab, merges=merges[:300])  # under fuzz.sh's 64 KiB max_len
        small["added_tokens"] = [dict(a, id=new_id[a["id"]]) for a in tok["added_tokens"] if a["id"] in new_id][:40]
        write(out, "%s-small.json" % name, json.dumps(small, ensure_ascii=False))


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model, sharded, out = sys.argv[1:]
    dirs = {k: os.path.join(out, k) for k in ("safetensors", "index", "config", "tokenizer_json")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    safetensors_seeds(model, sharded, dirs["safetensors"])
    index_seeds(sharded, dirs["index"])
    config_seeds(model, dirs["config"])
    tokenizer_seeds(model, dirs["tokenizer_json"])
    family_seeds(dirs["tokenizer_json"])
    for k, d in dirs.items():
        files = os.listdir(d)
        print("seeds: %-15s %2d files, %6d bytes" % (k, len(files), sum(os.path.getsize(os.path.join(d, f)) for f in files)))


if __name__ == "__main__":
    main()
