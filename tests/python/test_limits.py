#!/usr/bin/python3
"""A hostile machine ends a decode with one line, never a crash or a hang (under mpirun -np 2):
a full file system (a 3 MiB tmpfs; skipped where this machine cannot mount one) is refused before
any work with the space needed; an address-space limit (ulimit -v, inherited by the ranks) that
cannot hold the decode is refused up front, one that can is a normal run; an option out of range
is one line, not one per rank."""
import os
import resource
import shlex
import shutil
import subprocess

import h5py

import fi_testlib as t


def decode(args, limit_as=None, np_=2, timeout=180):
    def lim():
        if limit_as:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    p = subprocess.run([*t.mpi_prefix(np_), t.binary(), "decode", *args], capture_output=True, text=True,
                       timeout=timeout, preexec_fn=lim)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("flashinterp: error:")]
    for crash in ("Segmentation fault", "terminate called", "Signal:", "core dumped", "Aborted"):
        t.check(crash not in p.stderr, f"decode {args}: {crash!r} in stderr:\n{p.stderr[-1500:]}")
    return p, errors


def test():
    with t.tempdir() as tmp:
        model = t.demo_model(f"{tmp}/m")
        base = ["--model", model, "--quiet", "--backend", "cpu"]

        # Disk full.
        mnt = f"{tmp}/small"
        os.mkdir(mnt)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt],
                                 capture_output=True).returncode == 0
        if not mounted:
            print("  disk full: SKIPPED (this machine cannot mount a tmpfs here)")
        else:
            try:
                p, errors = decode([*base, "--out", f"{mnt}/map.h5"])
                t.check(p.returncode != 0 and len(errors) == 1 and "needs" in errors[0] and "free" in errors[0],
                        f"disk full: expected one 'needs N MiB ... free' line:\n{p.stderr}")
                t.check(os.listdir(mnt) == [], f"disk full: left {os.listdir(mnt)}")
                print(f"  3 MiB file system: {errors[0][20:]}; nothing left behind")
            finally:
                subprocess.run(["umount", mnt])

        # Memory: ~977 MiB of address space cannot hold this decode (its token index and
        # LM-head); 2.5 GiB can.
        p, errors = decode([*base, "--out", f"{tmp}/v.h5"], limit_as=1000000 * 1024)
        t.check(p.returncode != 0 and len(errors) == 1 and "needs" in errors[0] and "ulimit -v" in errors[0],
                f"ulimit -v 1000000: expected one 'needs N MiB ... ulimit -v' line:\n{p.stderr[-1500:]}")
        t.check(not os.path.exists(f"{tmp}/v.h5") and not os.path.exists(f"{tmp}/v.h5.partial"),
                "ulimit -v: a map was left")
        print(f"  ulimit -v 1000000: {errors[0][20:]}")
        p, errors = decode([*base, "--out", f"{tmp}/v.h5"], limit_as=2500 * 1024 * 1024)
        t.check(p.returncode == 0 and not errors, f"ulimit -v 2.5 GiB: the decode failed:\n{p.stderr[-1500:]}")
        print("  ulimit -v 2.5 GiB: decoded")

        # Options out of range: one line for two ranks.
        for bad, word in ((["--chunk-rows", "0"], "--chunk-rows"), (["--threads", "-2"], "--threads")):
            p, errors = decode([*base, "--out", f"{tmp}/o.h5", *bad])
            t.check(p.returncode != 0 and len(errors) == 1 and word in errors[0],
                    f"{bad}: expected one error line under 2 ranks:\n{p.stderr}")
        p = t.run(["clamp", "--model", model, "--layer", "1", "--neuron", "3", "--values", "0,1e39",
                   "--prompt", "x", "--watch", " dog", "--backend", "cpu"], check=False)
        t.check(t.one_line_error(p, "--values", "1e39"), f"clamp --values 1e39: {p.stderr}")
        print("  --chunk-rows 0, --threads -2, clamp --values 1e39: one error line each")

        # A FIFO where a shard should be: refused, not a hang in open().
        fifo_model = f"{tmp}/fifo"
        os.mkdir(fifo_model)
        for f in ("config.json", "tokenizer.json"):
            shutil.copy(os.path.join(model, f), fifo_model)
        os.mkfifo(os.path.join(fifo_model, "model.safetensors"))
        p, errors = decode(["--model", fifo_model, "--out", f"{tmp}/f.h5", "--quiet"], timeout=60)
        t.check(p.returncode != 0 and len(errors) == 1 and "not a regular file" in errors[0],
                f"a FIFO shard: {p.stderr}")
        # The map's command_line reads back as the same words.
        out = f"{tmp}/with space's.h5"
        p, errors = decode([*base, "--out", out, "--token-index", "0", "--layers", "0-1"])
        t.check(p.returncode == 0, f"decode to a name with a space: {p.stderr}")
        with h5py.File(out, "r") as f:
            words = shlex.split(f.attrs["command_line"].decode())
        t.check(words[1:] == ["decode", *base, "--out", out, "--token-index", "0", "--layers", "0-1"],
                f"command_line does not read back: {words}")
        print("  a FIFO as the shard: one line; command_line is shell-quoted")

        # generate: past max_position_embeddings is one line; a prompt of more tokens than
        # T x vocab fits in one message (17000 x 128256 > 2^31) runs, since only the last
        # position's logits are sent.
        p = t.run(["generate", "--model", model, "--prompt", "hi", "--max-new-tokens", "200000",
                   "--backend", "cpu"], check=False)
        t.check(t.one_line_error(p, "max_position_embeddings"), f"--max-new-tokens 200000: {p.stderr}")
        small = t.demo_model(f"{tmp}/small", "--hidden", "64", "--intermediate", "128", "--layers", "1")
        p = t.run(["generate", "--model", small, "--prompt", " ".join(["the"] * 17000), "--max-new-tokens", "1",
                   "--backend", "cpu", "--print-ids"], timeout=600)
        t.check(len(p.stdout.split()) == 1, f"a 17000-token prompt: {p.stdout!r} {p.stderr}")
        print("  generate: past max_position_embeddings refused; a 17000-token prompt runs")


t.main(test)
