#!/usr/bin/python3
"""Resume after kill: a decode killed (SIGKILL, via the FLASHINTERP_TEST_KILL_AT hook) at five
points — during the vocab write, after a round's data but before its done bits, after its done
bits, between the last chunk and `complete`, and before the rename — then run again with
--resume gives datasets bit-identical to an uninterrupted run (h5diff and raw bytes), token index
included. Periodic token index saves (--save-index-every, here after every round): a run killed
outright keeps the index of the rounds before (the resume redoes only the rest), and a kill inside
a save, between the lists and their included mask, still resumes to the same bits. Also: a stop
signal (SIGUSR1 to mpirun) exits 75 and resumes; a partial made with other options is refused; a
partial is never taken for a complete map."""
import os
import re
import signal
import subprocess
import time

import h5py

import fi_testlib as t

BASE = ["--matrices", "up,down", "--token-index", "4", "--top-k", "5"]
ARGS = BASE + ["--chunk-rows", "16"]


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.endswith("/logp") and not name.endswith("/included"):
                out[name] = obj[()]
        f.visititems(visit)
        complete = int(f.attrs["complete"])
    return out, complete


def same(a, b, what):
    da, ca = datasets(a)
    db, cb = datasets(b)
    t.check(ca == 1 and cb == 1, f"{what}: complete flags {ca} {cb}")
    t.check(sorted(da) == sorted(db), f"{what}: dataset lists differ: {sorted(set(da) ^ set(db))}")
    for k in da:
        x, y = da[k], db[k]
        eq = (x.tobytes() == y.tobytes()) if x.dtype != object else all(
            bytes(p) == bytes(q) if not isinstance(p, str) else p == q for p, q in zip(x, y))
        t.check(eq, f"{what}: dataset {k} differs from the uninterrupted run")
    for g in ("up", "down", "vocab"):
        p = subprocess.run(["h5diff", a, b, f"/{g}", f"/{g}"], capture_output=True, text=True)
        t.check(p.returncode == 0, f"{what}: h5diff /{g}: {p.stdout[-500:]}")


def test():
    with t.tempdir() as tmp:
        model = t.demo_model(f"{tmp}/m", "--hidden", "48", "--intermediate", "80", "--layers", "2")
        ref = t.decode(model, f"{tmp}/ref.h5", *ARGS, np_=2)
        for point in ("vocab", "data:3", "done:5", "complete", "rename"):
            out = f"{tmp}/k-{point.replace(':', '')}.h5"
            env = dict(os.environ, FLASHINTERP_TEST_KILL_AT=point)
            cmd = [*t.mpi_prefix(2), t.binary(), "decode", "--model", model, "--out", out, "--quiet", *ARGS]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
            t.check(p.returncode != 0, f"kill at {point}: the run was not killed")
            t.check(not os.path.exists(out), f"kill at {point}: {out} exists although the run died")
            t.check(os.path.exists(out + ".partial"), f"kill at {point}: no {out}.partial left")
            # Without --resume a partial is not overwritten silently.
            p = t.run(["decode", "--model", model, "--out", out, "--quiet", *ARGS], check=False)
            t.check(p.returncode != 0 and "--resume" in p.stderr, f"kill at {point}: partial not protected: {p.stderr}")
            t.decode(model, out, "--resume", *ARGS, np_=3)
            same(ref, out, f"kill at {point} then --resume")
            print(f"  killed at {point}, resumed with 3 ranks: identical")

        # 2 layers x 5 chunks x 2 matrices = 20 items, 10 rounds of 2 ranks. Killed after round 6's
        # data: rounds 0-5 are done and in the saved index, so exactly 12 chunks are skipped.
        # index:3 is inside the second save (after round 1), the first matrix's lists written.
        every = ["--save-index-every", "1e-9"]
        for point, skipped in (("data:6", 12), ("index:3", None)):
            out = f"{tmp}/p-{point.replace(':', '')}.h5"
            env = dict(os.environ, FLASHINTERP_TEST_KILL_AT=point)
            cmd = [*t.mpi_prefix(2), t.binary(), "decode", "--model", model, "--out", out, "--quiet", *ARGS, *every]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
            t.check(p.returncode != 0 and os.path.exists(out + ".partial"), f"kill at {point} (periodic saves): {p.stderr[-300:]}")
            p = t.run(["decode", "--model", model, "--out", out, "--resume", *ARGS, *every], np_=3)
            m = re.search(r"resuming .*: (\d+) of (\d+) chunks already done", p.stderr)
            t.check(m is not None, f"kill at {point}: no resume line in {p.stderr[-300:]}")
            if skipped is not None:
                t.check(int(m.group(1)) == skipped, f"kill at {point}: {m.group(1)} chunks skipped, expected {skipped}")
            same(ref, out, f"kill at {point} with periodic index saves, then --resume")
            print(f"  periodic index saves, killed at {point}: {m.group(1)} of {m.group(2)} chunks kept; identical")

        # A stop signal: exit 75 with the partial kept, then resume.
        out = f"{tmp}/sig.h5"
        # The decode holds after round 2 until the signal comes (FLASHINTERP_TEST_HOLD_ROUND), so
        # the signal finds it running however fast this machine is; it is sent as soon as the
        # partial map exists.
        cmd = [*t.mpi_prefix(2), t.binary(), "decode", "--model", model, "--out", out, *BASE, "--chunk-rows", "1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, FLASHINTERP_TEST_HOLD_ROUND="2"))
        deadline = time.time() + 60
        while not os.path.exists(out + ".partial") and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
        t.check(proc.returncode != 0 and "--resume" in err, f"stop signal: rc {proc.returncode}, stderr {err[-600:]}")
        t.check("Exit code:    75" in err or proc.returncode == 75, f"stop signal: exit code 75 expected: {err[-600:]}")
        ref1 = t.decode(model, f"{tmp}/ref1.h5", *BASE, "--chunk-rows", "1", np_=1)
        t.decode(model, out, "--resume", *BASE, "--chunk-rows", "1", np_=2)
        same(ref1, out, "SIGUSR1 then --resume")
        print("  SIGUSR1: stopped cleanly, resumed: identical")

        # A partial made with other options (here --bottom-k) is refused.
        env = dict(os.environ, FLASHINTERP_TEST_KILL_AT="done:1")
        other = f"{tmp}/other.h5"
        subprocess.run([t.binary(), "decode", "--model", model, "--out", other, "--quiet", *ARGS],
                       capture_output=True, env=env, timeout=120)
        p = t.run(["decode", "--model", model, "--out", other, "--resume", *ARGS, "--bottom-k", "2"], check=False)
        t.check(p.returncode != 0 and "another model or other options" in p.stderr,
                f"a partial with other options was not refused: {p.stderr}")
        with h5py.File(other + ".partial", "r") as f:
            t.check(int(f.attrs["complete"]) == 0, "a partial map says complete")
        print("  a partial made with other options is refused")


t.main(test)
