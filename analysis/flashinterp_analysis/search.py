"""search: which neurons of a flashinterp map stand for a word? The word becomes token ids through
the map's own vocabulary (as typed, with and without a leading space; --case adds lower, UPPER and
Capitalised forms), and the map's token index (/<matrix>/token_index, written by
`flashinterp decode --token-index M`) gives the neurons that give those tokens the highest
probability. Each neuron is listed once, with its own top tokens.

    analysis/search map.h5 dog [--matrix up] [--top 20] [--case] [--tokens 5] [--json] [--partial]
A map decoded without an index is searched by a scan of every neuron's stored top-k instead (said
in the output): then only neurons holding the token in their top-k are found.
"""
import argparse
import sys

import flashinterp_map as fm


def parse_args(argv):
    p = argparse.ArgumentParser(prog="search", description=__doc__.split("\n\n")[0],
                                epilog="exit status: 0 found, 1 error or no variant of the word is one token")
    p.add_argument("map", help="the HDF5 map written by `flashinterp decode`")
    p.add_argument("word", help="the word to look up (a leading space is added and removed automatically)")
    p.add_argument("--matrix", default="up", choices=fm.MATRICES, help="which MLP matrix (default up)")
    p.add_argument("--top", type=int, default=20, metavar="N", help="neurons to list (default 20)")
    p.add_argument("--case", action="store_true", help="also try lower case, UPPER case and Capitalised")
    p.add_argument("--tokens", type=int, default=5, metavar="K",
                   help="top tokens printed for each neuron (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--partial", action="store_true", help="read a map whose decode did not finish")
    a = p.parse_args(argv)
    if a.top < 1 or a.tokens < 0:
        p.error("--top must be >= 1 and --tokens >= 0")
    return a


def run(argv):
    a = parse_args(argv)
    variants = fm.word_variants(a.word, case=a.case)   # refuses an empty / white-space word
    with fm.open_map(a.map, partial=a.partial) as m:
        m.group(a.matrix)
        found = m.find_tokens(variants)
        ids = sorted({i for v in found.values() for i in v})
        if not ids:
            missing = ", ".join(repr(v) for v in variants)
            raise fm.MapError(f"{a.map}: no variant of {a.word!r} is a single token in this map's vocabulary "
                              f"(tried {missing})")
        info = {}
        hits, source = m.search(a.matrix, ids, a.top, info=info)
        index_m = m.token_index_m(a.matrix)
        tops = m.neurons_top(a.matrix, list(zip(hits["layer"], hits["neuron"])), k=a.tokens)
        token_text = dict(zip(ids, m.token_text(ids)))
        layers_searched = len(m.layers(a.matrix))
        top_k = m.top_k(a.matrix)
    result = dict(
        map=a.map, matrix=a.matrix, word=a.word, case=a.case, source=source, token_index_m=index_m,
        note=info.get("note"),
        variants=[dict(text=v, token_ids=found[v]) for v in variants],
        results=[dict(rank=r, layer=int(h["layer"]), neuron=int(h["neuron"]), prob=float(h["prob"]),
                      token_id=int(h["token"]), token=token_text[int(h["token"])],
                      neuron_top=fm.tokens_json(t))
                 for r, (h, t) in enumerate(zip(hits, tops), 1)])
    if a.json:
        fm.print_json(result)
        return 0
    tok = ", ".join(f"{token_text[i]!r} ({i})" for i in ids)
    absent = [v for v in variants if not found[v]]
    print(f"{a.map}: /{a.matrix}, {a.word!r} -> token(s) {tok}"
          + (f"; not single tokens: {', '.join(map(repr, absent))}" if absent else ""))
    if source == "token_index":
        print(f"source: token index (the best {index_m} neurons of each token over {layers_searched} layers)"
              + (f"; --top {a.top} > M: at most {index_m} per token" if a.top > index_m else ""))
    elif index_m == 0:
        print(f"source: scan of every neuron's stored top-k (this map has no token index): only neurons "
              f"that hold the token in their top-{top_k} are found")
    else:
        print(f"source: scan of every neuron's stored top-k (this map's token index cannot be used): only "
              f"neurons that hold the token in their top-{top_k} are found")
    if result["note"]:
        print("note: " + result["note"])
    if not len(hits):
        print("no neuron found")
        return 0
    print(f"{'rank':>4}  {'layer':>5}  {'neuron':>6}  {'prob':>10}  {'token':<14}  top tokens of the neuron")
    for r in result["results"]:
        own = ", ".join(f"{fm.short(x['token'])} {x['prob']:.3g}" for x in r["neuron_top"])
        print(f"{r['rank']:>4}  {r['layer']:>5}  {r['neuron']:>6}  {r['prob']:>10.6f}  "
              f"{fm.short(r['token'], 14):<14}  {own}")
    return 0


main = fm.command("search", run)  # flashinterp-search, analysis/search


if __name__ == "__main__":
    sys.exit(main())
