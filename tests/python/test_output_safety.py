#!/usr/bin/python3
"""A decode never writes a wrong map and never costs data (issue cases, under mpirun -np 2):
resuming another model's partial (a fine-tune of the same shapes) or a complete map made with
other options is refused; a second decode of the same OUT while one runs is refused by OUT.lock,
and a lock left by a killed run is taken over; --overwrite replaces only maps, never a file in
the model directory, a directory or a special file. Each refusal: exit != 0, one error line,
no complete-looking map, and the files that were there byte-identical afterwards.
The demo model is a small one (SMALL: hidden 64, intermediate 256, its 4 layers and real
vocabulary: 32 chunks of 64 rows): what is checked is which files a decode leaves and refuses,
not the numbers, and every case needs only a few chunks (the kills after 2, 3 and 5, the holds
after rounds 1 and 2); the default model's 128 chunks made each full decode 4 times as long.
The decodes keep a token index (M = 4, ARGS) unless a case says otherwise."""
import hashlib
import os
import re
import signal
import subprocess
import time

import h5py

import fi_testlib as t

BASE = ["--chunk-rows", "64", "--matrices", "up,gate", "--backend", "cpu"]
# A token index of 4, not the default 32: the same code (save in the partial, check on resume)
# at a seventh of the decode's time; the cases on the index itself give their own M.
ARGS = [*BASE, "--token-index", "4"]
SMALL = ["--hidden", "64", "--intermediate", "256"]  # demo-model options (see the docstring)


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
        base = t.demo_model(f"{tmp}/m", *SMALL)
        tuned = t.demo_model(f"{tmp}/mi", "--variant", "instruct", *SMALL)  # same shapes and files but the weights

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

        # 8. Damaged data in a partial's done chunks is decoded again, not trusted; a damaged
        # token index is rebuilt. The result equals an undamaged decode's.
        ref = t.decode(base, f"{tmp}/ref.h5", *BASE, "--token-index", "4")
        env = dict(os.environ, FLASHINTERP_TEST_KILL_AT="done:5")
        subprocess.run([t.binary(), "decode", "--model", base, "--out", f"{tmp}/c.h5", "--quiet", *BASE,
                        "--token-index", "4", "--save-index-every", "0.0001"], capture_output=True, env=env, timeout=300)
        with h5py.File(f"{tmp}/c.h5.partial", "r+") as f:
            done = f["up/done"][...]
            t.check(done.sum() >= 2, f"the killed run left {done.sum()} chunks done")
            l, c = [int(v[0]) for v in done.nonzero()]
            f["up/top_ids"][l, c * 64 + 3, 0] = 2_000_000_000
            f["up/top_probs"][l, c * 64 + 5, 1] = float("nan")
            f["up/token_index/layer"][7, 0] = 999
        os.remove(f"{tmp}/c.h5.lock")
        p = t.run(["decode", "--model", base, "--out", f"{tmp}/c.h5", "--resume", *BASE, "--token-index", "4"], np_=2)
        t.check("hold invalid data" in p.stderr and "1 chunk of /up" in p.stderr, f"no notice of the damage: {p.stderr}")
        t.check("token index of /up is damaged" in p.stderr, f"no notice of the damaged index: {p.stderr}")
        with h5py.File(ref, "r") as a, h5py.File(f"{tmp}/c.h5", "r") as b:
            for name in ("up/top_ids", "up/top_probs", "up/logsumexp", "gate/top_ids", "up/token_index/layer",
                         "up/token_index/neuron", "up/token_index/probs"):
                t.check(a[name][...].tobytes() == b[name][...].tobytes(), f"{name} differs after the damaged resume")
        print("  damaged ids, NaN probabilities and a damaged index in a partial: redone, the map equals a clean one")

        # 6. SIGTERM to mpirun (which SIGKILLs the ranks about 1 s later): the ranks stop at once;
        # every chunk written is kept and --resume completes the same map.
        out = f"{tmp}/term.h5"
        proc = subprocess.Popen([*t.mpi_prefix(2), t.binary(), "decode", "--model", base, "--out", out,
                                 *BASE, "--token-index", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=dict(os.environ, FLASHINTERP_TEST_HOLD_ROUND="2"))
        deadline = time.time() + 120
        while not os.path.exists(out + ".partial") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        t.check("stopped by SIGTERM/SIGINT" in err, f"no stop line after SIGTERM to mpirun: {err[-800:]}")
        t.check(not os.path.exists(out) and not complete(out + ".partial"), "SIGTERM left a complete-looking map")
        p = t.run(["decode", "--model", base, "--out", out, "--resume", *BASE, "--token-index", "0"], np_=2)
        m = re.search(r"(\d+) of (\d+) chunks already done", p.stderr)
        t.check(m is not None and int(m.group(1)) >= 6, f"SIGTERM kept too little: {p.stderr}")
        fresh = t.decode(base, f"{tmp}/fresh.h5", *BASE, "--token-index", "0")
        with h5py.File(fresh, "r") as a, h5py.File(out, "r") as b:
            t.check(a["up/top_ids"][...].tobytes() == b["up/top_ids"][...].tobytes(), "SIGTERM + resume differs")
        print(f"  SIGTERM to mpirun: stopped within its grace period, {m.group(1)} of {m.group(2)} chunks kept, "
              "resumed to the same map")

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
