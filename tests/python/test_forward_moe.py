"""The CPU forward pass of the mixture-of-experts families (Mixtral, Qwen2-MoE with its shared
expert and dense mlp_only_layers, Qwen3-MoE with decoder_sparse_step; family_models.MOE_FAMILIES)
against torch_llama.py's float64 PyTorch forward, whose MoE block runs every expert on every
token weighted by the routing (softmax, top num_experts_per_tok, renormalised where the family
does) rather than gathering tokens per expert as the C++ does:
- clamp --dump-logits: unclamped, a routed expert's neuron (`--expert E`, which acts where the
  router sends a position to it), the shared expert's (`--expert s`) and a dense layer's neuron,
  at both sites;
- `clamp --force-route`: the clamped expert chosen at every position (torch: its score set to
  +inf before the top-k), unlike the router's own choice; --force-route on the shared expert or
  without an expert clamp, one error line each;
- generate with `--clamp L:eE:N=V` and `L:s:N=V` through the KV cache;
- under mpirun -np 2 (a two-stage pipeline) the same logits;
- `clamp --map --expert E` (and `--expert s`) watches the neuron's top token from a version 2 map;
- the clamp errors: a dense-style clamp on an MoE layer, an expert out of range, a shared clamp
  on a model without one, an expert clamp on a dense layer.
Logits within 1e-4 of torch's (relative to max(1, |logit|)).
Where a CUDA device is usable the forward checks (the clamps, --force-route, generate, -np 2)
run again with --backend cuda, within 1e-3 as test_forward_torch's: the CUDA stage routes on the
host with the CPU stage's own routing, runs each expert on its gathered tokens and DeepSeek's MLA
and FP8 weights (dequantised as they load) on the device. Without one that pass prints a line
saying so; the kernels it adds run on CPU threads in test_cuda_forward either way.
"""
import json
import os
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import family_models as fm  # noqa: E402
import fi_testlib as t  # noqa: E402

try:
    import torch
    from torch_llama import TorchLlama
except ImportError:
    torch = None

TOL = {"cpu": 1e-4, "cuda": 1e-3}
STEPS = 3




def check_model(name, tmp, backend="cpu"):
    model = fm.cached(name)
    cfg = fm.MOE_FAMILIES[name][1]
    ref = TorchLlama(model)
    V = ref.head.shape[0]
    moe = fm.moe_layers(cfg)
    experts, n, shared = fm.moe_sizes(cfg)
    ml = moe.index(True)
    ids = [int(x) for x in np.random.default_rng(len(name)).integers(10, 30000, 10)]
    worst = 0.0

    def compare(what, ours, ref_logits):
        nonlocal worst
        d = t.logit_err(ours, ref_logits)
        worst = max(worst, d)
        t.check(d < TOL[backend], f"{name} [{backend}]: {what}: logits differ from torch by {d:.3g} (> {TOL[backend]})")

    # clamp: one neuron of routed expert 1 (site act), of the shared expert (site up), of a dense layer.
    cases = [("act", ml, "1", 5, [0.0, 4.0]), ("up", ml, "1", 2, [-3.0])]
    if shared:
        cases.append(("act", ml, "s", 7, [5.0]))
    if False in moe:
        cases.append(("act", moe.index(False), None, 3, [4.0]))
    for np_ in (1, 2):
        for site, layer, expert, neuron, values in cases:
            dump = os.path.join(tmp, f"{name}.{site}.{expert}.{np_}.f32")
            args = ["clamp", "--model", model, "--layer", layer, "--neuron", neuron, "--values",
                    ",".join(map(str, values)), "--clamp-site", site, "--prompt-ids", ",".join(map(str, ids)),
                    "--dump-logits", dump, "--backend", backend]
            if expert is not None:
                args += ["--expert", expert]
            p = t.run(args, np_=np_ if np_ > 1 else None)
            if expert not in (None, "s"):
                t.check("router sends" in p.stderr, f"{name}: no notice that an expert clamp acts where routed: {p.stderr!r}")
            ours = t.read_dump(dump, len(values) + 1, V)
            # the clamp must matter (a routed expert is chosen for some position and moves the logits)
            t.check(t.logit_err(ours[-1], ours[0]) > 1e-3, f"{name}: clamp {layer}:{expert}:{neuron} changes nothing")
            for r, value in enumerate([None, *values]):
                if value is None:
                    clamps = []
                elif expert is None:
                    clamps = [(layer, neuron, value)]
                else:
                    clamps = [(layer, "s" if expert == "s" else int(expert), neuron, value)]
                compare(f"-np {np_} clamp {layer}:{expert}:{neuron} site {site} value {value}", ours[r],
                        ref.logits(ids, clamps, site)[-1].numpy())
            if np_ == 2:
                break  # one pipeline case is enough

    # --force-route: the last expert chosen at every position, against torch doing the same, and
    # different from the router's own choice (which skips it at some position).
    e_last = str(experts - 1)
    dump = os.path.join(tmp, f"{name}.force.f32")
    base = ["clamp", "--model", model, "--layer", ml, "--neuron", 4, "--expert", e_last, "--values", "3",
            "--prompt-ids", ",".join(map(str, ids)), "--backend", backend]
    p = t.run(base + ["--force-route", "--dump-logits", dump])
    t.check("every position is routed to expert" in p.stderr, f"{name}: no --force-route notice: {p.stderr!r}")
    forced = t.read_dump(dump, 2, V)
    t.run(base + ["--dump-logits", dump])
    routed = t.read_dump(dump, 2, V)
    compare(f"--force-route clamp {ml}:e{e_last}:4=3", forced[1],
            ref.logits(ids, [(ml, experts - 1, 4, 3.0)], "act", force_route=True)[-1].numpy())
    compare("--force-route unclamped row", forced[0], ref.logits(ids)[-1].numpy())
    t.check(t.logit_err(forced[1], routed[1]) > 1e-3, f"{name}: --force-route changes nothing")
    misuse = ((base[:-7] + ["s", "--values", "1", "--prompt-ids", "1", "--force-route"], "routed expert"),
              (["generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", 1, "--force-route"],
               "--force-route"))
    for args, words in misuse if backend == "cpu" else ():
        p = t.run(args, check=False)
        t.check(t.one_line_error(p, words), f"{name}: {args[-1]}: {p.stderr!r}")

    # generate through the KV cache with an expert clamp and, where there is one, a shared one.
    clamps = [(ml, 0, n - 1, 3.0)] + ([(ml, "s", 1, -2.0)] if shared else [])
    dump = os.path.join(tmp, f"{name}.gen.f32")
    args = ["generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)), "--print-ids",
            "--max-new-tokens", STEPS, "--dump-logits", dump, "--backend", backend]
    for layer, e, neuron, value in clamps:
        args += ["--clamp", f"{layer}:{'s' if e == 's' else f'e{e}'}:{neuron}={value}"]
    new = [int(x) for x in t.run(args).stdout.split()]
    t.check(len(new) == STEPS, f"{name}: generated {len(new)} tokens, expected {STEPS}")
    ours = t.read_dump(dump, STEPS, V)
    seq = list(ids)
    for s in range(STEPS):
        ref_logits = ref.logits(seq, clamps, "act")[-1].numpy()
        compare(f"generate step {s}", ours[s], ref_logits)
        seq.append(new[s])
    if backend != "cpu":
        return worst  # what follows checks options and errors, the same on every backend

    # clamp errors, each one line before any weight is loaded
    bad = [([f"{ml}:3=1"], "mixture-of-experts layer"), ([f"{ml}:e{experts}:0=1"], f"expert {experts} is out of range"),
           ([f"{ml}:e0:{n}=1"], "is out of range")]
    if not shared:
        bad.append(([f"{ml}:s:0=1"], "no shared expert"))
    if False in moe:
        bad.append(([f"{moe.index(False)}:e0:0=1"], "is a dense layer"))
    for specs, words in bad:
        p = t.run(["generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", 1, "--backend", "cpu",
                   *sum((["--clamp", x] for x in specs), [])], check=False)
        t.check(t.one_line_error(p, words), f"{name}: --clamp {specs}: rc {p.returncode} {p.stderr!r}")
    # malformed expert specs, and clamp --expert with a bad value
    for spec in (f"{ml}:e:0=1", f"{ml}:e-1:0=1", f"{ml}:x:0=1"):
        p = t.run(["generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", 1, "--clamp", spec], check=False)
        t.check(t.one_line_error(p, "LAYER:eEXPERT:NEURON=VALUE"), f"{name}: --clamp {spec}: {p.stderr!r}")
    p = t.run(["clamp", "--model", model, "--layer", ml, "--neuron", 0, "--values", "1", "--prompt-ids", "1",
               "--backend", "cpu", "--expert", "x"], check=False)
    t.check(t.one_line_error(p, "--expert: expected an expert number"), f"{name}: clamp --expert x: {p.stderr!r}")

    # clamp --map --expert: the routed (and shared) neuron's top token from a version 2 map, as
    # h5py reads it there; an expert the map lacks is one error line.
    mp = os.path.join(tmp, f"{name}.map.h5")
    t.run(["decode", "--model", model, "--out", mp, "--matrices", "up", "--layers", f"{ml}-{ml}", "--experts", "1-2",
           "--top-k", 2, "--token-index", 0, "--backend", "cpu", "--quiet"])
    with h5py.File(mp, "r") as f:
        want = {"1": int(f["moe/up/top_ids"][0, 0, 6, 0])}
        if shared:
            want["s"] = int(f["shared/up/top_ids"][0, 6, 0])
    for e, tok in want.items():
        p = t.run(["clamp", "--model", model, "--layer", ml, "--neuron", 6, "--expert", e, "--values", "1",
                   "--prompt-ids", "1", "--backend", "cpu", "--map", mp, "--json"])
        got = [w["id"] for w in json.loads(p.stdout)["watch"]]
        t.check(got == [tok], f"{name}: clamp --expert {e} --map: watched {got}, the map's top token is {tok}")
    p = t.run(["clamp", "--model", model, "--layer", ml, "--neuron", 6, "--expert", "0", "--values", "1",
               "--prompt-ids", "1", "--backend", "cpu", "--map", mp], check=False)
    t.check(t.one_line_error(p, "no expert 0"), f"{name}: clamp --expert 0 with a map of experts 1-2: {p.stderr!r}")
    return worst


def test():
    if torch is None:
        print("SKIPPED test_forward_moe: PyTorch is not installed (apt-get install python3-torch)")
        return
    torch.set_num_threads(2)
    names = sys.argv[1:] or ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3"]
    with t.tempdir() as tmp:
        for name in names:
            print(f"  {name:12s} [cpu]  worst logit error {check_model(name, tmp):.2e}", flush=True)
        probe = t.run(["generate", "--model", fm.cached(names[0]), "--backend", "cuda", "--prompt-ids", "1",
                       "--max-new-tokens", "1"], check=False)
        if probe.returncode != 0:
            print(f"  no CUDA forward here ({probe.stderr.strip()}): cpu only", flush=True)
            return
        for name in names:
            print(f"  {name:12s} [cuda] worst logit error {check_model(name, tmp, 'cuda'):.2e}", flush=True)


if __name__ == "__main__":
    t.main(test)
