"""The map agrees with an independent float64 decode (numpy over the safetensors bytes): top-k and
bottom-k ids up to exact ties, probabilities within 1e-4 relative, log-sum-exp within 1e-5, for
bf16/f16/f32, tied and untied, norms rms/gamma/none; the per-neuron entropy within 1e-5 relative
and the rank-1 margin within the logits' tolerance; planted neurons decode to their token at top-1;
the attributes, shapes and vocabulary of schema version 1 are as specified.
"""
import json
import math
import os
import shutil
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

SIZE = ["--hidden", "64", "--intermediate", "128"]
SAMPLE = 48          # random neurons checked per matrix and layer (plus the planted ones)
TIE_REL = 1e-5       # two logits closer than this (relative to the row's scale) are a tie
PROB_REL = 1e-4
LSE_ABS = 1e-5
ENTROPY_REL = 1e-5   # the map's float32 entropy against -sum p log p in float64

# Each dtype tied and untied, each norm mode, every matrix, bottom-k, a layer range, chunking.
CASES = [
    dict(name="bf16-untied-rms", dtype="bf16", tied=False, layers=2, norm="rms", shards=3,
         decode=["--matrices", "up,gate,down", "--bottom-k", "5", "--chunk-rows", "48"],
         matrices=["up", "gate", "down"], top_k=20, bottom_k=5, chunk_rows=48, vocab=True),
    dict(name="f16-tied-gamma", dtype="f16", tied=True, layers=2, norm="gamma",
         decode=["--norm", "gamma", "--top-k", "8"], matrices=["up"], top_k=8),
    dict(name="f32-untied-none", dtype="f32", tied=False, layers=2, norm="none",
         decode=["--norm", "none", "--matrices", "down", "--bottom-k", "3"], matrices=["down"],
         top_k=20, bottom_k=3),
    dict(name="bf16-tied-none", dtype="bf16", tied=True, layers=3, norm="none", shards=2,
         decode=["--norm", "none", "--layers", "1-2", "--chunk-rows", "40"], matrices=["up"],
         top_k=20, layer_ids=[1, 2], chunk_rows=40),
    dict(name="f16-untied-rms", dtype="f16", tied=False, layers=2, norm="rms",
         decode=["--norm", "rms", "--matrices", "gate,up", "--top-k", "1"], matrices=["up", "gate"],
         top_k=1),
    dict(name="f32-tied-rms", dtype="f32", tied=True, layers=2, norm="rms",
         decode=["--matrices", "up,down", "--top-k", "32"], matrices=["up", "down"], top_k=32),
]

ROOT_ATTRS = ["format", "format_version", "tool_version", "build", "model_dir", "model_type", "hidden_size",
              "intermediate_size", "num_layers", "vocab_size", "norm", "top_k", "bottom_k",
              "token_index_m", "backend", "world_size", "command_line", "created_utc", "elapsed_s",
              "complete"]


def s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def check_ranking(where, ids, logits_map, ref, k, lowest=False):
    """ids, logits_map: [R, k] from the map; ref: [R, V] float64. Checks that ids is a correct
    top-k (bottom-k when lowest) of ref up to ties, the map's own order obeys the tie rule, and the
    map's logits match the reference. Returns (max logit error / scale, positions differing only by ties)."""
    sign = -1.0 if lowest else 1.0
    key = sign * ref                                     # rank by key descending
    rows = np.arange(ref.shape[0])[:, None]
    scale = np.maximum(1.0, np.abs(ref).max(axis=1, keepdims=True))
    tol = TIE_REL * scale                                # [R, 1]
    t.check(ids.shape == (ref.shape[0], k), f"{where}: ids shape {ids.shape}, want {(ref.shape[0], k)}")
    t.check(((ids >= 0) & (ids < ref.shape[1])).all(), f"{where}: ids out of range")
    t.check((np.sort(ids, axis=1)[:, 1:] != np.sort(ids, axis=1)[:, :-1]).all(), f"{where}: repeated ids")
    got = key[rows, ids]                                 # [R, k]
    err = np.abs(sign * got - logits_map)
    bad = err > tol
    if bad.any():
        r, j = np.argwhere(bad)[0]
        t.fail(f"{where}: row {r} pos {j} id {ids[r, j]}: map logit {logits_map[r, j]!r}, "
               f"float64 {sign * got[r, j]!r}")
    # Non-increasing key along the list, and nothing outside beats the last one (the k-th boundary).
    t.check((got[:, :-1] >= got[:, 1:] - tol).all(), f"{where}: order disagrees with float64 logits")
    rest = key.copy()
    rest[rows, ids] = -np.inf
    t.check((got[:, -1] >= rest.max(axis=1) - tol[:, 0]).all(),
            f"{where}: a token outside the list beats its last entry")
    # The map's own order: strictly by logit, exact ties lower id first.
    mk = sign * logits_map
    ok = (mk[:, :-1] > mk[:, 1:]) | ((mk[:, :-1] == mk[:, 1:]) & (ids[:, :-1] < ids[:, 1:]))
    t.check(ok.all(), f"{where}: map order breaks the tie rule (logit desc, then id asc)")
    # Against the exact float64 ranking: a difference is allowed only between tied logits.
    want = t.ref_topk(ref, k, lowest=lowest)
    diff = ids != want
    tied = np.abs(key[rows, ids] - key[rows, want]) <= tol
    if (diff & ~tied).any():
        r, j = np.argwhere(diff & ~tied)[0]
        t.fail(f"{where}: row {r} pos {j}: map id {ids[r, j]}, float64 id {want[r, j]} (not tied)")
    return float((err / scale).max()), int(diff.sum())


def check_matrix(ref, f, matrix, layer_ids, norm, top_k, bottom_k, planted, rng, name):
    g = f[matrix]
    n = int(g["top_ids"].shape[1])
    stats = []
    for li, layer in enumerate(layer_ids):
        pl = [p["neuron"] for p in planted if p["matrix"] == matrix and p["layer"] == layer]
        rows = np.unique(np.concatenate([rng.choice(n, min(SAMPLE, n), replace=False), pl]).astype(int))
        logits = ref.logits(matrix, layer, rows, norm)          # [R, V] float64
        lse = t.logsumexp(logits)
        where = f"{name} /{matrix} layer {layer}"
        ids = g["top_ids"][li][rows]
        lmap = g["top_logits"][li][rows].astype(np.float64)
        pmap = g["top_probs"][li][rows].astype(np.float64)
        lse_map = g["logsumexp"][li][rows].astype(np.float64)
        lerr, ties = check_ranking(where + " top", ids, lmap, logits, top_k)
        lse_err = np.abs(lse_map - lse).max()
        t.check(lse_err <= LSE_ABS, f"{where}: logsumexp off by {lse_err:.3g} (map {lse_map[0]}, "
                                    f"float64 {lse[0]})")
        pref = np.exp(logits[np.arange(len(rows))[:, None], ids] - lse[:, None])
        prel = np.abs(pmap - pref) / np.maximum(pref, 1e-30)
        t.check(prel.max() <= PROB_REL, f"{where}: top probability off by {prel.max():.3g} relative")
        if bottom_k:
            bids = g["bottom_ids"][li][rows]
            blog = g["bottom_logits"][li][rows].astype(np.float64)
            _, bties = check_ranking(where + " bottom", bids, blog, logits, bottom_k, lowest=True)
            ties += bties
        # Entropy H = lse - sum p x and margin = top-1 minus top-2 logit, both in float64.
        p_all = np.exp(logits - lse[:, None])
        h_ref = lse - (p_all * logits).sum(axis=1)
        h_map = g["entropy"][li][rows].astype(np.float64)
        h_err = (np.abs(h_map - h_ref) / np.maximum(np.abs(h_ref), 1e-3)).max()
        t.check(h_err <= ENTROPY_REL, f"{where}: entropy off by {h_err:.3g} relative (map {h_map[0]}, "
                                      f"float64 {h_ref[0]})")
        srt = -np.partition(-logits, 1, axis=1)[:, :2]  # the best two, in order
        m_ref = srt[:, 0] - srt[:, 1]
        m_map = g["margin"][li][rows].astype(np.float64)
        scale = np.maximum(1.0, np.abs(logits).max(axis=1))
        m_err = (np.abs(m_map - m_ref) / scale).max()
        t.check(m_err <= 2 * TIE_REL, f"{where}: margin off by {m_err:.3g} (rel. to row scale)")
        stats.append((lerr, lse_err, prel.max(), ties, len(rows), h_err, m_err))
    s_ = np.array(stats)
    print(f"  {name} /{matrix}: {int(s_[:, 4].sum())} neurons over layers {layer_ids}: "
          f"max logit err {s_[:, 0].max():.2e} (rel. to row scale), lse err {s_[:, 1].max():.2e}, "
          f"prob rel err {s_[:, 2].max():.2e}, entropy rel err {s_[:, 5].max():.2e}, "
          f"margin err {s_[:, 6].max():.2e}, tie swaps {int(s_[:, 3].sum())}")


def check_schema(f, case, cfg, model_dir):
    a = f.attrs
    missing = [k for k in ROOT_ATTRS if k not in a]
    t.check(not missing, f"{case['name']}: root attributes missing: {missing}")
    n, v, h = cfg["intermediate_size"], cfg["vocab_size"], cfg["hidden_size"]
    want = dict(format="flashinterp-map", format_version=1, complete=1, norm=case["norm"],
                top_k=case["top_k"], bottom_k=case.get("bottom_k", 0), hidden_size=h,
                intermediate_size=n, num_layers=cfg["num_hidden_layers"], vocab_size=v,
                world_size=2, backend="cpu")
    for k, w in want.items():
        got = s(a[k]) if isinstance(w, str) else int(np.asarray(a[k]).reshape(-1)[0])
        t.check(got == w, f"{case['name']}: attribute {k} = {got!r}, want {w!r}")
    t.check(v == 128256, f"vocab_size {v}")
    layer_ids = case.get("layer_ids", list(range(cfg["num_hidden_layers"])))
    nl, k, b = len(layer_ids), case["top_k"], case.get("bottom_k", 0)
    present = [m for m in ("up", "gate", "down") if m in f]
    t.check(present == [m for m in ("up", "gate", "down") if m in case["matrices"]],
            f"{case['name']}: matrices {present}, want {case['matrices']}")
    chunks = math.ceil(n / case["chunk_rows"]) if "chunk_rows" in case else None
    for m in present:
        g = f[m]
        t.check(s(g.attrs["tensor_pattern"]) == f"model.layers.{{}}.mlp.{m}_proj.weight",
                f"/{m} tensor_pattern {g.attrs['tensor_pattern']!r}")
        t.check(s(g.attrs["axis"]) == ("columns" if m == "down" else "rows"), f"/{m} axis {g.attrs['axis']!r}")
        t.check(list(np.asarray(g.attrs["layers"]).reshape(-1)) == layer_ids,
                f"/{m} layers attribute {g.attrs['layers']}, want {layer_ids}")
        shapes = {"top_ids": ((nl, n, k), np.int32), "top_logits": ((nl, n, k), np.float32),
                  "top_probs": ((nl, n, k), np.float32), "logsumexp": ((nl, n), np.float32),
                  "entropy": ((nl, n), np.float32), "margin": ((nl, n), np.float32)}
        if b:
            shapes.update(bottom_ids=((nl, n, b), np.int32), bottom_logits=((nl, n, b), np.float32))
        else:
            t.check("bottom_ids" not in g, f"/{m}: bottom_ids present with bottom_k 0")
        for ds, (shape, dt) in shapes.items():
            t.check(ds in g, f"/{m}/{ds} missing")
            t.check(g[ds].shape == shape and g[ds].dtype == dt,
                    f"/{m}/{ds}: {g[ds].shape} {g[ds].dtype}, want {shape} {np.dtype(dt)}")
        done = g["done"]
        t.check(done.dtype == np.uint8 and done.ndim == 2 and done.shape[0] == nl,
                f"/{m}/done: {done.shape} {done.dtype}")
        if chunks is not None:
            t.check(done.shape[1] == chunks, f"/{m}/done has {done.shape[1]} chunks, want {chunks}")
        t.check((done[...] == 1).all(), f"/{m}/done not all 1")
    for ds in ("text", "bytes", "special"):
        t.check(f["vocab"][ds].shape == (v,), f"/vocab/{ds} shape {f['vocab'][ds].shape}, want ({v},)")
    print(f"  {case['name']}: schema attributes, shapes and dtypes ok ({present}, layers {layer_ids})")
    if case.get("vocab"):
        check_vocab(f, model_dir, v)


def check_vocab(f, model_dir, v):
    tok = t.tokenizer_vocab(model_dir)
    raw = f["vocab/bytes"][...]
    text = f["vocab/text"].asstr()[...]
    special = f["vocab/special"][...]
    bad_b, bad_t, bad_s = [], [], []
    for i in range(v):
        want_b, want_s = tok.get(i, (b"", True))
        got_b = bytes(np.asarray(raw[i], dtype=np.uint8))
        if i in tok and got_b != want_b:
            bad_b.append(i)
        # A NUL byte cannot live in an HDF5 variable-length C string: the text may drop it or
        # show it as U+2400 (the symbol for NUL).
        if i in tok and text[i] not in (want_b.decode("utf-8", "replace"),
                                        want_b.replace(b"\0", b"").decode("utf-8", "replace"),
                                        want_b.decode("utf-8", "replace").replace("\0", "\u2400")):
            bad_t.append(i)
        if i in tok and bool(special[i]) != want_s:
            bad_s.append(i)
    for what, bad in (("bytes", bad_b), ("text", bad_t), ("special", bad_s)):
        if bad:
            i = bad[0]
            t.fail(f"/vocab/{what} differs from tokenizer.json at {len(bad)} ids, first {i}: "
                   f"map {bytes(np.asarray(raw[i], np.uint8))!r} / {text[i]!r} / {special[i]}, "
                   f"python {tok[i]!r}")
    dog = tok[5679][0]
    print(f"  vocab: bytes, text, special of all {len(tok)} tokenizer ids agree with a Python "
          f"byte-level decoding (e.g. 5679 -> {dog!r}, 128000 -> {text[128000]!r})")


def run_case(case, tmp, seed):
    name = case["name"]
    model = os.path.join(tmp, name)
    demo = ["--dtype", case["dtype"], "--layers", str(case["layers"]), "--seed", str(seed), *SIZE]
    if case["tied"]:
        demo.append("--tied")
    if case.get("shards"):
        demo += ["--shards", str(case["shards"])]
    t.demo_model(model, *demo)
    out = t.decode(model, os.path.join(tmp, name + ".h5"), *case["decode"], np_=2)
    ref = t.Reference(model)
    cfg = ref.cfg
    t.check(bool(cfg.get("tie_word_embeddings", False)) == case["tied"], f"{name}: config tie flag")
    t.check(("lm_head.weight" in ref.st.where) != case["tied"], f"{name}: lm_head.weight presence")
    if case.get("shards"):
        t.check(len({w[0] for w in ref.st.where.values()}) == case["shards"], f"{name}: shard count")
    want_dt = {"bf16": "BF16", "f16": "F16", "f32": "F32"}[case["dtype"]]
    t.check(ref.st.dtype(ref.lm_head_name) == want_dt, f"{name}: lm-head dtype {ref.st.dtype(ref.lm_head_name)}")
    with open(os.path.join(model, "planted.json")) as fp:
        planted = json.load(fp)["planted"]
    rng = np.random.default_rng(seed)
    with h5py.File(out, "r") as f:
        check_schema(f, case, cfg, model)
        layer_ids = case.get("layer_ids", list(range(case["layers"])))
        for m in case["matrices"]:
            check_matrix(ref, f, m, layer_ids, case["norm"], case["top_k"], case.get("bottom_k", 0),
                         planted, rng, name)
        if case["norm"] == "rms":
            return check_planted(f, planted, layer_ids, case, ref)
    return 0


def check_planted(f, planted, layer_ids, case, ref):
    checked = 0
    for p in planted:
        if p["matrix"] not in case["matrices"] or p["layer"] not in layer_ids:
            continue
        li = layer_ids.index(p["layer"])
        got = int(f[p["matrix"]]["top_ids"][li, p["neuron"], 0])
        t.check(got == p["token_id"], f"{case['name']}: planted {p} decodes to {got} at top-1")
        want = int(np.argmax(ref.logits(p["matrix"], p["layer"], [p["neuron"]], "rms")[0]))
        t.check(want == p["token_id"], f"{case['name']}: float64 reference top-1 of planted {p} is {want}")
        checked += 1
    print(f"  {case['name']}: {checked} planted neurons decode to their token at top-1")
    return checked


def check_exact_ties(tmp):
    """Exact ties: copies of one LM-head row at several ids (first, middle, last of the vocab),
    and copies of its negation; the map must list them lowest id first, at top and at bottom."""
    src = os.path.join(tmp, "f32-untied-none")      # an f32 model from CASES, rewritten exactly
    dst = os.path.join(tmp, "ties")
    os.makedirs(dst)
    for name in ("config.json", "tokenizer.json", "planted.json"):
        shutil.copy(os.path.join(src, name), dst)
    st = t.SafeTensors(src)
    tensors = {n: st.get(n).astype(np.float32) for n in st.names()}
    with open(os.path.join(src, "planted.json")) as fp:
        p = next(q for q in json.load(fp)["planted"] if q["matrix"] == "up")
    wu = tensors["lm_head.weight"]
    top_dups = sorted({0, 77, p["token_id"], 64000, 128255})
    bottom_dups = [1, 9999, 128254]
    wu[top_dups] = wu[p["token_id"]]
    wu[bottom_dups] = -wu[p["token_id"]]
    t.write_safetensors(os.path.join(dst, "model.safetensors"), tensors)
    out = t.decode(dst, os.path.join(tmp, "ties.h5"), "--bottom-k", "5", np_=2)
    ref = t.Reference(dst)
    rng = np.random.default_rng(5)
    with h5py.File(out, "r") as f:
        check_matrix(ref, f, "up", [0, 1], "rms", 20, 5, [p], rng, "ties")
        li = list(np.asarray(f["up"].attrs["layers"])).index(p["layer"])
        top = f["up/top_ids"][li, p["neuron"], :len(top_dups)]
        bottom = f["up/bottom_ids"][li, p["neuron"], :len(bottom_dups)]
        tl = f["up/top_logits"][li, p["neuron"], :len(top_dups)]
    t.check(list(top) == top_dups, f"ties: top ids {list(top)} (logits {list(tl)}), want {top_dups}")
    t.check(list(bottom) == bottom_dups, f"ties: bottom ids {list(bottom)}, want {bottom_dups}")
    print(f"  ties: {len(top_dups)} tied top logits listed as {top_dups}, {len(bottom_dups)} tied "
          f"bottom logits as {bottom_dups} (lower id first)")


def main():
    with t.tempdir() as tmp:
        planted_checked, planted_total = 0, None
        for i, case in enumerate(CASES):
            planted_checked += run_case(case, tmp, seed=100 + i)
            if i == 0:
                with open(os.path.join(tmp, case["name"], "planted.json")) as fp:
                    planted_total = len(json.load(fp)["planted"])
                t.check(planted_checked == planted_total,
                        f"only {planted_checked} of {planted_total} planted neurons checked")
        t.check(planted_total and planted_total > 0, "demo model has no planted neurons")
        check_exact_ties(tmp)
    print(f"checked {len(CASES)} decodes against float64 numpy")


if __name__ == "__main__":
    t.main(main)
