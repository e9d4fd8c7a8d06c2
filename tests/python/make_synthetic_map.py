#!/usr/bin/python3
"""Writes a synthetic flashinterp map (HDF5 schema version 1, exactly as `flashinterp decode`
lays it out) with h5py, by default of the Llama 3.1 8B shape: 32 layers x 14336 neurons, V = 128256,
top-k 20, token index M = 32. For the speed checks of analysis/search and analysis/compare
(tests/bench/analysis_speed.sh); not a test, and not run by ctest (the file is ~170 MB).

    make_synthetic_map.py OUT.h5 [--seed S] [--changed F] [--layers L] [--neurons N] ...
Same --seed and --changed 0 give the same map; --changed F redraws a fraction F of each layer's
neurons (a stand-in for a fine-tuned model's map). Planted: layer L*5/8, neuron N/10 (+1, +2)
have " dog" (or "dog") as top-1, and neuron N/10+5 has " Golden", " Gate" as top-1 and top-2 (with
the real vocabulary). Unless --no-stats, /<matrix>/entropy and /<matrix>/margin hold
each neuron's exact entropy and top-1 minus top-2 logit (as newer decodes write them): a synthetic
neuron's distribution is its top-k plus the rest of the mass on two flat levels (an eighth of the
other tokens share a fraction w of it, the others the rest), so the entropy is known in closed form
and differs from the analysis tools' top-k estimate. --concepts FILE also writes /concepts/<name>
(the decode's rule: token text, leading white space stripped and lower-cased, equal to a word
likewise normalised) and, with the statistics, /<matrix>/concept_mass [L, N, S] (the sets' mass
under the same distribution; attribute concepts = the S names). The vocabulary is the real tokenizer's when it is found
($FI_TOKENIZER_DIR/tokenizer.json or .cache/tokenizer/) and has V tokens, else made-up tokens.
"""
import argparse
import json
import os
import sys
import time

import h5py
import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fi_testlib as t  # noqa: E402



def write_vocab(f, vbytes, special):
    """/vocab as the C++ writer stores it: text (UTF-8, invalid bytes replaced), exact bytes, special."""
    g = f.create_group("vocab")
    g.create_dataset("text", data=np.array([text_of(b) for b in vbytes], dtype=object),
                     dtype=h5py.string_dtype("utf-8"))
    vb = np.empty(len(vbytes), dtype=object)
    vb[:] = [np.frombuffer(b, np.uint8) for b in vbytes]
    g.create_dataset("bytes", data=vb, dtype=h5py.vlen_dtype(np.uint8))
    g.create_dataset("special", data=special)

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--neurons", type=int, default=14336)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--token-index", type=int, default=32, help="M (0: no token index)")
    p.add_argument("--matrices", default="up", help="comma-separated, e.g. up,gate,down")
    p.add_argument("--chunk-rows", type=int, default=4096, help="as the CUDA backend's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--changed", type=float, default=0.0, help="fraction of neurons per layer redrawn")
    p.add_argument("--no-stats", action="store_true", help="no entropy/margin datasets (as today's binary)")
    p.add_argument("--concepts", metavar="FILE", help="JSON {name: [words]}: write /concepts/<name>")
    moe = p.add_argument_group("format version 2 (a mixture-of-experts model's map, --moe E)")
    moe.add_argument("--moe", type=int, default=0, metavar="E",
                     help="write format version 2: /moe/<matrix> with E routed experts per MoE layer")
    moe.add_argument("--experts", metavar="A-B", help="decoded expert ids (default all E)")
    moe.add_argument("--expert-neurons", type=int, default=0, metavar="N",
                     help="neurons per expert (expert_size; default --neurons)")
    moe.add_argument("--shared", type=int, default=0, metavar="S",
                     help="shared_size: /shared/<matrix> with S neurons per MoE layer (0: none)")
    moe.add_argument("--dense-layers", type=int, default=0, metavar="D",
                     help="the first D layers are dense (/<matrix>), the others MoE")
    moe.add_argument("--bottom-k", type=int, default=0, metavar="B", help="bottom_ids/bottom_logits (v2 only)")
    moe.add_argument("--plant-multi", action="store_true",
                     help="also plant a two-token word in every group's lists (see main_moe)")
    return p.parse_args(argv)


def vocabulary(V):
    """(bytes list, special uint8 [V])."""
    tok_dir = os.environ.get("FI_TOKENIZER_DIR") or os.path.join(t.SOURCE_DIR, ".cache", "tokenizer")
    if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        voc = t.tokenizer_vocab(tok_dir)
        if len(voc) == V and sorted(voc) == list(range(V)):
            return [voc[i][0] for i in range(V)], np.array([voc[i][1] for i in range(V)], np.uint8)
    words = [b" dog", b"dog", b" Dog", b" cat", b" the"]
    raw = words + [b"t%d" % i for i in range(len(words), V)]
    return raw[:V], np.zeros(V, np.uint8)


def text_of(b):
    s = b.decode("utf-8", "replace")
    return "\u2400" if "\0" in s else s


def draw_rows(rng, n, V, K):
    """n neurons' top-k: ids [n, K] int32 (distinct per row, popular tokens more often),
    logits and probs [n, K] float32 (descending), logsumexp [n] float32, and the two-level rest:
    w [n] float64, the share of the rest mass on the first level (see rest_entropy)."""
    base = (V * rng.random(n) ** 3).astype(np.int64)          # skewed: some tokens are top-1 often
    steps = rng.integers(1, max(2, (V - 1) // K), size=(n, K))
    steps[:, 0] = 0
    ids = ((base[:, None] + np.cumsum(steps, axis=1)) % V).astype(np.int32)
    top = rng.normal(12.0, 3.0, size=n)
    gaps = rng.exponential(0.4, size=(n, K))
    gaps[:, 0] = 0
    logits = (top[:, None] - np.cumsum(gaps, axis=1)).astype(np.float32)
    rest = top + rng.normal(0.5, 2.0, size=n)      # log of the mass outside the top-k
    lse = np.logaddexp(np.logaddexp.reduce(logits.astype(np.float64), axis=1), rest).astype(np.float32)
    probs = np.exp(logits.astype(np.float64) - lse[:, None]).astype(np.float32)
    return ids, logits, probs, lse, rng.uniform(0.5, 0.9, size=n)


def rest_levels(V, K):
    """Sizes of the two flat levels the mass outside the top-k lies on."""
    n1 = max(1, (V - K) // 8)
    return n1, max(1, V - K - n1)


def exact_stats(logits, lse, w, V):
    """Entropy (nats, float64) of each neuron's whole distribution: top-k probabilities
    exp(logit - lse) and the rest r = 1 - sum split w : 1 - w over the two levels, w lowered where
    a first-level token would outrank the k-th; and margin = top-1 - top-2 logit. [n] each."""
    K = logits.shape[1]
    p = np.exp(logits.astype(np.float64) - np.asarray(lse, np.float64)[:, None])
    r = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    n1, n2 = rest_levels(V, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.minimum(w, np.where(r > 0, 0.999 * p[:, -1] * n1 / r, 1.0))
        r1, r2 = w * r, (1 - w) * r
        h = -(p * np.log(p)).sum(axis=1)
        for rr, nn in ((r1, n1), (r2, n2)):
            h += np.where(rr > 0, -rr * np.log(np.where(rr > 0, rr, 1.0) / nn), 0.0)
    margin = logits[:, 0].astype(np.float64) - logits[:, 1] if K > 1 else np.full(len(lse), np.nan)
    return h, margin, (r1, r2)


def concept_mass(ids, logits, lse, rest, V, sets):
    """[n, S] probability mass of each concept set (sorted id arrays): its top-k probabilities,
    plus for each set token outside the top-k its level's share. The first level holds the n1
    lowest-id tokens outside the neuron's top-k (so a token's level follows from its rank among
    them), which leaves the entropy above unchanged."""
    K = ids.shape[1]
    p = np.exp(logits.astype(np.float64) - np.asarray(lse, np.float64)[:, None])
    n1, n2 = rest_levels(V, K)
    out = np.zeros((ids.shape[0], len(sets)))
    for si, sid in enumerate(sets):
        sid = np.asarray(sid, np.int64)
        if not sid.size:
            continue
        hit = ids[:, :, None] == sid[None, None, :]                  # [n, K, s]
        inside = hit.any(axis=1)                                      # [n, s]
        rank = sid[None, :] - (ids[:, :, None] < sid[None, None, :]).sum(axis=1)
        first = (rank < n1) & ~inside
        out[:, si] = ((p[:, :, None] * hit).sum(axis=(1, 2)) + first.sum(axis=1) * rest[0] / n1
                      + (~first & ~inside).sum(axis=1) * rest[1] / n2)
    return out


def concept_ids(sets, vbytes, special):
    """{name: sorted ids}: the decode's rule, written here on its own (the analysis side has its own)."""
    norm = {}
    for i, b in enumerate(vbytes):
        if not special[i]:
            norm.setdefault(text_of(b).lstrip().lower(), []).append(i)
    return {name: sorted({i for w in words for i in norm.get(w.lstrip().lower(), [])})
            for name, words in sets.items()}


def token_index(ids, probs, layer_ids, M, V):
    """From all top-k entries of one matrix ([L, N, K] each): for every token the M best
    (layer, neuron) by probability, ties to the lower (layer, neuron). [V, M] x 3."""
    L, N, K = ids.shape
    tok = ids.reshape(-1).astype(np.int64)
    p = probs.reshape(-1)
    lay = np.repeat(np.asarray(layer_ids, np.int32), N * K)
    neu = np.tile(np.repeat(np.arange(N, dtype=np.int32), K), L)
    order = np.lexsort((neu, lay, -p, tok))
    tok_s = tok[order]
    start = np.searchsorted(tok_s, np.arange(V))
    rank = np.arange(tok_s.size) - start[tok_s]
    keep = rank < M
    out_l = np.full((V, M), -1, np.int32)
    out_n = np.full((V, M), -1, np.int32)
    out_p = np.zeros((V, M), np.float32)
    sel = order[keep]
    out_l[tok_s[keep], rank[keep]] = lay[sel]
    out_n[tok_s[keep], rank[keep]] = neu[sel]
    out_p[tok_s[keep], rank[keep]] = p[sel]
    return out_l, out_n, out_p


def main(argv):
    a = parse_args(argv)
    if a.moe:
        return main_moe(a, argv)
    t0 = time.time()
    L, N, V, K, M = a.layers, a.neurons, a.vocab, a.top_k, a.token_index
    vbytes, special = vocabulary(V)
    lookup = {b: i for i, b in enumerate(vbytes)}
    dog = [lookup.get(w) for w in (b" dog", b"dog", b" Dog")]
    dog = [d for d in dog if d is not None]
    golden = [lookup.get(w) for w in (b" Golden", b" Gate")]
    golden = golden if None not in golden else []
    layer_ids = list(range(L))
    mats = a.matrices.split(",")
    cr = min(a.chunk_rows, N)
    C = -(-N // cr)
    words, sets = {}, {}
    if a.concepts:
        with open(a.concepts, encoding="utf-8") as cf:
            words = json.load(cf)
        sets = concept_ids(words, vbytes, special)            # {name: sorted ids}
    tmp = a.out + ".tmp"
    with h5py.File(tmp, "w") as f:
        s = lambda v: np.bytes_(v.encode())  # noqa: E731  fixed-length strings, as the C++ writer
        attrs = dict(format=s("flashinterp-map"), format_version=np.int64(1), tool_version=s("synthetic"),
                     model_dir=s("synthetic-8b-shape"), model_type=s("llama"), hidden_size=np.int64(4096),
                     intermediate_size=np.int64(N), num_layers=np.int64(L), vocab_size=np.int64(V),
                     norm=s("rms"), top_k=np.int64(K), bottom_k=np.int64(0), token_index_m=np.int64(M),
                     backend=s("synthetic"), world_size=np.int64(1),
                     command_line=s(" ".join(["make_synthetic_map.py", *argv])),
                     created_utc=s(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                     elapsed_s=np.float64(0), complete=np.int64(0))
        for k, v in attrs.items():
            f.attrs[k] = v
        write_vocab(f, vbytes, special)
        for mi, mat in enumerate(mats):
            rng = np.random.default_rng([a.seed, mi])
            change = np.random.default_rng([a.seed, mi, 1 << 20])
            mg = f.create_group(mat)
            pattern = f"model.layers.{{}}.mlp.{mat}_proj.weight"
            mg.attrs["tensor_pattern"] = s(pattern)
            mg.attrs["axis"] = s("columns" if mat == "down" else "rows")
            mg.attrs["layers"] = np.array(layer_ids, np.int64)
            mg.attrs["chunk_rows"] = np.int64(a.chunk_rows)
            ds = {n: mg.create_dataset(n, (L, N, K), dtype=dt, chunks=(1, cr, K))
                  for n, dt in (("top_ids", np.int32), ("top_logits", np.float32), ("top_probs", np.float32))}
            lse_ds = mg.create_dataset("logsumexp", (L, N), dtype=np.float32, chunks=(1, cr))
            if not a.no_stats:
                ent_ds = mg.create_dataset("entropy", (L, N), dtype=np.float32, chunks=(1, cr))
                mar_ds = mg.create_dataset("margin", (L, N), dtype=np.float32, chunks=(1, cr))
                if sets:
                    cm_ds = mg.create_dataset("concept_mass", (L, N, len(sets)), dtype=np.float32,
                                              chunks=(1, cr, len(sets)))
                    cm_ds.attrs["concepts"] = np.array([n.encode() for n in sets], dtype="S")
            all_ids = np.empty((L, N, K), np.int32)
            all_probs = np.empty((L, N, K), np.float32)
            for li in range(L):
                ids, logits, probs, lse, w = draw_rows(rng, N, V, K)
                if a.changed > 0:
                    pick = change.random(N) < a.changed
                    nid, nlg, npr, nls, nw = draw_rows(change, int(pick.sum()), V, K)
                    ids[pick], logits[pick], probs[pick], lse[pick], w[pick] = nid, nlg, npr, nls, nw
                if mi == 0 and li == L * 5 // 8 and dog:   # planted " dog" neurons
                    for j, d in enumerate(dog):
                        n = N // 10 + j
                        row = ids[n]
                        ids[n] = np.concatenate([[d], row[row != d][:K - 1]])
                        logits[n] = np.concatenate([[20.0], np.linspace(17, 8, K - 1)])
                        lse[n] = np.logaddexp.reduce(logits[n].astype(np.float64)) + 0.1 + 0.2 * j
                        probs[n] = np.exp(logits[n].astype(np.float64) - lse[n])
                    if golden:     # a neuron for the two-token " Golden Gate": both at the top
                        n = N // 10 + 5
                        row = ids[n]
                        ids[n] = np.concatenate([golden, row[~np.isin(row, golden)][:K - 2]])
                        logits[n] = np.concatenate([[19.0, 18.5], np.linspace(16, 8, K - 2)])
                        lse[n] = np.logaddexp.reduce(logits[n].astype(np.float64)) + 0.3
                        probs[n] = np.exp(logits[n].astype(np.float64) - lse[n])
                ds["top_ids"][li], ds["top_logits"][li], ds["top_probs"][li] = ids, logits, probs
                lse_ds[li] = lse
                if not a.no_stats:
                    ent_ds[li], mar_ds[li], rest = exact_stats(logits, lse, w, V)
                    if sets:
                        cm_ds[li] = concept_mass(ids, logits, lse, rest, V, list(sets.values()))
                all_ids[li], all_probs[li] = ids, probs
            done = mg.create_dataset("done", data=np.ones((L, C), np.uint8), chunks=(1, C))
            done.attrs["chunk_rows"] = np.int64(a.chunk_rows)
            if M > 0:
                tl, tn, tp = token_index(all_ids, all_probs, layer_ids, M, V)
                tg = mg.create_group("token_index")
                tchunk = (min(V, 4096), M)
                tg.create_dataset("layer", data=tl, chunks=tchunk)
                tg.create_dataset("neuron", data=tn, chunks=tchunk)
                tg.create_dataset("probs", data=tp, chunks=tchunk)
        if a.concepts:
            cg = f.create_group("concepts")
            for name, ids in sets.items():
                ds = cg.create_dataset(name, data=np.array(ids, np.int32))
                ds.attrs["words"] = np.bytes_(json.dumps(words[name], ensure_ascii=False).encode())
        f.attrs["elapsed_s"] = np.float64(time.time() - t0)
        f.attrs["complete"] = np.int64(1)
    os.replace(tmp, a.out)
    print(f"{a.out}: {len(mats)} matrix x {L} layers x {N} neurons, V {V}, K {K}, M {M}, "
          f"changed {a.changed}, {os.path.getsize(a.out) / 1e6:.0f} MB in {time.time() - t0:.1f} s")
    return 0


# ---- format version 2 ------------------------------------------------------------------------
GROUP_CODE = {"": 0, "moe/": 1, "shared/": 2}   # /token_index/<matrix>/group


def _bottom(rng, ids, logits, B, V):
    """B lowest-logit tokens of each row (ids not in its top-k, distinct), lowest first."""
    n, K = ids.shape
    out = np.empty((n, B), np.int32)
    for r in range(n):      # small maps only
        free = np.setdiff1d(np.arange(V), ids[r])
        out[r] = rng.choice(free, size=B, replace=False)
    low = logits[:, -1:].astype(np.float64) - 8.0 - np.cumsum(rng.exponential(0.3, size=(n, B)), axis=1)
    return out, low[:, ::-1].astype(np.float32)        # ascending: the lowest logit first


def _plant_row(ids, logits, n, tok, extra=None):
    """Row n made to hold tok (a token id) as top-1, or tok (a list of ids) as its first entries
    with logits 19, 18.5, ...; returns the row's logsumexp (its top-k plus a rest of `extra`)."""
    K, row = ids.shape[1], ids[n]
    toks = [tok] if np.isscalar(tok) else list(tok)
    ids[n] = np.concatenate([toks, row[~np.isin(row, toks)][:K - len(toks)]])
    if np.isscalar(tok):
        logits[n] = np.concatenate([[20.0], np.linspace(17, 8, K - 1)])
    else:
        logits[n] = np.concatenate([19.0 - 0.5 * np.arange(len(toks)), np.linspace(16, 8, K - len(toks))])
    return np.logaddexp.reduce(logits[n].astype(np.float64)) + (extra if extra is not None else
                                                                0.1 if np.isscalar(tok) else 0.3)


def _group(f, path, unit_shape, N, a, V, rng, plant, s, bottom_plant=None):
    """One group: /<path> with leading dims unit_shape ((L,) or (L, E)), N neurons, drawn rows.
    plant: {unit index tuple: [(neuron, token id or [ids](, lse extra))]} rows made to have that
    token as top-1 (or those tokens first, _plant_row); bottom_plant: {unit: [(neuron, [ids])]}
    rows whose bottom list starts with those ids (the lowest logits).
    Returns the group's ids, logits and logsumexp for the index."""
    K, B, R = a.top_k, a.bottom_k, min(a.chunk_rows, N)
    C = -(-N // R)
    g = f.create_group(path)
    lead = (1,) * len(unit_shape)
    mk = lambda name, tail, dt: g.create_dataset(name, unit_shape + tail, dtype=dt,   # noqa: E731
                                                 chunks=lead + tuple(min(x, R) if i == 0 else x
                                                                     for i, x in enumerate(tail)))
    ds = {n: mk(n, (N, K), dt) for n, dt in (("top_ids", np.int32), ("top_logits", np.float32),
                                              ("top_probs", np.float32))}
    for n in ("logsumexp", "entropy", "margin"):
        ds[n] = mk(n, (N,), np.float32)
    if B:
        ds["bottom_ids"], ds["bottom_logits"] = mk("bottom_ids", (N, B), np.int32), mk("bottom_logits", (N, B), np.float32)
    ids_all = np.empty(unit_shape + (N, K), np.int32)
    lg_all = np.empty(unit_shape + (N, K), np.float32)
    lse_all = np.empty(unit_shape + (N,), np.float32)
    for u in np.ndindex(*unit_shape):
        ids, logits, probs, lse, w = draw_rows(rng, N, V, K)
        for n, tok, *extra in plant.get(u, []):
            lse[n] = _plant_row(ids, logits, n, tok, *extra)
            probs[n] = np.exp(logits[n].astype(np.float64) - lse[n])
        low = (bottom_plant or {}).get(u, [])
        for n, toks in low:             # the bottom tokens must not be in the row's top list
            spare = np.setdiff1d(np.arange(V), np.concatenate([ids[n], toks]))
            bad = np.isin(ids[n], toks)
            ids[n][bad] = spare[::-1][:bad.sum()]
        ds["top_ids"][u], ds["top_logits"][u], ds["top_probs"][u], ds["logsumexp"][u] = ids, logits, probs, lse
        ds["entropy"][u], ds["margin"][u], _ = exact_stats(logits, lse, w, V)
        if B:
            bids, blg = _bottom(rng, ids, logits, B, V)
            for n, toks in low:
                bids[n] = np.concatenate([toks, bids[n][~np.isin(bids[n], toks)]])[:B]
            ds["bottom_ids"][u], ds["bottom_logits"][u] = bids, blg
        ids_all[u], lg_all[u], lse_all[u] = ids, logits, lse
    g.create_dataset("done", data=np.ones(unit_shape + (C,), np.uint8), chunks=lead + (C,))
    g["done"].attrs["chunk_rows"] = np.int64(a.chunk_rows)
    if a.token_index:       # the token index's inclusion bits, one per chunk as done
        g.create_dataset("included", data=np.ones(unit_shape + (C,), np.uint8), chunks=lead + (C,))
    g.attrs["axis"] = s("columns" if path.endswith("down") else "rows")
    g.attrs["chunk_rows"] = np.int64(a.chunk_rows)
    return ids_all, lg_all, lse_all


def token_index_v2(entries, M, V):
    """/token_index/<matrix>/ from every group's top-k entries: entries = [(group code, layer ids [L],
    expert ids [E] or None, ids, logits, lse)]. The agreed order: higher logp, then lower layer id,
    group code, expert, neuron. Returns {name: [V, M] array}."""
    cols = {k: [] for k in ("tok", "logp", "prob", "group", "layer", "expert", "neuron")}
    for code, layers, experts, ids, logits, lse in entries:
        shape = ids.shape                      # [L, (E,) N, K]
        logp = logits.astype(np.float64) - lse.astype(np.float64)[..., None]
        idx = np.indices(shape)
        cols["tok"].append(ids.reshape(-1).astype(np.int64))
        cols["logp"].append(logp.reshape(-1))
        cols["prob"].append(np.exp(logp).astype(np.float32).reshape(-1))
        cols["group"].append(np.full(ids.size, code, np.int8))
        cols["layer"].append(np.asarray(layers, np.int32)[idx[0]].reshape(-1))
        cols["expert"].append((np.asarray(experts, np.int32)[idx[1]] if experts is not None
                               else np.full(shape, -1, np.int32)).reshape(-1))
        cols["neuron"].append(idx[-2].astype(np.int32).reshape(-1))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((c["neuron"], c["expert"], c["group"], c["layer"], -c["logp"], c["tok"]))
    tok_s = c["tok"][order]
    rank = np.arange(tok_s.size) - np.searchsorted(tok_s, np.arange(V))[tok_s]
    keep = rank < M
    sel, row, col = order[keep], tok_s[keep], rank[keep]
    out = dict(group=np.full((V, M), -1, np.int8), layer=np.full((V, M), -1, np.int32),
               expert=np.full((V, M), -1, np.int32), neuron=np.full((V, M), -1, np.int32),
               probs=np.zeros((V, M), np.float32), logp=np.full((V, M), -np.inf))
    for k, src in (("group", "group"), ("layer", "layer"), ("expert", "expert"), ("neuron", "neuron"),
                   ("probs", "prob"), ("logp", "logp")):
        out[k][row, col] = c[src][sel]
    return out


def main_moe(a, argv):
    """Format version 2 (docs/MAP_FORMAT.md, mixture-of-experts maps): dense layers 0..D-1 in
    /<matrix>, MoE layers D..L-1 in /moe/<matrix> [L, E, N, K] (and /shared/<matrix> with
    --shared S), one token index per matrix at /token_index/<matrix>/. Planted: in /moe/<first
    matrix> the middle MoE layer, expert 1 (or the first decoded), neuron 3 has " dog" as top-1 and
    expert 2 neuron 5 " cat"; in /shared/<first matrix> neuron 2 of the last MoE layer " the".
    With --plant-multi, in the first matrix's groups, the two tokens of a word ("t10" + "t11", or
    " Golden" + " Gate" with the real vocabulary) at the top of dense layer 0 neuron 7, of the
    middle MoE layer's neuron 9 of the first and the last expert and of the shared group (all four
    with equal scores, for the order of ties), and of the last MoE layer's shared neuron 4 (a
    higher score); at the bottom (--bottom-k) of the middle layer's expert 2 neuron 11 and of the
    last layer's shared neuron 6. Recorded in the attribute planted_multi."""
    t0 = time.time()
    L, V, K, M, D = a.layers, a.vocab, a.top_k, a.token_index, a.dense_layers
    N, NE, S = a.neurons, a.expert_neurons or a.neurons, a.shared
    experts = list(range(a.moe))
    if a.experts:
        lo, hi = (int(x) for x in a.experts.split("-"))
        experts = list(range(lo, hi + 1))
    vbytes, special = vocabulary(V)
    lookup = {b: i for i, b in enumerate(vbytes)}
    dense_l, moe_l = list(range(D)), list(range(D, L))
    s = lambda v: np.bytes_(v.encode())  # noqa: E731
    tmp = a.out + ".tmp"
    planted = []
    words = [b" Golden", b" Gate"] if b" Golden" in lookup and b" Gate" in lookup else [b"t10", b"t11"]
    multi = [lookup[w] for w in words] if a.plant_multi and all(w in lookup for w in words) else None
    pm = dict(tokens=multi, text=b"".join(words).decode(), top=[], bottom=[])    # --plant-multi
    with h5py.File(tmp, "w") as f:
        attrs = dict(format=s("flashinterp-map"), format_version=np.int64(2), tool_version=s("synthetic"),
                     build=s("make_synthetic_map.py"), model_dir=s("synthetic-moe"), model_type=s("mixtral"),
                     hidden_size=np.int64(64), intermediate_size=np.int64(N), num_layers=np.int64(L),
                     vocab_size=np.int64(V), norm=s("rms"), top_k=np.int64(K), bottom_k=np.int64(a.bottom_k),
                     token_index_m=np.int64(M), backend=s("synthetic"), world_size=np.int64(1),
                     command_line=s(" ".join(["make_synthetic_map.py", *argv])),
                     created_utc=s(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                     elapsed_s=np.float64(0), complete=np.int64(0), num_experts=np.int64(a.moe),
                     expert_size=np.int64(NE), shared_size=np.int64(S),
                     fingerprint=s(f"format_version=2;synthetic;seed={a.seed};experts={experts[0]}-{experts[-1]}"))
        for k, v in attrs.items():
            f.attrs[k] = v
        write_vocab(f, vbytes, special)
        for mi, mat in enumerate(a.matrices.split(",")):
            rng = np.random.default_rng([a.seed, mi])
            entries = []
            here = multi if mi == 0 else None
            if dense_l:
                plant = {(0,): [(7, here)]} if here and N > 7 else {}
                pm["top"] += [dict(group=mat, layer=dense_l[0], expert=None, neuron=7)] if plant else []
                ids, lg, lse = _group(f, mat, (len(dense_l),), N, a, V, rng, plant, s)
                f[mat].attrs["tensor_pattern"] = s(f"model.layers.{{}}.mlp.{mat}_proj.weight")
                f[mat].attrs["layers"] = np.array(dense_l, np.int64)
                entries.append((0, dense_l, None, ids, lg, lse))
            if moe_l:
                plant = {}
                if mi == 0:
                    mid, e1 = len(moe_l) // 2, min(1, len(experts) - 1)
                    e2 = min(2, len(experts) - 1)
                    for e, n, w in ((e1, 3, b" dog"), (e2, 5, b" cat")):
                        if w in lookup and n < NE:
                            plant.setdefault((mid, e), []).append((n, lookup[w]))
                            planted.append(dict(group=f"moe/{mat}", layer=moe_l[mid], expert=experts[e], neuron=n,
                                                token_id=lookup[w], token=text_of(w)))
                mid, low = len(moe_l) // 2, {}
                if here and NE > 11:
                    for e in sorted({0, len(experts) - 1}):
                        plant.setdefault((mid, e), []).append((9, here))
                        pm["top"].append(dict(group=f"moe/{mat}", layer=moe_l[mid], expert=experts[e], neuron=9))
                    if a.bottom_k >= 2:
                        e = min(2, len(experts) - 1)
                        low = {(mid, e): [(11, here)]}
                        pm["bottom"].append(dict(group=f"moe/{mat}", layer=moe_l[mid], expert=experts[e], neuron=11))
                path = f"moe/{mat}"
                ids, lg, lse = _group(f, path, (len(moe_l), len(experts)), NE, a, V, rng, plant, s, low)
                ga = f[path].attrs
                ga["tensor_pattern"] = s(f"model.layers.{{}}.block_sparse_moe.experts.{{e}}.{mat}.weight")
                ga["layers"] = np.array(moe_l, np.int64)
                ga["experts"] = np.array(experts, np.int64)
                ga["num_experts"] = np.int64(a.moe)
                entries.append((1, moe_l, experts, ids, lg, lse))
                if S:
                    plant = {(len(moe_l) - 1,): [(2, lookup[b" the"])]} if mi == 0 and b" the" in lookup else {}
                    if plant:
                        planted.append(dict(group=f"shared/{mat}", layer=moe_l[-1], expert=None, neuron=2,
                                            token_id=lookup[b" the"], token=" the"))
                    low = {}
                    if here and S > 9:
                        plant.setdefault((mid,), []).append((9, here))
                        plant.setdefault((len(moe_l) - 1,), []).append((4, here, 0.05))
                        pm["top"] += [dict(group=f"shared/{mat}", layer=moe_l[mid], expert=None, neuron=9),
                                      dict(group=f"shared/{mat}", layer=moe_l[-1], expert=None, neuron=4)]
                        if a.bottom_k >= 2:
                            low = {(len(moe_l) - 1,): [(6, here)]}
                            pm["bottom"].append(dict(group=f"shared/{mat}", layer=moe_l[-1], expert=None, neuron=6))
                    path = f"shared/{mat}"
                    ids, lg, lse = _group(f, path, (len(moe_l),), S, a, V, rng, plant, s, low)
                    f[path].attrs["tensor_pattern"] = s(f"model.layers.{{}}.mlp.shared_experts.{mat}_proj.weight")
                    f[path].attrs["layers"] = np.array(moe_l, np.int64)
                    entries.append((2, moe_l, None, ids, lg, lse))
            if M > 0:
                ti = f.create_group(f"token_index/{mat}")
                for k, v in token_index_v2(entries, M, V).items():
                    ti.create_dataset(k, data=v, chunks=(min(V, 4096), M))
        f.attrs["planted"] = s(json.dumps(planted))     # for the tests; not a map attribute
        if multi:
            f.attrs["planted_multi"] = s(json.dumps(pm))
        f.attrs["elapsed_s"] = np.float64(time.time() - t0)
        f.attrs["complete"] = np.int64(1)
    os.replace(tmp, a.out)
    print(f"{a.out}: format 2, layers {L} ({D} dense), {len(experts)} experts x {NE} neurons, shared {S}, "
          f"V {V}, K {K}, M {M}, {os.path.getsize(a.out) / 1e6:.1f} MB in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
