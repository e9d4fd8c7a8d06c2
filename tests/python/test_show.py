"""analysis/show on a real map: a planted neuron shows its planted token first; a partial map
(complete = 0) is refused with one line and exit 1 unless --partial; the reader module refuses
files that are not maps.
"""
import json
import os
import shutil
import subprocess
import sys

import h5py

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402
import flashinterp_map as fm  # noqa: E402

SHOW = os.path.join(t.SOURCE_DIR, "analysis", "show")


def show(*args):
    return subprocess.run([SHOW, *map(str, args)], capture_output=True, text=True, timeout=60)


def first_token_line(out):
    """The first row of the top-token table: (id, prob, text)."""
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("top tokens"))
    row = lines[i + 2].split(None, 4)
    return int(row[1]), float(row[2]), row[4]


def main():
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "model"), "--dtype", "bf16", "--layers", "2",
                             "--hidden", "64", "--intermediate", "128", "--seed", "3")
        out = t.decode(model, os.path.join(tmp, "map.h5"), "--matrices", "up,gate,down",
                       "--bottom-k", "3", np_=2)
        with open(os.path.join(model, "planted.json")) as fp:
            planted = json.load(fp)["planted"]
        t.check(planted, "no planted neurons")

        p = show("--help")
        t.check(p.returncode == 0 and "--neuron" in p.stdout, f"show --help failed:\n{p.stderr}")

        for pl in planted:
            p = show(out, "--layer", pl["layer"], "--neuron", pl["neuron"], "--matrix", pl["matrix"])
            t.check(p.returncode == 0, f"show failed for {pl}:\n{p.stderr}")
            tid, prob, text = first_token_line(p.stdout)
            t.check(tid == pl["token_id"] and text == repr(pl["token"]),
                    f"show {pl}: first row is {tid} {text}, want {pl['token_id']} {pl['token']!r}\n{p.stdout}")
        print(f"  show prints the planted token first for all {len(planted)} planted neurons, e.g.")
        print("    " + "\n    ".join(p.stdout.splitlines()[:4]))

        with fm.open_map(out) as m:
            pl = planted[0]
            top = m.top(pl["matrix"], pl["layer"], pl["neuron"], k=3)
            t.check(top.text[0] == pl["token"] and len(top.ids) == 3, f"reader top(): {top}")
            t.check(m.token_text([pl["token_id"]]) == [pl["token"]], "token_text")
            t.check(pl["token_id"] in m.token_id(pl["token"]), "token_id lookup")
            t.check(m.matrices() == ["up", "gate", "down"], f"matrices {m.matrices()}")
            t.check(list(m.layers("up")) == [0, 1], f"layers {m.layers('up')}")
            t.check(m.top1(pl["matrix"], pl["layer"])[pl["neuron"]] == pl["token_id"], "top1")
            t.check(m.logsumexp("up", 0).shape == (128,), "logsumexp shape")
            t.check(len(m.bottom("up", 0, 5).ids) == 3, "bottom")
        print("  flashinterp_map reader: top, token_text, token_id, layers, top1, logsumexp, bottom ok")

        # Bad arguments: one line on stderr, exit 1 (argparse's own usage errors exit 2).
        for args, what in (((out, "--layer", 9, "--neuron", 0), "layer 9"),
                           ((out, "--layer", 0, "--neuron", 128), "neuron 128")):
            p = show(*args)
            t.check(p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and what in p.stderr,
                    f"show {args}: exit {p.returncode}, stderr {p.stderr!r}")

        partial = os.path.join(tmp, "partial.h5")
        shutil.copy(out, partial)
        with h5py.File(partial, "r+") as f:
            f.attrs["complete"] = 0
        pl = planted[0]
        args = (partial, "--layer", pl["layer"], "--neuron", pl["neuron"], "--matrix", pl["matrix"])
        p = show(*args)
        lines = p.stderr.strip().splitlines()
        t.check(p.returncode == 1 and len(lines) == 1 and "partial" in lines[0] and not p.stdout,
                f"show on a partial map: exit {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r}")
        print(f"  partial map refused: {lines[0]}")
        p = show(*args, "--partial")
        t.check(p.returncode == 0 and first_token_line(p.stdout)[0] == pl["token_id"],
                f"show --partial failed:\n{p.stdout}{p.stderr}")
        try:
            fm.open_map(partial)
            t.fail("open_map accepted a partial map")
        except fm.MapError:
            pass
        fm.open_map(partial, partial=True).close()
        print("  --partial / partial=True reads it")

        notmap = os.path.join(tmp, "other.h5")
        with h5py.File(notmap, "w") as f:
            f.attrs["format"] = "something-else"
        p = show(notmap, "--layer", 0, "--neuron", 0)
        t.check(p.returncode == 1 and "not a flashinterp map" in p.stderr, f"non-map: {p.stderr!r}")
        with h5py.File(notmap, "w") as f:
            f.attrs["format"] = "flashinterp-map"
            f.attrs["format_version"] = 2
            f.attrs["complete"] = 1
        p = show(notmap, "--layer", 0, "--neuron", 0)
        t.check(p.returncode == 1 and "format_version" in p.stderr, f"version 2: {p.stderr!r}")
        p = show(os.path.join(tmp, "missing.h5"), "--layer", 0, "--neuron", 0)
        t.check(p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, f"missing file: {p.stderr!r}")
        print("  other files refused: wrong format, format_version 2, missing file")


if __name__ == "__main__":
    t.main(main)
