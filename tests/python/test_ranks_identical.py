"""The same decode under mpirun -np 1, 2 and 3 gives bit-identical datasets (numpy on the raw bytes
and h5diff); an existing output is refused without --overwrite; a truncated or corrupt shard ends
the job under mpirun -np 2 with a clear error, no hang, and no complete-looking map.
"""
import json
import os
import shutil
import subprocess
import time
import sys

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

SIZE = ["--hidden", "64", "--intermediate", "128", "--layers", "2"]
# (options, rank counts): every matrix with 7 chunks per layer (the last one short); then 5 chunks
# in all (not a multiple of 2 or 3); then 2 chunks over 3 ranks (one rank has no work).
CONFIGS = [
    (["--matrices", "up,gate,down", "--chunk-rows", "19", "--bottom-k", "3"], [1, 2, 3]),
    (["--matrices", "up", "--layers", "1-1", "--chunk-rows", "26"], [1, 2, 3]),
    (["--matrices", "down", "--layers", "0-0", "--chunk-rows", "64", "--top-k", "5"], [1, 3]),
]


def datasets(path):
    """{'/up/top_ids': array, ...} for every dataset under the matrix groups and /vocab."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out["/" + name] = obj[...]
        for g in ("up", "gate", "down", "vocab"):
            if g in f:
                f[g].visititems(lambda n, o, g=g: visit(f"{g}/{n}", o))
        complete = int(f.attrs["complete"])
    t.check(complete == 1, f"{path}: complete = {complete}")
    return out


def same_bytes(a, b):
    if a.dtype == object:
        return a.shape == b.shape and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_identical(base, other):
    da, db = datasets(base), datasets(other)
    t.check(sorted(da) == sorted(db), f"dataset lists differ: {sorted(da)} vs {sorted(db)}")
    for name in da:
        t.check(same_bytes(da[name], db[name]), f"{name} differs between {base} and {other}")
    groups = sorted({"/" + n.split("/")[1] for n in da if not n.startswith("/vocab")})
    for g in groups:
        p = subprocess.run(["h5diff", "-r", base, other, g, g], capture_output=True, text=True)
        t.check(p.returncode == 0, f"h5diff reports differences in {g}:\n{p.stdout[-2000:]}{p.stderr[-500:]}")
    return len(da), groups


def check_ranks(model, tmp):
    for ci, (opts, ranks) in enumerate(CONFIGS):
        outs = {}
        for np_ in ranks:
            outs[np_] = t.decode(model, os.path.join(tmp, f"c{ci}-np{np_}.h5"), *opts, np_=np_)
        for np_ in ranks[1:]:
            n, groups = check_identical(outs[ranks[0]], outs[np_])
        print(f"  {' '.join(opts)}: -np {ranks} give bit-identical {n} datasets "
              f"(numpy raw bytes; h5diff -r on {', '.join(groups)})")
        if ci == 0:
            first = outs[ranks[0]]
    return first


def check_overwrite(model, existing, tmp):
    before = open(existing, "rb").read()
    mtime = os.stat(existing).st_mtime_ns
    # Plainly (no mpirun): exactly one line on stderr.
    p = t.run(["decode", "--model", model, "--out", existing, "--quiet"], check=False, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    t.check(p.returncode != 0, "decode over an existing file without --overwrite exited 0")
    t.check(len(lines) == 1, f"refusing to overwrite should print one line on stderr, got:\n{p.stderr}")
    # Under mpirun -np 2 as well: non-zero, and the message names the file.
    p2 = t.run(["decode", "--model", model, "--out", existing, "--quiet"], np_=2, check=False, timeout=120)
    t.check(p2.returncode != 0, "mpirun -np 2 decode over an existing file exited 0")
    t.check(os.path.basename(existing) in p2.stderr, f"mpirun error does not name the file:\n{p2.stderr}")
    t.check(open(existing, "rb").read() == before and os.stat(existing).st_mtime_ns == mtime,
            "the existing file was modified")
    print(f"  existing output refused without --overwrite: {lines[0]!r}")
    # With --overwrite it is replaced.
    t.decode(model, existing, "--overwrite", "--matrices", "up", np_=2)
    with h5py.File(existing, "r") as f:
        t.check(int(f.attrs["complete"]) == 1 and "gate" not in f, "--overwrite did not replace the map")
    print("  --overwrite replaces it")


def shard_of(model, tensor):
    idx = os.path.join(model, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as fp:
            return os.path.join(model, json.load(fp)["weight_map"][tensor])
    return os.path.join(model, "model.safetensors")


def check_bad_shard(model, tmp, how):
    bad = os.path.join(tmp, "bad-" + how)
    shutil.copytree(model, bad)
    shard = shard_of(bad, "model.layers.1.mlp.up_proj.weight")
    size = os.path.getsize(shard)
    if how == "truncated":
        with open(shard, "r+b") as fp:
            fp.truncate(size - size // 3)
    elif how == "header":  # a header length that points past the end of the file
        with open(shard, "r+b") as fp:
            fp.write((size * 4).to_bytes(8, "little"))
    else:  # a neuron matrix with an unsupported dtype of the same width (BF16 -> I16)
        header, data_off = t.read_safetensors_header(shard, keep_metadata=True)
        header["model.layers.1.mlp.up_proj.weight"]["dtype"] = "I16"
        js = json.dumps(header, separators=(",", ":")).encode()
        t.check(len(js) <= data_off - 8, "cannot rewrite the header in place")
        with open(shard, "r+b") as fp:
            fp.seek(8)
            fp.write(js + b" " * (data_off - 8 - len(js)))
    out = os.path.join(tmp, f"bad-{how}.h5")
    start = time.time()
    p = t.run(["decode", "--model", bad, "--out", out, "--quiet"], np_=2, check=False, timeout=60)
    took = time.time() - start
    t.check(p.returncode != 0, f"{how} shard: decode exited 0")
    err = p.stderr
    for crash in ("Segmentation fault", "core dumped", "terminate called", "Aborted (", "AddressSanitizer"):
        t.check(crash not in err, f"{how} shard: crash marker {crash!r} in stderr:\n{err}")
    named = [ln for ln in err.splitlines() if os.path.basename(shard) in ln]
    t.check(named, f"{how} shard: no stderr line names {os.path.basename(shard)}:\n{err}")
    t.check(len(set(named)) == 1, f"{how} shard: more than one distinct error line:\n{err}")
    if os.path.exists(out):
        with h5py.File(out, "r") as f:
            t.check(int(f.attrs.get("complete", 0)) != 1, f"{how} shard: {out} looks complete")
    print(f"  {how} shard: exit {p.returncode} after {took:.1f} s, error: {named[0].strip()!r}; "
          f"{'no file' if not os.path.exists(out) else 'incomplete file'} at --out")


def main():
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "model"), "--dtype", "bf16", "--seed", "7", "--shards", "2",
                             *SIZE)
        first = check_ranks(model, tmp)
        check_overwrite(model, first, tmp)
        check_bad_shard(model, tmp, "truncated")
        check_bad_shard(model, tmp, "header")
        check_bad_shard(model, tmp, "dtype")


if __name__ == "__main__":
    t.main(main)
