"""export: every neuron of a flashinterp map as JSON Lines and CSV, for tools outside Python.

    analysis/export map.h5 --out DIR [--matrix up] [--tokens 20] [--partial]
Writes DIR/neurons.jsonl (one object per neuron: matrix, layer, expert, neuron, entropy,
entropy_exact, margin, margin_exact, logsumexp, top: [{id, token, prob}], bottom when the map has
bottom lists) and DIR/neurons.csv (the same, one row per neuron, top tokens as columns
top1_id, top1_token, top1_prob, ...). expert is null / empty: format version 1 has no experts.
A format version 2 map (mixture of experts) exports every group (default) with a group column
after matrix ("up", "moe/up", "shared/up"; matrix is then the plain matrix name) and the expert id
of each routed neuron (null / empty outside moe/*).
Entropy and margin are the map's exact /<matrix>/entropy and /margin where it has them, else the
top-k estimate (an upper bound) and the stored top-1 minus top-2 logit (entropy_exact says which).
Neurons of a partial map whose chunk is not marked done are left out. Read a layer at a time.
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

import flashinterp_map as fm


def parse_args(argv):
    p = argparse.ArgumentParser(prog="export", description=__doc__.split("\n\n")[0])
    p.add_argument("map", help="the HDF5 map written by `flashinterp decode`")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--matrix", choices=fm.GROUPS, action="append",
                   help="matrix (or version 2 group, e.g. moe/up) to export (repeatable; default every one in the map)")
    p.add_argument("--tokens", type=int, default=20, metavar="K", help="top tokens per neuron (default 20)")
    p.add_argument("--partial", action="store_true", help="read a map whose decode did not finish")
    a = p.parse_args(argv)
    if a.tokens < 1:
        p.error("--tokens must be >= 1")
    return a


def _fmt(x):
    """A float for CSV/JSON: the shortest decimal that reads back as the same float32 (the stored
    precision; half the digits of the float64 repr); NaN and inf as None."""
    x = float(x)
    return float(str(np.float32(x))) if np.isfinite(x) else None


def layer_records(m, matrix, layer, k, text, written, expert=None):
    """The records of one layer's (one expert's) written neurons, as dicts (plain Python values)."""
    li = m.pos(matrix, layer, expert)
    b = m._block(matrix, li, slice(None), ("top_ids", "top_probs"))
    ids, probs, lse = b["top_ids"][:, :k], b["top_probs"][:, :k], b["lse"]
    st = m.stats(matrix, layer, expert=expert)
    where = (dict(matrix=matrix, layer=int(layer), expert=None) if m.version < 2 else
             dict(matrix=fm.base_matrix(matrix), group=matrix, layer=int(layer), expert=expert))
    bot = None
    if "bottom_ids" in m.group(matrix):
        bb = m._block(matrix, li, slice(None), ("bottom_ids", "bottom_logits"))
        bot = (bb["bottom_ids"][:, :k], bb["bottom_logits"][:, :k].astype(np.float64))
    for n in np.nonzero(written)[0]:
        keep = ids[n] >= 0
        rec = dict(**where, neuron=int(n),
                   entropy=_fmt(st["entropy"][n]), entropy_exact=st["entropy_exact"],
                   margin=_fmt(st["margin"][n]), margin_exact=st["margin_exact"], logsumexp=_fmt(lse[n]),
                   top=[dict(id=int(i), token=str(text[i]), prob=_fmt(p))
                        for i, p in zip(ids[n][keep], probs[n][keep])])
        if bot is not None:
            bk = bot[0][n] >= 0
            with np.errstate(over="ignore"):
                bp = np.exp(bot[1][n][bk] - float(lse[n]))
            rec["bottom"] = [dict(id=int(i), token=str(text[i]), prob=_fmt(p)) for i, p in zip(bot[0][n][bk], bp)]
        yield rec


def run(argv):
    a = parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    with fm.open_map(a.map, partial=a.partial) as m:
        mats = list(dict.fromkeys(m.resolve(x) for x in a.matrix)) if a.matrix else m.groups()
        for mat in mats:
            m.group(mat)
        text = m.vocab_text()
        k = min(a.tokens, max(m.top_k(mat) for mat in mats))
        cols = ["matrix", *(["group"] if m.version >= 2 else []), "layer", "expert", "neuron", "entropy",
                "entropy_exact", "margin", "margin_exact", "logsumexp"]
        head = len(cols)
        cols += [f"top{j}_{f}" for j in range(1, k + 1) for f in ("id", "token", "prob")]
        count = 0
        jpath, cpath = os.path.join(a.out, "neurons.jsonl"), os.path.join(a.out, "neurons.csv")
        try:     # written as .tmp and renamed: a refused (corrupt) map leaves nothing behind
            with open(jpath + ".tmp", "w", encoding="utf-8") as jf, \
                    open(cpath + ".tmp", "w", encoding="utf-8", newline="") as cf:
                w = csv.writer(cf)
                w.writerow(cols)
                for mat in mats:
                    written = m.written_mask(mat)
                    for pos, layer, expert in m.units(mat):
                        for rec in layer_records(m, mat, layer, k, text, written[pos], expert):
                            jf.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
                            row = [rec[c] for c in cols[:head]]
                            row = ["" if x is None else int(x) if isinstance(x, bool) else x for x in row]
                            for t in rec["top"]:
                                row += [t["id"], t["token"], t["prob"]]
                            w.writerow(row + [""] * (len(cols) - len(row)))
                            count += 1
        except BaseException:
            for tmp in (jpath + ".tmp", cpath + ".tmp"):
                if os.path.exists(tmp):
                    os.remove(tmp)
            raise
        os.replace(jpath + ".tmp", jpath)
        os.replace(cpath + ".tmp", cpath)
    print(f"{a.map}: {count} neurons of {', '.join('/' + x for x in mats)} -> {jpath}, {cpath}")
    return 0


main = fm.command("export", run)  # flashinterp-export, analysis/export


if __name__ == "__main__":
    sys.exit(main())
