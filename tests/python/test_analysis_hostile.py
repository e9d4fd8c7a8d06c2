"""analysis/show, search, compare and report on hostile maps (issue 18, "never wrong, never lost"):
copies of a real map (2 ranks) with token ids of +-2e9, NaN / inf probabilities, random bytes
written straight into data chunks, a missing dataset, garbage in the token index, never-saved
index slots, a partial map. Every script that reads the bad data exits non-zero with exactly one
line on stderr naming the file and the dataset, never a traceback, and report finishes under a
2 GiB address-space cap. The good map still works; `search ""` is refused; compare --partial
counts only neurons whose chunk is done in both maps (checked against numpy over `done`); search
on a partial map's index uses only the chunks marked included (or the top-k scan when the index
was never saved); legitimate NaN rows (a NaN logit: NaN logsumexp and probabilities) are accepted.
"""
import json
import os
import resource
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402
import flashinterp_map as fm  # noqa: E402

N, R, M, K = 128, 32, 4, 20       # neurons, chunk rows (4 chunks per layer), token index M, top-k
C = N // R
MEM_CAP = 2 << 30                  # RLIMIT_AS for every script: an unbounded allocation fails, not the machine
TIMEOUT = 60


def _cap():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_CAP, MEM_CAP))


def script(name, *args):
    """analysis/NAME ARGS under the memory cap and a timeout (a hang or a blow-up fails the test)."""
    path = os.path.join(t.SOURCE_DIR, "analysis", name)
    cmd = ["/usr/bin/python3", path, *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_cap)
    except subprocess.TimeoutExpired:
        t.fail(f"analysis/{name} {' '.join(map(str, args))}: still running after {TIMEOUT} s")


def ok(name, *args):
    p = script(name, *args)
    t.check(p.returncode == 0 and "Traceback" not in p.stderr,
            f"analysis/{name} {' '.join(map(str, args))}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return p


def ok_json(name, *args):
    return json.loads(ok(name, *args, "--json").stdout)


def refused(name, args, path, dataset, *words):
    """Exit != 0, nothing but one line on stderr (`name: error: ...`) naming path and dataset."""
    p = script(name, *args)
    lines = p.stderr.strip().splitlines()
    what = f"analysis/{name} {' '.join(map(str, args))}"
    t.check("Traceback" not in p.stderr + p.stdout, f"{what}: a traceback\n{p.stderr[-3000:]}")
    t.check(p.returncode != 0, f"{what}: exit 0 on bad data {dataset}\n{p.stdout[-1500:]}")
    t.check(len(lines) == 1 and lines[0].startswith(f"{name}: error: "),
            f"{what}: stderr is not one error line: {p.stderr[-2000:]!r}")
    for w in (path, dataset, *words):
        t.check(w in lines[0], f"{what}: the error does not name {w!r}: {lines[0]}")
    return lines[0]


def copy(src, dst, edit=None):
    shutil.copy(src, dst)
    if edit:
        with h5py.File(dst, "r+") as f:
            edit(f)
    return dst


def chunk_span(path, dataset, coord):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info_by_coord(coord)
    return info.byte_offset, info.size


def main():
    rng = np.random.default_rng(18)
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "model"), "--layers", "2", "--hidden", "64",
                             "--intermediate", str(N), "--seed", "5")
        good = t.decode(model, os.path.join(tmp, "map.h5"), "--matrices", "up,gate", "--bottom-k", "3",
                        "--chunk-rows", R, "--token-index", M, np_=2)
        planted = {p["token"]: p for p in t.load_planted(model)}
        dog = planted[" dog"]
        t.check(dog["matrix"] == "up", f"planted dog {dog}")
        dl, dn = dog["layer"], dog["neuron"]
        with fm.open_map(good) as m:
            dog_ids = sorted({i for v in m.find_tokens(fm.word_variants("dog")).values() for i in v})
        with h5py.File(good, "r") as f:
            index = {k: f["up/token_index"][k][...] for k in ("layer", "neuron", "probs")}
            top_ids_up = f["up/top_ids"][...]
        show_dog = ["--layer", dl, "--neuron", dn]

        # -- the good map: every script works, exit 0 ----------------------------------------
        p = ok("show", good, *show_dog)
        t.check(repr(" dog") in p.stdout, f"show: no ' dog' in\n{p.stdout}")
        r = ok_json("search", good, "dog")
        t.check((r["results"][0]["layer"], r["results"][0]["neuron"]) == (dl, dn) and r["note"] is None,
                f"search on the good map: {r['results'][:1]}, note {r['note']}")
        c = ok_json("compare", good, good)
        t.check(c["overall"]["neurons"] == 2 * N and c["overall"]["same_top1_share"] == 1.0 and c["left_out"] == 0,
                f"compare good good: {c['overall']}")
        ok("report", good, "--out", os.path.join(tmp, "rep-good"))
        print(f"  good map: show, search, compare, report exit 0 (each under a {MEM_CAP >> 30} GiB cap)")

        # -- search "" ------------------------------------------------------------------------
        for word in ("", "   "):
            p = script("search", good, word)
            t.check(t.one_line_error(p, "word") and "Traceback" not in p.stderr, f"search {word!r}: {p.stderr!r}")
        print(f"  search '' / '   ' refused: {p.stderr.strip()}")

        # -- token ids of +-2e9 ---------------------------------------------------------------
        def bad_ids(f):
            d = f["up/top_ids"]
            row = rng.integers(-2**31, 2**31 - 1, K).astype(np.int32)
            row[:2] = [2_000_000_000, -2_000_000_000]
            d[dl, dn] = row
            d[0, 3] = np.full(K, -2_000_000_000, np.int32)     # negative only: not hidden as "unused"
            d[1, 100, 5] = 2_000_000_000
        ids = copy(good, os.path.join(tmp, "ids.h5"), bad_ids)
        line = refused("show", [ids, *show_dog], ids, "/up/top_ids", "2000000000")
        refused("show", [ids, "--layer", 0, "--neuron", 3], ids, "/up/top_ids", "-2000000000")
        refused("search", [ids, "dog"], ids, "/up/top_ids")
        refused("compare", [good, ids], ids, "/up/top_ids")
        refused("compare", [ids, good], ids, "/up/top_ids")
        refused("report", [ids, "--out", os.path.join(tmp, "rep-ids")], ids, "/up/top_ids")
        ok("show", ids, "--layer", 0, "--neuron", 4)            # a neuron nobody touched still reads
        print(f"  ids +-2e9: show, search, compare (both ways), report refused, e.g.\n    {line}")

        # -- NaN / inf probabilities ----------------------------------------------------------
        def bad_probs(f):
            d = f["up/top_probs"]
            row = d[dl, dn]
            row[0] = np.nan
            d[dl, dn] = row
            row = d[0, 7]
            row[3] = np.inf
            d[0, 7] = row
        probs = copy(good, os.path.join(tmp, "probs.h5"), bad_probs)
        line = refused("show", [probs, *show_dog], probs, "/up/top_probs", "nan")
        refused("show", [probs, "--layer", 0, "--neuron", 7], probs, "/up/top_probs", "inf")
        refused("search", [probs, "dog"], probs, "/up/top_probs")
        refused("compare", [good, probs], probs, "/up/top_probs")
        refused("report", [probs, "--out", os.path.join(tmp, "rep-probs")], probs, "/up/top_probs")
        print(f"  NaN / inf in top_probs: show, search, compare, report refused, e.g.\n    {line}")

        # A NaN logit, as the writer stores it, is data: NaN logsumexp and NaN probabilities.
        def nan_row(f):
            f["up/logsumexp"][0, 9] = np.nan
            f["up/top_probs"][0, 9] = np.full(K, np.nan, np.float32)
        nanrow = copy(good, os.path.join(tmp, "nanrow.h5"), nan_row)
        ok("show", nanrow, "--layer", 0, "--neuron", 9)
        ok("report", nanrow, "--out", os.path.join(tmp, "rep-nanrow"))
        print("  a NaN-logit neuron (NaN logsumexp and probabilities) is accepted by show and report")

        # -- random bytes straight into data chunks -------------------------------------------
        raw = copy(good, os.path.join(tmp, "raw.h5"))
        spans = [chunk_span(raw, "gate/top_ids", (0, R, 0)), chunk_span(raw, "gate/top_probs", (1, 0, 0))]
        with open(raw, "r+b") as f:
            for off, size in spans:
                f.seek(off)
                f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        line = refused("show", [raw, "--matrix", "gate", "--layer", 0, "--neuron", R + 8], raw, "/gate/top_ids")
        refused("show", [raw, "--matrix", "gate", "--layer", 1, "--neuron", 5], raw, "/gate/top_probs")
        refused("compare", [good, raw, "--matrix", "gate"], raw, "/gate/top_ids")
        refused("report", [raw, "--out", os.path.join(tmp, "rep-raw")], raw, "/gate/top_ids")
        print(f"  random bytes in two data chunks: show, compare, report refused, e.g.\n    {line}")

        # -- a missing dataset ----------------------------------------------------------------
        def drop(name):
            return lambda f: f.__delitem__(name)
        nolse = copy(good, os.path.join(tmp, "nolse.h5"), drop("up/logsumexp"))
        refused("show", [nolse, *show_dog], nolse, "/up/logsumexp")
        refused("search", [nolse, "dog"], nolse, "/up/logsumexp")
        refused("compare", [good, nolse], nolse, "/up/logsumexp")
        line = refused("report", [nolse, "--out", os.path.join(tmp, "rep-nolse")], nolse, "/up/logsumexp")
        noti = copy(good, os.path.join(tmp, "noti.h5"), drop("up/token_index/probs"))
        refused("search", [noti, "dog"], noti, "/up/token_index/probs")
        nobot = copy(good, os.path.join(tmp, "nobot.h5"), drop("up/bottom_logits"))
        refused("show", [nobot, *show_dog], nobot, "/up/bottom_logits")
        print(f"  missing /up/logsumexp, /up/token_index/probs, /up/bottom_logits: one line each, e.g.\n    {line}")

        # -- garbage in the token index ---------------------------------------------------------
        cat = planted[" cat"]

        def bad_index(f):
            f["up/token_index/layer"][dog["token_id"]] = rng.integers(1000, 2**31 - 1, M).astype(np.int32)
            f["gate/token_index/neuron"][cat["token_id"]] = np.array([5, -77, 3, 2], np.int32)
        tig = copy(good, os.path.join(tmp, "tindex.h5"), bad_index)
        line = refused("search", [tig, "dog"], tig, "/up/token_index/layer")
        refused("search", [tig, "cat", "--matrix", "gate"], tig, "/gate/token_index/neuron", "-77")
        print(f"  garbage in token_index/layer and /neuron: search refused, e.g.\n    {line}")

        # Never-saved slots (fill value: layer 0, neuron 0, probability 0) are empty, not results.
        def unsaved_slots(f):
            for name in ("layer", "neuron", "probs", "logp"):
                d = f["up/token_index/" + name]
                row = d[dog["token_id"]]
                row[2:] = 0
                d[dog["token_id"]] = row
        slots = copy(good, os.path.join(tmp, "slots.h5"), unsaved_slots)
        r = ok_json("search", slots, "dog")
        pr = index["probs"][dog_ids].copy()
        pr[dog_ids.index(dog["token_id"]), 2:] = 0
        lay, neu = index["layer"][dog_ids], index["neuron"][dog_ids]
        want = {(int(a), int(b)) for a, b, p_ in zip(lay.ravel(), neu.ravel(), pr.ravel()) if p_ > 0}
        got = {(h["layer"], h["neuron"]) for h in r["results"]}
        t.check(got == want and all(h["prob"] > 0 for h in r["results"]),
                f"search with never-saved slots: {sorted(got)}, want {sorted(want)}")
        with fm.open_map(slots) as m:
            la, ne, pb = m.token_index("up", [dog["token_id"]])
            t.check((la[0, 2:] == -1).all() and (ne[0, 2:] == -1).all() and (pb[0, 2:] == 0).all(),
                    f"token_index(): never-saved slots come back as {la[0]}, {ne[0]}, {pb[0]}")
        print(f"  never-saved index slots are empty: {len(got)} results, none with probability 0")

        # -- a partial map's token index ------------------------------------------------------
        def never_saved(f):
            f.attrs["complete"] = np.int64(0)
            for name in ("layer", "neuron", "probs", "logp"):
                d = f["up/token_index/" + name]
                d[...] = np.zeros(d.shape, d.dtype)
            f["up/token_index/included"][...] = np.zeros((2, C), np.uint8)
        unsaved = copy(good, os.path.join(tmp, "unsaved.h5"), never_saved)
        t.check(t.one_line_error(script("search", unsaved, "dog"), "partial"), "partial map without --partial")
        r = ok_json("search", unsaved, "dog", "--partial")
        first = r["results"][0]
        t.check(r["source"] == "top_k_scan" and "never saved" in (r["note"] or "") and
                (first["layer"], first["neuron"]) == (dl, dn), f"never-saved index: {r['source']} {r['note']} {first}")
        for h in r["results"]:
            t.check(h["prob"] > 0 and h["token_id"] in top_ids_up[h["layer"], h["neuron"]], f"scan result {h}")
        print(f"  partial map, index never saved: top-k scan ({r['note']})")

        inc = np.ones((2, C), np.uint8)
        inc[0, :2] = 0
        inc[1, :] = 0

        def half_included(f):
            f.attrs["complete"] = np.int64(0)
            f["up/token_index/included"][...] = inc
        half = copy(good, os.path.join(tmp, "half.h5"), half_included)
        r = ok_json("search", half, "dog", "--partial")
        keep = (index["layer"][dog_ids] == 0) & (index["neuron"][dog_ids] // R >= 2) & (index["probs"][dog_ids] > 0)
        want = {(0, int(x)) for x in index["neuron"][dog_ids][keep]}
        got = {(h["layer"], h["neuron"]) for h in r["results"]}
        t.check(r["source"] == "token_index" and got == want and f"{int(inc.sum())} of {inc.size} chunks" in r["note"],
                f"half-included index: {r['source']}, {sorted(got)} (want {sorted(want)}), note {r['note']}")
        p = ok("search", half, "dog", "--partial")
        t.check(any(ln.startswith("note: the token index covers only") for ln in p.stdout.splitlines()),
                f"search text on a half-included index:\n{p.stdout}")
        print(f"  partial map, index covers {int(inc.sum())}/{inc.size} chunks: only those searched ({len(got)} "
              f"neurons), said: {r['note']}")

        # -- compare --partial: only chunks done in both maps count ---------------------------
        def partial(cleared):
            def edit(f):
                f.attrs["complete"] = np.int64(0)
                done = f["up/done"][...]
                for li, ch in cleared:
                    done[li, ch] = 0
                    rows = slice(ch * R, (ch + 1) * R)       # the writer's fill value where not written
                    for name in ("top_ids", "top_logits", "top_probs", "bottom_ids", "bottom_logits"):
                        d = f["up/" + name]
                        d[li, rows] = np.zeros((R, d.shape[2]), d.dtype)
                    f["up/logsumexp"][li, rows] = np.zeros(R, np.float32)
                f["up/done"][...] = done
            return edit
        pa = copy(good, os.path.join(tmp, "partial_a.h5"), partial([(0, 1), (1, 3)]))
        pb = copy(good, os.path.join(tmp, "partial_b.h5"), partial([(1, 3), (1, 0)]))
        refused("compare", [pa, pb], pa, "partial")
        with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
            both = fa["up/done"][...].astype(bool) & fb["up/done"][...].astype(bool)    # [L, C]
        counted = int(both.sum()) * R
        res = ok_json("compare", pa, pb, "--partial")
        o = res["overall"]
        t.check(o["neurons"] == counted and res["left_out"] == 2 * N - counted and
                res["per_layer"]["neurons"] == [int(x) * R for x in both.sum(axis=1)],
                f"compare --partial: {o['neurons']} neurons counted, {res['left_out']} left out; numpy over done: "
                f"{counted} counted, {2 * N - counted} left out")
        t.check(o["same_top1_share"] == 1.0 and o["jaccard_mean"] == 1.0 and
                all(c_["neuron"] // R not in [ch for li, ch in ((0, 1), (1, 3), (1, 0)) if li == c_["layer"]]
                    for c_ in res["most_changed"]),
                f"compare --partial counted an unwritten chunk: {o}")
        p = ok("compare", pa, pb, "--partial")
        want_line = f"warning: partial map: {2 * N - counted} of {2 * N} neurons left out"
        t.check(any(ln.startswith(want_line) for ln in p.stdout.splitlines()), f"compare text:\n{p.stdout}")
        res = ok_json("compare", good, pa, "--partial")
        t.check(res["overall"]["neurons"] == 2 * N - 2 * R, f"compare good partial_a: {res['overall']}")
        print(f"  compare --partial: {counted} of {2 * N} neurons counted (= numpy over both maps' done), "
              f"same top-1 100%; the text says so")

        rep = os.path.join(tmp, "rep-partial")
        ok("report", pa, "--out", rep, "--partial")
        with open(os.path.join(rep, "index.html"), encoding="utf-8") as f:
            page = f.read()
        stats = json.loads(page.split("id='fi-stats'>", 1)[1].split("</script>", 1)[0])
        t.check([s["neurons"] for s in stats["up"]] == [N - R, N - R] and
                stats["up"][0]["top1_prob_mean"] > 0, f"report --partial stats {stats['up']}")
        print("  report --partial: statistics over the written neurons only")

        def garbage_done(f):
            f["up/done"][0, 2] = 7
        with h5py.File(pb, "r+") as f:
            garbage_done(f)
        line = refused("compare", [pa, pb, "--partial"], pb, "/up/done")
        print(f"  a done byte of 7 refused: {line}")


if __name__ == "__main__":
    t.main(main)
