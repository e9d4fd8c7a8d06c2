"""The map's /vocab/bytes for every id against bytes computed here from tokenizer.json, for each
dense family's real tokenizer (.cache/tokenizers/<name>: Llama 3.1, Llama 2, Qwen 3, Gemma 3,
DeepSeek V3): a tiny demo model with that tokenizer, `decode` of one layer, then every id compared.
The reference is fi_testlib.token_bytes (HF tokenizers' decoders, written independently of the
C++).
Run by ctest as /usr/bin/python3 tests/python/test_vocab_bytes.py with FLASHINTERP, MPIEXEC,
FI_SOURCE_DIR. Skips (exit 0, "SKIPPED") only when none of the tokenizers is cached.
"""
import os
import sys

import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fi_testlib as fi  # noqa: E402

FAMILIES = ["llama3_1", "llama2", "qwen3", "gemma3", "deepseek_v3"]


def check_family(name, tok_dir, tmp):
    tok_json = os.path.join(tok_dir, "tokenizer.json")
    model = os.path.join(tmp, name)
    fi.demo_model(model, "--tokenizer", tok_json, "--hidden", "32", "--intermediate", "32", "--layers", "1",
                  "--heads", "2", "--kv-heads", "1")
    out = os.path.join(tmp, name + ".h5")
    fi.run(["decode", "--model", model, "--out", out, "--layers", "0", "--token-index", "0", "--top-k", "1",
            "--threads", "1", "--quiet"], np_=1)
    kind, expect = fi.token_bytes(tok_json)
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
