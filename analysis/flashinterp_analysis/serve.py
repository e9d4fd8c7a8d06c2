"""serve: a flashinterp map in a browser. A local web server (the standard library's http.server)
over one map, or two for a side-by-side view and a compare page; stopped with Ctrl-C.

    analysis/serve map.h5 [other.h5] [--port 8000] [--host 127.0.0.1] [--concepts FILE] [--sweep FILE] [--partial]
Addresses (shareable): /  (overview: per-layer charts, click a layer), /layer/<matrix>/<layer>
(its most specialised neurons), /neuron/<matrix>/<layer>/<neuron>  (top and bottom tokens, entropy,
margin, the same neuron in the second map, links to neighbours; ?expert=E is refused: format
version 1 has no experts), /search?q=<word>[&variants=case,plural&regex=&set=&matrix=],
/compare[?matrix=up&layer=L[&expert=E]]  (per-layer agreement, the neurons that changed most),
/sweep[?matrix=down&layer=L]  (with --sweep: decoded specialisation against causal score, the
neurons where they disagree most; neuron pages then show their score).
Pages read the map by slices (one neuron, one layer); the per-layer overview and agreement are
computed once at start. --port 0 picks a free port; the first line printed is the address.
A format version 2 map (mixture of experts) also has its moe/* and shared/* groups browsable:
/layer/moe/up/<layer> lists that layer's experts (mean entropy, margin, the most specialised
neuron of each), /layer/moe/up/<layer>?expert=E that expert's most specialised neurons,
/neuron/moe/up/<layer>/<neuron>?expert=E an expert neuron; search hits name and link them.
The compare page covers every group both maps hold: /compare?matrix=moe/up pools each layer's
experts in its chart, lists the chosen layer's experts (top-1 agreement of each) and the neurons
that changed most over all of them, or over one with &expert=E; shared/up reads like a dense
matrix.
"""
import argparse
import http.server
import os
import signal
import sys
import time
import urllib.parse

import numpy as np

import flashinterp_map as fm
import flashinterp_sweep as fsw
from flashinterp_analysis import concepts as cc
from flashinterp_analysis import pages as pg
from flashinterp_analysis import search as sr

SPECIALISED_BY = {"entropy": "lowest entropy", "margin": "highest margin", "top1": "highest top-1 probability"}


class NotFound(Exception):
    pass


def link(kind, **w):
    """Addresses of the served pages (see pages.py for the callback's contract)."""
    if kind == "neuron":
        ex = "" if w.get("expert") is None else f"?expert={int(w['expert'])}"
        return f"/neuron/{w['matrix']}/{int(w['layer'])}/{int(w['neuron'])}{ex}"
    if kind == "layer":
        return f"/layer/{w['matrix']}/{int(w['layer'])}"
    return {"overview": "/", "search": "/search", "compare": "/compare", "sweep": "/sweep"}[kind]


class Site:
    """The open maps and what is computed once: per-layer statistics of every matrix, the
    vocabulary lexicon, and with two maps the per-layer agreement."""

    def __init__(self, path, other=None, partial=False, concepts_file=None, sweep_file=None):
        self.a = fm.open_map(path, partial=partial)
        self.sweep = None
        if sweep_file:
            try:
                self.sweep = fsw.open_sweep(sweep_file)
            except (fsw.SweepError, OSError, KeyError) as e:
                raise fm.MapError(fm._first_line(e)) from None
        self.b = fm.open_map(other, partial=partial) if other else None
        self.concepts_file = concepts_file
        if concepts_file:
            cc.load_concepts(concepts_file)        # a bad file is refused at start, not on a page
        self.lex = cc.Lexicon(self.a)
        self.overview = {mat: self._layer_stats(mat) for mat in self.a.groups()}
        self.agreement, self.expert_agreement, self.not_compared = {}, {}, {}
        if self.b is not None:
            for mat in self.a.groups():
                if mat not in self.b.groups():
                    continue
                try:
                    fm.check_comparable(self.a, self.b, mat)
                except fm.MapError as e:
                    if mat in fm.MATRICES:      # a dense matrix (and the vocabulary) must agree
                        raise
                    self.not_compared[mat] = fm._first_line(e)   # e.g. other --experts: left out
                    continue
                self.agreement[mat], self.expert_agreement[mat] = self._agreement(mat)
            if self.not_compared and not self.agreement:
                raise fm.MapError(next(iter(self.not_compared.values())))

    def close(self):
        self.a.close()
        if self.b is not None:
            self.b.close()

    def _unit_stats(self, mat, layer, expert=None):
        """(written [N], stats, top-1 probability [N], top-1 id [N]) of one layer (one expert)."""
        m = self.a
        pos = m.pos(mat, layer, expert)
        w = m.written_mask(mat)[pos]
        top1 = m._read(mat, "top_probs", pos + (slice(None), 0)).astype(np.float64)
        return w, m.stats(mat, layer, expert=expert), top1, m.top1(mat, layer, expert)

    def _layer_stats(self, mat):
        """Per-layer rows of the overview (a routed group: each layer's experts pooled)."""
        m, rows = self.a, []
        counts = np.zeros(m.vocab_size, np.int64)
        for layer in m.layers(mat):
            parts = [self._unit_stats(mat, layer, e) for e in (m.experts(mat) if fm.is_routed(mat) else [None])]
            w = np.concatenate([p[0] for p in parts])
            st = {k: np.concatenate([p[1][k] for p in parts]) for k in ("entropy", "margin")}
            top1 = np.concatenate([p[2] for p in parts])
            ids = np.concatenate([p[3] for p in parts])
            counts += np.bincount(ids[w & (ids >= 0)], minlength=m.vocab_size)
            mean = lambda x: float(np.nanmean(x[w])) if w.any() else float("nan")   # noqa: E731
            rows.append(dict(layer=int(layer), neurons=int(w.sum()), entropy_mean=mean(st["entropy"]),
                             margin_mean=mean(st["margin"]), top1_mean=mean(top1),
                             distinct_top1=int(np.unique(ids[w & (ids >= 0)]).size)))
        exact = m.has_exact_entropy(mat)
        top = np.lexsort((np.arange(counts.size), -counts))[:20]
        frequent = [(int(i), str(self.lex.text[i]), int(counts[i])) for i in top if counts[i] > 0]
        return dict(rows=rows, entropy_exact=exact, frequent=frequent)

    def _agreement(self, mat):
        """The share of neurons written in both maps whose top-1 token is the same: per layer
        (a routed group's experts pooled) and, for a routed group, {layer: [per expert]}."""
        a, b = self.a, self.b
        counted = a.written_mask(mat) & b.written_mask(mat)
        share = lambda same, w: float(same[w].mean()) if w.any() else float("nan")   # noqa: E731
        per_layer, per_expert = {}, {}
        for pos, layer, expert in a.units(mat):
            w = counted[pos]
            same = a.top1(mat, layer, expert) == b.top1(mat, layer, expert)
            n, k = per_layer.get(layer, (0, 0))
            per_layer[layer] = (n + int(w.sum()), k + int(same[w].sum()))
            if expert is not None:
                per_expert.setdefault(layer, []).append(dict(expert=expert, neurons=int(w.sum()),
                                                             same_top1=int(same[w].sum()), same_top1_share=share(same, w)))
        rows = [dict(layer=int(layer), neurons=n, same_top1_share=k / n if n else float("nan"))
                for layer, (n, k) in per_layer.items()]
        return rows, per_expert

    # ---- pages -------------------------------------------------------------------------------
    def page_overview(self, q):
        m = self.a
        at = m.attrs
        body = [f"<h1>{pg.esc(m.path)}</h1><table class='meta'>"]
        for k in ("model_dir", "model_type", "norm", "num_layers", "intermediate_size", "vocab_size", "top_k",
                  "bottom_k", "token_index_m", "backend", "created_utc"):
            body.append(f"<tr><td>{k}</td><td class='l'>{pg.esc(at.get(k, '?'))}</td></tr>")
        body.append("</table>")
        if self.b is not None:
            body.append(f"<p>second map: {pg.esc(self.b.path)} (neuron pages show both; "
                        f"<a href='/compare'>compare</a>)</p>")
        for mat, ov in self.overview.items():
            rows = ov["rows"]
            x = [r["layer"] for r in rows]
            ent = "exact entropy" if ov["entropy_exact"] else "entropy estimate (upper bound)"
            body.append(f"<h2>/{mat}</h2><p class='note'>Click a point to open that layer's most specialised "
                        "neurons.</p><div class='side'>")
            body.append(pg.chart(x, [("mean top-1 probability", [r["top1_mean"] for r in rows])], "layer",
                                 "top-1 probability", href=f"/layer/{mat}/", ident=f"chart-{mat}-top1"))
            body.append(pg.chart(x, [(f"mean {ent}", [r["entropy_mean"] for r in rows])], "layer",
                                 "entropy (nats)", href=f"/layer/{mat}/", ident=f"chart-{mat}-entropy"))
            body.append(pg.chart(x, [("mean margin", [r["margin_mean"] for r in rows])], "layer",
                                 "top-1 - top-2 logit", href=f"/layer/{mat}/", ident=f"chart-{mat}-margin"))
            body.append("</div><table class='layers'><tr><th>layer</th><th>neurons</th><th>mean top-1 prob</th>"
                        f"<th>mean {ent} (nats)</th><th>mean margin</th><th>distinct top-1</th></tr>")
            for r in rows:
                body.append(f"<tr><td><a href='/layer/{mat}/{r['layer']}'>{r['layer']}</a></td><td>{r['neurons']}</td>"
                            f"<td>{pg.num(r['top1_mean'])}</td><td>{pg.num(r['entropy_mean'])}</td>"
                            f"<td>{pg.num(r['margin_mean'])}</td><td>{r['distinct_top1']}</td></tr>")
            body.append("</table><h3>The most frequent top-1 tokens</h3><table class='frequent'><tr><th>id</th>"
                        "<th class='l'>token</th><th>neurons with it as top-1</th></tr>")
            for i, text, c in ov["frequent"]:
                q = urllib.parse.urlencode(dict(q=text, matrix=mat)) if text.strip() else None
                cell = f"<a href='/search?{pg.esc(q)}'>{pg.esc(repr(text))}</a>" if q else pg.esc(repr(text))
                body.append(f"<tr><td>{i}</td><td class='l'><span class='tok'>{cell}</span></td><td>{c}</td></tr>")
            body.append("</table>")
        return pg.frame(f"flashinterp: {m.path}", "".join(body), link)

    def _matrix(self, mat):
        if mat not in self.a.groups():
            raise NotFound(f"no matrix {mat!r} in this map (present: {', '.join(self.a.groups())})")
        return mat

    def _expert(self, q, mat):
        """The ?expert=E of a page of a routed group (None for other groups; refused where it
        means nothing)."""
        if "expert" not in q:
            if fm.is_routed(mat):
                raise NotFound(f"/{mat} is a routed-expert group: add ?expert=E")
            return None
        if self.a.version < 2:
            raise NotFound(f"expert={q['expert']}: this map (format version {self.a.version}) has no experts")
        try:
            e = int(q["expert"])
            self.a.expert_index(mat, e)
        except ValueError:
            raise NotFound(f"expert {q['expert']!r} is not a number") from None
        except fm.MapError as e:
            raise NotFound(fm._first_line(e)) from None
        return e

    def page_experts(self, q, mat, layer):
        """A routed layer: every expert with its mean entropy and margin and its most specialised
        neuron (lowest entropy), each linking to the expert's own layer page."""
        m = self.a
        rows = []
        for e in m.experts(mat):
            w, st, top1, _ = self._unit_stats(mat, layer, int(e))
            ent = np.where(w, st["entropy"], np.inf)
            best = int(np.argmin(ent)) if w.any() else None
            rows.append((int(e), int(w.sum()), float(np.mean(st["entropy"][w])) if w.any() else float("nan"),
                         float(np.mean(st["margin"][w])) if w.any() else float("nan"), best))
        body = [f"<h1>/{mat} layer {layer}: {len(rows)} experts</h1><p>Mean entropy and margin of each expert's "
                "neurons, and its most specialised neuron (lowest entropy); an expert opens its neurons.</p>",
                pg.chart([r[0] for r in rows], [("mean entropy", [r[2] for r in rows])], "expert", "entropy (nats)",
                         href=f"/layer/{mat}/{layer}?expert=", ident="chart-experts"),
                "<table id='experts'><tr><th>expert</th><th>neurons</th><th>mean entropy</th><th>mean margin</th>"
                "<th class='l'>most specialised neuron</th></tr>"]
        tops = m.neurons_top(mat, [(layer, r[0], r[4]) for r in rows if r[4] is not None], k=3)
        tops = iter(tops)
        for e, n, ent, mar, best in rows:
            cell = ""
            if best is not None:
                t = next(tops)
                toks = ", ".join(f"<span class='tok'>{pg.esc(repr(x))}</span>" for x in t.text)
                cell = f"<a class='nlink' href='{link('neuron', matrix=mat, layer=layer, neuron=best, expert=e)}'>{best}</a> {toks}"
            body.append(f"<tr class='erow' data-expert='{e}'><td><a href='/layer/{mat}/{layer}?expert={e}'>{e}</a></td>"
                        f"<td>{n}</td><td>{pg.num(ent)}</td><td>{pg.num(mar)}</td><td class='l'>{cell}</td></tr>")
        body.append("</table>")
        return pg.frame(f"/{mat} layer {layer}", "".join(body), link)

    def _layer(self, mat, layer):
        try:
            self.a.layer_index(mat, int(layer))
        except (ValueError, fm.MapError) as e:
            raise NotFound(fm._first_line(e)) from None
        return int(layer)

    def page_layer(self, q, mat, layer):
        m, mat = self.a, self._matrix(mat)
        layer = self._layer(mat, layer)
        if fm.is_routed(mat) and "expert" not in q:
            return self.page_experts(q, mat, layer)
        e = self._expert(q, mat)
        ex = {} if e is None else dict(expert=e)
        by = q.get("by", "entropy")
        if by not in SPECIALISED_BY:
            raise ValueError(f"by={by!r}: one of {', '.join(SPECIALISED_BY)}")
        count = min(max(int(q.get("n", 50)), 1), 1000)
        w, st, top1, _ = self._unit_stats(mat, layer, e)
        key = {"entropy": st["entropy"], "margin": -st["margin"], "top1": -top1}[by]
        key = np.where(w & np.isfinite(key), key, np.inf)
        order = np.lexsort((np.arange(key.size), key))[:count]
        order = order[np.isfinite(key[order])]
        tops = m.neurons_top(mat, [(layer, int(n)) if e is None else (layer, e, int(n)) for n in order], k=5)
        rows = [dict(matrix=mat, layer=layer, **ex, neuron=int(n), entropy=float(st["entropy"][n]),
                     margin=float(st["margin"][n]), top1=float(top1[n]), neuron_top=fm.tokens_json(t))
                for n, t in zip(order, tops)]
        ent = st["entropy"][w]
        hist, edges = np.histogram(ent[np.isfinite(ent)], bins=30) if ent.size else (np.zeros(0), np.zeros(1))
        kind = "exact" if st["entropy_exact"] else "estimated (upper bound)"
        eq = "" if e is None else f"expert={e}&"
        sel = " ".join(f"<a href='/layer/{mat}/{layer}?{eq}by={b}'>{pg.esc(t)}</a>" for b, t in SPECIALISED_BY.items())
        title = f"/{mat} layer {layer}" + ("" if e is None else f" expert {e}")
        body = [f"<h1>{title}</h1><p>Most specialised by {SPECIALISED_BY[by]} (order by: {sel}); "
                f"entropy {kind}.</p>",
                pg.chart([f"{x:.2f}" for x in edges[:-1]], [("neurons", hist.tolist())], "entropy (nats, bin start)",
                         "neurons", ident="chart-hist"),
                pg.neuron_rows(rows, link, [("entropy", "entropy", ".4f"), ("margin", "margin", ".4f"),
                                            ("top1", "top-1 prob", ".4g")])]
        return pg.frame(title, "".join(body), link)

    def page_neuron(self, q, mat, layer, neuron):
        if "expert" in q and self.a.version < 2:
            raise NotFound(f"expert={q['expert']}: this map (format version {self.a.version}) has no experts")
        mat = self._matrix(mat)
        layer = self._layer(mat, layer)
        e = self._expert(q, mat)
        try:
            n = int(neuron)
            d = pg.neuron_data(self.a, mat, layer, n, expert=e)
        except ValueError:
            raise NotFound(f"neuron {neuron!r} is not a number") from None
        except fm.MapError as e:
            raise NotFound(fm._first_line(e)) from None
        other = None
        if self.b is not None and mat in self.agreement:
            other = pg.neuron_data(self.b, mat, layer, n, expert=e)
        return pg.neuron_page(d, link, other, extra=self._causal(mat, layer, n) if e is None else "")

    def _causal(self, mat, layer, n):
        """The neuron's causal score from the sweep file (flashinterp sweep), when it was swept."""
        if self.sweep is None:
            return ""
        c = self.sweep.lookup(mat, layer, n)
        if c is None:
            return f"<p id='causal'>causal score: not in {pg.esc(self.sweep.path)}</p>"
        per = ", ".join(f"{d['value']:g}: {d['dlogp']:+.3f}" for d in c["dlogp"])
        return (f"<p id='causal'>causal score <b>{c['score']:+.4f}</b> (change in log p of its top token per unit "
                f"of clamp; top-1 in {c['top1_share']:.0%} of prompts; by value {pg.esc(per)})"
                + ("" if self.sweep.matches(self.a.attrs) else " — <b>warning</b>: the sweep was made from another map")
                + "</p>")

    def page_sweep(self, q):
        s = self.sweep
        if s is None:
            return pg.frame("sweep", "<h1>Causal scores</h1><p>Start the server with a sweep file "
                            "(<code>analysis/serve map.h5 --sweep sweep.h5</code>, from <code>flashinterp sweep</code>) "
                            "to see them.</p>", link)
        names = [fsw.MATRICES[int(m)] for m in s.matrix]
        mats = sorted(set(names), key=fsw.MATRICES.index)
        if not mats:
            raise NotFound(f"{s.path}: no neurons")
        mat = q.get("matrix", mats[0])
        if mat not in mats:
            raise NotFound(f"no matrix {mat!r} in {s.path} (it has {', '.join(mats)})")
        spec, spec_name = s.specialisation()
        done = np.asarray(s.done, dtype=bool)
        sel = [i for i in range(len(names)) if names[i] == mat and done[i]]
        layers = sorted({int(s.layer[i]) for i in sel})
        layer = q.get("layer")
        if layer is not None:
            layer = self._layer(mat, layer)
            sel = [i for i in sel if int(s.layer[i]) == layer]
        pts = [(float(spec[i]), float(s.score[i]), mat, int(s.layer[i]), int(s.neuron[i])) for i in sel]
        per_layer = [float(np.mean([s.score[i] for i in range(len(names)) if names[i] == mat and done[i]
                                    and int(s.layer[i]) == l])) for l in layers]
        idx, diff = fsw.disagreements(s, len(names))
        shown = set(sel)
        rows = [(int(i), float(d_)) for i, d_ in zip(idx, diff) if i in shown][:30]
        body = [f"<h1>Causal scores /{pg.esc(mat)}" + (f" layer {layer}" if layer is not None else "") + "</h1>",
                f"<p>{pg.esc(s.path)}: {len(sel)} neurons shown; score = slope of the change in log p of the "
                f"neuron's decoded top token over the clamp values {pg.esc([float(v) for v in s.values])}, averaged "
                f"over prompts. Specialisation: {pg.esc(spec_name)} (higher: more specialised).</p>",
                "" if s.matches(self.a.attrs) else "<p><b>Warning:</b> this sweep was made from another map.</p>",
                pg.chart(layers, [("mean causal score", per_layer)], "layer", "score",
                         href=f"/sweep?matrix={mat}&layer=", ident="chart-sweep"),
                pg.scatter(pts, spec_name, "causal score", link, ident="scatter-sweep"),
                "<h2>Where specialisation and score disagree most</h2><table id='disagree'><tr><th>layer</th>"
                "<th>neuron</th><th>specialisation</th><th>score</th><th>rank difference</th></tr>"]
        for i, d_ in rows:
            u = link("neuron", matrix=mat, layer=int(s.layer[i]), neuron=int(s.neuron[i]))
            body.append(f"<tr class='nrow'><td>{int(s.layer[i])}</td><td><a class='nlink' href='{u}'>{int(s.neuron[i])}"
                        f"</a></td><td>{spec[i]:.4g}</td><td>{s.score[i]:+.4f}</td><td>{d_:+.2f}</td></tr>")
        body.append("</table>")
        return pg.frame(f"sweep /{mat}", "".join(body), link)

    def page_search(self, q):
        mat = q.get("matrix", "up" if "up" in self.a.groups() or self.a.version >= 2 else self.a.matrices()[0])
        if mat not in fm.MATRICES or self.a.version < 2:    # a version 2 map's "up": every up group
            mat = self._matrix(mat)
        word, regex, sname = q.get("q") or None, q.get("regex") or None, q.get("set") or None
        kinds = cc.parse_kinds(",".join(q.getall("variants")) if hasattr(q, "getall") else q.get("variants", ""))
        sets = sorted(set(self.a.concepts()) | (set(cc.load_concepts(self.concepts_file)) if self.concepts_file else set()))
        form = ["<h1>Search</h1><form class='search' method='get' action='/search'>",
                f"<p>word <input type='text' id='q' name='q' value='{pg.esc(word or '')}'> ",
                "variants: " + " ".join(
                    f"<label><input type='checkbox' name='variants' value='{k}'{' checked' if k in kinds else ''}>{k}</label>"
                    for k in cc.VARIANT_KINDS) + "</p>",
                f"<p>or regex over token text <input type='text' id='regex' name='regex' value='{pg.esc(regex or '')}'></p>",
                "<p>or concept set <select id='set' name='set'><option value=''></option>"
                + "".join(f"<option{' selected' if s == sname else ''}>{pg.esc(s)}</option>" for s in sets)
                + "</select> matrix <select name='matrix'>"
                + "".join(f"<option{' selected' if x == mat else ''}>{x}</option>"
                          for x in (self.a.matrices() if self.a.version < 2 else
                                    list(dict.fromkeys([fm.base_matrix(g) for g in self.a.groups()]
                                                       + self.a.groups()))))
                + "</select> <button id='go' type='submit'>search</button></p></form>"]
        given = [x for x in (word, regex, sname) if x is not None]
        if not given:
            return pg.frame("search", "".join(form), link)
        if len(given) > 1:
            raise ValueError("give one of: a word, a regex, a set")
        res = sr.search(self.a, self.lex, mat, word, kinds, regex, sname, self.concepts_file, top=int(q.get("top", 20)))
        body = form + [f"<p id='source'>source: {pg.esc(res['source'] or 'nothing searched')}"
                       + (f"; note: {pg.esc(res['note'])}" if res["note"] else "") + "</p>"]
        if res["variants"]:
            body.append("<h2>Variants</h2><table id='variants'><tr><th class='l'>spelling</th><th class='l'>kind</th>"
                        "<th class='l'>tokens</th></tr>")
            for v in res["variants"]:
                toks = (", ".join(map(str, v["token_ids"])) if v["token_ids"] else
                        " + ".join(pg.esc(repr(s)) for s in v["split_text"]) + " (split)" if v["split"] else "none")
                body.append(f"<tr data-text='{pg.esc(v['text'])}'><td class='l'><span class='tok'>{pg.esc(repr(v['text']))}"
                            f"</span></td><td class='l'>{v['how']}</td><td class='l'>{toks}</td></tr>")
            body.append("</table>")
        elif res["query"] != "word":
            body.append(f"<p>{res['matched_tokens']} tokens matched"
                        + (f" (from {pg.esc(res['set_source'])})" if res.get("set_source") else "") + "</p>")
        cols = [("prob", "prob", ".4g"), ("token", "token", "repr"), ("entropy", "entropy", ".4f"),
                ("margin", "margin", ".4f")]
        for r in res["results"]:
            r["matrix"] = r.get("group", mat)
        body.append("<h2>Neurons for the single-token matches</h2><div id='results'>"
                    + (pg.neuron_rows(res["results"], link, cols) if res["results"] else "<p>none</p>") + "</div>")
        for i, mt in enumerate(res["multi_token"]):
            for part in ("by_first_token", "by_sum_logp_top", "by_sum_logp_bottom"):
                for r in mt[part] or []:
                    r["matrix"] = r.get("group", mat)
            body.append(f"<h2>Multi-token {pg.esc(repr(mt['text']))} = "
                        + " + ".join(pg.esc(repr(s)) for s in mt["split_text"]) + "</h2>")
            body.append(f"<h3>by its first token ({mt['first_token_source']})</h3>"
                        + (pg.neuron_rows(mt["by_first_token"], link, cols) if mt["by_first_token"] else "<p>none</p>"))
            body.append("<h3>by the sum of its tokens' log-probabilities over each neuron's stored top list</h3>"
                        + (pg.neuron_rows(mt["by_sum_logp_top"], link, [("sum_logp", "sum logp", ".4f")] + cols[2:])
                           if mt["by_sum_logp_top"] else "<p>none</p>"))
        return pg.frame(f"search {word or regex or sname}", "".join(body), link)

    def page_compare(self, q):
        if self.b is None:
            return pg.frame("compare", "<h1>Compare</h1><p>Start the server with two maps "
                            "(<code>analysis/serve a.h5 b.h5</code>) to compare them.</p>", link)
        mats = list(self.agreement)
        if not mats:
            raise NotFound("the two maps share no matrix")
        mat = q.get("matrix", mats[0])
        if mat not in self.agreement:
            raise NotFound(f"no matrix {mat!r} in both maps")
        rows = self.agreement[mat]
        shares = np.array([r["same_top1_share"] for r in rows])
        worst = int(rows[int(np.nanargmin(shares))]["layer"]) if np.isfinite(shares).any() else rows[0]["layer"]
        layer = self._layer(mat, q.get("layer", worst))
        e = self._expert(q, mat) if "expert" in q else None     # a routed group: one expert, or all
        experts = ([e] if e is not None else [int(x) for x in self.a.experts(mat)]) if fm.is_routed(mat) else [None]
        wa, wb = self.a.written_mask(mat), self.b.written_mask(mat)
        jac, same, conf, counted, ex, nn = [], [], [], [], [], []
        for x in experts:           # the layer's (expert's) neurons, one slice at a time
            pos = self.a.pos(mat, layer, x)
            w = wa[pos] & wb[pos]
            ia, pa = self.a.layer_top(mat, layer, x)
            ib, pb = self.b.layer_top(mat, layer, x)
            jac.append(fm.topk_jaccard(ia, ib))
            same.append(ia[:, 0] == ib[:, 0])
            conf.append(np.maximum(pa[:, 0], pb[:, 0]).astype(np.float64))
            counted.append(w)
            ex.append(np.full(w.size, -1 if x is None else x))
            nn.append(np.arange(w.size))
            k = ia.shape[1]
        jac, same, conf, counted, ex, nn = (np.concatenate(v) for v in (jac, same, conf, counted, ex, nn))
        # Lowest Jaccard first; ties: top-1 changed, the more confident neuron, lower expert, neuron.
        order = np.lexsort((nn, ex, -conf, same, np.where(counted, jac, np.inf)))[:30]
        order = order[counted[order]]
        key = lambda i: (layer, int(nn[i])) if ex[i] < 0 else (layer, int(ex[i]), int(nn[i]))   # noqa: E731
        ta = self.a.neurons_top(mat, [key(i) for i in order], k=5)
        tb = self.b.neurons_top(mat, [key(i) for i in order], k=5)
        x = [r["layer"] for r in rows]
        routed = fm.is_routed(mat)
        where = f"Layer {layer}" + (f" expert {e}" if e is not None else ", all experts" if routed else "")
        body = [f"<h1>Compare /{mat}</h1><p>A: {pg.esc(self.a.path)}<br>B: {pg.esc(self.b.path)}</p>",
                "<p id='groups'>groups: " + " ".join(f"<a href='/compare?matrix={g}'>{g}</a>" for g in mats)
                + "".join(f"; not compared: /{g} ({pg.esc(why)})" for g, why in self.not_compared.items()) + "</p>",
                pg.chart(x, [("same top-1 token" + (" (experts pooled)" if routed else ""), shares.tolist())], "layer",
                         "share of neurons", href=f"/compare?matrix={mat}&layer=", ident="chart-agreement")]
        if routed:
            er = self.expert_agreement[mat][layer]
            body += [f"<h2>Layer {layer}: the experts</h2>",
                     pg.chart([r["expert"] for r in er], [("same top-1 token", [r["same_top1_share"] for r in er])],
                              "expert", "share of neurons", href=f"/compare?matrix={mat}&layer={layer}&expert=",
                              ident="chart-experts"),
                     "<table id='experts'><tr><th>expert</th><th>neurons</th><th>same top-1</th><th>share</th></tr>"]
            body += [f"<tr class='erow' data-expert='{r['expert']}'><td><a href='/compare?matrix={mat}&layer={layer}"
                     f"&expert={r['expert']}'>{r['expert']}</a></td><td>{r['neurons']}</td><td>{r['same_top1']}</td>"
                     f"<td>{pg.num(r['same_top1_share'])}</td></tr>" for r in er]
            body.append("</table>")
        body += [f"<h2>{where}: the neurons that changed most</h2><p id='layer-stats'>top-1 the same for "
                 f"{int(same[counted].sum())} of {int(counted.sum())} neurons; mean Jaccard of the top-{k} sets "
                 f"{pg.num(jac[counted].mean() if counted.any() else float('nan'))}</p>",
                 "<table id='changed'><tr><th>layer</th>" + ("<th>expert</th>" if routed else "") + "<th>neuron</th>"
                 "<th>Jaccard</th><th>same top-1</th><th class='l'>A top tokens</th><th class='l'>B top tokens</th></tr>"]
        for i, a_, b_ in zip(order, ta, tb):
            fmt = lambda t: ", ".join(f"<span class='tok'>{pg.esc(repr(s))}</span> {p:.3g}"   # noqa: E731
                                      for s, p in zip(t.text, t.probs))
            xe = None if ex[i] < 0 else int(ex[i])
            u = link("neuron", matrix=mat, layer=layer, neuron=int(nn[i]), **({} if xe is None else dict(expert=xe)))
            body.append(f"<tr class='nrow' data-neuron='{int(nn[i])}'" + ("" if xe is None else f" data-expert='{xe}'")
                        + f"><td>{layer}</td>" + ("" if xe is None else f"<td>{xe}</td>")
                        + f"<td><a class='nlink' href='{u}'>{int(nn[i])}</a></td><td>{jac[i]:.3f}</td>"
                        f"<td>{'yes' if same[i] else 'no'}</td><td class='l'>{fmt(a_)}</td><td class='l'>{fmt(b_)}</td></tr>")
        body.append("</table>")
        return pg.frame(f"compare /{mat}", "".join(body), link)


class Query(dict):
    """A parsed query string: get() gives the first value, getall() every value."""

    def __init__(self, qs):
        self.lists = urllib.parse.parse_qs(qs, keep_blank_values=True)
        super().__init__({k: v[0] for k, v in self.lists.items()})

    def getall(self, k):
        return self.lists.get(k, [])


def make_handler(site):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "flashinterp-serve"

        def log_message(self, fmt, *args):      # one line per request on stderr, as http.server
            if not os.environ.get("FI_SERVE_QUIET"):
                super().log_message(fmt, *args)

        def send(self, code, body, ctype="text/html; charset=utf-8"):
            data = body.encode("utf-8") if isinstance(body, str) else body
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def error_page(self, code, msg):
            self.send(code, pg.frame(f"{code}", f'<h1>{code}</h1><p class="err" id="error">{pg.esc(msg)}</p>', link))

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
            if len(parts) > 2 and parts[0] in ("neuron", "layer") and parts[1] in ("moe", "shared"):
                parts[1:3] = [parts[1] + "/" + parts[2]]        # a version 2 group: /layer/moe/up/3
            q = Query(url.query)
            try:
                if not parts:
                    self.send(200, site.page_overview(q))
                elif parts[0] == "static" and len(parts) == 2 and parts[1] in pg.STATIC_FILES:
                    with open(os.path.join(pg.WEB_DIR, parts[1]), "rb") as f:
                        ctype = "text/css" if parts[1].endswith(".css") else "application/javascript"
                        self.send(200, f.read(), ctype + "; charset=utf-8")
                elif parts[0] == "neuron" and len(parts) == 4:
                    self.send(200, site.page_neuron(q, *parts[1:]))
                elif parts[0] == "layer" and len(parts) == 3:
                    self.send(200, site.page_layer(q, *parts[1:]))
                elif parts == ["search"]:
                    self.send(200, site.page_search(q))
                elif parts == ["compare"]:
                    self.send(200, site.page_compare(q))
                elif parts == ["sweep"]:
                    self.send(200, site.page_sweep(q))
                elif parts == ["favicon.ico"]:
                    self.send(204, b"", "image/x-icon")
                else:
                    raise NotFound(f"no page {url.path!r} (pages: /, /layer/M/L, /neuron/M/L/N, /search, /compare, /sweep)")
            except NotFound as e:
                self.error_page(404, str(e))
            except (ValueError, fm.MapError) as e:
                self.error_page(400, fm._first_line(e))
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as e:   # a fault of this tool: the page says so, the server keeps running
                self.error_page(500, f"internal error {type(e).__name__}: {fm._first_line(e)}")
    return Handler


def parse_args(argv):
    p = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    p.add_argument("map", help="the HDF5 map written by `flashinterp decode`")
    p.add_argument("other", nargs="?", help="a second map of the same model shape (side by side, compare)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--concepts", metavar="FILE", help="concepts file (JSON name -> words) for the search page's sets")
    p.add_argument("--sweep", metavar="FILE", help="a flashinterp sweep file: causal scores on neuron pages and /sweep")
    p.add_argument("--partial", action="store_true", help="read maps whose decode did not finish")
    a = p.parse_args(argv)
    if not 0 <= a.port <= 65535:
        p.error("--port must be 0..65535")
    return a


def run(argv):
    a = parse_args(argv)
    t0 = time.time()
    site = Site(a.map, a.other, a.partial, a.concepts, a.sweep)
    try:
        httpd = http.server.HTTPServer((a.host, a.port), make_handler(site))
    except OSError as e:
        site.close()
        raise OSError(f"cannot listen on {a.host}:{a.port} ({e.strerror or e})") from None
    # Ctrl-C, and SIGTERM, end serve_forever (a background job may start with SIGINT ignored).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    host, port = httpd.server_address[:2]
    print(f"serving http://{host}:{port}/ ({a.map}{' and ' + a.other if a.other else ''}; ready in "
          f"{time.time() - t0:.1f} s; Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        print("serve: stopped", file=sys.stderr)
    finally:
        httpd.server_close()
        site.close()
    return 0


main = fm.command("serve", run)  # flashinterp-serve, analysis/serve


if __name__ == "__main__":
    sys.exit(main())
