#!/usr/bin/python3
"""Page times of analysis/serve on two maps of the Llama 3.1 8B shape (32 x 14336 up neurons,
V = 128256, top-20, M = 32; made by tests/python/make_synthetic_map.py, the first with exact
entropy/margin and concept sets, the second 25 % redrawn and without them). Starts the server
on a free port, times each page with urllib (one warm-up, then the best and the median of 5),
and stops it. Not a test (goal: every page < 1 s). usage: tests/bench/serve_speed.py [DIR]
"""
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = "/usr/bin/python3"
PAGES = ["/", "/layer/up/20", "/layer/up/20?by=margin", "/neuron/up/20/1433", "/neuron/up/5/7000",
         "/search", "/search?q=dog", "/search?q=dog&variants=case&variants=plural&variants=inflect&variants=script",
         "/search?q=%20Golden%20Gate", "/search?q=%20Z%C3%BCrich", "/search?regex=%5E%20%3F%5BDd%5Dog",
         "/search?set=animals", "/compare", "/compare?layer=3", "/static/app.js"]


def main(argv):
    d = argv[0] if argv else os.environ.get("FI_BENCH_DIR", "/tmp/flashinterp-analysis-bench")
    os.makedirs(d, exist_ok=True)
    concepts = os.path.join(d, "concepts.json")
    if not os.path.exists(concepts):
        with open(concepts, "w") as f:
            f.write('{"animals": ["dog", "cat", "horse", "cow", "bird", "fish"], "colours": ["red", "blue", "green"]}')
    gen = os.path.join(ROOT, "tests", "python", "make_synthetic_map.py")
    a, b = os.path.join(d, "serve_a.h5"), os.path.join(d, "serve_b.h5")
    if not os.path.exists(a):
        subprocess.run([PY, gen, a, "--seed", "0", "--concepts", concepts], check=True)
    if not os.path.exists(b):
        subprocess.run([PY, gen, b, "--seed", "0", "--changed", "0.25", "--no-stats"], check=True)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"machine: {os.cpu_count()} cores, load {load}")
    t0 = time.time()
    p = subprocess.Popen([PY, os.path.join(ROOT, "analysis", "serve"), a, b, "--port", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, FI_SERVE_QUIET="1"))
    try:
        ready, _, _ = select.select([p.stdout], [], [], 300)
        line = p.stdout.readline() if ready else ""
        m = re.match(r"serving (http://\S+?)/ ", line)
        if not m:
            raise SystemExit(f"serve did not start: {line!r}")
        print(f"server start (open both maps, per-layer overview and agreement): {time.time() - t0:.2f} s")
        print(f"{'page':<88} {'best s':>7} {'median s':>9} {'KiB':>6}")
        for page in PAGES:
            times, size = [], 0
            for i in range(6):
                s = time.perf_counter()
                with urllib.request.urlopen(m.group(1) + page, timeout=120) as r:
                    size = len(r.read())
                    status = r.status
                if i:
                    times.append(time.perf_counter() - s)
            print(f"{page:<88} {min(times):>7.3f} {statistics.median(times):>9.3f} {size / 1024:>6.0f}"
                  + ("" if status == 200 else f"  status {status}"))
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
