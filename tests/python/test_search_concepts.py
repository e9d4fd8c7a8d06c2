"""analysis/search by concept on small synthetic maps (make_synthetic_map.py, the real Llama 3
vocabulary when .cache/tokenizer has it): --variants (case, plural, inflect, script) give the
spellings asked for, each with the token ids whose exact /vocab/bytes it is; a word that is no
single token is split greedily into tokens that spell it; the multi-token " Golden Gate" is found
by its first token (= the token index row, read with h5py) and by the summed log-probabilities
over every neuron's stored top list (= a numpy scan of the whole map in float64; the planted
neuron first); --regex and --set against h5py + re and the concept rule; the map's /concepts and
the concepts file agree; --csv = --json; entropy/margin are the map's exact datasets, or on a map
without them the float64 estimate from the top-k and the stored top-1 minus top-2 logit.
"""
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True
import fi_testlib as t  # noqa: E402

GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_synthetic_map.py")
CONCEPTS = {"animals": ["dog", "Cat", " horse", "Zürich-not-a-token"], "colours": ["red", "BLUE"]}


def synthetic(path, *args):
    p = subprocess.run(["/usr/bin/python3", GEN, path, "--layers", "4", "--neurons", "300", "--token-index", "8",
                        "--chunk-rows", "128", *args], capture_output=True, text=True, timeout=300)
    t.check(p.returncode == 0, f"make_synthetic_map.py: {p.stderr}")
    return path


class MapData:
    """The map as plain numpy, read with h5py (the independent side of every check)."""

    def __init__(self, path):
        with h5py.File(path, "r") as f:
            self.text = [s for s in f["vocab/text"].asstr()[...]]
            self.bytes = [bytes(b) for b in f["vocab/bytes"][...]]
            self.special = f["vocab/special"][...].astype(bool)
            g = f["up"]
            self.layers = [int(x) for x in g.attrs["layers"]]
            self.ids, self.logits = g["top_ids"][...], g["top_logits"][...].astype(np.float64)
            self.probs, self.lse = g["top_probs"][...].astype(np.float64), g["logsumexp"][...].astype(np.float64)
            self.entropy = g["entropy"][...] if "entropy" in g else None
            self.margin = g["margin"][...] if "margin" in g else None
            ti = g["token_index"]
            self.ti = (ti["layer"][...], ti["neuron"][...], ti["probs"][...])
            self.concepts = {k: list(f["concepts"][k][...]) for k in f["concepts"]} if "concepts" in f else {}
        self.by_bytes = {}
        for i, b in enumerate(self.bytes):
            if not self.special[i] and b:
                self.by_bytes.setdefault(b, []).append(i)

    def index_hits(self, ids, top):
        """Best-first (layer, neuron) of the token index rows of ids, each neuron once."""
        lay, neu, pr = (x[np.asarray(ids, np.int64)].reshape(-1) for x in self.ti)
        tok = np.repeat(np.asarray(ids), self.ti[0].shape[1])
        keep = pr > 0
        order = sorted(zip(-pr[keep].astype(np.float64), lay[keep], neu[keep], tok[keep]))
        out, seen = [], set()
        for negp, la, n, tk in order:
            if (la, n) not in seen:
                seen.add((la, n))
                out.append((int(la), int(n), -negp))
        return out[:top]

    def estimate(self, li, n):
        """Float64 entropy estimate from the top-k: top terms + the rest spread evenly."""
        p = self.probs[li, n]
        p = p[p > 0]
        r = max(0.0, 1 - p.sum())
        rest = len(self.text) - p.size
        return float(-(p * np.log(p)).sum() + (-r * np.log(r / rest) if r > 0 else 0.0))


def check_stats(where, rows, md):
    for r in rows:
        li = md.layers.index(r["layer"])
        if md.entropy is not None:
            want_e, want_m = float(md.entropy[li, r["neuron"]]), float(md.margin[li, r["neuron"]])
            t.check(r["entropy_exact"], f"{where}: {r} not marked exact")
        else:
            want_e = md.estimate(li, r["neuron"])
            want_m = md.logits[li, r["neuron"], 0] - md.logits[li, r["neuron"], 1]
            t.check(not r["entropy_exact"], f"{where}: {r} marked exact on a map without /up/entropy")
        t.check(abs(r["entropy"] - want_e) <= 1e-5 * max(1, want_e) and abs(r["margin"] - want_m) <= 1e-5,
                f"{where}: layer {r['layer']} neuron {r['neuron']}: entropy {r['entropy']} margin {r['margin']}, "
                f"want {want_e}, {want_m}")


def main():
    with t.tempdir() as tmp:
        cfile = os.path.join(tmp, "concepts.json")
        with open(cfile, "w", encoding="utf-8") as f:
            json.dump(CONCEPTS, f, ensure_ascii=False)
        syn = synthetic(os.path.join(tmp, "syn.h5"), "--concepts", cfile)
        bare = synthetic(os.path.join(tmp, "bare.h5"), "--no-stats")
        md, mb = MapData(syn), MapData(bare)
        if b" Golden" not in md.by_bytes:
            t.fail("the synthetic map has no real vocabulary (.cache/tokenizer/tokenizer.json missing; "
                   "run launch/setup-deps.sh)")
        L, N = 4, 300
        plant_layer = L * 5 // 8

        # -- variants: the spellings asked for, each with the ids whose bytes it is ------------------
        r = t.analysis_json("search", syn, "dog", "--variants", "all", "--top", "5")
        got = {v["text"]: v for v in r["variants"]}
        for want, how in ((" dog", "space"), ("DOG", "case"), (" Dog", "case"), (" dogs", "plural"),
                          ("dogs", "plural"), (" doged", None), ("dogging", "inflect"), (" dogged", "inflect")):
            if how is None:
                t.check(want not in got, f"{want!r} is no simple inflection of dog: {list(got)}")
                continue
            t.check(want in got and got[want]["how"] == how, f"variant {want!r} ({how}) missing: {list(got)}")
        for v in r["variants"]:
            t.check(v["token_ids"] == md.by_bytes.get(v["text"].encode(), []),
                    f"variant {v['text']!r}: ids {v['token_ids']}, /vocab/bytes says {md.by_bytes.get(v['text'].encode())}")
            if not v["token_ids"]:       # a split spells the word, each piece the longest possible
                b, pos = v["text"].encode(), 0
                for tid in v["split"]:
                    piece = md.bytes[tid]
                    t.check(b.startswith(piece, pos), f"split of {v['text']!r}: {piece!r} at {pos}")
                    longer = [j for j in range(pos + len(piece) + 1, len(b) + 1) if b[pos:j] in md.by_bytes]
                    if longer:
                        t.fail(f"split of {v['text']!r}: {piece!r} at {pos}, but {b[pos:longer[-1]]!r} is a token")
                    pos += len(piece)
                t.check(pos == len(b), f"split of {v['text']!r} covers {pos} of {len(b)} bytes")
        zr = t.analysis_json("search", syn, "Zürich", "--variants", "script", "--top", "3")
        zt = [v["text"] for v in zr["variants"]]
        t.check(" Zurich" in zt and "Zurich" in zt and " Zürich" in zt, f"script variants of Zürich: {zt}")
        print(f"  --variants all: {len(r['variants'])} spellings of 'dog', ids = /vocab/bytes, splits spell the "
              f"word greedily; script: {zt[:4]}")

        # -- multi-token " Golden Gate": first token and summed log-probabilities -------------------
        r = t.analysis_json("search", syn, " Golden Gate", "--top", "10")
        mt = {m_["text"]: m_ for m_ in r["multi_token"]}[" Golden Gate"]
        gold, gate = md.by_bytes[b" Golden"][0], md.by_bytes[b" Gate"][0]
        t.check(mt["split"] == [gold, gate], f"split {mt['split']}, want {[gold, gate]}")
        want_first = md.index_hits([gold], 10)
        got_first = [(h["layer"], h["neuron"], h["prob"]) for h in mt["by_first_token"]]
        t.check([g[:2] for g in got_first] == [w[:2] for w in want_first] and
                np.allclose([g[2] for g in got_first], [w[2] for w in want_first], rtol=1e-6),
                f"by first token {got_first[:3]}, token index says {want_first[:3]}")
        cand = []
        for li in range(L):
            for n in range(N):
                row = list(md.ids[li, n])
                if gold in row and gate in row:
                    s = sum(md.logits[li, n, row.index(x)] - md.lse[li, n] for x in (gold, gate))
                    cand.append((-s, md.layers[li], n))
        cand.sort()
        got_sum = [(h["layer"], h["neuron"], h["sum_logp"]) for h in mt["by_sum_logp_top"]]
        t.check([g[:2] for g in got_sum] == [c[1:] for c in cand[:10]] and
                np.allclose([g[2] for g in got_sum], [-c[0] for c in cand[:10]], rtol=1e-6, atol=1e-6),
                f"by sum logp {got_sum[:3]}, float64 scan {cand[:3]}")
        t.check(got_sum[0][:2] == (plant_layer, N // 10 + 5), f"planted Golden Gate neuron not first: {got_sum[0]}")
        t.check(mt["by_sum_logp_bottom"] is None, "bottom lists reported on a map without them")
        print(f"  ' Golden Gate' = {mt['split_text']}: by first token = the token index row; by summed "
              f"log-probability = a float64 scan ({len(cand)} neurons hold both), planted neuron first")

        # -- --regex against h5py + re ---------------------------------------------------------------
        pat = r"^ ?[Dd]og(s)?$"
        r = t.analysis_json("search", syn, "--regex", pat, "--top", "12")
        want_ids = [i for i, s in enumerate(md.text) if not md.special[i] and re.search(pat, s)]
        t.check(r["token_ids"] == want_ids, f"--regex ids {r['token_ids']}, re says {want_ids}")
        want = md.index_hits(want_ids, 12)
        t.check([(h["layer"], h["neuron"]) for h in r["results"]] == [w[:2] for w in want],
                f"--regex results {[(h['layer'], h['neuron']) for h in r['results']]}, index says {want}")
        check_stats("--regex", r["results"], md)
        print(f"  --regex {pat!r}: {len(want_ids)} tokens = re over /vocab/text; results = token index merge; "
              "entropy/margin = /up/entropy, /up/margin")

        # -- --set: the map's /concepts and the concepts file agree ----------------------------------
        r = t.analysis_json("search", syn, "--set", "animals", "--top", "8")
        t.check(r["set_source"].startswith("/concepts/") and r["token_ids"] == md.concepts["animals"],
                f"--set from the map: {r['set_source']}, {r['token_ids']} vs {md.concepts['animals']}")
        nomap = os.path.join(tmp, "noconcepts.h5")
        shutil.copy(syn, nomap)
        with h5py.File(nomap, "r+") as f:
            del f["concepts"]
        r2 = t.analysis_json("search", nomap, "--set", "animals", "--concepts", cfile, "--top", "8")
        t.check(r2["token_ids"] == r["token_ids"], f"concepts file {r2['token_ids']} vs /concepts {r['token_ids']}")
        norm = {w.lstrip().lower() for w in CONCEPTS["animals"]}
        want_ids = [i for i, s in enumerate(md.text) if not md.special[i] and s.lstrip().lower() in norm]
        t.check(r2["token_ids"] == want_ids, f"set rule: {r2['token_ids']} vs {want_ids}")
        t.check([(h["layer"], h["neuron"]) for h in r2["results"]] == [w[:2] for w in md.index_hits(want_ids, 8)],
                "--set results differ from the token index merge")
        print(f"  --set animals: {len(want_ids)} tokens; /concepts in the map = the concepts file resolved here "
              "= the rule applied to /vocab/text")

        # -- --csv = --json; a map without entropy/margin -------------------------------------------
        p = t.analysis("search", syn, " Golden Gate", "--top", "5", "--csv")
        t.check(p.returncode == 0, f"--csv: {p.stderr}")
        rows = list(csv.DictReader(io.StringIO(p.stdout)))
        j = t.analysis_json("search", syn, " Golden Gate", "--top", "5")
        want = [("token", h) for h in j["results"]]
        for m_ in j["multi_token"]:
            want += [("first:" + m_["text"], h) for h in m_["by_first_token"]]
            want += [("sum_top:" + m_["text"], h) for h in m_["by_sum_logp_top"]]
        t.check([(r_["match"], int(r_["layer"]), int(r_["neuron"])) for r_ in rows] ==
                [(k, h["layer"], h["neuron"]) for k, h in want], "--csv rows differ from --json")
        rb = t.analysis_json("search", bare, "dog", "--top", "10")
        check_stats("map without /up/entropy", rb["results"], mb)
        t.check(rb["results"][0]["layer"] == plant_layer, f"bare map: {rb['results'][0]}")
        p = t.analysis("search", bare, "dog")
        t.check("estimate from the top-k" in p.stdout, f"text output does not say estimate:\n{p.stdout}")
        print("  --csv = --json; a map without /up/entropy: float64 top-k estimate and the stored margin")

        # -- refusals: one line ------------------------------------------------------------------------
        for args, words in (((syn, "--regex", "["), ("regex",)), ((syn, "--set", "plants"), ("plants", "animals")),
                            ((nomap, "--set", "animals"), ("--concepts",)), ((syn, "dog", "--variants", "tense"),
                                                                             ("tense",))):
            p = t.analysis("search", *args)
            t.check(t.one_line_error(p, *words), f"search {args[1:]}: {p.returncode} {p.stderr!r}")
        p = t.analysis("search", syn, "dog", "--regex", "x")
        t.check(p.returncode == 2 and "exactly one" in p.stderr, f"word and --regex: {p.stderr!r}")
        print("  refused with one line: a bad regex, an unknown set, a set without a concepts file, "
              "an unknown variant kind")


if __name__ == "__main__":
    t.main(main)
