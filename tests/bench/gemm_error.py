"""The error of `decode --gemm bf16` (and of the exact default) against float64 numpy: worst
relative top-k probability error, worst |lse| error, top-k / bottom-k ids equal up to ties, and
for comparison the same measures for one plain GEMM on the bf16-rounded row without re-scoring
(float64 over the rounded row: what the old --fast-gemm gave, less fp32 summation).
A measurement program, not a test (tests/python/test_gemm_bf16.py is the test).
usage: gemm_error.py [--quick] [--backend cpu] [--keep DIR]
Needs FLASHINTERP (the binary) or a build in build/.
"""
import argparse
import os
import sys
import tempfile
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
sys.dont_write_bytecode = True
import fi_testlib as t  # noqa: E402
import realistic_head as rh  # noqa: E402

TIE_REL = 1e-5


def ref_logits(ref, x, block=8192):
    """[R, V] float64 of x (normed, float64) against the LM-head, in vocab blocks."""
    V = ref.wu.shape[0]
    out = np.empty((x.shape[0], V))
    for v0 in range(0, V, block):
        out[:, v0:v0 + block] = x @ ref.wu[v0:v0 + block].T
    return out


def bf16_round(x):
    return (t.to_bf16_bits(x.astype(np.float32)).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def ids_ok(ids, ref, k, lowest=False):
    """Rows whose ids are a correct top-k (bottom-k) of ref up to ties (TIE_REL of the row's scale)."""
    key = -ref if lowest else ref
    rows = np.arange(ref.shape[0])[:, None]
    tol = TIE_REL * np.maximum(1.0, np.abs(ref).max(axis=1))
    got = key[rows, ids]
    kth = -np.sort(-key, axis=1)[:, k - 1]
    return (got.min(axis=1) >= kth - tol) & (np.sort(ids, axis=1)[:, 1:] != np.sort(ids, axis=1)[:, :-1]).all(axis=1)


def measure(model, out_dir, rows, backend, gemm, top_k=20, bottom_k=5, norm="rms", layer=0, extra=()):
    out = os.path.join(out_dir, f"map-{gemm}.h5")
    t0 = time.time()
    p = t.run(["decode", "--model", model, "--out", out, "--overwrite", "--layers", str(layer),
               "--top-k", top_k, "--bottom-k", bottom_k, "--norm", norm, "--token-index", 0,
               "--backend", backend, "--gemm", gemm, *extra], timeout=3600)
    secs = time.time() - t0
    redo = [ln for ln in p.stderr.splitlines() if "not certified" in ln]
    with h5py.File(out, "r") as f:
        g = f["up"]
        ids = g["top_ids"][layer if g["top_ids"].ndim == 3 else 0][:rows] if False else g["top_ids"][0][:rows]
        probs = g["top_probs"][0][:rows].astype(np.float64)
        lse = g["logsumexp"][0][:rows].astype(np.float64)
        bids = g["bottom_ids"][0][:rows]
    os.remove(out)
    return ids, probs, lse, bids, secs, (redo[0].split(": ", 1)[1] if redo else "")


def case(name, model, rows, backend, tmp, norm="rms", top_k=20, bottom_k=5):
    ref = t.Reference(model)
    x = ref.norm(ref.matrix("up", 0)[:rows], norm)
    exact = ref_logits(ref, x)
    lse_ref = t.logsumexp(exact)
    plain = ref_logits(ref, bf16_round(x.astype(np.float32)))  # one GEMM on the rounded row
    results = {}
    rr = np.arange(rows)[:, None]
    # plain single GEMM: its own top-k and probabilities against the exact ones
    pid = t.ref_topk(plain, top_k)
    pp = np.exp(plain[rr, pid] - t.logsumexp(plain)[:, None])
    pe = np.exp(exact[rr, pid] - lse_ref[:, None])
    results["plain"] = dict(prob=float(np.max(np.abs(pp - pe) / pe)),
                            lse=float(np.max(np.abs(t.logsumexp(plain) - lse_ref))),
                            ids=int((~ids_ok(pid, exact, top_k)).sum()), redo="", secs=0.0)
    for gemm in ("exact", "bf16"):
        ids, probs, lse, bids, secs, redo = measure(model, tmp, rows, backend, gemm, top_k, bottom_k, norm)
        pref = np.exp(exact[rr, ids] - lse_ref[:, None])
        results[gemm] = dict(prob=float(np.max(np.abs(probs - pref) / pref)),
                             lse=float(np.max(np.abs(lse - lse_ref))),
                             ids=int((~ids_ok(ids, exact, top_k)).sum()
                                     + ((~ids_ok(bids, exact, bottom_k, lowest=True)).sum() if bottom_k else 0)),
                             redo=redo, secs=secs)
    V, H = ref.wu.shape
    peak = np.exp(exact.max(axis=1) - lse_ref)
    print(f"\n{name}: V {V}, H {H}, {rows} rows, norm {norm}, top-1 prob median {np.median(peak):.3g} "
          f"(min {peak.min():.2g}, max {peak.max():.2g})", flush=True)
    for k, r in results.items():
        print(f"  {k:6s} worst rel prob err {r['prob']:.2e}  worst |lse err| {r['lse']:.2e}  "
              f"rows with wrong ids {r['ids']}/{rows}  {r['redo']}  {r['secs']:.1f} s", flush=True)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small shapes only")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--keep", help="directory for the checkpoints (kept)")
    ap.add_argument("--only", help="only the cases whose name contains this")
    a = ap.parse_args()
    tmp = a.keep or tempfile.mkdtemp(prefix="fi-gemm-err-")
    os.makedirs(tmp, exist_ok=True)
    table = []

    def model_dir(n):
        return os.path.join(tmp, n)

    # the demo model (H 256, V 128256, planted neurons) and the test checkpoints' shapes
    for name, args, rows, norm in [
            ("demo bf16", ["--layers", "1"], 1024, "rms"),
            ("test bf16 (H 64)", ["--hidden", "64", "--intermediate", "128", "--layers", "1"], 128, "rms"),
            ("test f16 gamma (H 64)", ["--hidden", "64", "--intermediate", "128", "--layers", "1", "--dtype", "f16"], 128, "gamma"),
            ("test f32 none (H 64)", ["--hidden", "64", "--intermediate", "128", "--layers", "1", "--dtype", "f32"], 128, "none")]:
        if a.only and a.only not in name:
            continue
        d = model_dir(name.split()[0] + "-" + args[-1] + norm)
        if not os.path.exists(os.path.join(d, "config.json")):
            t.demo_model(d, *args, "--overwrite")
        table.append((name, case(name, d, rows, a.backend, tmp, norm)))
    shapes = [("synthetic V 32000 H 2048", 32000, 2048, 512, 1.0, 0.02),
              ("synthetic V 32000 H 2048, no common direction", 32000, 2048, 512, 0.0, 0.02),
              ("synthetic V 32000 H 2048, flatter (std 0.006)", 32000, 2048, 512, 1.0, 0.006)]
    if not a.quick:
        shapes += [("synthetic V 128256 H 4096", 128256, 4096, 384, 1.0, 0.02),
                   ("synthetic V 128256 H 4096, flatter (std 0.006)", 128256, 4096, 384, 1.0, 0.006)]
    for name, V, H, R, common, std in shapes:
        if a.only and a.only not in name:
            continue
        d = model_dir(f"syn-{V}-{H}-{common}-{std}")
        if not os.path.exists(os.path.join(d, "config.json")):
            rh.write_checkpoint(d, V, H, R, common=common, std=std)
        table.append((name, case(name, d, R, a.backend, tmp)))
    print("\n| checkpoint | exact: prob / lse | bf16 + re-scoring: prob / lse / wrong ids / redone | one plain bf16 GEMM: prob / lse / wrong ids |")
    print("|---|---|---|---|")
    for name, r in table:
        e, b, p = r["exact"], r["bf16"], r["plain"]
        print(f"| {name} | {e['prob']:.1e} / {e['lse']:.1e} | {b['prob']:.1e} / {b['lse']:.1e} / {b['ids']} / "
              f"{b['redo'].split(' rows')[0]} | {p['prob']:.1e} / {p['lse']:.1e} / {p['ids']} |")


if __name__ == "__main__":
    main()
