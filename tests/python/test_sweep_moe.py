"""flashinterp sweep on a mixture-of-experts model: the tiny Qwen2-MoE family (family_models.py:
3 layers, layer 1 a dense MLP (mlp_only_layers), layers 0 and 2 four routed experts (top-2) and a
shared expert), decoded into a version 2 map (--matrices up).
- A list of one routed-expert neuron (moe/up), one shared-expert neuron (shared/up) and one
  dense neuron (up), at 2 values over 2 prompts: the file records each neuron's group and
  expert; every per-(value, prompt) delta of log p of the decoded top token, the top-5 mean, the
  top-1 flags and the score equal an independent float64 PyTorch forward (torch_llama.py) with
  the same clamp (a routed expert's acting only where the router sends a position to it); the
  top tokens are the map's. The routed neuron's clamp moves something (its expert is chosen
  somewhere in the prompts), so the check is not of zeros alone.
- --force-route: the same against torch with the clamped expert forced into every position.
- mpirun -np 1, 2 and -np 2 --stages 2 give bit-identical datasets; --json names the group and
  expert of each neuron.
- --select top:K over every group of the map (--matrices up: /up, /moe/up, /shared/up) picks the
  K lowest exact entropies numpy finds in the map's datasets, in (layer, group, expert, neuron)
  order.
- analysis/flashinterp_sweep.py looks the neurons up by group and expert, and reads a file
  without the group dataset (written before it existed) as all dense.
- A list line naming an expert the map lacks, or an expert on a dense layer, is one error line.
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import family_models as fm  # noqa: E402
import fi_testlib as t  # noqa: E402

try:
    import torch
    from torch_llama import TorchLlama, check_sweep_row
except ImportError:
    torch = None

PROMPTS = ["The capital of France is", "Here is a short story about"]
VALUES = [0, 6]
GROUPS = {"dense": 0, "moe": 1, "shared": 2}
# (list line, group, layer, expert, neuron): routed expert 1 of MoE layer 0, the shared expert of
# MoE layer 2, the dense layer 1.
NEURONS = [("moe/up 0 1 5", "moe", 0, 1, 5), ("up 1 7", "dense", 1, -1, 7), ("shared/up 2 11", "shared", 2, -1, 11)]


def sweep(model, mp, out, lst, tmp, np_=1, extra=(), check=True):
    cmd = [*(t.mpi_prefix(np_) if np_ else []), t.binary(), "sweep", "--model", model, "--map", mp, "--out", out,
           "--select", f"list:{lst}", "--prompts", f"{tmp}/prompts.txt", "--values", ",".join(map(str, VALUES)),
           "--quiet", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        t.fail(f"exit {p.returncode}: {' '.join(cmd)}\n{p.stderr}")
    return p


def read(path):
    with h5py.File(path, "r") as f:
        t.check(int(f.attrs["complete"]) == 1, f"{path}: not complete")
        return {k: f[k][()] for k in f.keys()}


def check_torch(ref, s, mp, force=False):
    ids = [[int(x) for x in s["prompt_ids"][p, :s["prompt_len"][p]]] for p in range(len(s["prompt_len"]))]
    base = [torch.log_softmax(ref.logits(i)[-1], 0).numpy() for i in ids]
    moved = 0.0
    with h5py.File(mp, "r") as f:
        for k, (_, group, layer, expert, n) in enumerate(NEURONS):
            where = f"{group} {layer}:{expert}:{n}" + (" (force-route)" if force else "")
            # The file's identity fields and the map's top tokens for this neuron.
            t.check((int(s["group"][k]), int(s["layer"][k]), int(s["expert"][k]), int(s["neuron"][k]),
                     int(s["matrix"][k])) == (GROUPS[group], layer, expert, n, 0), f"{where}: file row {k} is another neuron")
            if group == "moe":
                g = f["moe/up"]
                top_map = g["top_ids"][list(g.attrs["layers"]).index(layer), list(g.attrs["experts"]).index(expert), n, :5]
            else:
                g = f["shared/up" if group == "shared" else "up"]
                top_map = g["top_ids"][list(g.attrs["layers"]).index(layer), n, :5]
            top = [int(x) for x in s["top_tokens"][k]]
            t.check(top == [int(x) for x in top_map], f"{where}: top tokens {top} are not the map's {list(top_map)}")
            clamp = (layer, n) if group == "dense" else (layer, expert if group == "moe" else "s", n)
            want, _, err, slope = check_sweep_row(
                s, k, VALUES, lambda val, p: ref.logits(ids[p], [(*clamp, val)], force_route=force and group == "moe")[-1],
                base, top, where)
            if group == "moe":
                moved = np.abs(want).max()
            print(f"  {where}: score {s['score'][k]:.4f} (torch {slope:.4f}), max |delta err| {err:.1e}")
    t.check(moved > 1e-3, f"the routed neuron's clamp moves nothing (max |delta| {moved}): a check of zeros")


def check_top(model, mp, tmp, k=7):
    """top:K against numpy over every group's entropy."""
    found = []
    with h5py.File(mp, "r") as f:
        for gname, code in (("up", 0), ("moe/up", 1), ("shared/up", 2)):
            g = f[gname]
            ent = g["entropy"][()]
            for li, layer in enumerate(g.attrs["layers"]):
                if code == 1:
                    for ei, e in enumerate(g.attrs["experts"]):
                        found += [(float(ent[li, ei, n]), (int(layer), code, int(e), n)) for n in range(ent.shape[2])]
                else:
                    found += [(float(ent[li, n]), (int(layer), code, -1, n)) for n in range(ent.shape[1])]
    want = sorted(key for _, key in sorted(found)[:k])
    out = f"{tmp}/top.h5"
    cmd = [t.binary(), "sweep", "--model", model, "--map", mp, "--out", out, "--select", f"top:{k}", "--matrices", "up",
           "--prompts", f"{tmp}/prompts.txt", "--values", "0,3", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    t.check(p.returncode == 0, f"top:{k}: exit {p.returncode}\n{p.stderr}")
    s = read(out)
    got = [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(s["layer"], s["group"], s["expert"], s["neuron"])]
    t.check(got == want, f"top:{k}: {got}, numpy {want}")
    t.check(len({g for _, g, _, _ in got}) > 1, f"top:{k}: one group only ({got}): a weak check")


def check_reader(path, tmp, mp=None):
    sys.path.insert(0, os.path.join(t.SOURCE_DIR, "analysis"))
    import flashinterp_sweep as fs
    s = fs.open_sweep(path)
    score = read(path)["score"]
    for k, (_, group, layer, expert, n) in enumerate(NEURONS):
        name = {"dense": "up", "moe": "moe/up", "shared": "shared/up"}[group]
        got = s.lookup(name, layer, n, expert=expert)
        t.check(got is not None and got["score"] == float(score[k]), f"reader: {name} {layer} {expert} {n}: {got}")
    t.check(s.lookup("up", 0, 5) is None and s.lookup("moe/up", 0, 5, expert=2) is None, "reader: finds unswept neurons")
    if mp:  # analysis/show --sweep prints each swept neuron's score, the routed one's by its expert
        for k, (_, group, layer, expert, n) in enumerate(NEURONS):
            name = {"dense": "up", "moe": "moe/up", "shared": "shared/up"}[group]
            args = ["--matrix", name, "--layer", layer, "--neuron", n, "--sweep", path]
            j = t.analysis_json("show", mp, *args, *(["--expert", expert] if group == "moe" else []))
            t.check(j["causal"] is not None and j["causal"]["score"] == float(score[k]),
                    f"show --sweep {name} {layer} {expert} {n}: {j.get('causal')}, file {score[k]}")
    old = f"{tmp}/old.h5"
    with h5py.File(path, "r") as src, h5py.File(old, "w") as dst:
        for k in src:
            if k != "group":
                src.copy(k, dst)
        dst.attrs.update(src.attrs)
    o = fs.open_sweep(old)
    t.check((o.group == 0).all(), "reader: a file without group is not read as dense")


def same(a, b, what):
    da, db = read(a), read(b)
    t.check(sorted(da) == sorted(db), f"{what}: datasets differ")
    for k in da:
        t.check(da[k].dtype == db[k].dtype and da[k].tobytes() == db[k].tobytes(), f"{what}: dataset {k} differs")


def test():
    if torch is None:
        print("SKIPPED test_sweep_moe: PyTorch is not installed (apt-get install python3-torch)")
        return
    torch.set_num_threads(2)
    model = fm.cached("qwen2_moe")
    with t.tempdir() as tmp:
        mp = t.decode(model, f"{tmp}/map.h5", "--matrices", "up", "--top-k", "5", "--token-index", "0")
        with h5py.File(mp, "r") as f:
            t.check(int(f.attrs["format_version"]) == 2 and "moe/up" in f and "shared/up" in f and "up" in f,
                    "the map is not a version 2 map with dense, moe and shared groups")
        with open(f"{tmp}/prompts.txt", "w") as f:
            f.write("\n".join(PROMPTS) + "\n")
        lst = f"{tmp}/list.txt"
        with open(lst, "w") as f:  # not in the file's order: the sweep sorts
            f.write("# routed, dense, shared\n" + "\n".join(x[0] for x in reversed(NEURONS)) + "\n")
        outs = {}
        for name, np_, extra in (("np1", 1, ()), ("np2", 2, ()), ("np2s2", 2, ("--stages", "2"))):
            outs[name] = f"{tmp}/{name}.h5"
            sweep(model, mp, outs[name], lst, tmp, np_=np_, extra=extra)
        same(outs["np1"], outs["np2"], "np 2 vs np 1")
        same(outs["np1"], outs["np2s2"], "np 2 --stages 2 vs np 1")
        s = read(outs["np1"])
        ref = TorchLlama(model)
        check_torch(ref, s, mp)
        forced = f"{tmp}/forced.h5"
        sweep(model, mp, forced, lst, tmp, np_=1, extra=("--force-route",))
        check_torch(ref, read(forced), mp, force=True)
        check_top(model, mp, tmp)
        check_reader(outs["np1"], tmp, mp)
        # --json: the existing file is complete, so --resume only prints.
        p = sweep(model, mp, outs["np1"], lst, tmp, np_=None, extra=("--resume", "--json"))
        rows = [json.loads(x) for x in p.stdout.splitlines()]
        got = [(r["group"], r["layer"], r["expert"], r["neuron"], r["matrix"]) for r in rows]
        want = [(g, la, e if e >= 0 else None, n, "up") for _, g, la, e, n in NEURONS]
        t.check(got == want, f"--json: {got}, expected {want}")
        for text, words in [("moe/up 0 7 5\n", "expert 7 is not in the map"),
                            ("moe/up 1 0 5\n", "moe/up layer 1 is not in the map"),
                            ("shared/up 2 48\n", "out of range")]:
            with open(f"{tmp}/bad.txt", "w") as f:
                f.write(text)
            p = sweep(model, mp, f"{tmp}/bad.h5", f"{tmp}/bad.txt", tmp, np_=None, check=False)
            t.check(t.one_line_error(p, words), f"list {text!r}: exit {p.returncode}, stderr {p.stderr!r}")


if __name__ == "__main__":
    t.main(test)
