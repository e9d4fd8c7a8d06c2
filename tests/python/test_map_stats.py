"""Maps written before the per-neuron statistics (no /<matrix>/entropy, /margin; the fingerprint
without its `stats=entropy,margin` item), made here from a fresh map with h5py: the Python reader
opens them and reads neurons as before; `decode --resume` refuses such an unfinished map with one
line naming the item and leaves it as it was, and refuses such a complete one likewise.
(The values of entropy and margin are checked against float64 numpy in test_decode_reference,
test_decode_families and test_gemm_bf16.)"""
import hashlib
import os
import shutil
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True
import fi_testlib as t  # noqa: E402
import flashinterp_map as fm  # noqa: E402


def make_old(path):
    """Turns a map into one written before the statistics."""
    with h5py.File(path, "r+") as f:
        for m in fm.MATRICES:
            if m in f:
                for name in fm.STATS_DATASETS:
                    del f[m][name]
        fp = f.attrs["fingerprint"].decode()
        t.check(fp.endswith(";stats=entropy,margin"), f"fingerprint without the stats item: {fp}")
        f.attrs["fingerprint"] = np.bytes_(fp[: -len(";stats=entropy,margin")])


def digest(path):
    with open(path, "rb") as fp:
        return hashlib.sha256(fp.read()).hexdigest()


def main():
    with t.tempdir() as d:
        model = t.demo_model(os.path.join(d, "m"), "--hidden", "64", "--intermediate", "96", "--layers", "1")
        out = os.path.join(d, "map.h5")
        args = ["--token-index", "0", "--chunk-rows", "32", "--backend", "cpu", "--quiet"]
        t.decode(model, out, *args, np_=1)
        with fm.open_map(out) as m:
            new_top = m.top("up", layer=0, neuron=5)
        old = os.path.join(d, "old.h5")
        shutil.copy(out, old)
        make_old(old)
        with fm.open_map(old) as m:  # the reader needs neither dataset
            t.check("entropy" not in m.h5["up"], "entropy still present")
            top = m.top("up", layer=0, neuron=5)
            t.check(list(top.ids) == list(new_top.ids), f"old map reads other ids: {top.ids} vs {new_top.ids}")
        # --resume of an old complete map: refused (the fingerprints differ), file untouched.
        before = digest(old)
        p = t.run(["decode", "--model", model, "--out", old, "--resume", *args], check=False)
        t.check(t.one_line_error(p, "stats=entropy,margin", "--overwrite"), f"old complete map: {p.stderr!r}")
        t.check(digest(old) == before, "the old complete map changed")
        # --resume of an old unfinished map: one line, exit 1, the partial file as it was.
        partial = os.path.join(d, "p.h5")
        shutil.copy(old, partial + ".partial")
        with h5py.File(partial + ".partial", "r+") as f:
            f.attrs["complete"] = np.int64(0)
            f["up/done"][0, 1:] = 0
        before = digest(partial + ".partial")
        p = t.run(["decode", "--model", model, "--out", partial, "--resume", *args], check=False)
        t.check(t.one_line_error(p, "cannot --resume", "stats=entropy,margin"), f"old partial map: {p.stderr!r}")
        t.check(digest(partial + ".partial") == before and not os.path.exists(partial),
                "the old partial map changed")
        print("test_map_stats: a map without entropy/margin reads as before; --resume refuses it "
              f"in one line: {p.stderr.strip()}")


if __name__ == "__main__":
    t.main(main)
