"""show: print what one neuron of a flashinterp map stands for (its top tokens by LM-head decoding),
its log-sum-exp, its entropy (exact where the map has /<matrix>/entropy, else an estimate from the
top-k) and its margin (top-1 minus top-2 logit).

    analysis/show map.h5 --layer 20 --neuron 1234 [--matrix up] [--top 20] [--json] [--partial]
    analysis/show moe.h5 --matrix moe/up --layer 3 --expert 5 --neuron 17     (format version 2)
    analysis/show moe.h5 --layer 3 --expert 5 [--list 20]    (that expert's most specialised neurons)
On a version 2 map --expert with a plain --matrix up means the routed group moe/up.
Runs with Debian's /usr/bin/python3 (numpy + h5py); the reader is flashinterp_map.
"""
import argparse
import sys

import numpy as np

import flashinterp_map as fm

ENTROPY_HELP = ("entropy (nats) of the neuron's next-token distribution, estimated from the stored "
                "top-k: the top-k terms are exact; the remaining mass 1 - sum(top-k) is taken as spread "
                "evenly over the other V - k tokens (the estimate, an upper bound); the lower bound packs "
                "it into as few tokens as the k-th probability allows")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="show", description="Print a neuron's top tokens (probability, logit) from a flashinterp map, "
        "with its log-sum-exp and " + ENTROPY_HELP + ".")
    p.add_argument("map", help="the HDF5 map written by `flashinterp decode`")
    p.add_argument("--layer", type=int, required=True, help="model layer id (as in the checkpoint)")
    p.add_argument("--neuron", type=int, help="neuron index in the layer (or the expert); without it, "
                   "--expert E lists that expert's most specialised neurons")
    p.add_argument("--matrix", default="up", choices=fm.GROUPS,
                   help="which MLP matrix (default up); version 2 maps also moe/up... (routed experts) and "
                        "shared/up... (shared experts)")
    p.add_argument("--expert", type=int, metavar="E", help="expert id (format version 2, routed experts)")
    p.add_argument("--list", type=int, default=20, metavar="N",
                   help="with --expert and no --neuron: how many neurons to list (default 20)")
    p.add_argument("--top", type=int, default=None, metavar="K", help="show only the first K tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.add_argument("--partial", action="store_true", help="read a map whose decode did not finish")
    p.add_argument("--sweep", metavar="SWEEP.h5", help="also show the neuron's causal score from `flashinterp sweep`")
    a = p.parse_args(argv)
    if a.neuron is None and a.expert is None:
        p.error("give --neuron N (or --expert E without --neuron to list that expert's most specialised neurons)")
    if a.list < 1:
        p.error("--list must be >= 1")
    return a


def expert_neurons(m, group, layer, expert, count, k=5):
    """An expert's most specialised written neurons: lowest entropy (exact where the map has it,
    else the top-k estimate), ties to the lower neuron; a list of JSON-able dicts."""
    st = m.stats(group, layer, expert=expert)
    w = m.written_mask(group)[m.pos(group, layer, expert)]
    key = np.where(w & np.isfinite(st["entropy"]), st["entropy"], np.inf)
    order = np.lexsort((np.arange(key.size), key))[:count]
    order = order[np.isfinite(key[order])]
    tops = m.neurons_top(group, [(layer, expert, int(n)) for n in order], k=k)
    return [dict(neuron=int(n), entropy=float(st["entropy"][n]), margin=float(st["margin"][n]),
                 top=fm.tokens_json(t)) for n, t in zip(order, tops)], st["entropy_exact"]


def list_expert(a):
    with fm.open_map(a.map, partial=a.partial) as m:
        g = m.resolve(a.matrix, a.expert)
        rows, exact = expert_neurons(m, g, a.layer, a.expert, a.list, a.top or 5)
        n = m.num_neurons(g)
    if a.json:
        fm.print_json(dict(map=a.map, group=g, layer=a.layer, expert=a.expert, neurons=n, entropy_exact=exact,
                           most_specialised=rows))
        return 0
    print(f"{a.map}: /{g} layer {a.layer} expert {a.expert}: the {len(rows)} most specialised of {n} neurons "
          f"(lowest {'exact' if exact else 'estimated'} entropy)")
    print(f"  {'neuron':>6}  {'entropy':>8}  {'margin':>8}  top tokens")
    for r in rows:
        toks = ", ".join(f"{fm.short(x['token'])} {x['prob']:.3g}" for x in r["top"])
        print(f"  {r['neuron']:>6}  {r['entropy']:>8.4f}  {r['margin']:>8.4f}  {toks}")
    return 0


def print_tokens(title, t):
    print(title)
    print(f"  {'rank':>4}  {'id':>7}  {'prob':>10}  {'logit':>10}  token")
    for r, (i, p, lg, txt) in enumerate(zip(t.ids, t.probs, t.logits, t.text), 1):
        print(f"  {r:>4}  {int(i):>7}  {float(p):>10.6f}  {float(lg):>10.4f}  {txt!r}")


def run(argv):
    a = parse_args(argv)
    if a.neuron is None:
        return list_expert(a)
    with fm.open_map(a.map, partial=a.partial) as m:
        g, e = m.resolve(a.matrix, a.expert), a.expert
        top = m.top(g, a.layer, a.neuron, a.top, expert=e)
        full = m.top(g, a.layer, a.neuron, expert=e)   # the entropy uses every stored token
        bottom = m.bottom(g, a.layer, a.neuron, a.top, expert=e)
        st = m.stats(g, a.layer, [m._neuron(g, a.neuron)], expert=e)
        attrs = m.attrs
        vocab = m.vocab_size
        complete = m.complete
        written = None if complete else m.written(g, a.layer, a.neuron, expert=e)
        v2 = m.version >= 2
    est, low, mass = (float(x) for x in fm.entropy_from_topk(full.probs, vocab))
    exact = float(st["entropy"][0]) if st["entropy_exact"] else None
    margin = float(st["margin"][0])
    causal = sweep_note = None
    if a.sweep:  # the causal score (flashinterp_sweep.py), when this neuron was swept
        import flashinterp_sweep as fs
        sw = fs.open_sweep(a.sweep)
        causal = sw.lookup(g, a.layer, a.neuron, e if g.startswith("moe/") else -1)
        sweep_note = None if sw.matches(attrs) else f"{a.sweep} was made from another map (map_fingerprint differs)"
    warning = None
    if written is False:
        warning = "this neuron's chunk is not marked done in this partial map; values are not valid"
    elif written is None and not complete:
        warning = "partial map; whether this neuron was written is not recorded"
    if a.json:
        fm.print_json(dict(
            map=a.map, matrix=a.matrix, layer=a.layer, neuron=a.neuron, **(dict(group=g, expert=e) if v2 else {}),
            model_dir=attrs.get("model_dir"),
            norm=attrs.get("norm"), logsumexp=top.lse, complete=complete, warning=warning,
            entropy=dict(estimate_nats=est, lower_bound_nats=low, upper_bound_nats=est, topk_mass=mass,
                         k=int(len(full.ids)), vocab_size=vocab, method=ENTROPY_HELP, exact_nats=exact),
            margin=margin, margin_exact=st["margin_exact"],
            top=fm.tokens_json(top), bottom=fm.tokens_json(bottom) if bottom is not None else [],
            **(dict(causal=causal, sweep_warning=sweep_note) if a.sweep else {})))
        return 0
    where = f"layer {a.layer}" + (f" expert {e}" if e is not None else "")
    print(f"{a.map}: /{g} {where} neuron {a.neuron}  "
          f"(model {attrs.get('model_dir', '?')}, norm {attrs.get('norm', '?')}, "
          f"logsumexp {top.lse:.6f})")
    print(f"entropy ~ {est:.4f} nats (lower bound {low:.4f}; max ln V = {fm.np.log(vocab):.4f}); "
          f"top-{len(full.ids)} mass {mass:.6f}; the rest taken as spread evenly over the other tokens")
    if exact is not None:
        print(f"entropy (exact, /{g}/entropy) = {exact:.4f} nats")
    print(f"margin (top-1 minus top-2 logit) = {margin:.4f}")
    if warning:
        print("warning: " + warning)
    if a.sweep:
        print("causal score: " + ("not in the sweep" if causal is None else
              f"{causal['score']:+.4f} dlogp per unit of clamp (top-1 share {causal['top1_share']:.2f}; " +
              ", ".join(f"{d['value']:g}: {d['dlogp']:+.3f}" for d in causal["dlogp"]) + ")") +
              (f"  [warning: {sweep_note}]" if sweep_note else ""))
    print_tokens("top tokens:", top)
    if bottom is not None and len(bottom.ids):
        print_tokens("bottom tokens (lowest logit first):", bottom)
    return 0


main = fm.command("show", run)  # flashinterp-show, analysis/show


if __name__ == "__main__":
    sys.exit(main())
