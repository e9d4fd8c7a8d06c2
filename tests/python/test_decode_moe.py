#!/usr/bin/python3
"""Mixture-of-experts maps (format version 2, docs/MAP_FORMAT.md): each MoE family as it ships
(tests/python/family_models.py MOE_FAMILIES: Mixtral, Qwen2-MoE with a shared expert and a dense
mlp_only layer, Qwen3-MoE with decoder_sparse_step 2, DeepSeek-V3 with two shared experts, a dense
first layer, FP8 block scales and a multi-token-prediction layer) decoded with
`--matrices up,gate,down`, top-k, bottom-k and a token index, against an independent float64
numpy decode that reads the safetensors and dequantises FP8 itself (fi_testlib.SafeTensors):
every group (/up.., /moe/up.. [L, E, N, K], /shared/up..) up to exact ties, log-sum-exp and
probabilities within 1e-4; the token index of each matrix over all its groups against a numpy
brute force over every decoded neuron of that matrix. Then, on Mixtral: -np 1, 2, 3 and the serial
writer give the same bytes; a decode killed after a round's done bits and resumed (3 ranks) gives the same bytes;
`--experts 1-2` narrows the routed groups; a bad --experts is one error line.
Run by ctest as /usr/bin/python3 tests/python/test_decode_moe.py.
"""
import os
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import family_models as fm  # noqa: E402
import fi_testlib as t  # noqa: E402
from test_decode_reference import TIE_REL  # noqa: E402

TOP_K, BOTTOM_K, M, R = 6, 3, 5, 16
PROB_REL, LSE_REL, LOGP_ABS = 1e-4, 1e-4, 1e-4
MATRICES = ("up", "gate", "down")
GROUP_CODE = {"": 0, "moe/": 1, "shared/": 2}
# --layers per family: every kind of group it has, fewer rows (the 152k-token vocabularies).
LAYERS = {"mixtral": None, "qwen2_moe": "0-1", "qwen3_moe": "0-1", "deepseek_v3": "0-1"}


def tensor_name(cfg, kind, matrix, layer, expert):
    """The checkpoint tensor of one slice, spelled here as the public checkpoints name them."""
    p = f"model.layers.{layer}."
    if kind == "moe/":
        if cfg["model_type"] == "mixtral":
            return p + f"block_sparse_moe.experts.{expert}." + {"gate": "w1", "up": "w3", "down": "w2"}[matrix] + ".weight"
        return p + f"mlp.experts.{expert}.{matrix}_proj.weight"
    if kind == "shared/":
        return p + ("mlp.shared_experts." if cfg["model_type"] == "deepseek_v3" else "mlp.shared_expert.") + matrix + "_proj.weight"
    return p + f"mlp.{matrix}_proj.weight"


def slices(cfg, layers):
    """[(group prefix, layer, expert or -1)] of the decoded layers, in the index's key order
    (layer, group code, expert)."""
    moe = fm.moe_layers(cfg)
    experts, _, shared = fm.moe_sizes(cfg)
    out = []
    for layer in layers:
        if not moe[layer]:
            out.append(("", layer, -1))
            continue
        out += [("moe/", layer, e) for e in range(experts)]
        if shared:
            out.append(("shared/", layer, -1))
    return out


def neuron_vectors(ref, cfg, kind, matrix, layer, expert):
    """[N, H] float64: rows of up/gate, columns of down (FP8 dequantised by SafeTensors.get)."""
    w = ref.st.get(tensor_name(cfg, kind, matrix, layer, expert))
    return w.T.copy() if matrix == "down" else w


def check_ranking(where, ids, logits_map, ref, k, lowest=False):
    """ids, logits_map: [R, k] from the map; ref: [R, V] float64. The checks of
    test_decode_reference.check_ranking without its full sort of every row (too slow for these
    152k-token vocabularies): ids distinct and in range, their logits the float64 ones, the list
    in order, nothing outside it better than its last entry (ties within TIE_REL of the row's
    scale), and the map's own order strict by logit, exact ties lower id first."""
    sign = -1.0 if lowest else 1.0
    key = sign * ref
    rows = np.arange(ref.shape[0])[:, None]
    tol = TIE_REL * np.maximum(1.0, np.abs(ref).max(axis=1, keepdims=True))
    t.check(ids.shape == (ref.shape[0], k), f"{where}: ids shape {ids.shape}, want {(ref.shape[0], k)}")
    t.check(((ids >= 0) & (ids < ref.shape[1])).all(), f"{where}: ids out of range")
    t.check((np.sort(ids, axis=1)[:, 1:] != np.sort(ids, axis=1)[:, :-1]).all(), f"{where}: repeated ids")
    got = key[rows, ids]
    bad = np.abs(sign * got - logits_map) > tol
    if bad.any():
        r, j = np.argwhere(bad)[0]
        t.fail(f"{where}: row {r} pos {j} id {ids[r, j]}: map logit {logits_map[r, j]!r}, float64 {sign * got[r, j]!r}")
    t.check((got[:, :-1] >= got[:, 1:] - tol).all(), f"{where}: order disagrees with float64 logits")
    rest = key.copy()
    rest[rows, ids] = -np.inf
    t.check((got[:, -1] >= rest.max(axis=1) - tol[:, 0]).all(), f"{where}: a token outside the list beats its last entry")
    mk = sign * logits_map
    ok = (mk[:, :-1] > mk[:, 1:]) | ((mk[:, :-1] == mk[:, 1:]) & (ids[:, :-1] < ids[:, 1:]))
    t.check(ok.all(), f"{where}: map order breaks the tie rule (logit desc, then id asc)")
    return float((np.abs(sign * got - logits_map) / (tol / TIE_REL)).max())  # logit error, of the row's scale


WORST = {}  # the family's worst errors against float64 (reset per family)


def check_group_slice(where, g, at, logits):
    """The map's datasets at index `at` (tuple) of group g against float64 logits [N, V]."""
    lse = t.logsumexp(logits)
    ids = g["top_ids"][at]
    lerr = check_ranking(where + " top", ids, g["top_logits"][at].astype(np.float64), logits, TOP_K)
    lerr = max(lerr, check_ranking(where + " bottom", g["bottom_ids"][at], g["bottom_logits"][at].astype(np.float64),
                                   logits, BOTTOM_K, lowest=True))
    scale = np.maximum(1.0, np.abs(logits).max(axis=1))
    err = float((np.abs(g["logsumexp"][at] - lse) / scale).max())
    t.check(err <= LSE_REL, f"{where}: logsumexp off by {err:.3g} of the row's scale")
    rows = np.arange(logits.shape[0])
    pref = np.exp(logits[rows[:, None], ids] - lse[:, None])
    prel = float((np.abs(g["top_probs"][at] - pref) / np.maximum(pref, 1e-30)).max())
    t.check(prel <= PROB_REL, f"{where}: top_probs off by {prel:.3g} relative")
    t.check(np.all(g["done"][at] == 1), f"{where}: done not all 1")
    t.check(np.all(g["included"][at] == 1), f"{where}: included not all 1")
    for k, v in (("logit", lerr), ("lse", err), ("prob", prel)):
        WORST[k] = max(WORST.get(k, 0.0), v)
    return lse


def check_index(where, f, matrix, rows_x, keys, lse, wu):
    """/token_index/<matrix> against a brute force over every decoded neuron of the matrix:
    rows_x [R, H] (normalised), keys [R, 4] (group, layer, expert, neuron), lse [R]."""
    ti = f["token_index"][matrix]
    V = wu.shape[0]
    grp, lay, exp_, neu = (ti[k][()] for k in ("group", "layer", "expert", "neuron"))
    logp, probs = ti["logp"][()], ti["probs"][()]
    t.check(grp.dtype == np.int8 and grp.shape == (V, M), f"{where}: group is {grp.dtype} {grp.shape}")
    t.check((lay >= 0).all(), f"{where}: empty slots although {len(keys)} neurons were decoded")
    t.check(set(np.unique(grp).tolist()) <= {0, 1, 2}, f"{where}: group codes {np.unique(grp)}")
    t.check(((grp == 1) == (exp_ >= 0)).all(), f"{where}: expert set outside moe/ entries or missing inside")
    # Each stored entry is a real neuron (found by its code among the decoded ones) with its own
    # float64 log-probability.
    def code(g_, l_, e_, n_):
        return ((np.asarray(l_, np.int64) * 3 + g_) * 1024 + e_ + 1) * 65536 + n_
    rc = code(keys[:, 0], keys[:, 1], keys[:, 2], keys[:, 3])
    order = np.argsort(rc)
    sc = code(grp.astype(np.int64), lay, exp_, neu).reshape(-1)
    pos = np.minimum(np.searchsorted(rc[order], sc), len(rc) - 1)
    t.check((rc[order][pos] == sc).all(), f"{where}: the index names a neuron that was not decoded")
    idx = order[pos].reshape(V, M)
    best_left_out = np.empty(V)
    for c in range(0, V, 8192):
        w, ix = wu[c:c + 8192], idx[c:c + 8192]             # [v, H], [v, M]
        lp = rows_x @ w.T - lse[:, None]                    # [R, v] every neuron's log p
        got = np.einsum("vmh,vh->vm", rows_x[ix], w) - lse[ix]
        err = float(np.abs(got - logp[c:c + 8192]).max())
        t.check(err <= LOGP_ABS, f"{where}: stored logp off by {err:.3g} from float64")
        lp[ix.T, np.arange(len(w))[None, :]] = -np.inf      # the listed ones out
        best_left_out[c:c + 8192] = lp.max(axis=0)
    # Sorted best first, no neuron twice, and nothing left out beats the M-th entry.
    t.check((logp[:, :-1] >= logp[:, 1:]).all(), f"{where}: lists not sorted by logp")
    t.check((np.diff(np.sort(idx, axis=1), axis=1) != 0).all(), f"{where}: a neuron twice in one list")
    t.check((logp[:, -1] >= best_left_out - LOGP_ABS).all(), f"{where}: a better neuron is missing from a list")
    # Exact ties in the stored logp: lower (layer, group, expert, neuron) first.
    k2 = np.stack([lay, grp, exp_, neu], axis=-1)
    tie = logp[:, :-1] == logp[:, 1:]
    for v, j in np.argwhere(tie):
        t.check(tuple(k2[v, j]) < tuple(k2[v, j + 1]), f"{where}: token {v}: tie order {k2[v, j]} vs {k2[v, j + 1]}")
    t.check(np.allclose(probs, np.exp(logp), rtol=1e-6, atol=0), f"{where}: probs != exp(logp)")
    return (grp == 1).sum(), (grp == 2).sum(), (grp == 0).sum()


def check_family(name, tmp):
    WORST.clear()
    model = fm.cached(name)
    ref = t.Reference(model)
    cfg = ref.cfg
    experts, esize, ssize = fm.moe_sizes(cfg)
    L = cfg["num_hidden_layers"]
    out = os.path.join(tmp, name + ".h5")
    span = LAYERS[name]
    layers = list(range(L)) if span is None else list(range(int(span.split("-")[0]), int(span.split("-")[1]) + 1))
    args = ["--matrices", "up,gate,down", "--top-k", TOP_K, "--bottom-k", BOTTOM_K, "--token-index", M,
            "--chunk-rows", R] + (["--layers", span] if span else [])
    p = t.run(["decode", "--model", model, "--out", out, *args], np_=2, timeout=300)
    mtp = cfg.get("num_nextn_predict_layers") or 0
    if mtp:
        t.check("multi-token-prediction" in p.stderr and f"layer {L}" in p.stderr,
                f"{name}: no notice that MTP layer {L} is not decoded:\n{p.stderr}")
    moe = fm.moe_layers(cfg)
    sl = slices(cfg, layers)
    counts = {}
    with h5py.File(out, "r") as f:
        a = f.attrs
        t.check(int(a["format_version"]) == 2 and int(a["complete"]) == 1, f"{name}: format_version {a['format_version']}")
        t.check((int(a["num_experts"]), int(a["expert_size"]), int(a["shared_size"])) == (experts, esize, ssize),
                f"{name}: root num_experts/expert_size/shared_size {a['num_experts']} {a['expert_size']} {a['shared_size']}")
        t.check(int(a["intermediate_size"]) == cfg["intermediate_size"], f"{name}: intermediate_size")
        dense = [x for x in layers if not moe[x]]
        routed = [x for x in layers if moe[x]]
        want_groups = {m for m in MATRICES if dense} | {"moe/" + m for m in MATRICES if routed}
        want_groups |= {"shared/" + m for m in MATRICES if routed and ssize}
        have = {k for k in f if k in MATRICES} | {f"{p}/{k}" for p in ("moe", "shared") if p in f for k in f[p]}
        t.check(have == want_groups, f"{name}: groups {sorted(have)}, want {sorted(want_groups)}")
        t.check(not any("token_index" in f[m] for m in MATRICES if m in f), f"{name}: a v1 /<matrix>/token_index in a v2 map")
        for matrix in MATRICES:
            xs, keys, lses = [], [], []
            for kind, layer, expert in sl:
                g = f[kind + matrix]
                li = list(g.attrs["layers"]).index(layer)
                at = (li, expert) if kind == "moe/" else (li,)
                if kind == "moe/":
                    t.check(list(g.attrs["experts"]) == list(range(experts)) and int(g.attrs["num_experts"]) == experts,
                            f"{name} /{kind}{matrix}: experts attrs {g.attrs['experts']}")
                    pat = g.attrs["tensor_pattern"].decode()
                    t.check(pat.replace("{}", str(layer)).replace("{e}", str(expert)) == tensor_name(cfg, kind, matrix, layer, expert),
                            f"{name} /{kind}{matrix}: tensor_pattern {pat}")
                x = neuron_vectors(ref, cfg, kind, matrix, layer, expert)
                xn = ref.norm(x, "rms")
                logits = xn @ ref.wu.T
                where = f"{name} /{kind}{matrix} layer {layer}" + (f" expert {expert}" if expert >= 0 else "")
                t.check(g["top_ids"].shape[len(at)] == x.shape[0], f"{where}: {g['top_ids'].shape} for N={x.shape[0]}")
                lse = check_group_slice(where, g, at, logits)
                n = x.shape[0]
                xs.append(xn)
                lses.append(lse)
                keys.append(np.stack([np.full(n, GROUP_CODE[kind]), np.full(n, layer), np.full(n, expert), np.arange(n)], 1))
            counts[matrix] = check_index(f"{name} /token_index/{matrix}", f, matrix, np.concatenate(xs),
                                         np.concatenate(keys), np.concatenate(lses), ref.wu)
    print(f"  {name}: {len(sl)} slices x 3 matrices (groups {', '.join(sorted(want_groups))}) agree with float64 "
          f"(worst: logit {WORST['logit']:.1e} and lse {WORST['lse']:.1e} of the row's scale, prob {WORST['prob']:.1e} "
          f"relative); token index entries (routed, shared, dense) of up: {tuple(int(c) for c in counts['up'])}")
    return out, args


def raw(path):
    """Every dataset's bytes (vlen vocab as bytes), the token index's logp included."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                v = obj[()]
                out[name] = v.tobytes() if v.dtype != object else b"".join(bytes(x) if not isinstance(x, str) else x.encode() for x in v)
        f.visititems(visit)
    return out


def same_bytes(a, b, what):
    da, db = raw(a), raw(b)
    t.check(sorted(da) == sorted(db), f"{what}: dataset lists differ: {sorted(set(da) ^ set(db))}")
    diff = [k for k in da if da[k] != db[k]]
    t.check(not diff, f"{what}: datasets differ: {diff}")


def test():
    with t.tempdir() as tmp:
        maps = {}
        for name in fm.MOE_FAMILIES:
            maps[name] = check_family(name, tmp)
        model = fm.cached("mixtral")
        ref2, args = maps["mixtral"]
        # Any rank count: the same bits, the token index included.
        for np_ in (1, 3):
            out = os.path.join(tmp, f"np{np_}.h5")
            t.decode(model, out, *args, np_=np_)
            same_bytes(ref2, out, f"mixtral -np {np_} vs -np 2")
        out = os.path.join(tmp, "serial.h5")
        p = subprocess.run([*t.mpi_prefix(3), t.binary(), "decode", "--model", model, "--out", out, "--quiet", *map(str, args)],
                           capture_output=True, text=True, timeout=120, env=dict(os.environ, FLASHINTERP_WRITER="serial"))
        t.check(p.returncode == 0, f"serial writer: exit {p.returncode}: {p.stderr[-300:]}")
        same_bytes(ref2, out, "mixtral, serial writer -np 3 vs parallel -np 2")
        print("  mixtral: -np 1, 2, 3 and the serial writer give identical datasets")
        # Killed after round 3's done bits (2 ranks), resumed with 3 ranks.
        out = os.path.join(tmp, "killed.h5")
        env = dict(os.environ, FLASHINTERP_TEST_KILL_AT="done:3")
        cmd = [*t.mpi_prefix(2), t.binary(), "decode", "--model", model, "--out", out, "--quiet", *map(str, args),
               "--save-index-every", "1e-9"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        t.check(p.returncode != 0 and os.path.exists(out + ".partial") and not os.path.exists(out),
                f"kill at done:3: exit {p.returncode}: {p.stderr[-300:]}")
        p = t.run(["decode", "--model", model, "--out", out, "--resume", *args, "--save-index-every", "1e-9"], np_=3)
        t.check("already done" in p.stderr, f"resume did not skip done chunks: {p.stderr}")
        same_bytes(ref2, out, "mixtral killed at done:3, resumed with 3 ranks")
        print("  mixtral: killed after round 3, resumed with 3 ranks: identical")
        # --experts narrows the routed groups (and is in the fingerprint: a resume with other
        # experts is refused).
        out = os.path.join(tmp, "e12.h5")
        t.decode(model, out, "--matrices", "up", "--top-k", TOP_K, "--chunk-rows", R, "--experts", "1-2", np_=2)
        with h5py.File(out, "r") as f, h5py.File(ref2, "r") as g:
            t.check(list(f["moe/up"].attrs["experts"]) == [1, 2], f"--experts 1-2: experts {f['moe/up'].attrs['experts']}")
            t.check(f["moe/up/top_ids"].shape[:2] == (2, 2), f"--experts 1-2: shape {f['moe/up/top_ids'].shape}")
            t.check(np.array_equal(f["moe/up/top_ids"][()], g["moe/up/top_ids"][:, 1:3, :, :TOP_K]),
                    "--experts 1-2: top_ids differ from the full map's experts 1 and 2")
        p = t.run(["decode", "--model", model, "--out", out, "--quiet", "--resume", "--matrices", "up", "--top-k", TOP_K,
                   "--chunk-rows", R, "--experts", "0-2"], check=False)
        t.check(t.one_line_error(p, "other options"), f"resume with other --experts: {p.returncode} {p.stderr}")
        for bad, words in (("2-1", ("--experts", "reversed")), ("4", ("--experts", "0-3")), ("x", ("--experts", "A-B"))):
            p = t.run(["decode", "--model", model, "--out", os.path.join(tmp, "bad.h5"), "--experts", bad], check=False)
            t.check(t.one_line_error(p, *words), f"--experts {bad}: {p.returncode} {p.stderr}")
        dense = t.demo_model(os.path.join(tmp, "dense"))
        p = t.run(["decode", "--model", dense, "--out", os.path.join(tmp, "bad.h5"), "--experts", "0-1"], check=False)
        t.check(t.one_line_error(p, "--experts", "no routed experts"), f"--experts on a dense model: {p.stderr}")
        print("  --experts 1-2 narrows /moe; a resume with other experts and bad --experts are one error line")


if __name__ == "__main__":
    t.main(test)
