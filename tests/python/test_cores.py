"""A rank's worker threads are the cores of its affinity mask, never the machine's core count:
under plain `mpirun -np 1` (which binds the rank to one core when np <= 2) the decode runs as many
workers as the mask has cores, says so in its start line and warns that cores are idle; with
`--bind-to none` it takes the whole mask, and two unbound ranks share it. The mask is measured
independently, by a Python process started the same way."""
import os
import re

import fi_testlib as t

LINE = re.compile(r"(\d+) worker threads? per rank on (\d+) of (\d+) cores")


def mask_under(np_, *mpi_args):
    """The affinity mask size of a process that mpirun starts with these flags (rank 0's)."""
    p = t.subprocess.run([*t.mpi_prefix(np_)[:-2], *mpi_args, "-np", str(np_), "/usr/bin/python3", "-c",
                          "import os; print(len(os.sched_getaffinity(0)))"],
                         capture_output=True, text=True, timeout=60)
    t.check(p.returncode == 0, f"mpirun python: {p.stderr}")
    return int(p.stdout.split()[0])


def decode(model, out, np_, *mpi_args):
    cmd = [*t.mpi_prefix(np_)[:-2], *mpi_args, "-np", str(np_), t.binary(), "decode", "--model", model,
           "--out", out, "--overwrite", "--backend", "cpu"]
    p = t.subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    t.check(p.returncode == 0, f"decode failed: {p.stderr}")
    m = LINE.search(p.stderr)
    t.check(m is not None, f"no worker count in the start line: {p.stderr}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), "warning:" in p.stderr


def test():
    machine = os.cpu_count()
    with t.tempdir() as tmp:
        model = t.demo_model(f"{tmp}/m")
        bound = mask_under(1)
        w, mask, cores, warned = decode(model, f"{tmp}/a.h5", 1)
        t.check(mask == bound and w == bound, f"mpirun -np 1: {w} workers on a mask of {mask}, "
                f"a process started alike has {bound} cores")
        t.check(cores == machine, f"the node's cores: {cores} printed, {machine} here")
        t.check(warned == (2 * w <= machine), f"warning {warned} with {w} of {machine} cores")
        print(f"  mpirun -np 1 (default binding): {w} workers = the mask's {bound} cores of {machine}; "
              f"warned: {warned}")

        free = mask_under(1, "--bind-to", "none")
        w, mask, _, warned = decode(model, f"{tmp}/b.h5", 1, "--bind-to", "none")
        t.check(w == free and mask == free, f"--bind-to none: {w} workers, mask {mask}, expected {free}")
        t.check(not warned or 2 * w <= machine, "warned although the rank has the whole node")
        w, mask, _, _ = decode(model, f"{tmp}/c.h5", 2, "--bind-to", "none")
        t.check(w == max(1, free // 2), f"2 unbound ranks: {w} workers each on a shared mask of {mask}")
        print(f"  --bind-to none: 1 rank {free} workers; 2 ranks {w} each (one shared mask of {mask})")

        p = t.run(["decode", "--model", model, "--out", f"{tmp}/d.h5", "--threads", "-1"], check=False)
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("flashinterp: error:")]
        t.check(p.returncode != 0 and len(errors) == 1 and "--threads" in errors[0],
                f"--threads -1: expected one error line: {p.stderr}")


t.main(test)
