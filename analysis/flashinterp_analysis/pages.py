"""HTML pages of a flashinterp map: what analysis/serve sends and what analysis/report writes as
static files, one design for both (web/style.css, web/app.js: plain HTML and a little JavaScript
from this package, nothing fetched from the network).

Each page is data (a dict, gathered here from an open MapFile by slices: one neuron, one layer)
rendered by a function that takes a `link(kind, **where)` callback, which returns the address of
another page or None where it does not exist (the static report holds only some neurons).
A neuron of a routed-expert group (format version 2, moe/*) is linked with expert=E as well.
"""
import html
import json
import os

import numpy as np

import flashinterp_map as fm

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
STATIC_FILES = ("style.css", "app.js")


def esc(x):
    return html.escape(str(x), quote=True)


def num(x, fmt=".4f"):
    x = float(x)
    return "n/a" if x != x else format(x, fmt)


def attr_json(obj):
    """JSON for an HTML attribute value (escaped; NaN as null)."""
    def clean(v):
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return esc(json.dumps(clean(obj), ensure_ascii=False, separators=(",", ":")))


def frame(title, body, link, static_prefix="/static/"):
    """The page around body: head (title, the style sheet), navigation, the script at the end."""
    nav = [("overview", link("overview")), ("search", link("search")), ("compare", link("compare")),
           ("sweep", link("sweep"))]
    nav_html = "".join(f'<a id="nav-{k}" href="{esc(u)}">{k}</a>' for k, u in nav if u)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<link rel="stylesheet" href="{static_prefix}style.css"></head><body>'
            f'<nav>{nav_html}</nav>{body}<script src="{static_prefix}app.js"></script></body></html>\n')


# ---- one neuron ------------------------------------------------------------------------------
def neuron_data(m, matrix, layer, neuron, k=None, expert=None):
    """Everything a neuron page shows, read from the map by slices (this neuron's rows only)."""
    top = m.top(matrix, layer, neuron, k, expert=expert)
    bottom = m.bottom(matrix, layer, neuron, k, expert=expert)
    st = m.stats(matrix, layer, [int(neuron)], expert=expert)
    d = dict(map=m.path, matrix=matrix, layer=int(layer), neuron=int(neuron), n=m.num_neurons(matrix),
             expert=None if expert is None else int(expert),
             layers=[int(x) for x in m.layers(matrix)], lse=top.lse, top=fm.tokens_json(top),
             bottom=fm.tokens_json(bottom) if bottom is not None else None,
             entropy=float(st["entropy"][0]), entropy_lower=float(st["entropy_lower"][0]),
             entropy_exact=st["entropy_exact"], margin=float(st["margin"][0]), margin_exact=st["margin_exact"],
             written=True if m.complete else m.written(matrix, layer, neuron, expert=expert),
             max_entropy=float(np.log(m.vocab_size)), concept_mass=None,
             matrices=[x for x in (m.matrices() if expert is None else
                                   [g for g in m.groups() if fm.is_routed(g) and int(layer) in m.layers(g)])
                       if m.num_neurons(x) == m.num_neurons(matrix)])
    g = m.group(matrix)
    if "concept_mass" in g:
        names = [fm._attr_str(x) for x in np.asarray(g["concept_mass"].attrs.get("concepts", [])).reshape(-1)]
        mass = m._read(matrix, "concept_mass", m.pos(matrix, layer, expert) + (int(neuron),)).astype(float)
        d["concept_mass"] = [(names[i] if i < len(names) else f"#{i}", float(x)) for i, x in enumerate(mass)]
    return d


def token_table(tokens, cls, title):
    if not tokens:
        return ""
    peak = max([t["prob"] for t in tokens if t["prob"] == t["prob"]] + [1e-30])
    rows = []
    for r, t in enumerate(tokens, 1):
        w = 0 if t["prob"] != t["prob"] else max(1, int(200 * t["prob"] / peak))
        rows.append(f'<tr class="tokrow" data-id="{t["id"]}" data-prob="{t["prob"]!r}" data-text="{esc(t["token"])}">'
                    f'<td>{r}</td><td>{t["id"]}</td><td class="l"><span class="tok">{esc(repr(t["token"]))}</span></td>'
                    f'<td>{t["prob"]:.6g}</td><td>{t["logit"]:.4f}</td>'
                    f'<td class="l"><span class="bar {cls}" style="width:{w}px"></span></td></tr>')
    return (f'<h2>{title}</h2><table class="tokens {cls}"><tr><th>rank</th><th>id</th><th class="l">token</th>'
            f'<th>prob</th><th>logit</th><th class="l">probability (bar: relative to the first)</th></tr>'
            + "".join(rows) + "</table>")


def neuron_body(d, label=None):
    ent = (f'{num(d["entropy"])} nats (exact)' if d["entropy_exact"] else
           f'~ {num(d["entropy"])} nats (estimate; lower bound {num(d["entropy_lower"])})'
           '<br><span class="note">from the top-k, the rest of the mass spread evenly: an upper bound</span>')
    meta = [("map", esc(d["map"])), ("entropy", f'<span id="entropy" data-value="{d["entropy"]!r}">{ent}</span>'
                                     f' <span class="note">(max ln V = {d["max_entropy"]:.3f})</span>'),
            ("margin", f'<span id="margin" data-value="{d["margin"]!r}">{num(d["margin"])}</span> '
                       '<span class="note">top-1 minus top-2 logit'
                       + ("" if d["margin_exact"] else ", from the stored list") + "</span>"),
            ("logsumexp", f'{num(d["lse"], ".6f")}')]
    if d["written"] is not True:
        meta.append(("warning", '<span class="err">this neuron\'s chunk is not marked done in this partial map; '
                                "its values are not valid</span>"))
    h = [f'<div class="neuron" data-map="{esc(d["map"])}">']
    if label:
        h.append(f"<h2>{esc(label)}</h2>")
    h.append('<table class="meta">' + "".join(f"<tr><td>{k}</td><td class='l'>{v}</td></tr>" for k, v in meta)
             + "</table>")
    h.append(token_table(d["top"], "top", "Top tokens"))
    if d["bottom"]:
        h.append(token_table(d["bottom"], "bottom", "Bottom tokens (lowest logit first)"))
    if d["concept_mass"]:
        h.append("<h2>Concept mass</h2><table class='concept-mass'><tr><th class='l'>concept</th>"
                 "<th>probability mass</th></tr>"
                 + "".join(f"<tr data-name='{esc(n)}' data-mass='{x!r}'><td class='l'>{esc(n)}</td><td>{x:.6g}</td></tr>"
                           for n, x in d["concept_mass"]) + "</table>")
    h.append("</div>")
    return "".join(h)


def neighbours(d, link):
    """Links to the previous / next neuron, the same neuron one layer up and down, other matrices."""
    mat, layer, n, layers, e = d["matrix"], d["layer"], d["neuron"], d["layers"], d.get("expert")
    ex = {} if e is None else dict(expert=e)
    out = []
    li = layers.index(layer)
    for ident, text, (lay, nn, mm) in (
            ("prev", f"← neuron {n - 1}", (layer, n - 1, mat)), ("next", f"neuron {n + 1} →", (layer, n + 1, mat)),
            ("down", "layer below", (layers[li - 1] if li > 0 else None, n, mat)),
            ("up", "layer above", (layers[li + 1] if li + 1 < len(layers) else None, n, mat))):
        if lay is None or not 0 <= nn < d["n"]:
            continue
        u = link("neuron", matrix=mm, layer=lay, neuron=nn, **ex)
        if u:
            out.append(f'<a id="{ident}" href="{esc(u)}">{esc(text)}</a>')
    for other in d["matrices"]:
        if other != mat:
            u = link("neuron", matrix=other, layer=layer, neuron=n, **ex)
            if u:
                out.append(f'<a class="matrix" href="{esc(u)}">/{other}</a>')
    return '<p class="neighbours">' + " · ".join(out) + "</p>" if out else ""


def neuron_page(d, link, other=None, static_prefix="/static/", extra=""):
    """A neuron page: d from neuron_data; other: the same neuron in a second map (side by side);
    extra: HTML after the tokens (serve's causal score)."""
    title = (f'/{d["matrix"]} layer {d["layer"]}' + ("" if d.get("expert") is None else f' expert {d["expert"]}')
             + f' neuron {d["neuron"]}')
    body = [f"<h1>{esc(title)}</h1>", neighbours(d, link)]
    if other is not None:
        body.append('<div class="side"><div id="map-a">' + neuron_body(d, "map A: " + d["map"]) + "</div>"
                    '<div id="map-b">' + neuron_body(other, "map B: " + other["map"]) + "</div></div>")
    else:
        body.append(neuron_body(d))
    body.append(extra)
    return frame(title, "".join(body), link, static_prefix)


def scatter(points, xlabel, ylabel, link, ident=None, size=(640, 360)):
    """An SVG scatter of [(x, y, matrix, layer, neuron)], each point a link to its neuron's page
    (with a tooltip); no script needed."""
    W, Hh, pad = size[0], size[1], 48
    if not points:
        return "<p>no points</p>"
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys + [0.0]), max(ys + [0.0])
    sx = lambda v: pad + (v - x0) / ((x1 - x0) or 1) * (W - 2 * pad)  # noqa: E731
    sy = lambda v: Hh - pad - (v - y0) / ((y1 - y0) or 1) * (Hh - 2 * pad)  # noqa: E731
    h = [f'<svg class="scatter"{f" id={esc(ident)!r}" if ident else ""} width="{W}" height="{Hh}" '
         f'viewBox="0 0 {W} {Hh}" role="img">',
         f'<line x1="{pad}" y1="{sy(0):.1f}" x2="{W - pad}" y2="{sy(0):.1f}" stroke="#bbb"/>',
         f'<text x="{W / 2:.0f}" y="{Hh - 8}" text-anchor="middle">{esc(xlabel)}</text>',
         f'<text x="12" y="{Hh / 2:.0f}" transform="rotate(-90 12 {Hh / 2:.0f})" text-anchor="middle">{esc(ylabel)}</text>',
         f'<text x="{pad}" y="{Hh - pad + 16}">{x0:.4g}</text><text x="{W - pad}" y="{Hh - pad + 16}" '
         f'text-anchor="end">{x1:.4g}</text><text x="{pad - 4}" y="{sy(y1):.1f}" text-anchor="end">{y1:.3g}</text>'
         f'<text x="{pad - 4}" y="{sy(y0):.1f}" text-anchor="end">{y0:.3g}</text>']
    for x, y, m, l, n in points:
        h.append(f'<a class="point" href="{esc(link("neuron", matrix=m, layer=l, neuron=n))}" data-layer="{l}" '
                 f'data-neuron="{n}"><circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="#36c">'
                 f'<title>/{esc(m)} layer {l} neuron {n}: {x:.4g}, {y:+.4f}</title></circle></a>')
    return "".join(h) + "</svg>"


# ---- charts and tables shared by the overview, layer and compare pages ---------------------------
def chart(x, series, xlabel, ylabel, href=None, ident=None):
    """A div that web/app.js turns into an interactive SVG line chart (see there)."""
    data = dict(x=list(x), xlabel=xlabel, ylabel=ylabel, href=href,
                series=[dict(name=n, y=[None if v != v else float(v) for v in ys]) for n, ys in series])
    return f'<div class="chart"{f" id={esc(ident)!r}" if ident else ""} data-chart="{attr_json(data)}"></div>'


def neuron_rows(rows, link, cols):
    """A table of neurons: rows of dicts with matrix, layer, neuron, neuron_top and the keys of cols
    [(key, header, format)] (format: a float format, None for str(), "repr" for token text); the
    neuron links to its page."""
    moe = any(row.get("expert") is not None or "group" in row for row in rows)   # version 2: group, expert
    h = ["<table class='neurons'><tr><th>rank</th>" + ("<th>group</th>" if moe else "") + "<th>layer</th>"
         + ("<th>expert</th>" if moe else "") + "<th>neuron</th>"
         + "".join(f"<th>{esc(c[1])}</th>" for c in cols) + "<th class='l'>top tokens</th></tr>"]
    for r, row in enumerate(rows, 1):
        e = row.get("expert")
        u = link("neuron", matrix=row["matrix"], layer=row["layer"], neuron=row["neuron"],
                 **({} if e is None else dict(expert=e)))
        cell = f'<a class="nlink" href="{esc(u)}">{row["neuron"]}</a>' if u else str(row["neuron"])
        toks = ", ".join(f'<span class="tok">{esc(repr(t["token"]))}</span> {t["prob"]:.3g}' for t in row["neuron_top"])
        vals = "".join(f"<td class='l'><span class='tok'>{esc(repr(row[k]))}</span></td>" if fmt == "repr" else
                       f"<td>{esc(row[k]) if fmt is None else num(row[k], fmt)}</td>" for k, _, fmt in cols)
        grp = f'<td class="l">{esc(row["matrix"])}</td>' if moe else ""
        exc = f'<td>{"" if e is None else int(e)}</td>' if moe else ""
        dat = f' data-group="{esc(row["matrix"])}" data-expert="{"" if e is None else int(e)}"' if moe else ""
        h.append(f'<tr class="nrow" data-layer="{row["layer"]}" data-neuron="{row["neuron"]}"{dat}><td>{r}</td>'
                 f'{grp}<td>{row["layer"]}</td>{exc}<td>{cell}</td>{vals}<td class="l">{toks}</td></tr>')
    return "".join(h) + "</table>"
