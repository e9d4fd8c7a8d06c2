"""The C++ forward pass of every dense family (family_models.py: each family's real tensor layout,
config fields and vocabulary size) against the independent float64 PyTorch forward of
torch_llama.py: logits through the hidden --dump-logits option of clamp and generate, prompts of
12 ids (--prompt-ids, so no tokenizer is involved) beyond the sliding window of 4, unclamped and
clamped at both sites, and generate's KV-cached steps with clamps in two layers. Logits within
1e-4 of max(1, |logit|); the worst error of each family is printed.
Where a CUDA device is usable (a probe of generate --backend cuda succeeds) every family runs again
with --backend cuda at 1e-3, as test_forward_torch.py does (16-bit weights stay 16-bit on the GPU).
Each family runs with its own tokenizer.json (clamp and generate load it even with --prompt-ids);
the tokenizers are test_tokenizer_js's subject.
"""
import os
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import family_models  # noqa: E402
import fi_testlib as t  # noqa: E402

try:
    import torch
    from torch_llama import TorchLlama
except ImportError:
    torch = None

TOL = {"cpu": 1e-4, "cuda": 1e-3}
STEPS = 3




def cuda_usable(name, tmp):
    """Whether generate --backend cuda runs family `name` here (prints why not when it does not)."""
    model = family_models.cached(name)
    probe = t.run(["generate", "--model", model, "--backend", "cuda", "--prompt-ids", "1",
                   "--max-new-tokens", "1"], check=False)
    if probe.returncode != 0:
        print(f"  no CUDA forward here ({probe.stderr.strip()}): cpu only", flush=True)
    return probe.returncode == 0


def check_family(name, tmp, backend="cpu"):
    ref = TorchLlama(family_models.cached(name))
    model = family_models.cached(name)
    tol = TOL[backend]
    V, L, I = ref.head.shape[0], len(ref.layers), ref.I
    ids = [int(x) for x in np.random.default_rng(len(name)).integers(10, 30000, 12)]
    worst = 0.0

    def compare(what, ours, ref_logits):
        nonlocal worst
        d = t.logit_err(ours, ref_logits)
        worst = max(worst, d)
        t.check(d < tol, f"{name} [{backend}]: {what}: logits differ from torch by {d:.3g} (> {tol})")

    # clamp: row 0 unclamped, then one row per value; site act in the last layer, up in the first.
    for site, layer, neuron, values in (("act", L - 1, 5, [0.0, 3.0]), ("up", 0, 7, [-4.0])):
        dump = os.path.join(tmp, f"{name}.{backend}.{site}.f32")
        t.run(["clamp", "--model", model, "--layer", layer, "--neuron", neuron, "--values",
               ",".join(map(str, values)), "--clamp-site", site, "--prompt-ids", ",".join(map(str, ids)),
               "--dump-logits", dump, "--backend", backend])
        ours = t.read_dump(dump, len(values) + 1, V)
        for r, value in enumerate([None, *values]):
            clamps = [] if value is None else [(layer, neuron, value)]
            compare(f"clamp site {site} value {value}", ours[r], ref.logits(ids, clamps, site)[-1].numpy())

    # generate: the prompt, then STEPS tokens through the KV cache, clamped in two layers.
    clamps = [(0, 3, 2.0), (L - 1, I - 1, -3.0)]
    dump = os.path.join(tmp, f"{name}.{backend}.gen.f32")
    args = ["generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)), "--print-ids",
            "--max-new-tokens", STEPS, "--dump-logits", dump, "--backend", backend]
    for layer, neuron, value in clamps:
        args += ["--clamp", f"{layer}:{neuron}={value}"]
    new = [int(x) for x in t.run(args).stdout.split()]
    t.check(len(new) == STEPS, f"{name} [{backend}]: generated {len(new)} tokens, expected {STEPS}")
    ours = t.read_dump(dump, STEPS, V)
    seq = list(ids)
    for s in range(STEPS):  # torch recomputes the whole sequence each step, no cache
        ref_logits = ref.logits(seq, clamps, "act")[-1].numpy()
        compare(f"generate step {s} ({len(seq)} tokens)", ours[s], ref_logits)
        t.check(new[s] == int(np.argmax(ref_logits)) or ref_logits.max() - ref_logits[new[s]] < tol,
                f"{name} [{backend}]: greedy step {s} chose {new[s]}, torch {int(np.argmax(ref_logits))}")
        seq.append(new[s])
    return worst


def test():
    if torch is None:
        print("SKIPPED test_forward_families: PyTorch is not installed (apt-get install python3-torch)")
        return
    torch.set_num_threads(2)
    names = sys.argv[1:] or list(family_models.FAMILIES)
    with t.tempdir() as tmp:
        backends = ["cpu"] + (["cuda"] if cuda_usable(names[0], tmp) else [])
        for backend in backends:
            for name in names:
                worst = check_family(name, tmp, backend)
                print(f"  {name:12s} [{backend}] worst logit error {worst:.2e}", flush=True)


if __name__ == "__main__":
    t.main(test)
