"""analysis/search on a real map (2 ranks, --token-index): the word becomes the right token ids
through the map's vocabulary (leading space, --case), the best neurons and their probabilities
agree with a float64 computation over all neurons (up to near-ties), the planted " dog" neuron comes
first, each neuron lists its own top tokens; a map without an index is searched by a top-k scan;
a small synthetic map from make_synthetic_map.py; refusals (unknown word, partial map, version).
"""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

M = 16
PROB_REL = 1e-3


def token_ids(vocab, *words):
    inv = {b: i for i, (b, _) in vocab.items()}
    return {w: inv[w.encode()] for w in words if w.encode() in inv}


def expected_hits(probs, ids, n, top):
    """Float64 reference of a search: every (neuron, token) pair over all neurons, by probability
    desc, ties to the lower (layer, neuron), then token; each neuron once. [(prob, row, token)]."""
    cand = [(-probs[r, tok], r, tok) for tok in ids for r in range(probs.shape[0])]
    cand.sort()
    seen, out = set(), []
    for negp, r, tok in cand:
        if r not in seen:
            seen.add(r)
            out.append((-negp, r, tok))
    return out[:top]


def check_hits(where, got, want, probs, n, layer_ids):
    """got: search results; want: expected_hits. Position by position the probabilities agree,
    and a neuron may differ from the reference only where their float64 probabilities tie."""
    t.check(len(got) == len(want), f"{where}: {len(got)} results, want {len(want)}")
    swaps = 0
    for i, (g, (p, r, tok)) in enumerate(zip(got, want)):
        row = layer_ids.index(g["layer"]) * n + g["neuron"]
        p_got = probs[row, g["token_id"]]              # float64 probability of what search listed
        t.check(abs(g["prob"] - p_got) <= PROB_REL * p_got,
                f"{where}: result {i}: map prob {g['prob']} vs float64 {p_got} for {g}")
        t.check(abs(p_got - p) <= PROB_REL * p, f"{where}: result {i} is {g} with float64 prob {p_got}, "
                f"the reference's is layer {layer_ids[r // n]} neuron {r % n} token {tok} with {p}")
        swaps += (row, g["token_id"]) != (r, tok)
    return swaps


def main():
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "model"), "--layers", "2", "--hidden", "64",
                             "--intermediate", "128", "--seed", "21")
        out, how = t.decode_with_index(model, os.path.join(tmp, "map.h5"), M, "--matrices", "up,gate",
                                       matrices=("up", "gate"))
        print(f"  map with token index M={M} (" + ("written by the binary" if how == "binary" else
              "the binary lacks --token-index: index injected from float64") + ")")
        planted = {p["token"]: p for p in t.load_planted(model)}
        dog = planted[" dog"]
        vocab = t.tokenizer_vocab(model)
        ref = t.Reference(model)
        layer_ids = [0, 1]
        n = 128
        probs = {mat: t.reference_probs(ref, mat, layer_ids) for mat in ("up", "gate")}

        p = t.analysis("search", "--help")
        t.check(p.returncode == 0 and "--case" in p.stdout and "--json" in p.stdout, f"--help: {p.stderr}")

        # Word -> token ids: with and without the leading space; --case adds the case forms.
        res = t.analysis_json("search", out, "dog", "--top", "10")
        want = token_ids(vocab, "dog", " dog")
        got = {v["text"]: v["token_ids"] for v in res["variants"]}
        t.check(got == {w: [i] for w, i in want.items()}, f"variants {got}, want {want}")
        t.check(res["source"] == "token_index" and res["token_index_m"] == M, f"source {res['source']}")
        resc = t.analysis_json("search", out, " dog", "--case", "--top", "10")
        wantc = token_ids(vocab, " dog", "dog", " Dog", "Dog", " DOG", "DOG")
        gotc = {v["text"]: v["token_ids"][0] for v in resc["variants"] if v["token_ids"]}
        t.check(gotc == wantc, f"--case variants {gotc}, want {wantc}")
        print(f"  'dog' -> {want}; --case -> {wantc}")

        # Results against the float64 computation over every neuron.
        swaps = 0
        for mat, word, case, ids in (
                ("up", "dog", False, want.values()), ("up", " dog", True, wantc.values()),
                ("gate", "cat", False, token_ids(vocab, "cat", " cat").values()),
                ("up", "California", False, token_ids(vocab, "California", " California").values())):
            args = [out, word, "--matrix", mat, "--top", "12"] + (["--case"] if case else [])
            r = t.analysis_json("search", *args)
            swaps += check_hits(f"search {word!r} /{mat}", r["results"],
                                expected_hits(probs[mat], list(ids), n, 12), probs[mat], n, layer_ids)
            plant = planted[" " + word.strip()]
            first = r["results"][0]
            t.check((first["layer"], first["neuron"], first["token"]) ==
                    (plant["layer"], plant["neuron"], plant["token"]),
                    f"search {word!r} /{mat}: first result {first}, want the planted {plant}")
            with h5py.File(out, "r") as f:
                for h in r["results"]:
                    li = layer_ids.index(h["layer"])
                    own = f[mat]["top_ids"][li, h["neuron"], :5]
                    t.check([x["id"] for x in h["neuron_top"]] == list(own),
                            f"{h}: neuron_top ids differ from the map's {list(own)}")
                    t.check(len({(x["layer"], x["neuron"]) for x in r["results"]}) == len(r["results"]),
                            "a neuron listed twice")
        print(f"  4 searches: results = float64 over all neurons (prob rel. {PROB_REL}, {swaps} near-tie "
              f"swaps); planted neuron first each time; neuron_top = the map's top tokens")

        # The real index (when the binary writes it) against float64 for the searched tokens.
        if how == "binary":
            with h5py.File(out, "r") as f:
                g = f["up/token_index"]
                t.check(g["layer"].shape == (f["vocab/text"].shape[0], M), f"index shape {g['layer'].shape}")
                for tok in wantc.values():
                    lay, neu, pr = g["layer"][tok], g["neuron"][tok], g["probs"][tok]
                    col = probs["up"][:, tok]
                    best = np.argsort(-col, kind="stable")[:M]
                    rows = np.array([layer_ids.index(x) for x in lay]) * n + neu
                    t.check(np.allclose(pr, col[rows], rtol=PROB_REL) and np.allclose(pr, col[best], rtol=PROB_REL),
                            f"token {tok}: index probs {pr[:4]} vs float64 {col[best][:4]}")
            print("  the binary's token index agrees with float64 for the searched tokens")

        # Text output: the table's first row is the planted neuron.
        p = t.analysis("search", out, "dog")
        t.check(p.returncode == 0, f"search text: {p.stderr}")
        lines = p.stdout.splitlines()
        hdr = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("rank"))
        row = lines[hdr + 1].split()
        t.check(row[:3] == ["1", str(dog["layer"]), str(dog["neuron"])] and "' dog'" in lines[hdr + 1],
                f"text output first row: {lines[hdr + 1]!r}")
        print("  text: " + "\n        ".join(lines[:hdr + 2]))

        # No index: a scan of the stored top-k.
        noidx = os.path.join(tmp, "noindex.h5")
        shutil.copy(out, noidx)
        with h5py.File(noidx, "r+") as f:
            del f["up/token_index"]
        r = t.analysis_json("search", noidx, "dog", "--top", "5")
        first = r["results"][0]
        t.check(r["source"] == "top_k_scan" and (first["layer"], first["neuron"]) == (dog["layer"], dog["neuron"]),
                f"no-index search: {r['source']}, first {first}")
        with h5py.File(noidx, "r") as f:   # every result holds the token in its stored top-k
            for h in r["results"]:
                t.check(h["token_id"] in f["up/top_ids"][layer_ids.index(h["layer"]), h["neuron"]], f"{h}")
        print("  a map without an index: top-k scan, planted neuron first")

        # A word that is no token is split and searched as a multi-token word (test_search_concepts).
        r = t.analysis_json("search", out, "qqzxjvwk")
        t.check(not r["token_ids"] and r["multi_token"] and
                b"".join(bytes(vocab[i][0]) for i in r["multi_token"][0]["split"]) == r["multi_token"][0]["text"].encode(),
                f"a word that is no token: {r['variants']}")
        print(f"  'qqzxjvwk' is no token: split into {r['multi_token'][0]['split_text']} and searched by its pieces")

        # Refusals: one line, exit 1.
        partial = os.path.join(tmp, "partial.h5")
        shutil.copy(out, partial)
        with h5py.File(partial, "r+") as f:
            f.attrs["complete"] = np.int64(0)
        p = t.analysis("search", partial, "dog")
        t.check(t.one_line_error(p, "partial"), f"partial map: {p.returncode} {p.stderr!r}")
        t.check(t.analysis("search", partial, "dog", "--partial").returncode == 0, "--partial")
        with h5py.File(partial, "r+") as f:
            f.attrs["complete"] = np.int64(1)
            f.attrs["format_version"] = np.int64(2)
        p = t.analysis("search", partial, "dog")
        t.check(t.one_line_error(p, "format_version"), f"version 2: {p.returncode} {p.stderr!r}")
        print("  refused with one line: a partial map, format_version 2")

        # make_synthetic_map.py (small): its planted dog neurons are found first.
        syn = os.path.join(tmp, "syn.h5")
        gen = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_synthetic_map.py")
        p = subprocess.run(["/usr/bin/python3", gen, syn, "--layers", "4", "--neurons", "300", "--token-index", "8",
                            "--chunk-rows", "128"], capture_output=True, text=True, timeout=120)
        t.check(p.returncode == 0, f"make_synthetic_map.py: {p.stderr}")
        r = t.analysis_json("search", syn, "dog", "--top", "3")
        t.check([(h["layer"], h["neuron"]) for h in r["results"][:2]] == [(2, 30), (2, 31)],
                f"synthetic map: {r['results']}")
        print("  synthetic map (make_synthetic_map.py): planted neurons found first")


if __name__ == "__main__":
    t.main(main)
