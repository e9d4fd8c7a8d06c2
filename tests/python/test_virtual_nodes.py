"""The per-node parts of the decode (the LM-head window each node's ranks share, the ranks of a
node sharing its cores, the token-index merge) tested as several nodes on one machine: with
FLASHINTERP_TEST_NODE_SIZE=2, `mpirun -np 4` runs as 2 nodes x 2 ranks and `-np 3` as 2 + 1, and
each map is bit-identical (every dataset's raw values) to the map of one rank on one node.
"""
import os
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

SIZE = ["--hidden", "64", "--intermediate", "128", "--layers", "2"]
DECODE = ["--matrices", "up,down", "--chunk-rows", "24", "--bottom-k", "3", "--token-index", "4"]


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        t.check(int(f.attrs["complete"]) == 1, f"{path}: not complete")

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[...]
        f.visititems(visit)
    return out


def same(a, b, where):
    t.check(a.keys() == b.keys(), f"{where}: datasets differ: {sorted(a.keys() ^ b.keys())}")
    for k in a:
        x, y = a[k], b[k]
        if x.dtype == object:
            ok = len(x) == len(y) and all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(x, y))
        else:
            ok = x.shape == y.shape and x.tobytes() == y.tobytes()
        t.check(ok, f"{where}: dataset {k} differs from the one-rank map")


def main():
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "m"), *SIZE)
        base = os.path.join(tmp, "one.h5")
        t.run(["decode", "--model", model, "--out", base, "--quiet", *DECODE])
        want = datasets(base)
        os.environ["FLASHINTERP_TEST_NODE_SIZE"] = "2"
        try:
            for np_, nodes in ((4, 2), (3, 2)):
                out = os.path.join(tmp, f"np{np_}.h5")
                p = t.run(["decode", "--model", model, "--out", out, *DECODE], np_=np_, timeout=300)
                t.check(f"{np_} ranks, {nodes} nodes" in p.stderr,
                        f"np {np_}: the start line does not say {nodes} nodes:\n{p.stderr}")
                same(want, datasets(out), f"np {np_} as {nodes} virtual nodes")
                print(f"  mpirun -np {np_} as {nodes} nodes: {len(want)} datasets bit-identical to one rank")
        finally:
            del os.environ["FLASHINTERP_TEST_NODE_SIZE"]


if __name__ == "__main__":
    t.main(main)
