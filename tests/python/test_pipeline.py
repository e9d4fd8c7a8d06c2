"""The forward pass as a pipeline over MPI ranks (mpirun -np N flashinterp generate / clamp): each
rank loads only its contiguous share of the layers, hidden states go rank to rank, the last rank
broadcasts the logits. Checked on demo models (untied and tied; 5 layers):
- every -np 1/2/3 run gives bit-identical logits (--dump-logits) and the same ids / JSON as one
  process without mpirun, clamped and unclamped, through the KV cache of generate;
- those logits agree with the independent float64 PyTorch forward (torch_llama.py) within 1e-4;
- --stats names each rank's layers: contiguous, all of them, none twice;
- more ranks than layers is one clear error line and a non-zero exit from every rank;
- a rank failing mid-generation (FLASHINTERP_TEST_FAIL_RANK) ends the job in seconds with that
  rank's one error line, never a hang with the other ranks waiting for its hidden states.
"""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

try:
    import torch
    from torch_llama import TorchLlama
except ImportError:
    torch = None

LAYERS = 5
SIZE = ["--hidden", "64", "--intermediate", "128", "--layers", str(LAYERS), "--heads", "4", "--kv-heads", "2"]
PROMPT = "My favourite animal is the"
NEW = 6


def generate(model, dump, np_, *args, backend="cpu"):
    p = t.run(["generate", "--model", model, "--backend", backend, "--prompt", PROMPT, "--max-new-tokens",
               NEW, "--print-ids", "--stats", "--dump-logits", dump, *args], np_=np_)
    ids = [int(x) for x in p.stdout.split()]
    logits = np.fromfile(dump, dtype="<f4")
    return ids, logits, p.stderr


def check_stages(stderr, np_):
    m = re.search(r"forward on (cpu|cuda), (\d+) stages? \(layers ([0-9 |-]+)\)", stderr)
    t.check(m is not None, f"no stage line in --stats output:\n{stderr}")
    t.check(int(m.group(2)) == np_, f"-np {np_}: {m.group(2)} stages")
    spans = [tuple(map(int, s.strip().split("-"))) for s in m.group(3).split("|")]
    covered = [layer for a, b in spans for layer in range(a, b + 1)]
    t.check(covered == list(range(LAYERS)), f"-np {np_}: stages {spans} do not cover 0..{LAYERS - 1} once")


def check_model(model, work, clamp):
    base_ids, base_logits, _ = generate(model, os.path.join(work, "plain.f32"), None, *clamp)
    t.check(len(base_ids) == NEW, f"generated {base_ids}")
    for np_ in (1, 2, 3):
        ids, logits, err = generate(model, os.path.join(work, f"np{np_}.f32"), np_, *clamp)
        check_stages(err, np_)
        t.check(ids == base_ids, f"-np {np_}: ids {ids} != one process {base_ids}")
        t.check(logits.shape == base_logits.shape and np.array_equal(logits, base_logits),
                f"-np {np_}: logits differ from one process (max {np.max(np.abs(logits - base_logits)):.3g})")
    if torch is not None:  # the prompt's last position, through the independent reference
        ref = TorchLlama(model)
        ids = t.run(["tokenize", "--model", model, PROMPT]).stdout.split()
        ids = [128000] + [int(x) for x in ids]  # generate puts BOS first; tokenize does not
        clamps = [tuple(int(v) if i < 2 else float(v) for i, v in enumerate(re.split("[:=]", c)))
                  for c in clamp[1::2]]
        want = ref.logits(ids, clamps)[-1].numpy()
        V = want.size
        d = float(np.max(np.abs(base_logits[:V] - want)))
        t.check(d < 1e-4, f"pipeline logits differ from torch by {d:.3g}")

    base = t.run(["clamp", "--model", model, "--backend", "cpu", "--layer", "3", "--neuron", "7",
                  "--values", "0,5,20", "--prompt", PROMPT, "--watch", " dog", "--json"]).stdout
    for np_ in (2, 3):
        out = t.run(["clamp", "--model", model, "--backend", "cpu", "--layer", "3", "--neuron", "7",
                     "--values", "0,5,20", "--prompt", PROMPT, "--watch", " dog", "--json"], np_=np_).stdout
        t.check(json.loads(out) == json.loads(base), f"clamp -np {np_} differs from one process:\n{out}\n{base}")


def main():
    with t.tempdir() as work:
        untied = t.demo_model(os.path.join(work, "untied"), *SIZE)
        tied = t.demo_model(os.path.join(work, "tied"), *SIZE, "--tied", "--shards", "3", "--dtype", "f16")
        check_model(untied, work, ["--clamp", "2:5=8", "--clamp", "4:1=-3"])
        check_model(tied, work, [])

        # Where a GPU is usable: the CUDA stages, split over ranks sharing it, give the same bits too.
        probe = t.run(["generate", "--model", untied, "--backend", "cuda", "--prompt-ids", "1",
                       "--max-new-tokens", "1"], check=False)
        if probe.returncode == 0:
            clamp = ["--clamp", "2:5=8"]
            base_ids, base, _ = generate(untied, os.path.join(work, "cuda.f32"), None, *clamp, backend="cuda")
            for np_ in (2, 3):
                ids, logits, err = generate(untied, os.path.join(work, f"cuda{np_}.f32"), np_, *clamp,
                                            backend="cuda")
                check_stages(err, np_)
                t.check(ids == base_ids and np.array_equal(logits, base),
                        f"cuda -np {np_}: differs from one process")
            print("  cuda: -np 2/3 bit-identical to one process", flush=True)
        else:
            print(f"  no CUDA forward here ({probe.stderr.strip()}): cpu only", flush=True)

        p = t.run(["generate", "--model", untied, "--backend", "cpu", "--prompt", PROMPT], np_=LAYERS + 1,
                  check=False)
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("flashinterp: error:")]
        t.check(p.returncode != 0, "more ranks than layers did not fail")
        t.check(len(errors) == 1 and "ranks" in errors[0] and "layers" in errors[0],
                f"expected one error line about ranks and layers, got:\n{p.stderr}")

        p = t.run(["generate", "--model", untied, "--backend", "gpu", "--prompt", PROMPT], check=False)
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("flashinterp: error:")]
        t.check(p.returncode != 0 and len(errors) == 1 and "--backend" in errors[0],
                f"--backend gpu: expected one error line naming the option, got:\n{p.stderr}")

        for rank in (0, 1):  # the first stage (others wait to receive) and a middle one
            env = dict(os.environ, FLASHINTERP_TEST_FAIL_RANK=str(rank))
            t0 = time.time()
            p = subprocess.run([*t.mpi_prefix(3), t.binary(), "generate", "--model", untied, "--backend", "cpu",
                                "--prompt", PROMPT, "--max-new-tokens", "5"],
                               capture_output=True, text=True, timeout=60, env=env)
            took = time.time() - t0
            errors = [ln for ln in p.stderr.splitlines() if ln.startswith("flashinterp: error:")]
            t.check(p.returncode != 0, f"rank {rank} failed but the job exited 0")
            t.check(len(errors) == 1 and f"rank {rank}: injected failure" in errors[0],
                    f"expected one error line from rank {rank}:\n{p.stderr}")
            print(f"  rank {rank} of 3 failed mid-generation: job ended in {took:.1f} s", flush=True)


t.main(main)
