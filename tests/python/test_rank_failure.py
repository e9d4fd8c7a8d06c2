#!/usr/bin/python3
"""One failing rank ends the whole job quickly, never a hang, under mpirun -np 3: a rank that
throws mid-run (injected with FLASHINTERP_TEST_FAIL_RANK) ends every rank with that rank's one
error line; a rank killed with SIGKILL ends the job too. Neither leaves a complete-looking map."""
import os
import signal
import subprocess
import time

import h5py

import fi_testlib as t


def test():
    with t.tempdir() as tmp:
        model = t.demo_model(f"{tmp}/m", "--hidden", "48", "--intermediate", "96", "--layers", "2")
        args = ["decode", "--model", model, "--chunk-rows", "2", "--quiet", "--matrices", "up,gate,down"]

        out = f"{tmp}/fail.h5"
        env = dict(os.environ, FLASHINTERP_TEST_FAIL_RANK="2")
        t0 = time.time()
        p = subprocess.run([*t.mpi_prefix(3), t.binary(), *args, "--out", out], capture_output=True,
                           text=True, timeout=60, env=env)
        took = time.time() - t0
        lines = [l for l in p.stderr.splitlines() if l.startswith("flashinterp: error:")]
        t.check(p.returncode != 0, "a failing rank did not fail the job")
        t.check(len(lines) == 1 and "rank 2: injected failure" in lines[0], f"expected one error line from rank 2: {p.stderr}")
        t.check(not os.path.exists(out), "a map was left at --out")
        with h5py.File(out + ".partial", "r") as f:
            t.check(int(f.attrs["complete"]) == 0, "the partial map says complete")
        print(f"  rank 2 of 3 threw: job ended in {took:.1f} s with one line: {lines[0]}")

        out = f"{tmp}/kill.h5"
        # Held after round 1 (FLASHINTERP_TEST_HOLD_ROUND), so the ranks are certainly running.
        proc = subprocess.Popen([*t.mpi_prefix(3), t.binary(), *args, "--out", out],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, FLASHINTERP_TEST_HOLD_ROUND="1"))
        deadline = time.time() + 60
        while not os.path.exists(out + ".partial") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        pids = subprocess.run(["pgrep", "-f", "--", f"--out {out}"], capture_output=True, text=True).stdout.split()
        ranks = []
        for x in pids:
            try:
                argv0 = open(f"/proc/{x}/cmdline", "rb").read().split(b"\0")[0]
            except OSError:
                continue
            if argv0.endswith(b"flashinterp"):
                ranks.append(int(x))
        t.check(len(ranks) >= 1, f"no rank processes found for {out}")
        t0 = time.time()
        os.kill(ranks[-1], signal.SIGKILL)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            t.fail("the job hung after one rank was killed")
        t.check(proc.returncode != 0, "the job succeeded although a rank was killed")
        t.check(not os.path.exists(out), "a map was left at --out after a rank was killed")
        print(f"  one rank of 3 killed with SIGKILL: job ended in {time.time() - t0:.1f} s")


t.main(test)
