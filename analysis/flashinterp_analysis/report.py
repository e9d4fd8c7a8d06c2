"""report: a static HTML page about one flashinterp map, for a browser with no network: per-layer
statistics, PNG plots (top-1 probability per layer, entropy per layer, how many neurons have each
token as top-1), the most specialised neurons (lowest entropy, highest margin or highest top-1
probability: --specialised-by) and a table of neurons searchable in the page (inline JavaScript,
no external resources).

    analysis/report map.h5 --out DIR [--matrix up] [--specialised 50] [--specialised-by auto]
                            [--table-max 20000] [--partial]
Writes DIR/index.html, the PNG files it shows, and for each most specialised neuron a page
DIR/neuron/<matrix>/<layer>/<neuron>.html in analysis/serve's design (DIR/static/), so a shared
report reads without a server. The entropy is the map's exact /<matrix>/entropy where it has one,
else the estimate from the top-k of analysis/show (remaining mass spread evenly over the other
tokens, an upper bound); the margin (top-1 minus top-2 logit) is /<matrix>/margin or, the same
value, from the stored list. With --partial, only neurons
whose chunk is marked done are reported. A map whose data cannot be right (token ids outside the
vocabulary, probabilities outside 0..1) is refused with one line.
A format version 2 map (mixture of experts) reports every group: dense and shared ones as above,
each routed group (moe/*) as per-expert summaries: mean entropy, margin and top-1 probability of
every (layer, expert) (a table, a heatmap PNG, and in the page's fi-stats JSON), the most
specialised experts (lowest mean entropy) and the group's most specialised neurons, with pages
DIR/neuron/moe_up/<layer>/e<expert>/<neuron>.html. The searchable table holds routed neurons as
well, with their expert: like a dense matrix, each group contributes at most --table-max R rows
(its R most specialised neurons over all layers and experts, by the --specialised-by rule; a real
routed group has millions of neurons, so R, not the group, sizes the page), found a (layer,
expert) slice at a time while only the best R are kept. A table row links to the neuron's page
where the report wrote one (the most specialised neurons).
"""
import argparse
import html
import json
import os
import sys
import time

import numpy as np

import flashinterp_map as fm
from flashinterp_analysis import pages as pg

TABLE_TOKENS = 5   # top tokens per neuron in the searchable table
BAR_TOKENS = 30    # tokens in the "neurons per top-1 token" bar chart


def parse_args(argv):
    p = argparse.ArgumentParser(prog="report", description=__doc__.split("\n\n")[0])
    p.add_argument("map", help="the HDF5 map written by `flashinterp decode`")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for index.html and the plots")
    p.add_argument("--matrix", choices=fm.GROUPS, action="append",
                   help="matrix (or version 2 group, e.g. moe/up) to report (repeatable; default: every one in the map)")
    p.add_argument("--specialised", type=int, default=50, metavar="N",
                   help="most specialised neurons listed per matrix (default 50)")
    p.add_argument("--specialised-by", default="auto", choices=("auto", "entropy", "margin", "top1"),
                   help="rank by lowest entropy, highest margin or highest top-1 probability; auto (default): "
                        "the exact entropy where the map has it, else the margin (exact from the stored list)")
    p.add_argument("--table-max", type=int, default=20000, metavar="R",
                   help="rows of the searchable table per matrix; a larger map keeps its R most "
                        "specialised neurons (default 20000)")
    p.add_argument("--partial", action="store_true", help="read a map whose decode did not finish")
    p.add_argument("--sweep", metavar="SWEEP.h5", help="add the causal scores of `flashinterp sweep`: "
                   "specialisation against score per layer, and the neurons where they disagree most")
    a = p.parse_args(argv)
    if a.specialised < 0 or a.table_max < 0:
        p.error("--specialised and --table-max must be >= 0")
    return a


def _stat(fn, x):
    """fn(x) as a float, NaN for an empty x (a layer with no written neuron)."""
    return float(fn(x)) if np.size(x) else float("nan")


def matrix_data(m, matrix):
    """Everything the page shows about one matrix, read a layer at a time. Only written neurons
    (chunk marked in `done`; all of them in a complete map) enter the statistics, plots and table:
    an unwritten chunk holds the fill value 0, which is no data."""
    layers = m.layers(matrix)
    n, k, V = m.num_neurons(matrix), m.top_k(matrix), m.vocab_size
    kt = min(k, TABLE_TOKENS)
    top1_p = np.empty((len(layers), n), np.float32)
    top_ids = np.empty((len(layers), n, kt), np.int32)
    top_p = np.empty((len(layers), n, kt), np.float32)
    ent = np.empty((len(layers), n), np.float64)
    margin = np.empty((len(layers), n), np.float64)
    lse = np.empty((len(layers), n), np.float32)
    done = m.done(matrix).all(axis=1)
    written = m.written_mask(matrix)
    for li, layer in enumerate(layers):
        ids, probs = m.layer_top(matrix, layer)   # checked: ids in -1..V-1, probabilities in 0..1
        top1_p[li], top_ids[li], top_p[li] = probs[:, 0], ids[:, :kt], probs[:, :kt]
        st = m.stats(matrix, layer)             # exact where the map has /entropy, /margin
        ent[li], margin[li] = st["entropy"], st["margin"]
        lse[li] = m.logsumexp(matrix, layer)
    top1 = top_ids[:, :, 0]
    stats = []
    for li, layer in enumerate(layers):
        w = written[li]
        p = top1_p[li][w].astype(np.float64)
        t1 = top1[li][w]
        stats.append(dict(layer=int(layer), neurons=int(w.sum()), complete=bool(done[li]),
                          top1_prob_mean=_stat(np.mean, p), top1_prob_median=_stat(np.median, p),
                          top1_prob_p90=_stat(lambda x: np.percentile(x, 90), p), top1_prob_max=_stat(np.max, p),
                          distinct_top1=int(np.unique(t1[t1 >= 0]).size),
                          entropy_mean=_stat(np.mean, ent[li][w]),
                          logsumexp_mean=_stat(np.mean, lse[li][w].astype(np.float64))))
    valid = top1[written & (top1 >= 0) & (top1 < V)]
    counts = np.bincount(valid, minlength=V)[:V]   # [V]: bounded by the vocabulary, whatever the ids
    return dict(matrix=matrix, layers=layers, n=n, k=k, top1_p=top1_p, top_ids=top_ids, top_p=top_p,
                ent=ent, margin=margin, entropy_exact=m.has_exact_entropy(matrix), stats=stats, counts=counts,
                written=written)


def specialised_by(d, by):
    """What 'auto' means for this matrix: exact entropy when the map has it, else the margin."""
    return ("entropy" if d["entropy_exact"] else "margin") if by == "auto" else by


def specialised_order(d, by="top1"):
    """Flat neuron indices (layer index * N + neuron) of the written neurons, the most specialised
    first: lowest entropy, highest margin or highest top-1 probability (NaN last); ties to the
    lower (layer, neuron)."""
    flat = {"entropy": d["ent"], "margin": -d["margin"], "top1": -d["top1_p"].astype(np.float64)}[by].reshape(-1)
    flat = np.where(np.isnan(flat), np.inf, flat)
    order = np.lexsort((np.arange(flat.size), flat))
    return order[d["written"].reshape(-1)[order]]


def safe_name(group):
    """A group's name in file names: "moe/up" -> "moe_up" (a version 1 matrix stays as it is)."""
    return group.replace("/", "_")


def _keep_best(best, part, limit):
    """The `limit` smallest of two candidate sets (dicts of equal-length arrays with key, layer,
    expert, neuron), ordered by key, then layer, expert, neuron."""
    both = part if best is None else {k: np.concatenate([best[k], part[k]]) for k in part}
    order = np.lexsort((both["neuron"], both["expert"], both["layer"], both["key"]))[:limit]
    return {k: v[order] for k, v in both.items()}


def expert_data(m, group, most=50, table_max=0, by="auto"):
    """Per-expert summaries of a routed group (moe/*): one row per (layer, expert) of its written
    neurons: neurons, entropy_mean, margin_mean, top1_prob_mean, entropy_min; the experts ranked
    by lowest mean entropy (NaN last, ties to the lower (layer, expert)); the group's `most`
    most specialised neurons (lowest entropy, ties to the lower (layer, expert, neuron)) as
    [layer, expert, neuron, top-1 prob, entropy, [[token, prob], ...], margin]; and `table`, the
    searchable table's rows of its `table_max` most specialised written neurons by `by` (the
    --specialised-by rule; ties as above), [group, layer, neuron, top-1 prob, entropy, [[token,
    prob], ...], margin, expert]. One (layer, expert) slice in memory at a time, plus the best
    table_max candidates so far."""
    written = m.written_mask(group)
    rows, cand = [], []
    nan = float("nan")
    exact = m.has_exact_entropy(group)
    by = ("entropy" if exact else "margin") if by == "auto" else by
    kt, best = min(m.top_k(group), TABLE_TOKENS), None
    for pos, layer, expert in m.units(group):
        w = written[pos]
        st = m.stats(group, layer, expert=expert)
        ids, probs = m.layer_top(group, layer, expert)
        if table_max:       # this slice's candidates for the table, merged into the best so far
            key = {"entropy": st["entropy"], "margin": -st["margin"], "top1": -probs[:, 0].astype(np.float64)}[by]
            key = np.where(np.isnan(key), np.inf, key)
            n = np.nonzero(w)[0]
            if best is not None and best["key"].size == table_max:
                n = n[key[n] <= best["key"][-1]]        # only what can enter the best table_max
            if n.size:
                part = dict(key=key[n], layer=np.full(n.size, layer), expert=np.full(n.size, expert), neuron=n,
                            p1=probs[n, 0], ent=st["entropy"][n], margin=st["margin"][n], ids=ids[n, :kt],
                            probs=probs[n, :kt])
                best = _keep_best(best, _keep_best(None, part, table_max), table_max)
        ent, mar, p1 = st["entropy"][w], st["margin"][w], probs[w, 0].astype(np.float64)
        rows.append(dict(layer=layer, expert=expert, neurons=int(w.sum()),
                         entropy_mean=float(ent.mean()) if ent.size else nan,
                         margin_mean=float(np.nanmean(mar)) if mar.size else nan,
                         top1_prob_mean=float(p1.mean()) if p1.size else nan,
                         entropy_min=float(ent.min()) if ent.size else nan))
        key = np.where(w & np.isfinite(st["entropy"]), st["entropy"], np.inf)
        for n in np.lexsort((np.arange(key.size), key))[:most]:
            if np.isfinite(key[n]):
                cand.append((float(key[n]), layer, expert, int(n), float(probs[n, 0]), float(st["margin"][n]), ids[n], probs[n]))
    cand.sort(key=lambda c: c[:4])
    neurons = []
    for ent, layer, expert, n, p1, mar, ids, probs in cand[:most]:
        keep = ids[:TABLE_TOKENS] >= 0
        toks = [[t, round(float(p), 6)] for t, p in zip(m.token_text(ids[:TABLE_TOKENS][keep]), probs[:TABLE_TOKENS][keep])]
        neurons.append([layer, expert, n, round(p1, 6), round(ent, 4), toks, round(mar, 4)])
    order = sorted(range(len(rows)), key=lambda i: (np.isnan(rows[i]["entropy_mean"]), rows[i]["entropy_mean"],
                                                    rows[i]["layer"], rows[i]["expert"]))
    table = []
    if best is not None:
        words = m.token_text(np.where(best["ids"] >= 0, best["ids"], 0).reshape(-1))
        for r in range(best["key"].size):
            toks = [[words[r * kt + j], round(float(best["probs"][r, j]), 6)] for j in range(kt) if best["ids"][r, j] >= 0]
            table.append([group, int(best["layer"][r]), int(best["neuron"][r]), round(float(best["p1"][r]), 6),
                          round(float(best["ent"][r]), 4), toks, round(float(best["margin"][r]), 4),
                          int(best["expert"][r])])
    return dict(matrix=group, rows=rows, ranked=[rows[i] for i in order], neurons=neurons, entropy_exact=exact,
                layers=[int(x) for x in m.layers(group)], experts=[int(x) for x in m.experts(group)],
                n=m.num_neurons(group), k=m.top_k(group), table=table, written=int(written.sum()),
                unwritten=int(written.size - written.sum()), specialised_by=by)


def expert_heatmap(d, out, plt):
    """PNG: mean entropy of every (layer, expert), layers down, experts across."""
    grid = np.full((len(d["layers"]), len(d["experts"])), np.nan)
    for r in d["rows"]:
        grid[d["layers"].index(r["layer"]), d["experts"].index(r["expert"])] = r["entropy_mean"]
    fig, ax = plt.subplots(figsize=(min(14, 3 + 0.25 * grid.shape[1]), min(12, 2 + 0.3 * grid.shape[0])))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_yticks(range(len(d["layers"])))
    ax.set_yticklabels([str(x) for x in d["layers"]], fontsize=7)
    fig.colorbar(im, ax=ax, label="mean entropy (nats)" + ("" if d["entropy_exact"] else ", estimate"))
    ax.set_title(f"/{d['matrix']}: mean entropy per expert")
    fig.tight_layout()
    name = f"{safe_name(d['matrix'])}_entropy_per_expert.png"
    fig.savefig(os.path.join(out, name), dpi=90)
    plt.close(fig)
    return name


def expert_section(d, png, most):
    """The HTML of one routed group's per-expert summaries."""
    mat = d["matrix"]
    h = [f"<h2>/{esc(mat)}: {len(d['layers'])} layers &times; {len(d['experts'])} experts &times; {d['n']} neurons, "
         f"top-{d['k']}</h2>", f"<p><img src='{esc(png)}' alt='{esc(png)}'></p>",
         f"<h3>Most specialised experts (lowest mean {'exact' if d['entropy_exact'] else 'estimated'} entropy)</h3>"
         f"<table id='experts-{esc(mat)}'><tr><th>rank</th><th>layer</th><th>expert</th><th>neurons</th>"
         "<th>entropy mean</th><th>entropy min</th><th>margin mean</th><th>top-1 prob mean</th></tr>"]
    for r, row in enumerate(d["ranked"][:most], 1):
        h.append(f"<tr><td>{r}</td><td>{row['layer']}</td><td>{row['expert']}</td><td>{row['neurons']}</td>"
                 f"<td>{row['entropy_mean']:.4f}</td><td>{row['entropy_min']:.4f}</td><td>{row['margin_mean']:.4f}</td>"
                 f"<td>{row['top1_prob_mean']:.4g}</td></tr>")
    h.append(f"</table><h3>Most specialised neurons (lowest entropy; each links to its page)</h3>"
             f"<table id='specialised-{esc(mat)}'><tr><th>rank</th><th>layer</th><th>expert</th><th>neuron</th>"
             "<th>top-1 prob</th><th>entropy (nats)</th><th>margin</th><th>top tokens</th></tr>")
    for r, row in enumerate(d["neurons"], 1):
        toks = ", ".join(f"{repr(t)} {p:.3g}" for t, p in row[5])
        h.append(f"<tr><td>{r}</td><td>{row[0]}</td><td>{row[1]}</td><td><a href='"
                 f"{esc(static_link(mat, row[0], row[2], row[1]))}'>{row[2]}</a></td><td>{row[3]:.4g}</td>"
                 f"<td>{row[4]:.3f}</td><td>{row[6]:.3f}</td><td class='tok'>{esc(toks)}</td></tr>")
    h.append("</table>")
    return "\n".join(h)


def plots(d, out, plt):
    m, layers = d["matrix"], d["layers"]
    fm_ = safe_name(m)
    files = []
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 4))
    data = [np.maximum(d["top1_p"][li][d["written"][li]].astype(np.float64), 1e-12) for li in range(len(layers))]
    ax.boxplot(data, positions=list(range(len(layers))), whis=(5, 95), showfliers=False)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([str(x) for x in layers], fontsize=7 if len(layers) > 20 else 9)
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("top-1 probability (box: 25-75%, whiskers: 5-95%)")
    ax.set_title(f"/{m}: top-1 probability of each neuron, per layer")
    fig.tight_layout()
    files.append(f"{fm_}_top1_prob_per_layer.png")
    fig.savefig(os.path.join(out, files[-1]), dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 3.5))
    ax.plot(layers, [s["entropy_mean"] for s in d["stats"]], "o-")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("mean entropy, exact (nats)" if d["entropy_exact"] else "mean entropy estimate (nats)")
    ax.set_title(f"/{m}: entropy of the decoded distribution, mean per layer")
    fig.tight_layout()
    files.append(f"{fm_}_entropy_per_layer.png")
    fig.savefig(os.path.join(out, files[-1]), dpi=90)
    plt.close(fig)

    counts = d["counts"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw=dict(width_ratios=[3, 2]))
    top = np.lexsort((np.arange(counts.size), -counts))[:BAR_TOKENS]
    top = top[counts[top] > 0]
    a1.barh(range(len(top))[::-1], counts[top], color="#4878a8")
    a1.set_yticks(range(len(top))[::-1])
    a1.set_yticklabels([fm.short(t, 20) for t in d["text"](top)], fontsize=7)
    a1.set_xlabel("neurons with this token as top-1")
    a1.set_ylabel("token")
    a1.set_title(f"/{m}: the {len(top)} most frequent top-1 tokens")
    used = counts[counts > 0]
    if used.size:
        per = np.bincount(used)              # per[c]: tokens that are top-1 of exactly c neurons
        c = np.nonzero(per)[0]
        a2.bar(c, per[c], width=0.8 if used.max() <= 30 else c * 0.1, color="#55a868")
        a2.set_yscale("log")
        if used.max() > 30:
            a2.set_xscale("log")
    a2.set_xlabel("c = neurons that have the token as top-1")
    a2.set_ylabel("tokens that are top-1 of exactly c neurons")
    a2.set_title(f"{used.size} distinct top-1 tokens")
    fig.tight_layout()
    files.append(f"{fm_}_neurons_per_token.png")
    fig.savefig(os.path.join(out, files[-1]), dpi=90)
    plt.close(fig)
    return files


def table_rows(d, order, limit, text):
    """[[layer, neuron, top-1 prob, entropy, [[token, prob], ...], margin], ...] for the page's table."""
    sel = order[:limit]
    li, nn = np.divmod(sel, d["n"])
    ids, ps = d["top_ids"][li, nn], d["top_p"][li, nn]
    ent = d["ent"][li, nn]
    words = text(np.where(ids >= 0, ids, 0).reshape(-1))
    rows = []
    for r in range(sel.size):
        toks = [[words[r * ids.shape[1] + j], round(float(ps[r, j]), 6)] for j in range(ids.shape[1])
                if ids[r, j] >= 0]
        rows.append([int(d["layers"][li[r]]), int(nn[r]), round(float(d["top1_p"][li[r], nn[r]]), 6),
                     round(float(ent[r]), 4), toks, round(float(d["margin"][li[r], nn[r]]), 4)])
    return rows


def esc(x):
    return html.escape(str(x), quote=True)


def script_json(obj):
    """JSON safe inside <script type="application/json">: every '<' escaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


# The table's script. Rows: [group, layer, neuron, top-1 prob, entropy, [[token, prob], ...],
# margin] and, for a routed group's neuron, its expert as an 8th item; PAGES (set before this
# script) maps "group|layer|expert|neuron" (expert empty outside moe/*) to the page the report wrote.
PAGE_JS = r"""
(function () {
  var data = JSON.parse(document.getElementById('fi-table').textContent);
  var box = document.getElementById('q'), sel = document.getElementById('qm');
  var body = document.getElementById('tbody'), info = document.getElementById('qinfo');
  var LIMIT = 300;
  var moe = data.some(function (r) { return r.length > 7; });   // an expert column
  function expert(row) { return row.length > 7 ? row[7] : ''; }
  function matches(row, terms) {
    for (var i = 0; i < terms.length; i++) {
      var t = terms[i], m;
      if ((m = /^l(\d+)$/i.exec(t))) { if (row[1] !== +m[1]) return false; continue; }
      if ((m = /^n(\d+)$/i.exec(t))) { if (row[2] !== +m[1]) return false; continue; }
      if (moe && (m = /^e(\d+)$/i.exec(t))) { if (expert(row) !== +m[1]) return false; continue; }
      var hit = false;
      for (var j = 0; j < row[5].length; j++)
        if (row[5][j][0].toLowerCase().indexOf(t) >= 0) { hit = true; break; }
      if (!hit) return false;
    }
    return true;
  }
  function render() {
    var raw = box.value.toLowerCase(), mat = sel.value;
    var terms = raw.split(/\s+/).filter(function (s) { return s.length; });
    if (raw.charAt(0) === ' ' || raw.charAt(0) === '"') terms = [raw.replace(/^"|"$/g, '')];
    var out = [], n = 0;
    for (var i = 0; i < data.length; i++) {
      var row = data[i];
      if (mat && row[0] !== mat) continue;
      if (!matches(row, terms)) continue;
      n++;
      if (out.length < LIMIT) out.push(row);
    }
    body.textContent = '';
    out.forEach(function (row) {
      var tr = document.createElement('tr');
      var cells = [row[0], row[1]].concat(moe ? [expert(row)] : []);
      cells.concat([row[2], row[3].toPrecision(4), row[4].toFixed(3)]).forEach(function (v) {
        var td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
      });
      var td = document.createElement('td');
      td.textContent = row[5].map(function (t) {
        return JSON.stringify(t[0]) + ' ' + t[1].toPrecision(3);
      }).join(',  ');
      tr.appendChild(td);
      var href = PAGES[row[0] + '|' + row[1] + '|' + expert(row) + '|' + row[2]];
      td = document.createElement('td');
      if (href) {
        var a = document.createElement('a'); a.href = href; a.textContent = 'page'; td.appendChild(a);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    });
    info.textContent = n + ' matching neurons' + (n > LIMIT ? ' (first ' + LIMIT + ' shown)' : '');
  }
  box.addEventListener('input', render);
  sel.addEventListener('change', render);
  render();
})();
"""

PAGE_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
td:last-child, th:last-child { text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
code, .tok { font-family: ui-monospace, monospace; }
#q { width: 30em; font-size: 14px; padding: 3px; }
.meta td:first-child { font-weight: bold; text-align: left; }
"""


def page(m_path, attrs, complete, mats, files, specialised, table, table_note, extra="", experts=(), links=None):
    h = []
    h.append("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>")
    h.append(f"<title>flashinterp map: {esc(os.path.basename(m_path))}</title>")
    h.append(f"<style>{PAGE_CSS}</style></head><body>")
    h.append(f"<h1>flashinterp map <code>{esc(m_path)}</code></h1>")
    if not complete:
        h.append("<p><b>Partial map</b> (complete = 0): neurons in chunks not marked done hold no valid values "
                 "and are left out of the statistics, plots and table.</p>")
    keys = ["model_dir", "model_type", "hidden_size", "intermediate_size", "num_layers", "vocab_size", "norm",
            "top_k", "bottom_k", "token_index_m", "backend", "world_size", "tool_version", "build",
            "created_utc", "elapsed_s", "command_line"]
    h.append("<table class='meta'>" + "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(attrs[k])}</td></tr>" for k in keys if k in attrs) + "</table>")
    h.append("<p>Each neuron's vector is decoded through the final norm and the LM-head; "
             "<i>top-1 probability</i> is the softmax probability of its best token over the whole vocabulary; "
             "the entropy is the map's exact one where it has /&lt;matrix&gt;/entropy, else estimated from the stored "
             "top-k (the remaining mass spread evenly over the other tokens, an upper bound); the margin is the "
             "top-1 minus the top-2 logit.</p>")
    for d in mats:
        mat = d["matrix"]
        h.append(f"<h2>/{esc(mat)}: {len(d['layers'])} layers &times; {d['n']} neurons, top-{d['k']}</h2>")
        h.append("<h3>Per layer</h3><table><tr><th>layer</th><th>neurons</th><th>top-1 prob mean</th>"
                 "<th>median</th><th>90th pct</th><th>max</th><th>distinct top-1 tokens</th>"
                 "<th>entropy mean (nats)</th><th>logsumexp mean</th><th>done</th></tr>")
        for s in d["stats"]:
            h.append(f"<tr><td>{s['layer']}</td><td>{s['neurons']}</td><td>{s['top1_prob_mean']:.4g}</td>"
                     f"<td>{s['top1_prob_median']:.4g}</td><td>{s['top1_prob_p90']:.4g}</td>"
                     f"<td>{s['top1_prob_max']:.4g}</td><td>{s['distinct_top1']}</td>"
                     f"<td>{s['entropy_mean']:.4f}</td><td>{s['logsumexp_mean']:.4f}</td>"
                     f"<td>{'yes' if s['complete'] else 'no'}</td></tr>")
        h.append("</table>")
        for f in files[mat]:
            h.append(f"<p><img src='{esc(f)}' alt='{esc(f)}'></p>")
        by = {"entropy": "lowest " + ("exact" if d["entropy_exact"] else "estimated") + " entropy",
              "margin": "highest margin", "top1": "highest top-1 probability"}[d["specialised_by"]]
        h.append(f"<h3>Most specialised neurons ({by}; each links to its page)</h3><table id='specialised-{esc(mat)}'>"
                 "<tr><th>rank</th><th>layer</th><th>neuron</th><th>top-1 prob</th><th>entropy (nats)</th>"
                 "<th>margin</th><th>top tokens</th></tr>")
        for r, row in enumerate(specialised[mat], 1):
            toks = ", ".join(f"{repr(t)} {p:.3g}" for t, p in row[4])
            h.append(f"<tr><td>{r}</td><td>{row[0]}</td><td><a href='{esc(static_link(mat, row[0], row[1]))}'>"
                     f"{row[1]}</a></td><td>{row[2]:.4g}</td><td>{row[3]:.3f}</td><td>{row[5]:.3f}</td>"
                     f"<td class='tok'>{esc(toks)}</td></tr>")
        h.append("</table>")
    for d, png, most in experts:
        h.append(expert_section(d, png, most))
    h.append(extra)
    h.append("<h2>Search the neurons</h2>")
    moe = any(len(r) > 7 for r in table)      # routed rows: an expert column (the script's rule)
    h.append("<p>Type part of a token (all words must match one of a neuron's top tokens; start with a space "
             "or a quote to match the text exactly as typed, spaces included), <code>L12</code> for a layer, "
             + ("<code>E5</code> for an expert, " if moe else "")
             + f"<code>N345</code> for a neuron. {esc(table_note)}</p>")
    opts = "".join(f"<option value='{esc(d['matrix'])}'>{esc(d['matrix'])}</option>"
                   for d in list(mats) + [d for d, _, _ in experts])
    h.append(f"<p><input id='q' placeholder='e.g.  dog   or  L1 N18' autocomplete='off'> "
             f"<select id='qm'><option value=''>all matrices</option>{opts}</select> <span id='qinfo'></span></p>")
    h.append("<table><thead><tr><th>matrix</th><th>layer</th>" + ("<th>expert</th>" if moe else "")
             + "<th>neuron</th><th>top-1 prob</th><th>entropy</th><th>top tokens</th><th>page</th></tr></thead>"
             "<tbody id='tbody'></tbody></table>")
    h.append(f"<script type='application/json' id='fi-table'>{script_json(table)}</script>")
    stats = {d["matrix"]: d["stats"] for d in mats}
    stats.update({d["matrix"]: d["rows"] for d, _, _ in experts})   # routed groups: per (layer, expert)
    h.append(f"<script type='application/json' id='fi-stats'>{script_json(stats)}</script>")
    h.append(f"<script>var PAGES = {script_json(links or {})};{PAGE_JS}</script>")
    h.append(f"<p><small>written by analysis/report on {esc(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}"
             "</small></p></body></html>")
    return "\n".join(h)


def _table_note(group, rows, total, unwritten, over=""):
    """What the searchable table holds of one group, for the page."""
    return ((f"/{group}: all {total} neurons" if rows == total else
             f"/{group}: the {rows} most specialised of {total} neurons ({over}--table-max)")
            + (f" ({unwritten} more in chunks not marked done are left out)" if unwritten else ""))


def static_link(matrix, layer, neuron, expert=None):
    """Where the report writes a neuron's page, relative to DIR."""
    ex = "" if expert is None else f"e{int(expert)}/"
    return f"neuron/{safe_name(matrix)}/{int(layer)}/{ex}{int(neuron)}.html"


def write_neuron_pages(out, pages):
    """The neuron pages of the specialised neurons, in serve's design: links only between pages
    the report holds (and back to index.html), the style sheet and script copied to DIR/static."""
    have = {(d["matrix"], d["layer"], d.get("expert"), d["neuron"]) for d in pages}
    up = "../../../"

    def link(kind, **w):   # from DIR/neuron/<m>/<l>/ (routed: DIR/neuron/<m>/<l>/e<E>/) to DIR
        if kind == "overview":
            return up + "index.html"
        if kind == "neuron" and (w["matrix"], int(w["layer"]), w.get("expert"), int(w["neuron"])) in have:
            return up + static_link(w["matrix"], w["layer"], w["neuron"], w.get("expert"))
        return None
    os.makedirs(os.path.join(out, "static"), exist_ok=True)
    for name in pg.STATIC_FILES:
        with open(os.path.join(pg.WEB_DIR, name), "rb") as src, open(os.path.join(out, "static", name), "wb") as dst:
            dst.write(src.read())
    for d in pages:
        rel = static_link(d["matrix"], d["layer"], d["neuron"], d.get("expert"))
        up = "../" * (rel.count("/"))
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(pg.neuron_page(d, link, static_prefix=up + "static/"))


def sweep_section(path, out, attrs, plt, n=20):
    """The causal scores of a sweep file (flashinterp_sweep.py): the per-layer plot and the
    neurons whose specialisation and score disagree most."""
    import flashinterp_sweep as fs
    s = fs.open_sweep(path)
    png = fs.plot_per_layer(s, os.path.join(out, "sweep_per_layer.png"), plt)
    _, name = s.specialisation()
    idx, diff = fs.disagreements(s, n)
    h = [f"<h2>Causal scores <code>{esc(path)}</code></h2>",
         "" if s.matches(attrs) else "<p><b>Warning:</b> this sweep was made from another map.</p>",
         f"<p>Score = slope of the change in log p of the neuron's decoded top token over the clamp values "
         f"{esc(list(map(float, s.values)))}, averaged over prompts. Specialisation: {esc(name)}.</p>",
         f"<p><img src='{esc(os.path.basename(png))}' alt='specialisation against causal score'></p>",
         f"<h3>Where they disagree most (rank of specialisation minus rank of score)</h3><table><tr>"
         "<th>matrix</th><th>layer</th><th>neuron</th><th>top token id</th><th>specialisation</th>"
         "<th>score</th><th>rank difference</th></tr>"]
    spec, _ = s.specialisation()
    for i, d in zip(idx, diff):
        h.append(f"<tr><td>{fs.MATRICES[s.matrix[i]]}</td><td>{s.layer[i]}</td><td>{s.neuron[i]}</td>"
                 f"<td>{s.top_tokens[i, 0]}</td><td>{spec[i]:.4g}</td><td>{s.score[i]:+.4f}</td><td>{d:+.2f}</td></tr>")
    h.append("</table>")
    return "\n".join(h)


def run(argv):
    a = parse_args(argv)
    import warnings
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # Token labels in scripts the default font lacks draw as boxes; that is not worth a warning.
    warnings.filterwarnings("ignore", message="Glyph .* missing from")
    warnings.filterwarnings("ignore", message="Matplotlib currently does not support")
    with fm.open_map(a.map, partial=a.partial) as m:
        mats_present = m.groups()
        want = [m.resolve(x) for x in a.matrix] if a.matrix else mats_present
        for mat in want:
            m.group(mat)
        attrs, complete = m.attrs, m.complete
        os.makedirs(a.out, exist_ok=True)
        mats, files, specialised, table, notes = [], {}, {}, [], []
        pages, experts = [], []
        for mat in dict.fromkeys(want):
            if fm.is_routed(mat):       # per-expert summaries instead of the per-layer tables
                d = expert_data(m, mat, a.specialised, a.table_max, a.specialised_by)
                experts.append((d, expert_heatmap(d, a.out, plt), a.specialised))
                pages += [pg.neuron_data(m, mat, row[0], row[2], expert=row[1]) for row in d["neurons"]]
                table += d["table"]
                notes.append(_table_note(mat, len(d["table"]), d["written"], d["unwritten"], "every layer and expert; "))
                continue
            d = matrix_data(m, mat)
            d["text"] = m.token_text
            d["specialised_by"] = specialised_by(d, a.specialised_by)
            order = specialised_order(d, d["specialised_by"])
            files[mat] = plots(d, a.out, plt)
            specialised[mat] = table_rows(d, order, a.specialised, m.token_text)
            pages += [pg.neuron_data(m, mat, row[0], row[1]) for row in specialised[mat]]
            rows = table_rows(d, order, a.table_max, m.token_text)
            table += [[mat, *r] for r in rows]
            total = int(d["written"].sum())
            notes.append(_table_note(mat, len(rows), total, len(d["layers"]) * d["n"] - total))
            mats.append(d)
    write_neuron_pages(a.out, pages)
    path = os.path.join(a.out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        note = "The table holds " + "; ".join(notes) + "." if notes else "The table is empty."
        extra = sweep_section(a.sweep, a.out, attrs, plt) if a.sweep else ""
        links = {f"{d['matrix']}|{d['layer']}|{'' if d.get('expert') is None else d['expert']}|{d['neuron']}":
                 static_link(d["matrix"], d["layer"], d["neuron"], d.get("expert")) for d in pages}
        f.write(page(a.map, attrs, complete, mats, files, specialised, table, note, extra, experts, links))
    print(f"report: {path} ({sum(len(v) for v in files.values()) + len(experts)} plots, {len(table)} table rows)")
    return 0


main = fm.command("report", run)  # flashinterp-report, analysis/report


if __name__ == "__main__":
    sys.exit(main())
