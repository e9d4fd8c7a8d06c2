"""analysis/export, and the exact statistics in show and report, on small synthetic maps (one with
/up/entropy, /up/margin, one without) and a demo-model map (2 ranks, --bottom-k): every neuron
once in neurons.jsonl and neurons.csv, its top tokens = /up/top_ids and /top_probs (h5py), its
bottom tokens' probabilities = exp(logit - logsumexp) in float64, entropy and margin = the map's
datasets or, without them, a float64 estimate from the top-k and the stored top-1 minus top-2
logit; the demo map's margin and top tokens against a float64 decode of the checkpoint. report
ranks "most specialised" by the exact entropy (auto), else by the margin, as numpy orders them,
and writes a page per listed neuron; show prints the exact entropy. Refusals: one line.
"""
import csv
import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True
import fi_testlib as t  # noqa: E402

GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_synthetic_map.py")


def estimate(p, V):
    p = np.asarray(p, np.float64)
    p = p[p > 0]
    r = max(0.0, 1 - p.sum())
    return float(-(p * np.log(p)).sum() + (-r * np.log(r / (V - p.size)) if r > 0 else 0.0))


def read(path):
    with h5py.File(path, "r") as f:
        g = f["up"]
        d = {k: g[k][...] for k in ("top_ids", "top_probs", "top_logits", "logsumexp", "entropy", "margin",
                                    "bottom_ids", "bottom_logits") if k in g}
        d["V"] = f["vocab/text"].shape[0]
        d["layers"] = [int(x) for x in g.attrs["layers"]]
    return d


def check_export(where, path, out, ref=None):
    """neurons.jsonl / .csv of `path` against h5py (and, for the demo map, a float64 decode)."""
    p = t.analysis("export", path, "--out", out, timeout=300)
    t.check(p.returncode == 0, f"{where}: export: {p.stderr}")
    d = read(path)
    L, N, K = d["top_ids"].shape
    with open(os.path.join(out, "neurons.jsonl"), encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    with open(os.path.join(out, "neurons.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    t.check(len(recs) == L * N == len(rows), f"{where}: {len(recs)} JSONL, {len(rows)} CSV records, want {L * N}")
    t.check([(r["layer"], r["neuron"]) for r in recs] == [(la, n) for la in d["layers"] for n in range(N)],
            f"{where}: records not one per neuron in order")
    worst_e = 0.0
    for r, c in zip(recs, rows):
        li, n = d["layers"].index(r["layer"]), r["neuron"]
        t.check([x["id"] for x in r["top"]] == [int(i) for i in d["top_ids"][li, n] if i >= 0] and
                np.allclose([x["prob"] for x in r["top"]], d["top_probs"][li, n][:len(r["top"])], rtol=1e-7),
                f"{where}: L{r['layer']} N{n}: top tokens differ from /up/top_ids, /top_probs")
        if "entropy" in d:
            want_e, want_m = float(d["entropy"][li, n]), float(d["margin"][li, n])
            t.check(r["entropy_exact"] and r["margin_exact"], f"{where}: {r['layer']}/{n} not exact")
        else:
            want_e = estimate(d["top_probs"][li, n], d["V"])
            want_m = float(d["top_logits"][li, n, 0]) - float(d["top_logits"][li, n, 1])
            t.check(not r["entropy_exact"], f"{where}: {r['layer']}/{n} marked exact")
        worst_e = max(worst_e, abs(r["entropy"] - want_e))
        t.check(abs(r["entropy"] - want_e) <= 1e-5 * max(1.0, want_e) and abs(r["margin"] - want_m) <= 1e-5,
                f"{where}: L{r['layer']} N{n}: entropy {r['entropy']} margin {r['margin']}, want {want_e} {want_m}")
        if "bottom_ids" in d:
            bp = np.exp(d["bottom_logits"][li, n].astype(np.float64) - float(d["logsumexp"][li, n]))
            t.check([x["id"] for x in r["bottom"]] == list(d["bottom_ids"][li, n]) and
                    np.allclose([x["prob"] for x in r["bottom"]], bp, rtol=1e-6), f"{where}: bottom of {r['layer']}/{n}")
        if ref is not None:
            row = ref[li * N + n]
            s = np.sort(np.log(row))[::-1]
            t.check(abs(r["margin"] - (s[0] - s[1])) < 1e-3 and
                    np.allclose([x["prob"] for x in r["top"]], row[[x["id"] for x in r["top"]]], rtol=1e-4),
                    f"{where}: L{r['layer']} N{n}: margin {r['margin']} vs float64 {s[0] - s[1]}")
        t.check((c["matrix"], int(c["layer"]), int(c["neuron"]), c["expert"]) == ("up", r["layer"], n, "") and
                float(c["entropy"]) == r["entropy"] and int(c["top1_id"]) == r["top"][0]["id"] and
                c["top1_token"] == r["top"][0]["token"] and float(c["top1_prob"]) == r["top"][0]["prob"],
                f"{where}: CSV row {dict(list(c.items())[:12])} differs from its JSONL record")
    return len(recs), worst_e


def main():
    with t.tempdir() as tmp:
        syn, bare = os.path.join(tmp, "syn.h5"), os.path.join(tmp, "bare.h5")
        for path, extra in ((syn, []), (bare, ["--no-stats"])):
            p = subprocess.run(["/usr/bin/python3", GEN, path, "--layers", "3", "--neurons", "200", "--token-index", "4",
                                "--chunk-rows", "64", *extra], capture_output=True, text=True, timeout=300)
            t.check(p.returncode == 0, f"make_synthetic_map.py: {p.stderr}")
        n1, _ = check_export("synthetic with /up/entropy", syn, os.path.join(tmp, "e1"))
        n2, _ = check_export("synthetic without", bare, os.path.join(tmp, "e2"))
        print(f"  export: {n1} + {n2} neurons, JSONL = CSV = h5py; exact entropy/margin where the map has them, "
              "else the float64 top-k estimate and the stored margin")

        model = t.demo_model(os.path.join(tmp, "model"), "--layers", "2", "--hidden", "64", "--intermediate", "64",
                             "--seed", "5")
        demo = t.decode(model, os.path.join(tmp, "demo.h5"), "--bottom-k", "4")
        ref = t.reference_probs(t.Reference(model), "up", [0, 1])
        n3, _ = check_export("demo model", demo, os.path.join(tmp, "e3"), ref)
        with h5py.File(demo, "r") as f:
            if "entropy" in f["up"]:    # a binary that writes the exact statistics: against float64
                e = f["up/entropy"][...].reshape(-1).astype(np.float64)
                h = np.array([-(q[q > 0] * np.log(q[q > 0])).sum() for q in ref])
                print(f"  demo map /up/entropy vs float64: max error {np.abs(e - h).max():.2e} nats")
                t.check(np.abs(e - h).max() < 1e-3, "exact entropy differs from float64")
        print(f"  export of a demo-model map ({n3} neurons, bottom-4): margin and top tokens = float64 decode")

        # -- report: most specialised by exact entropy (auto), else by margin -------------------------
        for path, key in ((syn, "entropy"), (bare, "margin")):
            rep = os.path.join(tmp, "rep-" + key)
            p = t.analysis("report", path, "--out", rep, "--specialised", "12", timeout=300)
            t.check(p.returncode == 0, f"report: {p.stderr}")
            d = read(path)
            L, N, _ = d["top_ids"].shape
            vals = d["entropy"] if key == "entropy" else -(d["top_logits"][:, :, 0].astype(np.float64) -
                                                            d["top_logits"][:, :, 1])
            flat = vals.reshape(-1).astype(np.float64)
            order = np.lexsort((np.arange(flat.size), flat))[:12]
            want = [(d["layers"][i // N], i % N) for i in order]
            with open(os.path.join(rep, "index.html"), encoding="utf-8") as f:
                page = f.read()
            table = page[page.index("id='specialised-up'"):]
            table = table[:table.index("</table>")]
            got = [(int(a), int(b)) for a, b in re.findall(r"<tr><td>\d+</td><td>(\d+)</td><td><a href='[^']+'>(\d+)</a>", table)]
            t.check(got == want, f"report ({key}): specialised {got[:4]}, numpy {want[:4]}")
            for la, n in want:
                page_path = os.path.join(rep, "neuron", "up", str(la), f"{n}.html")
                t.check(os.path.exists(page_path), f"no page {page_path}")
                with open(page_path, encoding="utf-8") as f:
                    ids = [int(x) for x in re.findall(r'class="tokrow" data-id="(-?\d+)"', f.read())]
                t.check(ids == list(d["top_ids"][d["layers"].index(la), n]), f"{page_path}: ids {ids[:3]}")
            t.check(os.path.exists(os.path.join(rep, "static", "style.css")), "report: no static/style.css")
        print("  report: most specialised = lowest /up/entropy (a map with it) or highest margin (without), "
              "as numpy orders them; a page per listed neuron with its tokens")

        p = t.analysis("show", syn, "--layer", "1", "--neuron", "7")
        with h5py.File(syn, "r") as f:
            want = float(f["up/entropy"][1, 7])
        t.check(p.returncode == 0 and f"entropy (exact, /up/entropy) = {want:.4f}" in p.stdout, f"show:\n{p.stdout}")
        j = t.analysis_json("show", syn, "--layer", "1", "--neuron", "7")
        t.check(abs(j["entropy"]["exact_nats"] - want) < 1e-6 and j["margin_exact"], f"show --json: {j['entropy']}")
        jb = t.analysis_json("show", bare, "--layer", "1", "--neuron", "7")
        t.check(jb["entropy"]["exact_nats"] is None and not jb["margin_exact"], f"show on a bare map: {jb['entropy']}")
        print("  show: the exact entropy where the map has it, none claimed where not")

        # -- refusals -----------------------------------------------------------------------------------
        p = t.analysis("export", os.path.join(tmp, "missing.h5"), "--out", os.path.join(tmp, "e4"))
        t.check(t.one_line_error(p, "missing.h5"), f"export of a missing map: {p.stderr!r}")
        with h5py.File(syn, "r+") as f:
            f["up/top_probs"][1, 3, 0] = np.float32(7.0)
        p = t.analysis("export", syn, "--out", os.path.join(tmp, "e5"))
        t.check(t.one_line_error(p, "/up/top_probs") and not os.path.exists(os.path.join(tmp, "e5", "neurons.jsonl")),
                f"export of a corrupt map: {p.returncode} {p.stderr!r}")
        print("  refused with one line, nothing left behind: a missing map, a corrupt probability")


if __name__ == "__main__":
    t.main(main)
