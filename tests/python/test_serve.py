"""analysis/serve in a real browser: headless Chromium driven by Selenium (Debian's chromium,
chromium-driver, python3-selenium), against two servers on free ports: one over a demo-model map
(2 ranks, --token-index, --bottom-k), one over two small synthetic maps (exact entropy/margin in
the first, none in the second). Each page is loaded, a search typed, links followed, and what is
shown is checked against the map read with h5py and a float64 decode of the demo model (top and
bottom tokens, probabilities, the entropy estimate or the exact one, the margin, the compare
page's agreement and Jaccard). Errors give 404/400 pages and the server keeps running; Ctrl-C
(SIGINT) stops it with exit 0. The static report's neuron pages open in the same browser.
Screenshots: $FI_BUILD_DIR/test-artifacts/serve/*.png.
"""
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import h5py
import numpy as np

sys.dont_write_bytecode = True
import fi_testlib as t  # noqa: E402

M = 16
GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_synthetic_map.py")
SERVE = os.path.join(t.SOURCE_DIR, "analysis", "serve")
SHOTS = os.path.join(os.environ.get("FI_BUILD_DIR", tempfile.gettempdir()), "test-artifacts", "serve")


class Server:
    """analysis/serve MAPS --port 0 as a child process; .url once it prints its address."""

    def __init__(self, tmp, *maps):
        self.err = open(os.path.join(tmp, f"serve-{len(os.listdir(tmp))}.err"), "w+")
        self.p = subprocess.Popen(["/usr/bin/python3", SERVE, *maps, "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, env=dict(os.environ, FI_SERVE_QUIET="1"))
        ready, _, _ = select.select([self.p.stdout], [], [], 120)
        line = self.p.stdout.readline() if ready else ""
        m = re.match(r"serving (http://[\d.]+:\d+/)", line)
        if not m:
            self.stop()
            self.err.seek(0)
            t.fail(f"analysis/serve did not start: {line!r} {self.err.read()!r}")
        self.url = m.group(1).rstrip("/")

    def get(self, path):
        """(status, body) of a GET through urllib."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as r:
                return r.status, r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8")

    def stop(self):
        """Ctrl-C; returns the exit code (killed after 20 s)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100",
              "--no-first-run", "--disable-extensions", f"--user-data-dir={tempfile.mkdtemp(prefix='fi-chromium-')}"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.set_page_load_timeout(60)
    d.set_script_timeout(30)
    return d


def shot(d, name):
    os.makedirs(SHOTS, exist_ok=True)
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))


def follow(d, el):
    """Clicks el and waits until the browser has loaded another page."""
    from selenium.webdriver.support.ui import WebDriverWait
    old = d.current_url
    el.click()
    WebDriverWait(d, 30).until(lambda x: x.current_url != old and
                               x.execute_script("return document.readyState") == "complete")


def css(d, sel):
    from selenium.webdriver.common.by import By
    return d.find_elements(By.CSS_SELECTOR, sel)


def rows_of(d, table_sel):
    """[(id, prob)] of a token table on the page."""
    return [(int(r.get_attribute("data-id")), float(r.get_attribute("data-prob"))) for r in css(d, table_sel + " tr.tokrow")]


def estimate(probs, V):
    """Float64 entropy estimate of the tools from a stored top-k (the rest spread evenly)."""
    p = np.asarray(probs, np.float64)
    p = p[p > 0]
    r = max(0.0, 1 - p.sum())
    return float(-(p * np.log(p)).sum() + (-r * np.log(r / (V - p.size)) if r > 0 else 0.0))


def check_demo(d, srv, out, model):
    """The demo-model map: neuron page vs float64, search typed in the page, links, overview."""
    planted = {p["token"]: p for p in t.load_planted(model)}
    dog = planted[" dog"]
    ref = t.Reference(model)
    probs = t.reference_probs(ref, "up", [0, 1])          # [L*N, V] float64
    n = 128
    with h5py.File(out, "r") as f:
        K, B, V = f["up/top_ids"].shape[2], f["up/bottom_ids"].shape[2], f["vocab/text"].shape[0]
        map_probs = f["up/top_probs"][...]
        has_exact = "entropy" in f["up"]
        exact = f["up/entropy"][...] if has_exact else None

    # -- the planted neuron's page: top and bottom tokens against float64 ---------------------------
    d.get(f"{srv.url}/neuron/up/{dog['layer']}/{dog['neuron']}")
    row = dog["layer"] * n + dog["neuron"]
    top, bottom = rows_of(d, "table.tokens.top"), rows_of(d, "table.tokens.bottom")
    want_top = np.argsort(-probs[row], kind="stable")[:K]
    want_bottom = np.argsort(probs[row], kind="stable")[:B]
    t.check(len(top) == K and top[0][0] == dog["token_id"], f"top rows {top[:3]}, planted {dog}")
    t.check(np.allclose([p for _, p in top], probs[row][want_top], rtol=1e-4) and
            np.allclose([p for _, p in top], probs[row][[i for i, _ in top]], rtol=1e-4),
            f"top probs {top[:3]} vs float64 {probs[row][want_top][:3]}")
    t.check(len(bottom) == B and np.allclose([probs[row][i] for i, _ in bottom], probs[row][want_bottom], rtol=1e-3),
            f"bottom ids {bottom[:3]} vs float64 {want_bottom[:3]}")
    t.check(css(d, "table.tokens.top .bar"), "no probability bars")
    ent = float(css(d, "#entropy")[0].get_attribute("data-value"))
    p64 = probs[row]
    h64 = float(-(p64[p64 > 0] * np.log(p64[p64 > 0])).sum())
    if has_exact:
        t.check(abs(ent - float(exact[dog["layer"], dog["neuron"]])) < 1e-6, f"page entropy {ent} vs /up/entropy")
        err = np.abs(exact.reshape(-1).astype(np.float64) -
                     np.array([-(q[q > 0] * np.log(q[q > 0])).sum() for q in probs])).max()
        print(f"  the map's exact /up/entropy vs float64 over all {probs.shape[0]} neurons: max error {err:.2e} nats")
        t.check(err < 1e-3, f"/up/entropy differs from float64 by {err}")
    else:
        want = estimate(map_probs[dog["layer"], dog["neuron"]], V)
        t.check(abs(ent - want) < 1e-6 and ent >= h64 - 1e-6 and "estimate" in css(d, "#entropy")[0].text,
                f"page entropy {ent}, float64 estimate {want}, true {h64}")
    mg = float(css(d, "#margin")[0].get_attribute("data-value"))
    s = np.sort(np.log(probs[row]))[::-1]
    t.check(abs(mg - (s[0] - s[1])) < 1e-3, f"margin {mg} vs float64 {s[0] - s[1]}")
    shot(d, "neuron-demo")
    follow(d, css(d, "#next")[0])
    t.check(d.current_url.endswith(f"/neuron/up/{dog['layer']}/{dog['neuron'] + 1}"), f"#next went to {d.current_url}")
    print(f"  neuron page L{dog['layer']} N{dog['neuron']}: top-{K} and bottom-{B} = float64 decode, entropy "
          f"{'exact' if has_exact else 'estimate'} {ent:.4f} (true {h64:.4f}), margin {mg:.4f}; #next followed")

    # -- search typed in the page, a result link followed ---------------------------------------------
    d.get(f"{srv.url}/search")
    box = css(d, "#q")[0]
    box.send_keys("dog")
    follow(d, css(d, "#go")[0])
    first = css(d, "#results tr.nrow")
    t.check(first, f"no results on {d.current_url}")
    got = (int(first[0].get_attribute("data-layer")), int(first[0].get_attribute("data-neuron")))
    t.check(got == (dog["layer"], dog["neuron"]), f"first search result {got}, planted {dog}")
    with h5py.File(out, "r") as f:
        ids = [i for i, b in enumerate(f["vocab/bytes"][...]) if bytes(b) in (b"dog", b" dog")]
        ti = f["up/token_index"]
        cand = sorted((-float(ti["probs"][i][j]), int(ti["layer"][i][j]), int(ti["neuron"][i][j]))
                      for i in ids for j in range(M) if ti["probs"][i][j] > 0)
    seen, want = set(), []
    for _, la, nn in cand:
        if (la, nn) not in seen:
            seen.add((la, nn))
            want.append((la, nn))
    shown = [(int(r.get_attribute("data-layer")), int(r.get_attribute("data-neuron"))) for r in css(d, "#results tr.nrow")]
    t.check(shown == want[:len(shown)] and len(shown) == min(20, len(want)), f"results {shown[:4]} vs index {want[:4]}")
    shot(d, "search-demo")
    follow(d, css(d, "#results a.nlink")[0])
    t.check(d.current_url.endswith(f"/neuron/up/{dog['layer']}/{dog['neuron']}"), f"result link -> {d.current_url}")
    print(f"  search typed in the page: {len(shown)} results = the token index merge (h5py), planted first; link followed")

    # -- overview: charts drawn by the script, a click opens the layer --------------------------------
    d.get(srv.url + "/")
    with h5py.File(out, "r") as f:
        top1 = f["up/top_ids"][:, :, 0].reshape(-1)
    counts = np.bincount(top1, minlength=V)
    freq = [(int(r.find_elements("css selector", "td")[0].text), int(r.find_elements("css selector", "td")[2].text))
            for r in css(d, "table.frequent tr")[1:]]
    t.check(freq and all(counts[i] == c for i, c in freq) and [c for _, c in freq] == sorted(counts, reverse=True)[:len(freq)],
            f"most frequent top-1 tokens {freq[:3]} vs numpy")
    circles = css(d, "#chart-up-entropy circle")
    t.check(len(circles) == 2, f"{len(circles)} points in the entropy chart, want 2 layers")
    shot(d, "overview-demo")
    follow(d, circles[1])
    t.check(d.current_url.endswith("/layer/up/1"), f"chart click -> {d.current_url}")
    shown = [(int(r.get_attribute("data-neuron"))) for r in css(d, "table.neurons tr.nrow")]
    est = np.array([estimate(map_probs[1, j], V) for j in range(n)]) if not has_exact else exact[1]
    want = list(np.lexsort((np.arange(n), est))[:len(shown)])
    t.check(shown == want, f"layer 1 most specialised {shown[:5]}, lowest entropy {want[:5]}")
    shot(d, "layer-demo")
    print(f"  overview: the chart has a point per layer, a click opened /layer/up/1, its {len(shown)} neurons in "
          "order of lowest entropy (float64 here)")


def check_synthetic(d, srv, a, b):
    """Two synthetic maps: exact vs estimated entropy side by side; the compare page vs numpy."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ia, ib = fa["up/top_ids"][...], fb["up/top_ids"][...]
        ent_a, mar_a, pb, V = fa["up/entropy"][...], fa["up/margin"][...], fb["up/top_probs"][...], fa["vocab/text"].shape[0]
    L, N, K = ia.shape
    d.get(f"{srv.url}/neuron/up/2/30")
    ea = float(css(d, "#map-a #entropy")[0].get_attribute("data-value"))
    eb = float(css(d, "#map-b #entropy")[0].get_attribute("data-value"))
    ma = float(css(d, "#map-a #margin")[0].get_attribute("data-value"))
    t.check(abs(ea - ent_a[2, 30]) < 1e-6 and "exact" in css(d, "#map-a #entropy")[0].text, f"map A entropy {ea}")
    t.check(abs(eb - estimate(pb[2, 30], V)) < 1e-6 and "estimate" in css(d, "#map-b #entropy")[0].text,
            f"map B entropy {eb}")
    t.check(abs(ma - mar_a[2, 30]) < 1e-6, f"margin {ma} vs /up/margin {mar_a[2, 30]}")
    t.check([i for i, _ in rows_of(d, "#map-b table.tokens.top")] == list(ib[2, 30]), "map B's tokens differ")
    with h5py.File(a, "r") as fa:
        cm, names = fa["up/concept_mass"][2, 30], [x.decode() for x in fa["up/concept_mass"].attrs["concepts"]]
        dog_p = float(fa["up/top_probs"][2, 30, 0])
    shown = {r.get_attribute("data-name"): float(r.get_attribute("data-mass")) for r in css(d, "#map-a table.concept-mass tr[data-name]")}
    t.check(shown == {n: float(x) for n, x in zip(names, cm)} and dog_p <= shown["animals"] <= dog_p + 0.2,
            f"concept mass {shown} vs /up/concept_mass {dict(zip(names, cm))} (' dog' alone {dog_p})")
    t.check(not css(d, "#map-b table.concept-mass"), "map B has no concept_mass but the page shows one")
    shot(d, "neuron-side-by-side")
    print("  side by side: map A's exact /up/entropy, /up/margin and /up/concept_mass, map B's estimate, B's own tokens")

    d.get(f"{srv.url}/compare")
    same = (ia[:, :, 0] == ib[:, :, 0]).mean(axis=1)
    worst = int(np.argmin(same))
    t.check(len(css(d, "#chart-agreement circle")) == L, "agreement chart")
    m_ = re.search(r"top-1 the same for (\d+) of (\d+)", css(d, "#layer-stats")[0].text)
    t.check(m_ and int(m_.group(1)) == int((ia[worst, :, 0] == ib[worst, :, 0]).sum()) and int(m_.group(2)) == N,
            f"layer {worst}: {css(d, '#layer-stats')[0].text}")
    jac = np.array([len(set(ia[worst, j]) & set(ib[worst, j])) / len(set(ia[worst, j]) | set(ib[worst, j]))
                    for j in range(N)])
    shown = [(int(r.get_attribute("data-neuron")), float(r.find_elements("css selector", "td")[2].text))
             for r in css(d, "#changed tr.nrow")]
    t.check(shown and np.allclose([j for _, j in shown], np.sort(jac)[:len(shown)], atol=1e-3) and
            all(abs(jac[nn] - j) < 1e-3 for nn, j in shown), f"most changed {shown[:3]}, numpy {np.sort(jac)[:3]}")
    shot(d, "compare")
    follow(d, css(d, "#changed a.nlink")[0])
    t.check(f"/neuron/up/{worst}/{shown[0][0]}" in d.current_url, f"compare link -> {d.current_url}")
    print(f"  compare: layer {worst} (lowest agreement) shown first; same top-1 count and the {len(shown)} lowest "
          "Jaccard = numpy; link followed")

    d.get(f"{srv.url}/search?q=%20Golden%20Gate")
    t.check("Multi-token" in d.page_source and css(d, "tr.nrow"), "multi-token search page")
    shot(d, "search-multi-token")


def check_errors(srv):
    for path, code in (("/neuron/up/99/0", 404), ("/neuron/up/0/999999", 404), ("/neuron/up/0/0?expert=1", 404),
                       ("/neuron/nope/0/0", 404), ("/search?regex=%5B", 400), ("/nothing", 404), ("/layer/up/0?by=x", 400)):
        st, body = srv.get(path)
        t.check(st == code and 'id="error"' in body, f"{path}: {st}, want {code}")
    st, _ = srv.get("/")
    t.check(st == 200, "the server stopped answering after the errors")


def main():
    try:
        import selenium  # noqa: F401
    except ImportError:
        t.fail("python3-selenium is missing (launch/setup-deps.sh --with-browser installs chromium, chromium-driver, "
               "python3-selenium; launch/test.sh asks for it)")
    for exe in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        t.check(os.path.exists(exe), f"{exe} is missing (launch/setup-deps.sh --with-browser)")
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "model"), "--layers", "2", "--hidden", "64", "--intermediate", "128",
                             "--seed", "21")
        out, _ = t.decode_with_index(model, os.path.join(tmp, "map.h5"), M, "--bottom-k", "5")
        syn_a, syn_b = os.path.join(tmp, "a.h5"), os.path.join(tmp, "b.h5")
        cfile = os.path.join(tmp, "concepts.json")
        with open(cfile, "w") as f:
            json.dump({"animals": ["dog", "cat"], "colours": ["red", "blue"]}, f)
        for path, extra in ((syn_a, ["--concepts", cfile]), (syn_b, ["--changed", "0.3", "--no-stats"])):
            p = subprocess.run(["/usr/bin/python3", GEN, path, "--layers", "4", "--neurons", "300", "--token-index", "8",
                                "--chunk-rows", "128", *extra], capture_output=True, text=True, timeout=300)
            t.check(p.returncode == 0, f"make_synthetic_map.py: {p.stderr}")
        rep = os.path.join(tmp, "report")
        p = t.analysis("report", syn_a, "--out", rep, "--specialised", "5", timeout=300)
        t.check(p.returncode == 0, f"report: {p.stderr}")
        servers, d = [], None
        try:
            demo = Server(tmp, out)
            servers.append(demo)
            pair = Server(tmp, syn_a, syn_b)
            servers.append(pair)
            d = browser()
            check_demo(d, demo, out, model)
            check_synthetic(d, pair, syn_a, syn_b)
            check_errors(pair)
            print("  404 / 400 pages for a bad layer, neuron, matrix, expert, regex, path; the server keeps answering")
            # The static report: its specialised table links to neuron pages of the same design.
            d.get("file://" + os.path.join(rep, "index.html"))
            follow(d, css(d, "#specialised-up a")[0])
            t.check(d.current_url.endswith(".html") and css(d, "table.tokens.top tr.tokrow") and css(d, "#entropy"),
                    f"static neuron page {d.current_url}")
            shot(d, "report-neuron-page")
            print(f"  the static report's first specialised neuron opens its page ({os.path.relpath(d.current_url, 'file://' + rep)})")
        finally:
            if d is not None:
                d.quit()
            codes = [s.stop() for s in servers]
        t.check(codes == [0, 0], f"serve after Ctrl-C exited {codes}, want 0")
        # Refusals at start: one line, exit 1 (a missing map, a corrupt one, a port in use).
        with h5py.File(syn_b, "r+") as f:
            f["up/top_ids"][1, 2, 0] = 2 ** 30
        busy = Server(tmp, syn_a)
        port = busy.url.rsplit(":", 1)[1]
        try:
            for args, words in (([os.path.join(tmp, "missing.h5")], ("missing.h5",)), ([syn_b], ("/up/top_ids",)),
                                ([syn_a, "--port", port], ("cannot listen", port))):
                p = subprocess.run(["/usr/bin/python3", SERVE, *args, *(["--port", "0"] if "--port" not in args else [])],
                                   capture_output=True, text=True, timeout=120)
                t.check(t.one_line_error(p, *words), f"serve {args}: {p.returncode} {p.stderr!r}")
        finally:
            busy.stop()
        print("  refused at start with one line: a missing map, a corrupt token id, a port in use")
        print(f"  Ctrl-C stops both servers (exit 0); screenshots in {SHOTS}")


if __name__ == "__main__":
    t.main(main)
