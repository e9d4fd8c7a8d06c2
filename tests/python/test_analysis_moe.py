"""The analysis tools on format version 2 maps (mixture of experts, issue 13), written by
make_synthetic_map.py --moe (dense layer 0, routed /moe/* and shared /shared/* groups, the v2
token index, planted expert neurons). Every expectation is computed here with numpy from the
h5py datasets: the reader's addresses (group, layer, expert, neuron), the v2 token index and its
top-k scan fallback, partial-map rules (done [L, E, C], included per group); show --expert, search
hits across every group, the multi-token sum-of-log-probabilities match over every group (a brute
force over every neuron, the planted two-token word, the order of ties), compare per (layer,
expert), report's per-expert summaries and its searchable table with routed rows (bounded by
--table-max, linked to their pages), export's group/expert columns, serve's expert pages and its
compare page for routed and shared groups (real HTTP requests); refusals of a version 3 map and of
malformed v2 maps (one line, exit 1); and that --expert on a version 1 map is refused.
"""
import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402
import flashinterp_map as fm  # noqa: E402
from test_serve import Server  # noqa: E402

MAKE = os.path.join(t.SOURCE_DIR, "tests", "python", "make_synthetic_map.py")
SHAPE = ["--layers", "4", "--dense-layers", "1", "--neurons", "40", "--expert-neurons", "24", "--shared", "16",
         "--vocab", "300", "--top-k", "6", "--token-index", "6", "--chunk-rows", "8", "--matrices", "up,down",
         "--bottom-k", "3", "--plant-multi"]
CODE = {"up": 0, "moe/up": 1, "shared/up": 2}


def make(path, *args):
    p = subprocess.run(["/usr/bin/python3", MAKE, path, *args], capture_output=True, text=True, timeout=120)
    t.check(p.returncode == 0, f"make_synthetic_map.py {args}: {p.stderr}")
    return path


def entries(f, token, groups=("up", "moe/up", "shared/up"), written=None):
    """Every stored top-k entry of `token` in the given groups, straight from the datasets, in
    the index's order (higher probability, then layer id, group code, expert, neuron):
    [(prob, layer, group, expert, neuron)]. written: {group: bool mask [L, (E,) N]} to keep."""
    out = []
    for g in groups:
        if g not in f:
            continue
        ids, probs = f[g]["top_ids"][...], f[g]["top_probs"][...]
        layers = f[g].attrs["layers"]
        experts = f[g].attrs["experts"] if g.startswith("moe/") else None
        for idx in zip(*np.nonzero(ids == token)):
            *unit, n, j = idx
            if written is not None and not written[g][tuple(unit) + (n,)]:
                continue
            e = int(experts[unit[1]]) if experts is not None else -1
            out.append((float(probs[idx]), int(layers[unit[0]]), CODE[g], e, int(n)))
    out.sort(key=lambda x: (-x[0], x[1], x[2], x[3], x[4]))
    return out


def hits_of(rows):
    return [(r["prob"], r["layer"], CODE[r["group"]], -1 if r["expert"] is None else r["expert"], r["neuron"])
            for r in rows]


def same_hits(got, want, what):
    t.check(len(got) == len(want) and all(g[1:] == w[1:] and abs(g[0] - w[0]) < 1e-6 for g, w in zip(got, want)),
            f"{what}: got {got}, want {want}")


def check_reader(a, planted):
    with fm.open_map(a) as m, h5py.File(a, "r") as f:
        t.check(m.version == 2 and m.groups() == ["up", "down", "moe/up", "moe/down", "shared/up", "shared/down"],
                f"groups {m.groups()}")
        t.check(list(m.experts("moe/up")) == [0, 1, 2, 3] and m.experts("up") is None, "experts")
        t.check(len(m.units("moe/up")) == 3 * 4, "units")
        for g, layer, e, n in (("moe/up", 2, 1, 3), ("moe/down", 3, 3, 23), ("shared/up", 1, None, 15), ("up", 0, None, 39)):
            li = list(f[g].attrs["layers"]).index(layer)
            pos = (li,) if e is None else (li, list(f[g].attrs["experts"]).index(e))
            top = m.top(g, layer, n, expert=e)
            bot = m.bottom(g, layer, n, expert=e)
            st = m.stats(g, layer, [n], expert=e)
            t.check(np.array_equal(top.ids, f[g]["top_ids"][pos + (n,)]) and
                    np.array_equal(top.probs, f[g]["top_probs"][pos + (n,)]) and
                    top.lse == float(f[g]["logsumexp"][pos + (n,)]), f"top {g} {layer} {e} {n}")
            t.check(np.array_equal(bot.ids, f[g]["bottom_ids"][pos + (n,)]), f"bottom {g} {layer} {e} {n}")
            t.check(st["entropy"][0] == float(f[g]["entropy"][pos + (n,)]) and st["entropy_exact"], "stats")
        # A routed group needs its expert, another group refuses one.
        for call, words in ((lambda: m.top("moe/up", 2, 3), "give the expert"),
                            (lambda: m.top("up", 0, 3, expert=1), "has no experts"),
                            (lambda: m.top("moe/up", 2, 3, expert=7), "expert 7 not in this map")):
            try:
                call()
                t.fail(f"no refusal ({words})")
            except fm.MapError as e:
                t.check(words in str(e), f"refusal {e}")
        t.check(m.resolve("up", 2) == "moe/up" and m.resolve("up") == "up", "resolve")
        # search: the v2 token index over every up group, against the datasets.
        for p in planted:
            want = entries(f, p["token_id"])[:6]
            hits, src = m.search("up", [p["token_id"]], top=6)
            got = [(float(h["prob"]), int(h["layer"]), int(h["group"]), int(h["expert"]), int(h["neuron"])) for h in hits]
            t.check(src == "token_index", f"source {src}")
            same_hits(got, want, f"search {p['token']!r}")
            t.check(got[0][1:] == (p["layer"], CODE[p["group"]], -1 if p["expert"] is None else p["expert"], p["neuron"]),
                    f"planted {p} is not the best hit: {got[0]}")
        hits, _ = m.search("moe/up", [planted[0]["token_id"]], top=4)
        same_hits([(float(h["prob"]), int(h["layer"]), int(h["group"]), int(h["expert"]), int(h["neuron"]))
                   for h in hits], entries(f, planted[0]["token_id"], ("moe/up",))[:4], "search moe/up only")
    print("  reader: groups, experts, top/bottom/stats of routed, shared and dense neurons, the v2 token index "
          "search (every group, planted first) equal the datasets")


def check_partial_and_scan(tmp, a, planted):
    """No index: the top-k scan; a partial map: done [L, E, C] and included per group."""
    noidx = shutil.copy(a, os.path.join(tmp, "noidx.h5"))
    with h5py.File(noidx, "r+") as f:
        del f["token_index"]
    tok = planted[0]["token_id"]
    with fm.open_map(noidx) as m, h5py.File(a, "r") as f:
        hits, src = m.search("up", [tok], top=50)
        got = [(float(h["prob"]), int(h["layer"]), int(h["group"]), int(h["expert"]), int(h["neuron"])) for h in hits]
        t.check(src == "top_k_scan", f"source {src}")
        same_hits(got, entries(f, tok)[:50], "top-k scan")
    part = shutil.copy(a, os.path.join(tmp, "part.h5"))
    p = planted[0]          # its chunk (chunk_rows 8: neuron 3 is in chunk 0) not written
    with h5py.File(part, "r+") as f:
        g = f[p["group"]]
        li, ei = list(g.attrs["layers"]).index(p["layer"]), list(g.attrs["experts"]).index(p["expert"])
        g["done"][li, ei, 0] = 0
        g["included"][li, ei, 0] = 0
        f["shared/up/included"][0, 1] = 0       # written, but not in the saved index
        f.attrs["complete"] = 0
    r = t.analysis("search", part, "dog")
    t.check(t.one_line_error(r, "partial map", "--partial"), f"partial map without --partial: {r.stderr!r}")
    with fm.open_map(part, partial=True) as m, h5py.File(part, "r") as f:
        w = m.written_mask("moe/up")
        want = np.repeat(f["moe/up/done"][...].astype(bool), 8, axis=2)[:, :, :24]
        t.check(np.array_equal(w, want), "written_mask [L, E, N]")
        t.check(m.written("moe/up", p["layer"], p["neuron"], expert=p["expert"]) is False, "written()")
        info = {}
        hits, src = m.search("up", [tok], top=6, info=info)
        inc = {g: np.repeat(f[g]["included"][...].astype(bool), 8, axis=-1)[..., :f[g]["top_ids"].shape[-2]]
               for g in ("up", "moe/up", "shared/up")}
        name = {c: g for g, c in CODE.items()}

        def included(e):        # e = (prob, layer, group code, expert, neuron)
            g = name[e[2]]
            li = list(f[g].attrs["layers"]).index(e[1])
            ei = (list(f[g].attrs["experts"]).index(e[3]),) if e[2] == 1 else ()
            return inc[g][(li,) + ei + (e[4],)]
        # The index holds each token's best 6 entries; those in chunks not included are dropped.
        stored = entries(f, tok)[:6]
        want = [e for e in stored if included(e)]
        got = [(float(h["prob"]), int(h["layer"]), int(h["group"]), int(h["expert"]), int(h["neuron"])) for h in hits]
        same_hits(got, want, "partial map search")
        t.check(info["note"] and "covers only" in info["note"] and "included" in info["note"], f"note {info}")
    print(f"  top-k scan without an index; a partial map: done [L, E, C] mask, included per group "
          f"({len(stored) - len(want)} index entries left out), refused without --partial")


def check_refusals(tmp, a):
    def broken(name, edit):
        path = shutil.copy(a, os.path.join(tmp, name + ".h5"))
        with h5py.File(path, "r+") as f:
            edit(f)
        return path
    cases = [
        (broken("v3", lambda f: f.attrs.__setitem__("format_version", np.int64(3))), "format_version 3"),
        (broken("noexp", lambda f: f["moe/up"].attrs.__delitem__("experts")), "experts"),
        (broken("shape", lambda f: f["moe/up"].attrs.__setitem__("experts", np.arange(3, dtype=np.int64))),
         "moe/up/top_ids"),
        (broken("size", lambda f: f.attrs.__setitem__("expert_size", np.int64(25))), "expert_size"),
        (broken("noattr", lambda f: f.attrs.__delitem__("num_experts")), "num_experts"),
        (broken("done", lambda f: (f["moe/up"].__delitem__("done"),
                                   f["moe/up"].create_dataset("done", data=np.ones((3, 3), np.uint8)))), "moe/up/done"),
    ]
    for path, word in cases:
        r = t.analysis("show", path, "--matrix", "moe/up", "--layer", "2", "--expert", "1", "--neuron", "3")
        t.check(t.one_line_error(r, word), f"{os.path.basename(path)}: want one line with {word!r}: {r.stderr!r}")
    bad = broken("badgroup", lambda f: f["token_index/up/group"].__setitem__((0, 0), 5))
    r = t.analysis("search", bad, "dog")
    t.check(t.one_line_error(r, "token_index/up/group", "group code"), f"bad group code: {r.stderr!r}")
    print(f"  refused with one line: {len(cases) + 1} broken maps (version 3, no experts attribute, shapes that "
          "disagree, a bad group code)")


def check_show(a, v1, planted):
    p = planted[0]
    with h5py.File(a, "r") as f:
        g = f["moe/up"]
        li, ei = list(g.attrs["layers"]).index(p["layer"]), list(g.attrs["experts"]).index(p["expert"])
        ids = g["top_ids"][li, ei, p["neuron"]]
        ent = g["entropy"][li, ei][...].astype(np.float64)
    args = ["--layer", p["layer"], "--expert", p["expert"], "--neuron", p["neuron"]]
    for mat in ("moe/up", "up"):       # --expert with plain up means moe/up
        j = t.analysis_json("show", a, "--matrix", mat, *args)
        t.check([x["id"] for x in j["top"]] == ids.tolist() and j["group"] == "moe/up" and j["expert"] == p["expert"],
                f"show --matrix {mat}: {j['top']} vs {ids}")
    r = t.analysis("show", a, "--matrix", "moe/up", *args)
    t.check(r.returncode == 0 and f"/moe/up layer {p['layer']} expert {p['expert']} neuron {p['neuron']}" in r.stdout,
            f"show text: {r.stdout}")
    j = t.analysis_json("show", a, "--layer", p["layer"], "--expert", p["expert"], "--list", 5)
    want = np.lexsort((np.arange(ent.size), ent))[:5]
    t.check([x["neuron"] for x in j["most_specialised"]] == want.tolist() and want[0] == p["neuron"],
            f"show --expert --list: {[x['neuron'] for x in j['most_specialised']]} vs {want}")
    for args, words in (((a, "--matrix", "moe/up", "--layer", 2, "--neuron", 3), ("give the expert",)),
                        ((a, "--matrix", "shared/up", "--layer", 2, "--expert", 1, "--neuron", 3), ("not a routed",)),
                        ((v1, "--layer", 0, "--expert", 1, "--neuron", 3), ("format version 1 has no experts",))):
        r = t.analysis("show", *args)
        t.check(t.one_line_error(r, *words), f"show {args}: {r.stderr!r}")
    print(f"  show: moe/up L{p['layer']} E{p['expert']} N{p['neuron']} (also as --matrix up --expert), an expert's "
          "most specialised neurons; --expert refused on a version 1 map")


def check_search(a, planted):
    with h5py.File(a, "r") as f:
        for p in planted:
            j = t.analysis_json("search", a, p["token"].strip(), "--top", 6)
            want = entries(f, p["token_id"])[:6]
            # The word's two spellings (with and without the space): the space one is the planted token.
            got = hits_of(j["results"])
            other = [i for i in j["token_ids"] if i != p["token_id"]]
            every = sorted(entries(f, p["token_id"]) + sum((entries(f, i) for i in other), []),
                           key=lambda x: (-x[0], x[1], x[2], x[3], x[4]))
            t.check(got[0][1:] == want[0][1:], f"search {p['token']!r}: best {got[0]} vs {want[0]}")
            t.check(set(got) <= set(every), f"search {p['token']!r}: hits not in the datasets")
    r = t.analysis("search", a, "dog", "--top", 3)
    p = planted[0]
    t.check(r.returncode == 0 and f"moe/up L{p['layer']} E{p['expert']} N{p['neuron']}" in r.stdout, f"search text:\n{r.stdout}")
    r = t.analysis("search", a, "dog", "--top", 3, "--csv")
    rows = list(csv.DictReader(r.stdout.splitlines()))
    t.check(rows and rows[0]["group"] == "moe/up" and int(rows[0]["expert"]) == p["expert"] and
            int(rows[0]["neuron"]) == p["neuron"], f"search --csv: {rows[:1]}")
    print("  search: hits across up, moe/up, shared/up named by group/layer/expert/neuron (text, --json, --csv)")


def multi_brute(f, toks, groups, which):
    """Every neuron of the groups whose stored `which` (top/bottom) list holds all of toks, with
    the float64 sum of the tokens' logit - logsumexp, a plain loop over the h5py datasets, in the
    documented order (top: highest sum first, bottom: lowest; ties: layer, group code, expert,
    neuron): [(sum, layer, group code, expert or -1, neuron)]."""
    out = []
    for g in groups:
        if g not in f or f"{which}_ids" not in f[g]:
            continue
        ids, lg = f[g][f"{which}_ids"][...], f[g][f"{which}_logits"][...].astype(np.float64)
        lse = f[g]["logsumexp"][...].astype(np.float64)
        layers = f[g].attrs["layers"]
        experts = f[g].attrs["experts"] if g.startswith("moe/") else None
        for unit in np.ndindex(*ids.shape[:-1]):        # (layer index, [expert index,] neuron)
            row = ids[unit].tolist()
            if all(x in row for x in toks):
                total = sum(lg[unit][row.index(x)] - lse[unit] for x in toks)
                e = int(experts[unit[1]]) if experts is not None else -1
                out.append((total, int(layers[unit[0]]), CODE[g], e, int(unit[-1])))
    sign = -1 if which == "top" else 1
    out.sort(key=lambda x: (sign * x[0], x[1], x[2], x[3], x[4]))
    return out


def multi_of(rows):
    return [(r["sum_logp"], r["layer"], CODE[r["group"]], -1 if r["expert"] is None else r["expert"], r["neuron"])
            for r in rows]


def check_multi_token(a, pm):
    """search's sum-of-log-probabilities match of a two-token word over every group."""
    toks, word = pm["tokens"], pm["text"]
    planted = {w: [(p["layer"], CODE[p["group"]], -1 if p["expert"] is None else p["expert"], p["neuron"])
                   for p in pm[w]] for w in ("top", "bottom")}
    j = t.analysis_json("search", a, word, "--top", 8)
    mt = {x["text"]: x for x in j["multi_token"]}[word]
    t.check(mt["split"] == toks, f"split {mt['split']} vs {toks}")
    with h5py.File(a, "r") as f:
        want = {w: multi_brute(f, toks, ("up", "moe/up", "shared/up"), w) for w in ("top", "bottom")}
        only = multi_brute(f, toks, ("moe/up",), "top")
    for w in ("top", "bottom"):
        got = multi_of(mt[f"by_sum_logp_{w}"])
        t.check(len(got) == min(8, len(want[w])) and
                all(g[1:] == x[1:] and abs(g[0] - x[0]) < 1e-9 for g, x in zip(got, want[w])),
                f"sum logp {w}: got {got}, brute force {want[w][:8]}")
        t.check(set(planted[w]) <= {g[1:] for g in got}, f"planted {w} {planted[w]} not all found: {got}")
    # The four planted with equal sums (dense L0, moe L2 E0 and E3, shared L2): in the documented order.
    got = multi_of(mt["by_sum_logp_top"])
    ties = [g for g in got if g[1:] in planted["top"][:4]]
    t.check([g[1:] for g in ties] == planted["top"][:4] and len({g[0] for g in ties}) == 1 and
            got.index(ties[0]) + 3 == got.index(ties[-1]), f"ties not by layer, group, expert, neuron: {got}")
    j1 = t.analysis_json("search", a, word, "--top", 8, "--matrix", "moe/up")
    got1 = multi_of({x["text"]: x for x in j1["multi_token"]}[word]["by_sum_logp_top"])
    t.check([g[1:] for g in got1] == [x[1:] for x in only[:8]], f"--matrix moe/up: {got1} vs {only[:8]}")
    r = t.analysis("search", a, word, "--top", 8, "--csv")
    rows = [x for x in csv.DictReader(r.stdout.splitlines()) if x["match"] == "sum_top:" + word]
    t.check([(x["group"], int(x["layer"]), int(x["expert"]) if x["expert"] else -1, int(x["neuron"])) for x in rows] ==
            [({v: k for k, v in CODE.items()}[g[2]], g[1], g[3], g[4]) for g in got], f"--csv sum_top rows {rows}")
    r = t.analysis("search", a, word, "--top", 8)
    tail = r.stdout.split("by the sum of its tokens")[1]
    t.check(r.returncode == 0 and "moe/up L2 E0 N9" in tail and "shared/up L3 N4" in tail, f"search text:\n{r.stdout}")
    print(f"  search {word!r}: the sum-of-log-probabilities match over up, moe/up, shared/up = a brute force over all "
          f"{len(want['top'])} (top) and {len(want['bottom'])} (bottom) neurons holding both tokens; equal sums by "
          "layer, group, expert, neuron; --matrix moe/up, --csv, text")


def check_compare(tmp, a):
    b = shutil.copy(a, os.path.join(tmp, "b.h5"))
    with h5py.File(b, "r+") as f:     # expert 2 of the second MoE layer: half its neurons redrawn
        ids = f["moe/up/top_ids"][1, 2]
        ids[::2] = (ids[::2] + 7) % 300
        f["moe/up/top_ids"][1, 2] = ids
    j = t.analysis_json("compare", a, b, "--matrix", "moe/up", "--most", 5)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ia, ib = fa["moe/up/top_ids"][...], fb["moe/up/top_ids"][...]
        layers, experts = list(fa["moe/up"].attrs["layers"]), list(fa["moe/up"].attrs["experts"])
    same = ia[..., 0] == ib[..., 0]                                       # [L, E, N]
    jac = np.array([[[len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(ia[li, ei], ib[li, ei])]
                     for ei in range(ia.shape[1])] for li in range(ia.shape[0])])
    for r in j["per_expert"]:
        li, ei = layers.index(r["layer"]), experts.index(r["expert"])
        t.check(r["same_top1"] == int(same[li, ei].sum()) and abs(r["jaccard_mean"] - jac[li, ei].mean()) < 1e-12,
                f"compare per expert {r} vs {same[li, ei].sum()} {jac[li, ei].mean()}")
    t.check(len(j["per_expert"]) == len(layers) * len(experts), "one row per (layer, expert)")
    t.check(j["per_layer"]["same_top1"] == same.sum(axis=(1, 2)).tolist(), f"per layer {j['per_layer']['same_top1']}")
    worst = j["most_changed"][0]
    t.check(worst["layer"] == layers[1] and worst["expert"] == experts[2], f"most changed {worst}")
    print(f"  compare moe/up: per (layer, expert) top-1 agreement and Jaccard = numpy; layer {layers[1]} expert "
          f"{experts[2]} changed ({int(same[1, 2].sum())} of {same.shape[2]} keep their top-1)")


def check_report_export(tmp, a, planted):
    out = os.path.join(tmp, "report")
    r = t.analysis("report", a, "--out", out, "--specialised", 5, "--table-max", 30, timeout=300)
    t.check(r.returncode == 0, f"report: {r.stderr}")
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    stats = json.loads(re.search(r"id='fi-stats'>(.*?)</script>", page, re.S).group(1))
    with h5py.File(a, "r") as f:
        ent = f["moe/up/entropy"][...].astype(np.float64)
        layers, experts = list(f["moe/up"].attrs["layers"]), list(f["moe/up"].attrs["experts"])
        total = sum(int(np.prod(f[g]["entropy"].shape)) for g in fm.GROUPS if g in f)
        sh = f["shared/down/entropy"][...]
    rows = stats["moe/up"]
    t.check(len(rows) == ent.shape[0] * ent.shape[1], "report: one row per (layer, expert)")
    for row in rows:
        li, ei = layers.index(row["layer"]), experts.index(row["expert"])
        t.check(abs(row["entropy_mean"] - ent[li, ei].mean()) < 1e-9 and row["neurons"] == ent.shape[2],
                f"report per expert {row} vs {ent[li, ei].mean()}")
    flat = [(ent[li, ei].mean(), layers[li], experts[ei]) for li in range(ent.shape[0]) for ei in range(ent.shape[1])]
    best = min(flat)
    t.check(re.search(rf"<table id='experts-moe/up'><tr>.*?</tr>\s*<tr><td>1</td><td>{best[1]}</td><td>{best[2]}</td>",
                      page, re.S), f"report: most specialised expert should be layer {best[1]} expert {best[2]}")
    p = planted[0]
    t.check(os.path.exists(os.path.join(out, "neuron", "moe_up", str(p["layer"]), f"e{p['expert']}", f"{p['neuron']}.html")),
            "report: the planted expert neuron's page")
    t.check(abs(stats["shared/down"][0]["entropy_mean"] - float(sh[0].astype(np.float64).mean())) < 1e-9,
            "report: shared group per layer")
    ex = os.path.join(tmp, "export")
    r = t.analysis("export", a, "--out", ex, "--tokens", 2)
    t.check(r.returncode == 0, f"export: {r.stderr}")
    rows = list(csv.DictReader(open(os.path.join(ex, "neurons.csv"), encoding="utf-8")))
    t.check(len(rows) == total, f"export: {len(rows)} rows, {total} neurons")
    hit = [x for x in rows if x["group"] == "moe/up" and x["layer"] == str(p["layer"]) and x["expert"] == str(p["expert"])
           and x["neuron"] == str(p["neuron"])]
    li, ei = layers.index(p["layer"]), experts.index(p["expert"])
    t.check(len(hit) == 1 and hit[0]["matrix"] == "up" and int(hit[0]["top1_id"]) == p["token_id"] and
            np.float32(hit[0]["entropy"]) == np.float32(ent[li, ei, p["neuron"]]), f"export row {hit}")
    t.check(all(x["expert"] == "" for x in rows if not x["group"].startswith("moe/")), "export: expert empty outside moe")
    check_report_table(out, page, a, planted)
    print(f"  report: per-expert mean entropy of {len(flat)} (layer, expert) = numpy, most specialised expert "
          f"L{best[1]} E{best[2]}; export: {total} neurons with group/expert columns")


# A minimal DOM for the report's table script: each row's cell texts and its page link.
NODE_DRIVER = r"""
const page = require('fs').readFileSync(process.argv[2], 'utf8');
const data = page.match(/<script type='application\/json' id='fi-table'>([\s\S]*?)<\/script>/)[1];
function el(text) {
  return { textContent: text || '', value: '', children: [], listeners: {},
           addEventListener(ev, f) { this.listeners[ev] = f; }, appendChild(c) { this.children.push(c); } };
}
const els = { 'fi-table': el(data), q: el(), qm: el(), tbody: el(), qinfo: el() };
Object.defineProperty(els.tbody, 'textContent', { set(v) { this.children = []; }, get() { return ''; } });
global.document = { getElementById: id => els[id], createElement: () => el() };
eval(page.match(/<script>([\s\S]*?)<\/script>/)[1]);
const out = {};
for (const q of JSON.parse(process.argv[3])) {
  els.q.value = q[0]; els.qm.value = q[1]; els.q.listeners.input();
  out[q.join('|')] = els.tbody.children.map(tr => tr.children.map(
    td => td.children.length ? 'href=' + td.children[0].href : String(td.textContent)));
}
console.log(JSON.stringify(out));
"""


def check_report_table(out, page, a, planted):
    """The searchable table: each group's 30 (--table-max) lowest-entropy neurons, routed ones with
    their expert, numpy's order over [L, E, N]; rows link to the pages the report wrote."""
    table = json.loads(re.search(r"id='fi-table'>(.*?)</script>", page, re.S).group(1))
    with h5py.File(a, "r") as f:
        text = f["vocab/text"].asstr()[...]
        for g in ("up", "moe/up", "shared/down"):
            ent = f[g]["entropy"][...].astype(np.float64)
            ids, probs = f[g]["top_ids"][...], f[g]["top_probs"][...]
            layers = f[g].attrs["layers"]
            experts = f[g].attrs["experts"] if g.startswith("moe/") else None
            order = np.lexsort((np.arange(ent.size), ent.reshape(-1)))[:30]
            rows = [r for r in table if r[0] == g]
            t.check(len(rows) == 30, f"report table: {len(rows)} rows of /{g}, want 30 (--table-max)")
            for r, flat in zip(rows, order):
                pos = np.unravel_index(flat, ent.shape)
                want = [g, int(layers[pos[0]]), int(pos[-1]), float(probs[pos][0]), ent[pos],
                        [str(text[i]) for i in ids[pos][:5]], None] + ([int(experts[pos[1]])] if experts is not None else [])
                t.check(r[:3] + r[7:] == want[:3] + want[7:] and abs(r[3] - want[3]) < 1e-6 and abs(r[4] - want[4]) < 1e-4
                        and [x[0] for x in r[5]] == want[5], f"report table /{g}: {r} vs numpy {want}")
    m = re.search(r"<script>var PAGES = (.*?);\s*\(function", page, re.S)
    t.check(m, "report: no PAGES (the table rows' links) before the table's script")
    links = json.loads(m.group(1))
    p = planted[0]
    key = f"{p['group']}|{p['layer']}|{p['expert']}|{p['neuron']}"
    t.check(links.get(key) == f"neuron/moe_up/{p['layer']}/e{p['expert']}/{p['neuron']}.html", f"PAGES[{key}] {links.get(key)}")
    t.check(all(os.path.isfile(os.path.join(out, x)) for x in links.values()), "a linked page is missing")
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        print("  report table script: SKIPPED (no node to run it)")
        return
    drv = os.path.join(out, "drive.js")
    with open(drv, "w") as f:
        f.write(NODE_DRIVER)
    q = [f"L{p['layer']} E{p['expert']} N{p['neuron']}", "moe/up"]
    r = subprocess.run([node, drv, os.path.join(out, "index.html"), json.dumps([q])], capture_output=True, text=True,
                       timeout=60)
    t.check(r.returncode == 0, f"node: {r.stderr[-1000:]}")
    got = json.loads(r.stdout)["|".join(q)]
    t.check(len(got) == 1 and got[0][:4] == ["moe/up", str(p["layer"]), str(p["expert"]), str(p["neuron"])] and
            got[0][-1] == "href=" + links[key], f"page search {q}: {got}")
    print(f"  report table: 30 (--table-max) rows per group, routed ones with their expert, = numpy's lowest entropy; "
          f"the page's script finds moe/up L{p['layer']} E{p['expert']} N{p['neuron']} and links its page")


def check_serve(tmp, a, planted):
    srv = Server(tmp, a)
    try:
        p = planted[0]
        code, body = srv.get(f"/layer/moe/up/{p['layer']}")
        t.check(code == 200 and len(re.findall(r"class='erow'", body)) == 4, f"layer page lists 4 experts ({code})")
        code, body = srv.get(f"/neuron/moe/up/{p['layer']}/{p['neuron']}?expert={p['expert']}")
        with h5py.File(a, "r") as f:
            g = f["moe/up"]
            li, ei = list(g.attrs["layers"]).index(p["layer"]), list(g.attrs["experts"]).index(p["expert"])
            ids = g["top_ids"][li, ei, p["neuron"]].tolist()
        got = [int(x) for x in re.findall(r'class="tokrow" data-id="(\d+)"', body)][:len(ids)]
        t.check(code == 200 and got == ids, f"expert neuron page: {code} {got} vs {ids}")
        code, body = srv.get("/search?q=dog")
        t.check(code == 200 and f"/neuron/moe/up/{p['layer']}/{p['neuron']}?expert={p['expert']}" in body,
                "search page links the planted expert neuron")
        code, body = srv.get(f"/layer/moe/up/{p['layer']}?expert={p['expert']}")
        t.check(code == 200 and f'data-neuron="{p["neuron"]}"' in body, "an expert's layer page")
        for path in (f"/neuron/moe/up/{p['layer']}/{p['neuron']}", f"/neuron/moe/up/{p['layer']}/0?expert=9"):
            code, _ = srv.get(path)
            t.check(code == 404, f"{path}: {code}")
    finally:
        t.check(srv.stop() == 0, "serve did not stop cleanly")
    print("  serve: a routed layer lists its experts, expert neuron pages = the datasets, search links them")


def chart_y(body, ident):
    """The y values of a served chart (its data-chart JSON)."""
    m = re.search(rf"id='{ident}' data-chart=\"([^\"]*)\"", body)
    t.check(m, f"no chart {ident}")
    return json.loads(html.unescape(m.group(1)))["series"][0]["y"]


def check_serve_compare(tmp, a):
    """serve a.h5 c.h5: the compare page of moe/up (experts pooled per layer, per expert, one
    expert) and shared/up against numpy over both files; a routed neuron side by side."""
    c = shutil.copy(a, os.path.join(tmp, "c.h5"))
    with h5py.File(c, "r+") as f:
        for g, pos, step, shift in (("moe/up", (1, 2), 2, 7), ("moe/up", (2, 0), 4, 3), ("shared/up", (0,), 3, 5)):
            ids = f[g]["top_ids"][pos]
            ids[::step] = (ids[::step] + shift) % 300
            f[g]["top_ids"][pos] = ids
    with h5py.File(a, "r") as fa, h5py.File(c, "r") as fc:
        ia = {g: fa[g]["top_ids"][...] for g in ("moe/up", "shared/up")}
        ib = {g: fc[g]["top_ids"][...] for g in ("moe/up", "shared/up")}
        layers, experts = list(fa["moe/up"].attrs["layers"]), list(fa["moe/up"].attrs["experts"])
    jac = lambda x, y: len(set(x) & set(y)) / len(set(x) | set(y))   # noqa: E731
    srv = Server(tmp, a, c)
    try:
        same = ia["moe/up"][..., 0] == ib["moe/up"][..., 0]          # [L, E, N]
        code, body = srv.get("/compare?matrix=moe/up")
        t.check(code == 200 and np.allclose(chart_y(body, "chart-agreement"), same.mean(axis=(1, 2))),
                f"moe/up per-layer agreement ({code})")
        li = int(np.argmin(same.mean(axis=(1, 2))))
        m_ = re.search(r"top-1 the same for (\d+) of (\d+)", body)
        t.check(m_ and (int(m_.group(1)), int(m_.group(2))) == (int(same[li].sum()), same[li].size),
                f"layer {layers[li]} pooled: {m_ and m_.group(0)}")
        erows = re.findall(r"<tr class='erow' data-expert='(\d+)'>.*?</td><td>(\d+)</td><td>(\d+)</td>", body)
        t.check([(int(e), int(n), int(k)) for e, n, k in erows] ==
                [(int(e), same.shape[2], int(same[li, ei].sum())) for ei, e in enumerate(experts)], f"experts {erows}")
        want = {(int(e), n): jac(ia["moe/up"][li, ei, n], ib["moe/up"][li, ei, n])
                for ei, e in enumerate(experts) for n in range(same.shape[2])}
        shown = [(int(e), int(n), float(j)) for n, e, j in re.findall(
            r"<tr class='nrow' data-neuron='(\d+)' data-expert='(\d+)'><td>\d+</td><td>\d+</td><td><a[^>]*>\d+</a></td>"
            r"<td>([\d.]+)</td>", body)]
        t.check(shown and np.allclose([x[2] for x in shown], sorted(want.values())[:len(shown)], atol=1e-3) and
                all(abs(want[x[:2]] - x[2]) < 1e-3 for x in shown), f"most changed {shown[:3]}")
        t.check(f"/neuron/moe/up/{layers[li]}/{shown[0][1]}?expert={shown[0][0]}" in body, "changed rows link the expert")
        code, body = srv.get(f"/compare?matrix=moe/up&layer={layers[1]}&expert={experts[2]}")
        m_ = re.search(r"top-1 the same for (\d+) of (\d+)", body)
        t.check(code == 200 and m_ and int(m_.group(1)) == int(same[1, 2].sum()) and int(m_.group(2)) == same.shape[2]
                and "data-expert='0'" not in body.split("id='changed'")[1], f"one expert: {m_ and m_.group(0)}")
        sh = ia["shared/up"][..., 0] == ib["shared/up"][..., 0]
        code, body = srv.get("/compare?matrix=shared/up")
        m_ = re.search(r"top-1 the same for (\d+) of (\d+)", body)
        lw = int(np.argmin(sh.mean(axis=1)))
        t.check(code == 200 and np.allclose(chart_y(body, "chart-agreement"), sh.mean(axis=1)) and m_ and
                int(m_.group(1)) == int(sh[lw].sum()), f"shared/up compare ({code}) {m_ and m_.group(0)}")
        n = int(np.nonzero(~same[1, 2])[0][0])
        code, body = srv.get(f"/neuron/moe/up/{layers[1]}/{n}?expert={experts[2]}")
        got = [int(x) for x in re.findall(r'class="tokrow" data-id="(\d+)"', body.split('id="map-b"')[-1])][:6]
        t.check(code == 200 and 'id="map-b"' in body and got == ib["moe/up"][1, 2, n].tolist(),
                f"routed neuron side by side: {got} vs {ib['moe/up'][1, 2, n]}")
        for path in ("/compare?matrix=moe/up&expert=9", "/compare?matrix=up&expert=1"):
            code, _ = srv.get(path)
            t.check(code == 404, f"{path}: {code}")
    finally:
        t.check(srv.stop() == 0, "serve did not stop cleanly")
    # A map of other experts (--experts 0-2): its routed groups are left out of the compare, said on the page.
    d = make(os.path.join(tmp, "experts02.h5"), "--moe", "4", "--experts", "0-2", *SHAPE)
    srv = Server(tmp, a, d)
    try:
        code, body = srv.get("/compare?matrix=shared/up")
        t.check(code == 200 and "not compared: /moe/up" in body and "experts 0-2 differ" in body, f"other experts ({code})")
        code, _ = srv.get("/compare?matrix=moe/up")
        t.check(code == 404, f"/compare?matrix=moe/up of maps with other experts: {code}")
    finally:
        t.check(srv.stop() == 0, "serve did not stop cleanly")
    print(f"  serve compare: moe/up per layer (experts pooled) and per expert of layer {layers[li]}, one expert, "
          "shared/up = numpy; the most changed neurons' Jaccard; a routed neuron in both maps; a map of other "
          "experts: its routed groups left out, said on the page")


def main():
    with t.tempdir() as tmp:
        a = make(os.path.join(tmp, "moe.h5"), "--moe", "4", *SHAPE)
        v1 = make(os.path.join(tmp, "v1.h5"), "--layers", "2", "--neurons", "16", "--vocab", "300", "--top-k", "4",
                  "--token-index", "4")
        with h5py.File(a, "r") as f:
            planted = json.loads(f.attrs["planted"])
        t.check(len(planted) == 3, f"planted {planted}")
        check_reader(a, planted)
        check_partial_and_scan(tmp, a, planted)
        check_refusals(tmp, a)
        check_show(a, v1, planted)
        check_search(a, planted)
        with h5py.File(a, "r") as f:
            check_multi_token(a, json.loads(f.attrs["planted_multi"]))
        check_compare(tmp, a)
        check_report_export(tmp, a, planted)
        check_serve(tmp, a, planted)
        check_serve_compare(tmp, a)


if __name__ == "__main__":
    t.main(main)
