"""analysis/report on a real map (2 ranks, up/gate/down): one static index.html with no network
resources, its PNG plots, per-layer statistics equal to a computation over the map's datasets, the
planted neurons at the top of the most specialised list, a searchable table of every neuron (the
inline JavaScript run under node, when node is installed, finds the planted " dog" neuron);
--table-max; a partial map is refused unless --partial; show --json's entropy bounds.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

MATRICES = ["up", "gate", "down"]
N = 128

# A minimal DOM for the page's script: the input box, the matrix selector, the table body.
NODE_DRIVER = r"""
const fs = require('fs');
const page = fs.readFileSync(process.argv[2], 'utf8');
const grab = id => {
  const m = page.match(new RegExp("<script type='application/json' id='" + id + "'>([\\s\\S]*?)</script>"));
  return m[1];
};
const script = page.match(/<script>([\s\S]*?)<\/script>/)[1];
function el(text) {
  return { textContent: text || '', value: '', children: [], listeners: {},
           addEventListener(ev, f) { this.listeners[ev] = f; },
           appendChild(c) { this.children.push(c); } };
}
const els = { 'fi-table': el(grab('fi-table')), q: el(), qm: el(), tbody: el(), qinfo: el() };
Object.defineProperty(els.tbody, 'textContent', { set(v) { this.children = []; }, get() { return ''; } });
global.document = { getElementById: id => els[id], createElement: () => el() };
eval(script);
const out = {};
for (const q of JSON.parse(process.argv[3])) {
  els.q.value = q[0]; els.qm.value = q[1];
  els.q.listeners.input();
  out[q[0] + '|' + q[1]] = { info: els.qinfo.textContent,
    rows: els.tbody.children.map(tr => tr.children.map(td => String(td.textContent))) };
}
console.log(JSON.stringify(out));
"""


def entropy_py(probs, vocab):
    """The show/report entropy estimate and lower bound for one neuron, written out plainly."""
    p = [float(x) for x in probs if x > 0]
    h = -sum(x * math.log(x) for x in p)
    r = max(0.0, 1.0 - sum(p))
    rest = vocab - len(p)
    hi = h - r * math.log(r / rest) if r > 0 else h
    q = math.floor(r / p[-1])
    rem = r - q * p[-1]
    lo = h - q * p[-1] * math.log(p[-1]) - (rem * math.log(rem) if rem > 0 else 0.0)
    return hi, lo


def check_exact(out, tmp):
    """A map with /<matrix>/entropy (the decode's exact statistic, itself checked against float64 in
    test_decode_reference): the per-layer entropy mean is the mean of those values, and the table
    ranks by them, lowest first (numpy's order). (In this 64-wide demo model every distribution is
    near uniform, ~11.68 of ln V = 11.76 nats, so the planted neurons do not lead by entropy; they
    lead by margin, checked below.)"""
    rep = os.path.join(tmp, "report-exact")
    p = t.analysis("report", out, "--out", rep)
    t.check(p.returncode == 0, f"report failed: {p.stderr}")
    with open(os.path.join(rep, "index.html"), encoding="utf-8") as f:
        page = f.read()
    stats = json.loads(re.search(r"id='fi-stats'>(.*?)</script>", page, re.S).group(1))
    table = json.loads(re.search(r"id='fi-table'>(.*?)</script>", page, re.S).group(1))
    with h5py.File(out, "r") as f:
        ent = {mat: f[mat]["entropy"][...].astype(np.float64) for mat in MATRICES}
    for mat in MATRICES:
        for li in range(2):
            w = ent[mat][li].mean()
            got = stats[mat][li]["entropy_mean"]
            t.check(abs(got - w) <= 1e-6 * max(1.0, abs(w)), f"/{mat} layer {li}: exact entropy_mean {got} vs {w}")
        rows = [r for r in table if r[0] == mat]
        want = np.lexsort((np.arange(2 * N), ent[mat].reshape(-1)))
        t.check([(r[1], r[2]) for r in rows] == [(int(i) // N, int(i) % N) for i in want],
                f"/{mat}: table not by exact entropy, lowest first (numpy)")
    t.check("lowest exact entropy" in page, "the page does not say it ranks by exact entropy")
    print("  a map with exact entropies: per-layer means are the map's, the table ranks by them (numpy)")


def main():
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "model"), "--layers", "2", "--hidden", "64",
                             "--intermediate", str(N), "--seed", "5")
        out = t.decode(model, os.path.join(tmp, "map.h5"), "--matrices", ",".join(MATRICES),
                       "--bottom-k", "2", "--token-index", "0")
        planted = t.load_planted(model)
        check_exact(out, tmp)
        # The checks below are of a map as decodes wrote them before the exact statistics: the
        # estimated entropy, the ranking by margin.
        old = os.path.join(tmp, "old.h5")
        shutil.copy(out, old)
        with h5py.File(old, "r+") as f:
            for mat in MATRICES:
                del f[mat]["entropy"]
        out = old
        rep = os.path.join(tmp, "report")
        p = t.analysis("report", out, "--out", rep)
        t.check(p.returncode == 0, f"report failed: {p.stderr}")
        t.check(p.stderr.strip() == "", f"report printed on stderr: {p.stderr[:500]!r}")
        index = os.path.join(rep, "index.html")
        with open(index, encoding="utf-8") as f:
            page = f.read()
        # Static: no network resources, no external scripts or styles, every image a local PNG.
        t.check(not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:|//)""", page, re.I), "a network resource")
        t.check("<link" not in page and not re.search(r"<script[^>]*\ssrc=", page), "external script/style")
        imgs = re.findall(r"<img src='([^']+)'", page)
        t.check(len(imgs) == 3 * len(MATRICES), f"{len(imgs)} images")
        for img in imgs:
            path = os.path.join(rep, img)
            t.check(os.path.isfile(path) and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"image {img}")
        print(f"  {index}: {len(page) // 1024} KiB, {len(imgs)} PNG plots, no network resources")

        stats = json.loads(re.search(r"id='fi-stats'>(.*?)</script>", page, re.S).group(1))
        table = json.loads(re.search(r"id='fi-table'>(.*?)</script>", page, re.S).group(1))
        with h5py.File(out, "r") as f:
            vocab = f["vocab/text"].shape[0]
            for mat in MATRICES:
                for li in range(2):
                    pr = f[mat]["top_probs"][li]
                    ids = f[mat]["top_ids"][li]
                    s = stats[mat][li]
                    t.check(s["layer"] == li and s["neurons"] == N, f"stats {s}")
                    want = dict(top1_prob_mean=pr[:, 0].astype(np.float64).mean(),
                                top1_prob_median=float(np.median(pr[:, 0].astype(np.float64))),
                                top1_prob_max=float(pr[:, 0].max()),
                                distinct_top1=len(set(ids[:, 0].tolist())),
                                entropy_mean=sum(entropy_py(pr[n], vocab)[0] for n in range(N)) / N,
                                logsumexp_mean=f[mat]["logsumexp"][li].astype(np.float64).mean())
                    for k, w in want.items():
                        t.check(abs(s[k] - w) <= 1e-6 * max(1.0, abs(w)), f"/{mat} layer {li}: {k} {s[k]} vs {w}")
        print("  per-layer statistics (top-1 prob mean/median/max, distinct top-1, entropy, lse) = the map's")

        t.check(len(table) == len(MATRICES) * 2 * N, f"table rows {len(table)}")
        with h5py.File(out, "r") as f:       # no /<matrix>/entropy: auto ranks by the margin
            margins = {mat: f[mat]["top_logits"][:, :, 0].astype(np.float64) - f[mat]["top_logits"][:, :, 1]
                       for mat in MATRICES}
        for mat in MATRICES:
            rows = [r for r in table if r[0] == mat]
            t.check(all(abs(r[6] - margins[mat][r[1], r[2]]) < 1e-3 for r in rows), f"/{mat}: table margins")
            want = np.lexsort((np.arange(2 * N), -margins[mat].reshape(-1)))
            t.check([(r[1], r[2]) for r in rows] == [(int(i) // N, int(i) % N) for i in want],
                    f"/{mat}: table not by margin, highest first (numpy)")
            mine = [(p_["layer"], p_["neuron"]) for p_ in planted if p_["matrix"] == mat]
            first = [(r[1], r[2]) for r in rows[:len(mine)]]
            t.check(sorted(first) == sorted(mine), f"/{mat}: most specialised {first}, planted {mine}")
            for p_ in planted:
                if p_["matrix"] == mat:
                    r = next(r for r in rows if (r[1], r[2]) == (p_["layer"], p_["neuron"]))
                    t.check(r[5][0][0] == p_["token"], f"table row {r} for {p_}")
        dog = next(p_ for p_ in planted if p_["token"] == " dog")
        t.check(f"<td>{dog['layer']}</td><td><a href='neuron/up/{dog['layer']}/{dog['neuron']}.html'>{dog['neuron']}</a>"
                in page and os.path.isfile(os.path.join(rep, "neuron", "up", str(dog["layer"]), f"{dog['neuron']}.html")),
                "dog neuron not in the specialised table, or its page missing")
        print(f"  table: all {len(table)} neurons, by margin (no exact entropy in the map); the {len(planted)} planted neurons "
              f"head their matrix's list")

        node = shutil.which("node") or shutil.which("nodejs")
        if node:
            drv = os.path.join(tmp, "drive.js")
            with open(drv, "w") as f:
                f.write(NODE_DRIVER)
            queries = [[" dog", ""], ["dog", "up"], [f"L{dog['layer']} N{dog['neuron']}", "up"], ["", ""],
                       ["zzzqqq", ""]]
            p = subprocess.run([node, drv, index, json.dumps(queries)], capture_output=True, text=True, timeout=60)
            t.check(p.returncode == 0, f"node: {p.stderr[-1000:]}")
            res = json.loads(p.stdout)
            want = ["up", str(dog["layer"]), str(dog["neuron"])]
            t.check(res[" dog|"]["rows"][0][:3] == want, f"page search ' dog': {res[' dog|']}")
            t.check(res["dog|up"]["rows"][0][:3] == want and all(r[0] == "up" for r in res["dog|up"]["rows"]),
                    f"page search dog/up: {res['dog|up']}")
            t.check(len(res[f"L{dog['layer']} N{dog['neuron']}|up"]["rows"]) == 1, "layer/neuron query")
            t.check(res["|"]["info"].startswith(f"{len(table)} matching") and len(res["|"]["rows"]) == 300,
                    f"empty query: {res['|']['info']}")
            t.check(res["zzzqqq|"]["info"].startswith("0 matching"), "no match")
            print(f"  page script under node: ' dog' -> {res[' dog|']['rows'][0][:3]} first "
                  f"({res[' dog|']['info']}); layer/neuron query; matrix filter")
        else:
            print("  page script: SKIPPED (no node to run it)")

        small = os.path.join(tmp, "small")
        p = t.analysis("report", out, "--out", small, "--matrix", "gate", "--table-max", "10", "--specialised", "3")
        t.check(p.returncode == 0, f"report --table-max: {p.stderr}")
        with open(os.path.join(small, "index.html"), encoding="utf-8") as f:
            pg = f.read()
        tb = json.loads(re.search(r"id='fi-table'>(.*?)</script>", pg, re.S).group(1))
        t.check(len(tb) == 10 and {r[0] for r in tb} == {"gate"} and "most specialised of 256" in pg,
                f"--table-max 10: {len(tb)} rows")
        print("  --matrix gate --table-max 10: 10 most specialised rows, said on the page")

        partial = os.path.join(tmp, "partial.h5")
        shutil.copy(out, partial)
        with h5py.File(partial, "r+") as f:
            f.attrs["complete"] = np.int64(0)
        p = t.analysis("report", partial, "--out", os.path.join(tmp, "rp"))
        t.check(t.one_line_error(p, "partial"), f"partial: {p.returncode} {p.stderr!r}")
        p = t.analysis("report", partial, "--out", os.path.join(tmp, "rp"), "--partial")
        t.check(p.returncode == 0 and "Partial map" in open(os.path.join(tmp, "rp", "index.html")).read(), "--partial")
        print("  partial map refused with one line; --partial reports it, marked partial")

        # show --json: the entropy bounds of the planted dog neuron.
        js = t.analysis_json("show", out, "--layer", dog["layer"], "--neuron", dog["neuron"])
        with h5py.File(out, "r") as f:
            hi, lo = entropy_py(f["up/top_probs"][dog["layer"], dog["neuron"]], vocab)
        e = js["entropy"]
        t.check(js["top"][0]["token"] == " dog" and abs(e["estimate_nats"] - hi) < 1e-9 and
                abs(e["lower_bound_nats"] - lo) < 1e-9 and lo <= hi <= math.log(vocab) and len(js["bottom"]) == 2,
                f"show --json: {e}")
        print(f"  show --json: entropy {e['estimate_nats']:.4f} nats (lower bound {e['lower_bound_nats']:.4f})")


if __name__ == "__main__":
    t.main(main)
