"""The map's /vocab/bytes for every id against bytes computed here from tokenizer.json, for each
dense family's real tokenizer (.cache/tokenizers/<name>: Llama 3.1, Llama 2, Qwen 3, Gemma 3,
DeepSeek V3): a tiny demo model with that tokenizer, `decode` of one layer, then every id compared.
The reference follows HF tokenizers' decoders, written independently of the C++: ByteLevel maps
each character back through GPT-2's bytes_to_unicode (a token with a character outside it keeps its
raw UTF-8, as HF's decoder does); SentencePiece style replaces U+2581 with a space and reads
<0xNN> as the byte NN (ByteFallback); added tokens not in model.vocab are raw UTF-8.
Run by ctest as /usr/bin/python3 tests/python/test_vocab_bytes.py with FLASHINTERP, MPIEXEC,
FI_SOURCE_DIR. Skips (exit 0, "SKIPPED") only when none of the tokenizers is cached.
"""
import json
import os
import re
import sys

import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fi_testlib as fi  # noqa: E402

FAMILIES = ["llama3_1", "llama2", "qwen3", "gemma3", "deepseek_v3"]


def bytes_to_unicode():
    """GPT-2's table, as in its encoder.py: printable bytes stand for themselves, the rest take
    code points from 256 on, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def decoder_kind(j):
    dec = j.get("decoder") or {}
    steps = dec.get("decoders", []) if dec.get("type") == "Sequence" else [dec]
    types = [s.get("type") for s in steps]
    if not dec or "ByteLevel" in types:
        return "byte_level", False
    return "sentencepiece", "ByteFallback" in types


def expected_bytes(tok_json):
    with open(tok_json, encoding="utf-8") as fh:
        j = json.load(fh)
    kind, byte_fallback = decoder_kind(j)
    inverse = bytes_to_unicode()
    out = {}
    for tok, i in j["model"]["vocab"].items():
        if kind == "byte_level":
            out[i] = bytes(inverse[c] for c in tok) if all(c in inverse for c in tok) else tok.encode()
        elif byte_fallback and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", tok):
            out[i] = bytes([int(tok[3:5], 16)])
        else:
            out[i] = tok.replace("\u2581", " ").encode()
    for a in j.get("added_tokens", []):
        out.setdefault(a["id"], a["content"].encode())
    return kind, out


def check_family(name, tok_dir, tmp):
    tok_json = os.path.join(tok_dir, "tokenizer.json")
    model = os.path.join(tmp, name)
    fi.demo_model(model, "--tokenizer", tok_json, "--hidden", "32", "--intermediate", "32", "--layers", "1",
                  "--heads", "2", "--kv-heads", "1")
    out = os.path.join(tmp, name + ".h5")
    fi.run(["decode", "--model", model, "--out", out, "--layers", "0", "--token-index", "0", "--top-k", "1",
            "--threads", "1", "--quiet"], np_=1)
    kind, expect = expected_bytes(tok_json)
    with h5py.File(out, "r") as f:
        got = [bytes(b) for b in f["vocab/bytes"][...]]
        vocab_size = int(f.attrs["vocab_size"])
    fi.check(len(got) == vocab_size == max(expect) + 1, f"{name}: {len(got)} vocab rows, vocab_size {vocab_size}, "
             f"{max(expect) + 1} ids in the tokenizer")
    bad = [i for i in range(len(got)) if got[i] != expect[i]]
    for i in bad[:10]:
        print(f"MISMATCH {name} id {i}: map {got[i]!r}, expected {expect[i]!r}")
    print(f"  {name} ({kind}): {len(got) - len(bad)}/{len(got)} ids have the expected bytes")
    return len(bad)


def main():
    bad, done = 0, 0
    with fi.tempdir() as tmp:
        for name in FAMILIES:
            tok_dir = os.path.join(fi.SOURCE_DIR, ".cache", "tokenizers", name)
            if not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
                print(f"  SKIPPED {name} (no {tok_dir}; run launch/setup-deps.sh)")
                continue
            bad += check_family(name, tok_dir, tmp)
            done += 1
    if done == 0:
        print("SKIPPED (no tokenizer in .cache/tokenizers; run launch/setup-deps.sh)")
        sys.exit(0)
    fi.check(bad == 0, f"{bad} ids whose bytes differ from tokenizer.json's")


if __name__ == "__main__":
    fi.main(main)
