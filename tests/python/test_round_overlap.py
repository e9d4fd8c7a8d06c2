#!/usr/bin/python3
"""The decode's round pipeline (src/job/round_overlap.h: round r+1 decoded while round r is
written; the CUDA backend's default, FLASHINTERP_ROUND_OVERLAP=1 here), under mpirun -np 2, against float64 numpy: a decode of many rounds gives the reference's
top tokens, probabilities and token index, and FLASHINTERP_ROUND_TIMES=1 prints each round's
decode / wait / write split. A token index saved at a stop (SIGUSR1 after a held round) or
after every round (then a SIGKILL inside a later round's write) holds exactly the rows of the
chunks its `included` mask names, each of them written (`done`): the lists equal the reference's
over those chunks alone. A SIGKILL inside a write while the next round is being decoded keeps the
done bits of the rounds flushed before. Each partial resumes (on 3 ranks) to the reference."""
import os
import re
import signal
import subprocess

import h5py
import numpy as np

import fi_testlib as t

# The CPU backend does not overlap by default (its decode keeps the cores busy); this test runs
# the overlap the CUDA backend uses, on the CPU.
os.environ["FLASHINTERP_ROUND_OVERLAP"] = "1"
M, K, N, CHUNK, LAYERS = 4, 5, 96, 16, [0, 1, 2]
ARGS = ["--matrices", "up", "--token-index", str(M), "--top-k", str(K), "--chunk-rows", str(CHUNK)]


_REF_INDEX = {}  # the reference index per row mask (the same masks recur)


def check_index(f, probs, rows, what):
    """The stored lists against the reference over `rows` (a mask of reference_probs' rows) only."""
    g = f["up/token_index"]
    lay, neu, pr = g["layer"][:], g["neuron"][:], g["probs"][:].astype(np.float64)
    key = rows.tobytes()
    if key not in _REF_INDEX:
        _REF_INDEX[key] = t.reference_token_index(np.where(rows[:, None], probs, 0.0), LAYERS, N, M)
    rl, rn, rp = _REF_INDEX[key]
    t.check(np.allclose(pr, rp, rtol=1e-5, atol=1e-12), f"{what}: index probabilities differ from the reference "
            f"(max abs {np.abs(pr - rp).max():.3g})")
    # An entry may differ from the reference only at a near-tie: the two probabilities agree.
    stored = probs[np.clip(np.asarray(LAYERS).searchsorted(lay) * N + neu, 0, None), np.arange(probs.shape[1])[:, None]]
    differ = (lay != rl) | (neu != rn)
    t.check(np.allclose(stored[differ], rp[differ], rtol=1e-6), f"{what}: {differ.sum()} entries name other neurons")
    t.check(bool(rows[np.asarray(LAYERS).searchsorted(lay) * N + neu].all()),
            f"{what}: the index names a neuron of a chunk it does not include")


def chunk_mask(bits):
    """[L, C] chunk bits -> [L * N] rows."""
    return np.repeat(bits.astype(bool), CHUNK, axis=1)[:, :N].reshape(-1)


def check_partial(path, probs, expect_done, expect_included, what):
    """expect_done: the chunks marked done, exactly or as a range (lo, hi)."""
    lo, hi = expect_done if isinstance(expect_done, tuple) else (expect_done, expect_done)
    with h5py.File(path, "r") as f:
        t.check(int(f.attrs["complete"]) == 0, f"{what}: the partial says complete")
        inc, done = f["up/token_index/included"][:], f["up/done"][:]
        t.check(lo <= int(done.sum()) <= hi, f"{what}: {int(done.sum())} chunks done, expected {lo}-{hi}")
        t.check(int(inc.sum()) == expect_included, f"{what}: {int(inc.sum())} chunks included, expected {expect_included}")
        t.check(bool((done[inc == 1] == 1).all()), f"{what}: a chunk is included whose data is not marked done")
        if expect_included:
            check_index(f, probs, chunk_mask(inc), what)


def check_map(path, ref, probs, what):
    with h5py.File(path, "r") as f:
        t.check(int(f.attrs["complete"]) == 1, f"{what}: not complete")
        ids, tp, lse = f["up/top_ids"][:], f["up/top_probs"][:].astype(np.float64), f["up/logsumexp"][:]
        for li, layer in enumerate(LAYERS):
            lg = ref.logits("up", layer, np.arange(N), "rms")
            want = t.ref_topk(lg, K)
            rp = np.take_along_axis(probs[li * N:(li + 1) * N], want, axis=1)
            t.check(np.allclose(lse[li], t.logsumexp(lg), rtol=1e-5), f"{what}: layer {layer} logsumexp")
            t.check(np.allclose(tp[li], rp, rtol=1e-4, atol=1e-7), f"{what}: layer {layer} top probabilities")
            got = np.take_along_axis(probs[li * N:(li + 1) * N], ids[li].astype(np.int64), axis=1)
            t.check(np.allclose(got, rp, rtol=1e-5), f"{what}: layer {layer} top ids (beyond near-ties)")
        t.check(int(f["up/token_index/included"][:].min()) == 1, f"{what}: a chunk is not included")
        check_index(f, probs, np.ones(len(LAYERS) * N, bool), what)


def test():
    with t.tempdir() as tmp:
        model = t.demo_model(f"{tmp}/m", "--hidden", "48", "--intermediate", str(N), "--layers", "3")
        ref = t.Reference(model)
        probs = t.reference_probs(ref, "up", LAYERS)  # [3 * 96, V]
        rounds = (len(LAYERS) * (N // CHUNK) + 1) // 2  # 18 chunks on 2 ranks

        # A decode of 9 rounds, each written while the next is decoded, with the time split.
        cmd = [*t.mpi_prefix(2), t.binary(), "decode", "--model", model, "--out", f"{tmp}/a.h5", *ARGS]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, FLASHINTERP_ROUND_TIMES="1"))
        t.check(p.returncode == 0, f"decode: {p.stderr[-800:]}")
        lines = re.findall(r"round (\d+): decode [0-9.]+ s, waited [0-9.]+ s, write [0-9.]+ s", p.stderr)
        t.check([int(r) for r in lines] == list(range(rounds)), f"FLASHINTERP_ROUND_TIMES: round lines {lines}")
        t.check(f"{rounds} rounds (overlap on): decode" in p.stderr, f"no summary of the round times: {p.stderr[-600:]}")
        check_map(f"{tmp}/a.h5", ref, probs, "overlapped decode")
        print(f"  {rounds} overlapped rounds: top tokens, probabilities and token index as float64; times printed")

        # A stop after round 2 (held there until SIGUSR1): rounds 0-2 = 6 chunks saved, no more.
        out = f"{tmp}/sig.h5"
        # The signal is sent once rank 0 has printed round 2's times (then it holds).
        proc = subprocess.Popen([*t.mpi_prefix(2), t.binary(), "decode", "--model", model, "--out", out, "--quiet",
                                 *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, FLASHINTERP_TEST_HOLD_ROUND="2", FLASHINTERP_ROUND_TIMES="1"))
        err = ""
        while "round 2:" not in err and proc.poll() is None:
            err += proc.stderr.readline()
        proc.send_signal(signal.SIGUSR1)
        err += proc.communicate(timeout=120)[1]
        t.check("stopped by a signal after 3 of 9 rounds" in err, f"no stop after round 2: {err[-600:]}")
        t.check(proc.returncode != 0 and "--resume" in err, f"stop signal: rc {proc.returncode}, {err[-600:]}")
        check_partial(out + ".partial", probs, 6, 6, "SIGUSR1 after round 2")
        t.decode(model, out, "--resume", *ARGS, np_=3)
        check_map(out, ref, probs, "SIGUSR1, then --resume on 3 ranks")
        print("  SIGUSR1 after round 2: the saved index is exactly that of the 6 chunks written; resumed")

        # A save after every round (these rounds do not overlap: a save waits for the decoder),
        # then SIGKILL inside round 5's write: the save after round 4 holds rounds 0-4 = 10 chunks.
        out = f"{tmp}/kill.h5"
        killed(model, out, "--save-index-every", "1e-7")
        check_partial(out + ".partial", probs, 10, 10, "saves every round, killed inside round 5's write")
        t.decode(model, out, "--resume", *ARGS, np_=3)
        check_map(out, ref, probs, "killed, then --resume on 3 ranks")
        print("  saves every round, killed inside round 5's write: the index covers exactly the 10 chunks "
              "of rounds 0-4; resumed")

        # No periodic save, SIGKILL inside round 5's write while round 6 is being decoded: the
        # done bits of rounds 0-3 reached the file, round 4's may have (they are sure to with
        # round 5's flush), round 5's not; no index.
        out = f"{tmp}/kill2.h5"
        killed(model, out)
        check_partial(out + ".partial", probs, (8, 10), 0, "killed inside round 5's write, round 6 in flight")
        t.decode(model, out, "--resume", *ARGS, np_=3)
        check_map(out, ref, probs, "killed in flight, then --resume on 3 ranks")
        print("  killed inside round 5's write with round 6 in flight: rounds 0-3 or 0-4 done, none included; resumed")


def killed(model, out, *extra):
    p = subprocess.run([*t.mpi_prefix(2), t.binary(), "decode", "--model", model, "--out", out, "--quiet", *ARGS,
                        *extra], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, FLASHINTERP_TEST_KILL_AT="data:5"))
    t.check(p.returncode != 0 and os.path.exists(out + ".partial"), f"kill at data:5: rc {p.returncode}")

t.main(test)
