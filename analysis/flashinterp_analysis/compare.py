"""compare: the same matrix of two flashinterp maps (e.g. a pretrained model and its Instruct
fine-tune), layer by layer: the share of neurons whose top-1 token is the same (the paper's
statistic: 75.4% of up_proj neurons for Llama 3.1 8B vs 8B Instruct), the share whose A top-1 is
anywhere in B's top-k, the Jaccard overlap |A & B| / |A | B| of the top-k token sets, and the
neurons that changed most (lowest Jaccard; ties: top-1 changed, then the more confident neuron).

    analysis/compare A.h5 B.h5 [--matrix up] [--out DIR] [--most 20] [--json] [--partial]
Both maps must hold the same layers, neuron count and top-k, and the same vocabulary (bytes and
special flags). With --out: compare_layers.csv (one row per layer and an `all` row),
compare_changed.csv, compare.json, and top1_agreement.png, top1_in_topk.png, jaccard.png.
Format version 2 maps (mixture of experts): --matrix moe/up (or plain up where the map has no
dense up) compares the routed experts per layer (pooled over the experts) and per (layer, expert)
(also compare_experts.csv with --out); shared/up like a dense matrix.
"""
import argparse
import csv
import os
import sys

import flashinterp_map as fm

COLUMNS = ["same_top1", "same_top1_share", "top1_in_other_topk_share", "jaccard_mean", "jaccard_median",
           "jaccard_q25", "jaccard_q75"]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="compare", description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="map A (e.g. the base model's)")
    p.add_argument("b", help="map B (e.g. the fine-tuned model's)")
    p.add_argument("--matrix", default="up", choices=fm.GROUPS,
                   help="which MLP matrix (default up); version 2 maps also moe/up... and shared/up...")
    p.add_argument("--out", metavar="DIR", help="write CSV, JSON and PNG plots into DIR")
    p.add_argument("--most", type=int, default=20, metavar="N", help="most-changed neurons to list (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.add_argument("--partial", action="store_true",
                   help="read maps whose decode did not finish; only neurons whose chunk is marked done in "
                        "both maps count (the output says how many were left out)")
    a = p.parse_args(argv)
    if a.most < 0:
        p.error("--most must be >= 0")
    return a


def write_csv(res, out):
    per = res["per_layer"]
    with open(os.path.join(out, "compare_layers.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "neurons", *COLUMNS])
        for i, layer in enumerate(res["layers"]):
            w.writerow([layer, per["neurons"][i], *(per[c][i] for c in COLUMNS)])
        o = res["overall"]
        w.writerow(["all", o["neurons"], o["same_top1"], o["same_top1_share"], o["top1_in_other_topk_share"],
                    o["jaccard_mean"], o["jaccard_median"], "", ""])
    if "per_expert" in res:
        with open(os.path.join(out, "compare_experts.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "expert", "neurons", *COLUMNS])
            for r in res["per_expert"]:
                w.writerow([r["layer"], r["expert"], r["neurons"], *(r[c] for c in COLUMNS)])
    with open(os.path.join(out, "compare_changed.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", *(["expert"] if "per_expert" in res else []), "neuron", "jaccard", "same_top1", "a_top1", "a_top1_prob", "b_top1", "b_top1_prob",
                    "a_top5", "b_top5"])
        for c in res["most_changed"]:
            a1 = c["a_top"][0] if c["a_top"] else dict(token="", prob=float("nan"))
            b1 = c["b_top"][0] if c["b_top"] else dict(token="", prob=float("nan"))
            w.writerow([c["layer"], *([c["expert"]] if "per_expert" in res else []), c["neuron"], c["jaccard"], int(c["same_top1"]), a1["token"], a1["prob"],
                        b1["token"], b1["prob"], " | ".join(x["token"] for x in c["a_top"]),
                        " | ".join(x["token"] for x in c["b_top"])])
    with open(os.path.join(out, "compare.json"), "w") as f:
        old = sys.stdout
        sys.stdout = f
        try:
            fm.print_json(res)
        finally:
            sys.stdout = old


def plot(res, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    per, o, layers = res["per_layer"], res["overall"], res["layers"]
    title = f"/{res['matrix']}: {os.path.basename(res['a'])} vs {os.path.basename(res['b'])}"
    paths = []
    for name, key, ylabel, overall in (
            ("top1_agreement.png", "same_top1_share", "neurons with the same top-1 token (share)",
             o["same_top1_share"]),
            ("top1_in_topk.png", "top1_in_other_topk_share", "neurons whose A top-1 is in B's top-k (share)",
             o["top1_in_other_topk_share"])):
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(layers, per[key], color="#4878a8")
        ax.axhline(overall, color="#c44e52", ls="--", label=f"all layers: {overall:.1%}")
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=100)
        plt.close(fig)
        paths.append(name)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.fill_between(layers, per["jaccard_q25"], per["jaccard_q75"], color="#4878a8", alpha=0.3,
                    label="25-75% of neurons", step="mid")
    ax.plot(layers, per["jaccard_mean"], "o-", color="#4878a8", label="mean")
    ax.plot(layers, per["jaccard_median"], "s--", color="#55a868", label="median")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"top-{res['top_k']} Jaccard overlap |A\u2229B| / |A\u222aB|")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "jaccard.png"), dpi=100)
    plt.close(fig)
    return paths + ["jaccard.png"]


def print_text(res):
    o = res["overall"]
    print(f"compare /{res['matrix']}: A = {res['a']}, B = {res['b']}")
    print(f"{len(res['layers'])} layers x {res['neurons']} neurons, top-{res['top_k']}")
    print(f"{'layer':>5}  {'same top-1':>10}  {'share':>7}  {'A top-1 in B top-k':>18}  "
          f"{'Jaccard mean':>12}  {'median':>6}")
    per = res["per_layer"]
    for i, layer in enumerate(res["layers"]):
        print(f"{layer:>5}  {per['same_top1'][i]:>10}  {per['same_top1_share'][i]:>7.2%}  "
              f"{per['top1_in_other_topk_share'][i]:>18.2%}  {per['jaccard_mean'][i]:>12.4f}  "
              f"{per['jaccard_median'][i]:>6.3f}")
    print(f"{'all':>5}  {o['same_top1']:>10}  {o['same_top1_share']:>7.2%}  {o['top1_in_other_topk_share']:>18.2%}  "
          f"{o['jaccard_mean']:>12.4f}  {o['jaccard_median']:>6.3f}")
    print(f"overall: {o['same_top1_share']:.1%} of {o['neurons']} neurons keep their top-1 token")
    moe = "per_expert" in res
    if moe:
        print(f"per expert ({len(res['experts'])} experts per layer):")
        print(f"{'layer':>5}  {'expert':>6}  {'neurons':>7}  {'same top-1':>10}  {'share':>7}  {'Jaccard mean':>12}")
        for r in res["per_expert"]:
            print(f"{r['layer']:>5}  {r['expert']:>6}  {r['neurons']:>7}  {r['same_top1']:>10}  "
                  f"{r['same_top1_share']:>7.2%}  {r['jaccard_mean']:>12.4f}")
    if res["most_changed"]:
        print(f"most changed neurons (lowest top-{res['top_k']} Jaccard):")
        print(f"{'layer':>5}  {'expert  ' if moe else ''}{'neuron':>6}  {'Jaccard':>7}  A top tokens  ->  B top tokens")
        for c in res["most_changed"]:
            ta = ", ".join(fm.short(x["token"]) for x in c["a_top"][:3])
            tb = ", ".join(fm.short(x["token"]) for x in c["b_top"][:3])
            ex = f"{c['expert']:>6}  " if moe else ""
            print(f"{c['layer']:>5}  {ex}{c['neuron']:>6}  {c['jaccard']:>7.3f}  {ta}  ->  {tb}")


def run(argv):
    a = parse_args(argv)
    with fm.open_map(a.a, partial=a.partial) as ma, fm.open_map(a.b, partial=a.partial) as mb:
        g = ma.resolve(a.matrix)
        res = fm.compare_maps(ma, mb, g, most=a.most)
        na, nb = ma.attrs.get("norm"), mb.attrs.get("norm")
    res["warnings"] = [f"norm differs: A {na}, B {nb}"] if na != nb else []
    if res["left_out"]:
        total = res["left_out"] + res["overall"]["neurons"]
        res["warnings"].append(f"partial map: {res['left_out']} of {total} neurons left out (their chunk is "
                               f"not marked done in both maps); the statistics cover the other "
                               f"{res['overall']['neurons']}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        res["files"] = (["compare_layers.csv"] + (["compare_experts.csv"] if "per_expert" in res else [])
                        + ["compare_changed.csv", "compare.json"] + plot(res, a.out))
        write_csv(res, a.out)
    if a.json:
        fm.print_json(res)
    else:
        for w in res["warnings"]:
            print("warning: " + w)
        print_text(res)
        if a.out:
            print(f"wrote {', '.join(res['files'])} to {a.out}")
    return 0


main = fm.command("compare", run)  # flashinterp-compare, analysis/compare


if __name__ == "__main__":
    sys.exit(main())
