"""The analysis tools on format version 2 maps (mixture of experts, issue 13), written by
make_synthetic_map.py --moe (dense layer 0, routed /moe/* and shared /shared/* groups, the v2
token index, planted expert neurons). Every expectation is computed here with numpy from the
h5py datasets: the reader's addresses (group, layer, expert, neuron), the v2 token index and its
top-k scan fallback, partial-map rules (done [L, E, C], included per group); show --expert, search
hits across every group, compare per (layer, expert), report's per-expert summaries, export's
group/expert columns, serve's expert pages; refusals of a version 3 map and of malformed v2 maps
(one line, exit 1); and that --expert on a version 1 map is refused.
"""
import csv
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
         "--bottom-k", "3"]
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
    r = t.analysis("report", a, "--out", out, "--specialised", 5, timeout=300)
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
    print(f"  report: per-expert mean entropy of {len(flat)} (layer, expert) = numpy, most specialised expert "
          f"L{best[1]} E{best[2]}; export: {total} neurons with group/expert columns")


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
        check_compare(tmp, a)
        check_report_export(tmp, a, planted)
        check_serve(tmp, a, planted)


if __name__ == "__main__":
    t.main(main)
