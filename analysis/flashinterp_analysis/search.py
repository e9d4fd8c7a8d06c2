"""search: which neurons of a flashinterp map stand for a word, a pattern or a concept? A word
becomes token ids through the map's own vocabulary: as typed, with and without a leading space,
and with --variants case,plural,inflect,script (or all) more spellings, each reported on its own.
A spelling that is one token is looked up in the map's token index (/<matrix>/token_index,
`flashinterp decode --token-index M`): the neurons that give it the highest probability. A
spelling that is several tokens (" Golden Gate", " Zürich" in a small vocabulary) is split
(greedy longest match over the vocabulary) and matched two ways, both reported: by its first
token (the token index), and by the sum of its tokens' log-probabilities over each neuron's
stored top (and bottom) list, which finds only neurons that hold every one of its tokens.
--regex PATTERN searches every token whose text matches; --set NAME a concept set (the map's
/concepts/NAME, or --concepts FILE resolved against the vocabulary). Each neuron is listed once,
with its entropy, margin and own top tokens.

    analysis/search map.h5 dog [--variants all] [--matrix up] [--top 20] [--json | --csv]
    analysis/search map.h5 --regex '^ ?[Dd]og' | --set animals [--concepts concepts.json]
A map decoded without an index is searched by a scan of every neuron's stored top-k instead (said
in the output): then only neurons holding the token in their top-k are found.
A format version 2 map (mixture of experts) is searched over every group of the matrix (dense
/up, routed /moe/up, shared /shared/up; --matrix moe/up keeps one group): each hit names its
group, layer, expert and neuron (text "moe/up L3 E5 N17"; JSON and CSV: group, expert), the
multi-token sum-of-log-probabilities match too. Equal scores are listed by layer id, then group
(dense, moe/, shared/), then expert, then neuron.
"""
import argparse
import csv
import sys

import numpy as np

import flashinterp_map as fm
from flashinterp_analysis import concepts as cc


def parse_args(argv):
    p = argparse.ArgumentParser(prog="search", description=__doc__.split("\n\n")[0],
                                epilog="exit status: 0 searched (maybe nothing found), 1 error")
    p.add_argument("map", help="the HDF5 map written by `flashinterp decode`")
    p.add_argument("word", nargs="?", help="the word to look up (a leading space is added and removed "
                                           "automatically)")
    p.add_argument("--matrix", default="up", choices=fm.GROUPS,
                   help="which MLP matrix (default up; on a version 2 map every group of it, or one group: moe/up...)")
    p.add_argument("--top", type=int, default=20, metavar="N", help="neurons to list (default 20)")
    p.add_argument("--variants", default="", metavar="KINDS", help=cc.VARIANTS_HELP)
    p.add_argument("--case", action="store_true", help="the same as --variants case")
    p.add_argument("--regex", metavar="PATTERN", help="search every token whose text matches (Python re)")
    p.add_argument("--set", metavar="NAME", help="search a concept set's tokens")
    p.add_argument("--concepts", metavar="FILE", help="concepts file (JSON name -> words) for --set when "
                                                      "the map has no /concepts/NAME")
    p.add_argument("--tokens", type=int, default=5, metavar="K",
                   help="top tokens printed for each neuron (default 5)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    out.add_argument("--csv", action="store_true", help="print the results as CSV (one row per neuron)")
    p.add_argument("--partial", action="store_true", help="read a map whose decode did not finish")
    a = p.parse_args(argv)
    if a.top < 1 or a.tokens < 0:
        p.error("--top must be >= 1 and --tokens >= 0")
    if sum(x is not None for x in (a.word, a.regex, a.set)) != 1:
        p.error("give exactly one of: a word, --regex PATTERN, --set NAME")
    return a


def _neurons(m, keys, k):
    """{key: (NeuronTokens, stats dict)} for keys (group, layer, expert, neuron), expert None
    outside moe/*; one read per (group, layer, expert) slice."""
    by_unit = {}
    for g, lay, e, n in keys:
        by_unit.setdefault((g, lay, e), set()).add(int(n))
    out = {}
    for (g, lay, e), ns in by_unit.items():
        ns = sorted(ns)
        tops = m.neurons_top(g, [(lay, n) if e is None else (lay, e, n) for n in ns], k=k)
        s = m.stats(g, lay, ns, expert=e)
        for j, (n, t) in enumerate(zip(ns, tops)):
            out[(g, lay, e, n)] = (t, dict(entropy=float(s["entropy"][j]), entropy_exact=s["entropy_exact"],
                                           margin=float(s["margin"][j])))
    return out


def _key(m, matrix, h):
    """(group, layer, expert, neuron) of a search hit."""
    if m.version < 2:
        return (matrix, int(h["layer"]), None, int(h["neuron"]))
    return (fm.group_name(h["group"], matrix), int(h["layer"]), None if h["expert"] < 0 else int(h["expert"]),
            int(h["neuron"]))


def _rows(m, matrix, hits, text, neurons):
    """Result rows from a hit array of flashinterp_map.search; neurons: {key: (tokens, stats)}.
    A version 2 map's rows also name the group and the expert (None outside moe/*)."""
    rows = []
    for r, h in enumerate(hits, 1):
        key = _key(m, matrix, h)
        t, st = neurons[key]
        where = dict(group=key[0], expert=key[2]) if m.version >= 2 else {}
        rows.append(dict(rank=r, layer=int(h["layer"]), neuron=int(h["neuron"]), **where, prob=float(h["prob"]),
                         token_id=int(h["token"]), token=text[int(h["token"])], **st,
                         neuron_top=fm.tokens_json(t)))
    return rows


def _multi_key(matrix, hit):
    """(group, layer, expert, neuron) of a concepts.multi_token_hits hit."""
    s, lay, code, e, n = hit
    return (fm.group_name(code, matrix), lay, None if e < 0 else e, n)


def _multi_rows(m, matrix, cand, neurons):
    """Result rows of multi_token_hits' hits; a version 2 map's also name the group and expert."""
    rows = []
    for r, h in enumerate(cand, 1):
        key = _multi_key(matrix, h)
        t, st = neurons[key]
        where = dict(group=key[0], expert=key[2]) if m.version >= 2 else {}
        rows.append(dict(rank=r, layer=key[1], neuron=key[3], **where, sum_logp=h[0], **st,
                         neuron_top=fm.tokens_json(t)))
    return rows


def search(m, lex, matrix, word=None, kinds=(), regex=None, set_name=None, concepts_file=None, top=20,
           tokens=5):
    """The whole search as one JSON-able dict (what --json prints; serve shows the same)."""
    # Version 1, or one group: that group; a version 2 map's plain matrix: every group of it.
    groups = m.index_groups(matrix) if m.version >= 2 and matrix in fm.MATRICES else []
    if not groups:
        m.group(matrix)         # refuses a group the map does not hold, naming those present
        groups = [matrix]
    text = lex.text
    res = dict(map=m.path, matrix=matrix, word=word, regex=regex, set=set_name, variant_kinds=list(kinds),
               token_index_m=m.token_index_m(matrix), top_k=max(m.top_k(g) for g in groups),
               layers_searched=len({int(x) for g in groups for x in m.layers(g)}), variants=[], multi_token=[])
    if m.version >= 2:
        res["groups"] = groups
    if word is not None:
        for v, how in cc.variants(word, kinds):
            ids = lex.single(v)
            split = None if ids else lex.split(v)
            res["variants"].append(dict(text=v, how=how, token_ids=ids, split=split,
                                        split_text=[str(text[i]) for i in split] if split else None))
        ids = sorted({i for v in res["variants"] for i in v["token_ids"]})
        res["query"] = "word"
    elif regex is not None:
        ids = lex.regex_ids(regex).tolist()
        res["query"] = "regex"
        res["matched_tokens"] = len(ids)
    else:
        ids, res["set_source"] = cc.concept_set(m, lex, set_name, concepts_file)
        ids = [int(i) for i in ids]
        res["query"] = "set"
        res["matched_tokens"] = len(ids)
    res["token_ids"] = ids
    info = {}
    if ids:
        hits, res["source"] = m.search(matrix, ids, top, info=info)
    else:
        hits, res["source"] = np.zeros(0, fm.HIT_DTYPE), None
    res["note"] = info.get("note")
    multi, seen = [], set()
    for v in res["variants"]:
        if v["split"] and len(v["split"]) >= 2 and tuple(v["split"]) not in seen:
            seen.add(tuple(v["split"]))
            multi.append(v)
    scored = cc.multi_token_hits(m, groups, [v["split"] for v in multi], top) if multi else []
    first = {}                      # first token -> (hits, source), each searched once
    for v in multi:
        if v["split"][0] not in first:
            first[v["split"][0]] = m.search(matrix, v["split"][:1], top)
    # Every neuron listed anywhere, read once (one read per layer).
    keys = {_key(m, matrix, h) for h in hits}
    keys |= {_key(m, matrix, h) for f, _ in first.values() for h in f}
    keys |= {_multi_key(matrix, h) for sc in scored for part in sc.values() if part for h in part}
    neurons = _neurons(m, sorted(keys, key=lambda x: (x[0], x[1], -1 if x[2] is None else x[2], x[3])), tokens)
    res["results"] = _rows(m, matrix, hits, text, neurons)
    for v, sc in zip(multi, scored):
        fh, src = first[v["split"][0]]
        res["multi_token"].append(dict(
            text=v["text"], split=v["split"], split_text=v["split_text"], first_token_source=src,
            by_first_token=_rows(m, matrix, fh, text, neurons),
            by_sum_logp_top=_multi_rows(m, matrix, sc["top"], neurons),
            by_sum_logp_bottom=None if sc["bottom"] is None else _multi_rows(m, matrix, sc["bottom"], neurons)))
    return res


def run(argv):
    a = parse_args(argv)
    kinds = cc.parse_kinds(a.variants + (",case" if a.case else ""))
    if a.word is not None:
        cc.variants(a.word)     # refuses an empty / white-space word before the map is read
    with fm.open_map(a.map, partial=a.partial) as m:
        lex = cc.Lexicon(m)
        res = search(m, lex, a.matrix, a.word, kinds, a.regex, a.set, a.concepts, a.top, a.tokens)
    if a.json:
        fm.print_json(res)
    elif a.csv:
        print_csv(res)
    else:
        print_table(res)
    return 0


CSV_FIELDS = ("match", "rank", "layer", "neuron", "prob", "sum_logp", "token_id", "token", "entropy",
              "entropy_exact", "margin", "neuron_top")


def print_csv(res):
    """One row per listed neuron: match = 'token' (the single-token search), 'first:<text>' or
    'sum_top:<text>' / 'sum_bottom:<text>' for a multi-token spelling."""
    w = csv.writer(sys.stdout, lineterminator="\n")
    v2 = "groups" in res        # a version 2 map: group and expert columns after the rank
    w.writerow(CSV_FIELDS[:2] + ("group", "layer", "expert") + CSV_FIELDS[3:] if v2 else CSV_FIELDS)

    def emit(match, rows):
        for r in rows or []:
            top = " ".join(f"{x['id']}:{x['prob']:.6g}" for x in r["neuron_top"])
            where = ([r["group"], r["layer"], "" if r["expert"] is None else r["expert"]] if v2 else [r["layer"]])
            w.writerow([match, r["rank"], *where, r["neuron"], r.get("prob", ""), r.get("sum_logp", ""),
                        r.get("token_id", ""), r.get("token", ""), f"{r['entropy']:.6g}",
                        int(r["entropy_exact"]), f"{r['margin']:.6g}", top])
    emit("token", res["results"])
    for mt in res["multi_token"]:
        emit("first:" + mt["text"], mt["by_first_token"])
        emit("sum_top:" + mt["text"], mt["by_sum_logp_top"])
        emit("sum_bottom:" + mt["text"], mt["by_sum_logp_bottom"])


def _table(rows, score):
    if not rows:
        print("  none")
        return
    v2 = "group" in rows[0]     # a version 2 map: the neuron named as "moe/up L3 E5 N17"
    where = f"{'neuron':<24}" if v2 else f"{'layer':>5}  {'neuron':>6}"
    print(f"{'rank':>4}  {where}  {score:>10}  {'entropy':>7}  {'margin':>7}  "
          f"{'token':<14}  top tokens of the neuron")
    for r in rows:
        own = ", ".join(f"{fm.short(x['token'])} {x['prob']:.3g}" for x in r["neuron_top"])
        val = r["prob"] if "prob" in r else r["sum_logp"]
        where = (f"{fm.neuron_label(r['group'], r['layer'], r['expert'], r['neuron']):<24}" if v2 else
                 f"{r['layer']:>5}  {r['neuron']:>6}")
        print(f"{r['rank']:>4}  {where}  {val:>10.6g}  {r['entropy']:>7.3f}  "
              f"{r['margin']:>7.3f}  {fm.short(r.get('token', ''), 14):<14}  {own}")


def print_table(res):
    mat, text_of = res["matrix"], {}
    if res["query"] == "word":
        print(f"{res['map']}: /{mat}, {res['word']!r}, variants:")
        for v in res["variants"]:
            if v["token_ids"]:
                what = "token " + ", ".join(map(str, v["token_ids"]))
            elif v["split"]:
                what = f"{len(v['split'])} tokens " + " + ".join(repr(s) for s in v["split_text"])
            else:
                what = "no split"
            print(f"  {v['text']!r:<24} ({v['how']}): {what}")
            text_of.update((i, v["text"]) for i in v["token_ids"])
    elif res["query"] == "regex":
        print(f"{res['map']}: /{mat}, --regex {res['regex']!r}: {res['matched_tokens']} tokens")
    else:
        print(f"{res['map']}: /{mat}, --set {res['set']!r}: {res['matched_tokens']} tokens from "
              f"{res['set_source']}")
    m = res["token_index_m"]
    if res["source"] == "token_index":
        print(f"source: token index (the best {m} neurons of each token over {res['layers_searched']} layers)")
    elif res["source"] and m == 0:
        print(f"source: scan of every neuron's stored top-k (this map has no token index): only neurons "
              f"that hold the token in their top-{res['top_k']} are found")
    elif res["source"]:
        print(f"source: scan of every neuron's stored top-k (this map's token index cannot be used): only "
              f"neurons that hold the token in their top-{res['top_k']} are found")
    if res.get("groups"):
        print("groups: " + ", ".join("/" + g for g in res["groups"]))
    if res["note"]:
        print("note: " + res["note"])
    ent = res["results"][0]["entropy_exact"] if res["results"] else None
    if ent is not None:
        src = "/" + mat + "/entropy" if not res.get("groups") else "each group's /entropy"
        print("entropy: " + ("exact (" + src + ")" if ent else
                             "estimate from the top-k (the rest spread evenly, an upper bound)"))
    if res["token_ids"]:
        print("single-token matches:" if res["results"] else "single-token matches: no neuron found")
        if res["results"]:
            _table(res["results"], "prob")
    for mt in res["multi_token"]:
        print(f"multi-token {mt['text']!r} = " + " + ".join(repr(s) for s in mt["split_text"]))
        print(f"  by its first token {mt['split_text'][0]!r} ({mt['first_token_source']}):")
        _table(mt["by_first_token"], "prob")
        print("  by the sum of its tokens' log-probabilities over each neuron's stored top list "
              f"(neurons holding all {len(mt['split'])} tokens):")
        _table(mt["by_sum_logp_top"], "sum logp")
        if mt["by_sum_logp_bottom"] is not None:
            print("  ... over the stored bottom lists (lowest sum first: neurons that suppress it):")
            _table(mt["by_sum_logp_bottom"], "sum logp")
    if not res["token_ids"] and not res["multi_token"]:
        print("no variant is a token or splits into tokens; nothing searched")


main = fm.command("search", run)  # flashinterp-search, analysis/search


if __name__ == "__main__":
    sys.exit(main())
