#!/usr/bin/python3
"""A decode never writes a wrong map and never costs data (issue cases, under mpirun -np 2):
resuming another model's partial (a fine-tune of the same shapes) or a complete map made with
other options is refused; a second decode of the same OUT while one runs is refused by OUT.lock,
and a lock left by a killed run is taken over; --overwrite replaces only maps, never a file in
the model directory, a directory or a special file. Each refusal: exit != 0, one error line,
no complete-looking map, and the files that were there byte-identical afterwards."""
import hashlib
import os
import signal
import subprocess
import time

import h5py

import fi_testlib as t

ARGS = ["--chunk-rows", "64", "--matrices", "up,gate", "--backend", "cpu"]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def refused(args, *words, np_=2, env=None):
    """Runs decode ARGS, which must be refused with one error line holding each of words."""
    p = subprocess.run([*t.mpi_prefix(np_), t.binary(), "decode", *args], capture_output=True,
                       text=True, timeout=300, env=env)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("flashinterp: error:")]
    t.check(p.returncode != 0, f"decode {args} exited 0:\n{p.stderr}")
    t.check(len(errors) == 1 and all(w in errors[0] for w in words),
            f"decode {args}: expected one error line with {words}, got:\n{p.stderr}")
    for crash in ("Segmentation fault", "terminate called", "Aborted", "core dumped"):
        t.check(crash not in p.stderr, f"decode {args}: {crash} in stderr")
    return errors[0]


def complete(path):
    with h5py.File(path, "r") as f:
        return int(f.attrs["complete"]) == 1


def test():
    with t.tempdir() as tmp:
        base = t.demo_model(f"{tmp}/m")
        tuned = t.demo_model(f"{tmp}/mi", "--variant", "instruct")  # same shapes and files but the weights

        # 1. A partial of the base model, renamed, resumed with the fine-tune: refused.
        env = dict(os.environ, FLASHINTERP_TEST_KILL_AT="done:3")
        subprocess.run([t.binary(), "decode", "--model", base, "--out", f"{tmp}/p.h5", "--quiet", *ARGS],
                       capture_output=True, env=env, timeout=300)
        os.rename(f"{tmp}/p.h5.partial", f"{tmp}/y.h5.partial")
        before = digest(f"{tmp}/y.h5.partial")
        line = refused(["--model", tuned, "--out", f"{tmp}/y.h5", "--resume", "--quiet", *ARGS],
                       "y.h5.partial", "another model", "weights")
        t.check(digest(f"{tmp}/y.h5.partial") == before, "the refused partial changed")
        t.check(not os.path.exists(f"{tmp}/y.h5"), "a map appeared at y.h5")
        print(f"  fine-tune resumed onto the base model's partial: refused ({line[20:110]}...)")
        # The base model itself resumes it to a complete map.
        t.run(["decode", "--model", base, "--out", f"{tmp}/y.h5", "--resume", "--quiet", *ARGS], np_=2)
        t.check(complete(f"{tmp}/y.h5"), "the resumed map is not complete")

        # 7. --resume on a complete map with other options: refused; with the same: nothing to do.
        before = digest(f"{tmp}/y.h5")
        refused(["--model", base, "--out", f"{tmp}/y.h5", "--resume", "--quiet", *ARGS, "--top-k", "5"],
                "y.h5", "complete", "top_k")
        refused(["--model", tuned, "--out", f"{tmp}/y.h5", "--resume", "--quiet", *ARGS], "weights")
        p = t.run(["decode", "--model", base, "--out", f"{tmp}/y.h5", "--resume", *ARGS], np_=2)
        t.check("nothing to resume" in p.stderr, f"same options: {p.stderr}")
        t.check(digest(f"{tmp}/y.h5") == before, "the complete map changed")
        print("  --resume of a complete map: other options or weights refused, the same ones a no-op")

        # 2. A second decode of one OUT while the first runs (held after round 1): refused by the
        # lock; the first is then stopped by a signal, keeps its partial and resumes.
        out = f"{tmp}/q.h5"
        first = subprocess.Popen([*t.mpi_prefix(2), t.binary(), "decode", "--model", base, "--out", out,
                                  "--quiet", *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, FLASHINTERP_TEST_HOLD_ROUND="1"))
        deadline = time.time() + 120
        while not os.path.exists(out + ".partial") and time.time() < deadline:
            time.sleep(0.05)
        t.check(os.path.exists(out + ".lock"), "no OUT.lock while a decode runs")
        line = refused(["--model", base, "--out", out, "--overwrite", "--quiet", *ARGS, "--top-k", "3"],
                       "q.h5.lock", "another decode", "pid")
        t.check(os.path.exists(out + ".partial"), "the second decode removed the first one's partial")
        first.send_signal(signal.SIGUSR1)
        _, err = first.communicate(timeout=120)
        t.check(first.returncode != 0 and "--resume" in err, f"the first decode: rc {first.returncode} {err}")
        t.check(not os.path.exists(out + ".lock"), "the lock stayed after the first decode stopped")
        t.run(["decode", "--model", base, "--out", out, "--resume", "--quiet", *ARGS], np_=2)
        with h5py.File(out, "r") as f:
            t.check(int(f.attrs["complete"]) == 1 and int(f.attrs["top_k"]) == 20, "the resumed map is wrong")
        print(f"  a second decode while one runs: refused ({line[20:100]}...); the first resumed intact")

        # A lock left by a run killed outright (its pid is gone) is taken over.
        env = dict(os.environ, FLASHINTERP_TEST_KILL_AT="done:2")
        subprocess.run([t.binary(), "decode", "--model", base, "--out", f"{tmp}/k.h5", "--quiet", *ARGS],
                       capture_output=True, env=env, timeout=300)
        t.check(os.path.exists(f"{tmp}/k.h5.lock"), "a killed run left no lock (the test needs one)")
        p = t.run(["decode", "--model", base, "--out", f"{tmp}/k.h5", "--resume", *ARGS], np_=2)
        t.check("taking it over" in p.stderr and complete(f"{tmp}/k.h5"), f"stale lock: {p.stderr}")
        t.check(not os.path.exists(f"{tmp}/k.h5.lock"), "the lock stayed after the job")
        print("  a stale lock (kill -9) is taken over with a notice")

        # 5. --overwrite never replaces what is not a map.
        shard = os.path.join(base, "model.safetensors")
        before = digest(shard)
        refused(["--model", base, "--out", shard, "--overwrite", "--quiet", *ARGS], "model.safetensors",
                "model directory")
        t.check(digest(shard) == before, "the checkpoint changed")
        other = f"{tmp}/notes.txt"
        open(other, "w").write("my notes\n")
        refused(["--model", base, "--out", other, "--overwrite", "--quiet", *ARGS], "not a flashinterp map")
        t.check(open(other).read() == "my notes\n", "a file that is not a map was replaced")
        os.mkdir(f"{tmp}/dir.h5")
        refused(["--model", base, "--out", f"{tmp}/dir.h5", "--overwrite", "--quiet", *ARGS], "directory")
        os.mkfifo(f"{tmp}/fifo.h5")
        refused(["--model", base, "--out", f"{tmp}/fifo.h5", "--overwrite", "--quiet", *ARGS], "not a regular file")
        t.check(os.path.exists(f"{tmp}/dir.h5") and os.path.exists(f"{tmp}/fifo.h5"), "a directory or FIFO went")
        refused(["--model", base, "--out", f"{tmp}/" + "n" * 250 + ".h5", "--quiet", *ARGS], "too long")
        print("  --overwrite of the checkpoint, a text file, a directory, a FIFO: refused, all intact; "
              "a name too long for OUT.partial: refused")
        # A map is replaced, and the old one stays until the new one is complete.
        p = t.run(["decode", "--model", tuned, "--out", f"{tmp}/y.h5", "--overwrite", "--quiet", *ARGS], np_=2)
        t.check(complete(f"{tmp}/y.h5"), "--overwrite of a map failed")


t.main(test)
