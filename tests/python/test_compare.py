"""analysis/compare on the maps of a demo model and its `--variant instruct` (both decoded under
mpirun -np 2): the per-layer share of neurons with the same top-1 token equals the share computed
independently from the two checkpoints (numpy float64, near-ties bounded); the Jaccard overlaps
equal a plain-Python set computation over the maps; the instruct variant changes what planted.json
says (its other tensors are the base model's bytes); CSV, JSON and PNG outputs; maps of another
shape or vocabulary, and partial maps, are refused with one line.
"""
import csv
import json
import os
import shutil
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

SIZE = ["--layers", "3", "--hidden", "64", "--intermediate", "128", "--seed", "11"]
MATRICES = ["up", "gate", "down"]
LAYERS = [0, 1, 2]
N = 128
TIE_REL = 1e-5   # top-1 and top-2 float64 logits closer than this (relative) may swap in fp32


def ref_top1(ref, matrix, layer):
    """[N] float64 top-1 ids and [N] bool: top-1 and top-2 are near-tied."""
    lg = ref.logits(matrix, layer, np.arange(N), "rms")
    two = np.argpartition(-lg, 1, axis=1)[:, :2]            # the two largest, in either order
    a, b = lg[np.arange(N), two[:, 0]], lg[np.arange(N), two[:, 1]]
    two = np.where((a >= b)[:, None], two, two[:, ::-1])
    a, b = np.maximum(a, b), np.minimum(a, b)
    scale = np.maximum(1.0, np.abs(lg).max(axis=1))
    return two[:, 0], (a - b) <= TIE_REL * scale


def check_variant(base, inst):
    """The instruct checkpoint: non-MLP tensors identical to the base's, MLP ones close (noise) with
    the changed neurons listed in planted.json replaced; returns planted.json's finetune object."""
    sb, si = t.SafeTensors(base), t.SafeTensors(inst)
    t.check(sb.names() == si.names(), "instruct tensor names differ from the base's")
    pj = t.load_planted(inst, whole=True)
    ft = pj["finetune"]
    t.check(pj.get("variant") == "instruct" and "variant" not in t.load_planted(base, whole=True), "variant key")
    for name in sb.names():
        a, b = sb.get(name), si.get(name)
        if ".mlp." not in name:
            t.check(np.array_equal(a, b), f"{name} differs between base and instruct")
            continue
        mat = name.split(".mlp.")[1].split("_proj")[0]
        layer = int(name.split(".")[2])
        w_a, w_b = (a.T, b.T) if mat == "down" else (a, b)      # [N, H]: a neuron per row
        changed = {n for l_, n, _ in ft["changed"][mat] if l_ == layer}
        dog = [p for p in pj["planted"] if p["token"] == " puppy" and p["matrix"] == mat and p["layer"] == layer]
        changed |= {p["neuron"] for p in dog}
        same = np.array([i not in changed for i in range(N)])
        d = np.abs(w_a[same] - w_b[same])
        t.check(d.max() < 8 * ft["noise_sd"] and d.mean() > 0.3 * ft["noise_sd"],
                f"{name}: unchanged neurons moved by max {d.max():.2g}, mean {d.mean():.2g}")
        want = round((0.05 + 0.25 * layer / (len(LAYERS) - 1)) * N)
        t.check(len(changed) - len(dog) == want, f"{name}: {len(changed) - len(dog)} changed neurons, want {want}")
    return pj


def jaccard_py(ids_a, ids_b):
    sa, sb = set(int(x) for x in ids_a if x >= 0), set(int(x) for x in ids_b if x >= 0)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def main():
    with t.tempdir() as tmp:
        base = t.demo_model(os.path.join(tmp, "base"), *SIZE)
        inst = t.demo_model(os.path.join(tmp, "instruct"), *SIZE, "--variant", "instruct")
        pj = check_variant(base, inst)
        print(f"  instruct variant: non-MLP tensors = base bytes; changed neurons per layer as documented "
              f"({pj['finetune']['changed_fraction']}); noise sd {pj['finetune']['noise_sd']}")
        bad = t.run(["demo-model", "--out", os.path.join(tmp, "x"), "--variant", "chat"], check=False)
        t.check(bad.returncode != 0 and "variant" in bad.stderr, f"--variant chat: {bad.stderr!r}")

        args = ["--matrices", ",".join(MATRICES), "--token-index", "0"]
        map_a = t.decode(base, os.path.join(tmp, "base.h5"), *args)
        map_b = t.decode(inst, os.path.join(tmp, "instruct.h5"), *args)
        ra, rb = t.Reference(base), t.Reference(inst)

        out_dir = os.path.join(tmp, "cmp")
        total_same, total_amb = 0, 0
        for mat in MATRICES:
            extra = ["--out", out_dir] if mat == "up" else []
            res = t.analysis_json("compare", map_a, map_b, "--matrix", mat, *extra)
            t.check(res["layers"] == LAYERS and res["neurons"] == N, f"/{mat}: layers {res['layers']}")
            fa, fb = h5py.File(map_a, "r"), h5py.File(map_b, "r")
            all_jac = []
            for li, layer in enumerate(LAYERS):
                ta, amb_a = ref_top1(ra, mat, layer)
                tb, amb_b = ref_top1(rb, mat, layer)
                amb = amb_a | amb_b
                same = (ta == tb) & ~amb
                lo, hi = int(same.sum()), int(same.sum() + amb.sum())
                got = res["per_layer"]["same_top1"][li]
                t.check(lo <= got <= hi, f"/{mat} layer {layer}: compare says {got} neurons keep their top-1, "
                                         f"float64 over the weights says {lo}" + (f"..{hi}" if hi > lo else ""))
                t.check(abs(res["per_layer"]["same_top1_share"][li] - got / N) < 1e-12, "share")
                # the maps' own top-1 is the float64 one wherever that is not near-tied
                for f_, want, am in ((fa, ta, amb_a), (fb, tb, amb_b)):
                    t1 = f_[mat]["top_ids"][li, :, 0]
                    t.check((t1[~am] == want[~am]).all(), f"/{mat} layer {layer}: map top-1 != float64 top-1")
                # Jaccard, one neuron at a time with Python sets over the maps' datasets
                ia, ib = fa[mat]["top_ids"][li], fb[mat]["top_ids"][li]
                jac = [jaccard_py(ia[n], ib[n]) for n in range(N)]
                all_jac += jac
                t.check(abs(res["per_layer"]["jaccard_mean"][li] - np.mean(jac)) < 1e-9,
                        f"/{mat} layer {layer}: Jaccard mean {res['per_layer']['jaccard_mean'][li]} vs {np.mean(jac)}")
                t.check(abs(res["per_layer"]["jaccard_median"][li] - np.median(jac)) < 1e-9, "Jaccard median")
                inb = np.mean([ia[n, 0] in set(ib[n]) for n in range(N)])
                t.check(abs(res["per_layer"]["top1_in_other_topk_share"][li] - inb) < 1e-12, "top-1 in top-k")
                total_same += got
                total_amb += int(amb.sum())
                if mat == "up":
                    print(f"  /up layer {layer}: same top-1 {got}/{N} = {got / N:.1%} (float64 from the weights: "
                          f"{lo}{'..' + str(hi) if hi > lo else ''}), Jaccard mean {np.mean(jac):.3f}")
            o = res["overall"]
            t.check(o["neurons"] == N * len(LAYERS) and o["same_top1"] == sum(res["per_layer"]["same_top1"]),
                    f"/{mat} overall {o}")
            mc = res["most_changed"]
            t.check(len(mc) == 20 and abs(mc[0]["jaccard"] - min(all_jac)) < 1e-12,
                    f"/{mat}: most changed starts {mc[:1]}, the lowest Jaccard is {min(all_jac)}")
            t.check(all(x["jaccard"] <= y["jaccard"] for x, y in zip(mc, mc[1:])), "most_changed order")
            fa.close()
            fb.close()
        t.check(total_amb <= 3, f"{total_amb} near-tied top-1s: the comparison is not decisive")
        print(f"  up, gate, down: per-layer same-top-1 counts = float64 ({total_amb} near-ties); Jaccard and "
              f"top-1-in-top-k = Python sets over the maps")

        # The instruct dog neuron now stands for " puppy"; the changed neurons for their new tokens.
        dog = next(p for p in pj["planted"] if p["token"] == " puppy")
        with h5py.File(map_b, "r") as f:
            t.check(f[dog["matrix"]]["top_ids"][dog["layer"], dog["neuron"], 0] == dog["token_id"], "puppy neuron")
            hit = sum(int(f[m]["top_ids"][l_, n, 0] == tok)
                      for m in MATRICES for l_, n, tok in pj["finetune"]["changed"][m])
        nchg = sum(len(pj["finetune"]["changed"][m]) for m in MATRICES)
        t.check(hit == nchg, f"only {hit} of {nchg} changed neurons decode to their new token")
        print(f"  instruct map: the dog neuron decodes to ' puppy'; all {nchg} changed neurons to their new token")

        # Files: CSV rows = JSON numbers; PNGs.
        with open(os.path.join(out_dir, "compare.json")) as f:
            js = json.load(f)
        with open(os.path.join(out_dir, "compare_layers.csv")) as f:
            rows = list(csv.DictReader(f))
        t.check([r["layer"] for r in rows] == ["0", "1", "2", "all"], f"CSV layers {[r['layer'] for r in rows]}")
        for i, r in enumerate(rows[:3]):
            t.check(int(r["same_top1"]) == js["per_layer"]["same_top1"][i] and
                    abs(float(r["jaccard_mean"]) - js["per_layer"]["jaccard_mean"][i]) < 1e-12, f"CSV row {r}")
        t.check(float(rows[3]["same_top1_share"]) == js["overall"]["same_top1_share"], "CSV overall row")
        with open(os.path.join(out_dir, "compare_changed.csv")) as f:
            t.check(len(list(csv.DictReader(f))) == 20, "compare_changed.csv rows")
        for png in ("top1_agreement.png", "top1_in_topk.png", "jaccard.png"):
            with open(os.path.join(out_dir, png), "rb") as f:
                head = f.read(8)
            t.check(head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(os.path.join(out_dir, png)) > 5000, png)
        p = t.analysis("compare", map_a, map_b)
        t.check(p.returncode == 0 and "overall:" in p.stdout and "most changed" in p.stdout, f"text: {p.stderr}")
        print("  " + next(ln for ln in p.stdout.splitlines() if ln.startswith("overall")))
        print("  --out: compare_layers.csv, compare_changed.csv, compare.json agree; 3 PNG plots")

        # Refusals.
        def refused(other, *words):
            p = t.analysis("compare", map_a, other)
            t.check(t.one_line_error(p, *words), f"compare with {os.path.basename(other)}: exit {p.returncode}, "
                                                 f"stderr {p.stderr!r}")
            return p.stderr.strip()
        edits = {
            "layers.h5": lambda f: f["up"].attrs.modify("layers", np.array([0, 1, 5], np.int64)),
            "vocab.h5": lambda f: f["vocab/bytes"].__setitem__(1000, np.frombuffer(b"xyzzy", np.uint8)),
            "special.h5": lambda f: f["vocab/special"].__setitem__(7, 1),
        }
        for name, edit in edits.items():
            shutil.copy(map_b, os.path.join(tmp, name))
            with h5py.File(os.path.join(tmp, name), "r+") as f:
                edit(f)
        refused(os.path.join(tmp, "layers.h5"), "layers")
        msg = refused(os.path.join(tmp, "vocab.h5"), "vocabulary", "1000")
        refused(os.path.join(tmp, "special.h5"), "vocabulary", "7")
        smaller = os.path.join(tmp, "topk.h5")          # the instruct map cut to its top-5
        shutil.copy(map_b, smaller)
        with h5py.File(smaller, "r+") as f:
            for name in ("top_ids", "top_logits", "top_probs"):
                data = f["up"][name][:, :, :5]
                del f["up"][name]
                f["up"].create_dataset(name, data=data)
            f.attrs["top_k"] = np.int64(5)
        refused(smaller, "top-k")
        shutil.copy(map_b, os.path.join(tmp, "partial.h5"))
        with h5py.File(os.path.join(tmp, "partial.h5"), "r+") as f:
            f.attrs["complete"] = np.int64(0)
        refused(os.path.join(tmp, "partial.h5"), "partial")
        t.check(t.analysis("compare", map_a, os.path.join(tmp, "partial.h5"), "--partial").returncode == 0, "--partial")
        print(f"  refused with one line: other layers, vocabulary, special flags, top-k, partial; e.g.\n    {msg}")


if __name__ == "__main__":
    t.main(main)
