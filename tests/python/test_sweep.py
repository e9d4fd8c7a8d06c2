"""flashinterp sweep on the demo model (4 layers, hidden 256), checked for what is true there.
- The numbers: for two neurons (the planted down " Paris" neuron and a random up neuron), every
  per-(value, prompt) change in log p of the decoded top token, the top-5 mean, the top-1 flags,
  the score (least-squares slope of the prompt mean over the values, numpy polyfit) and the top-1
  share equal an independent float64 PyTorch forward with the same clamp (torch_llama.py).
- The census: the planted *down* neurons (their down_proj column is their token's LM-head row,
  so they write what the map says they mean) have the two highest scores, well above every
  random neuron; random up/gate neurons (the map decodes what they read, not what they write)
  score near zero: their median |score| under a fifth of the planted ones, their mean under a
  tenth (a clamp of 10 still moves their token either way). Planted up/gate neurons read their
  concept but write a random direction, so they are not expected at the top (test_clamp.py).
- analysis/show --sweep prints the neuron's score from the file, analysis/report --sweep its plot.
- mpirun -np 1, 2, 3 give bit-identical datasets, and so do pipelines (--stages 2: each rank holds
  half the layers) under -np 2 and -np 4 (two pipelines), also when resumed after a kill, and
  --stages auto picks pipelines where a (test) memory limit holds less than the whole model; --select top:K (by top-1 probability, or by
  exact entropy where the map has it) and layer:L pick what numpy picks from the map; a sweep killed at three points (or stopped by SIGUSR1, exit 75) resumes
  to the same bits; bad input is one error line (expert neurons, a malformed list line, a
  partial without --resume, a resume with other values); analysis/serve --sweep plots and links the
  swept neurons and shows each one's score on its page.
- Where a GPU is usable (skipped otherwise): sweep --backend cuda's deltas within 1e-3 of the
  CPU's, and its -np 2 --stages 2 file the same bits as its -np 1 file.
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

try:
    import torch
    from torch_llama import TorchLlama, check_sweep_row
except ImportError:
    torch = None

PROMPTS = ["The", "I think that the", "Here is a short story about"]
VALUES = [0, 2, 5, 10]
DATASETS = ("matrix", "group", "layer", "expert", "neuron", "top_tokens", "map_top_prob", "map_entropy",
            "score", "top1_share", "base_logp", "delta", "delta_top5", "top1", "done", "values",
            "prompt_ids", "prompt_len")
MATRIX = {"up": 0, "gate": 1, "down": 2}


def sweep(model, mp, out, select, np_=1, values=VALUES, extra=(), check=True, env=None, prompts="prompts.txt"):
    cmd = [*(t.mpi_prefix(np_) if np_ else []), t.binary(), "sweep", "--model", model, "--map", mp, "--out", out,
           "--select", select, "--prompts", os.path.join(os.path.dirname(out), prompts),
           "--values", ",".join(map(str, values)), "--quiet", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, **(env or {})))
    if check and p.returncode != 0:
        t.fail(f"exit {p.returncode}: {' '.join(cmd)}\n{p.stderr}")
    return p


def read(path):
    with h5py.File(path, "r") as f:
        t.check(f.attrs["format"] == b"flashinterp-sweep" or f.attrs["format"] == "flashinterp-sweep",
                f"{path}: format {f.attrs['format']}")
        t.check(int(f.attrs["complete"]) == 1, f"{path}: not complete")
        return {k: f[k][()] for k in DATASETS}, dict(f.attrs)


def same(a, b, what):
    da, db = read(a)[0], read(b)[0]
    for k in DATASETS:
        t.check(da[k].dtype == db[k].dtype and da[k].shape == db[k].shape and
                da[k].tobytes() == db[k].tobytes(), f"{what}: dataset {k} differs")


def check_doc(path):
    """docs/SWEEP_FORMAT.md's overview names every dataset of a real file, and only those."""
    with open(os.path.join(t.SOURCE_DIR, "docs", "SWEEP_FORMAT.md"), encoding="utf-8") as f:
        doc = f.read().split("## Overview", 1)[1].split("```")[1]
    named = {line.split()[0].lstrip("/") for line in doc.splitlines() if line.startswith("/") and line[1:2] != " "}
    with h5py.File(path, "r") as f:
        t.check(named == set(f.keys()), f"SWEEP_FORMAT.md names {sorted(named ^ set(f.keys()))} wrongly")


def check_torch(model, s, rows):
    """Per-(value, prompt) deltas of a few neurons against float64 torch with the same clamp."""
    ref = TorchLlama(model)
    ids = [[int(x) for x in s["prompt_ids"][p, :s["prompt_len"][p]]] for p in range(len(s["prompt_len"]))]
    base = [torch.log_softmax(ref.logits(i)[-1], 0).numpy() for i in ids]
    for k in rows:
        layer, n, top = int(s["layer"][k]), int(s["neuron"][k]), [int(x) for x in s["top_tokens"][k]]
        want, top1, err, slope = check_sweep_row(s, k, VALUES, lambda val, p: ref.logits(ids[p], [(layer, n, val)])[-1],
                                          base, top, f"neuron {layer}:{n}")
        share = top1[int(np.argmax(VALUES))].mean()
        t.check(abs(s["top1_share"][k] - share) < 1e-6, f"neuron {layer}:{n}: top1_share {s['top1_share'][k]} vs {share}")
        print(f"  {layer}:{n} token {top[0]}: score {s['score'][k]:.4f} (torch {slope:.4f}), max |delta err| {err:.1e}")


def check_census(s, planted):
    score, keys = s["score"], list(zip(s["matrix"], s["layer"], s["neuron"]))
    pl = {(MATRIX[p["matrix"]], p["layer"], p["neuron"]) for p in planted}
    down = [i for i, k in enumerate(keys) if k in pl and k[0] == 2]
    rand = [i for i, k in enumerate(keys) if k not in pl]
    rand_rg = [i for i in rand if keys[i][0] != 2]
    order = list(np.argsort(-score, kind="stable"))
    t.check(sorted(order[:len(down)]) == sorted(down), f"top scores {order[:4]} are not the planted down neurons {down}")
    low = min(score[down])
    t.check(max(score[rand]) < 0.6 * low, f"a random neuron scores {max(score[rand])}, planted down {low}")
    # A random up/gate neuron writes a random direction: its decoded token moves either way.
    med, mean = np.median(np.abs(score[rand_rg])), np.mean(score[rand_rg])
    t.check(med < 0.2 * low and abs(mean) < 0.1 * low,
            f"random up/gate scores {score[rand_rg]}: median |score| {med}, mean {mean}; planted down {low}")
    print(f"  planted down scores {score[down]}, random: max {max(score[rand]):.3f}; up/gate: "
          f"median |score| {med:.3f}, mean {mean:+.3f}")


def check_analysis(mp, out, tmp, s, k):
    """analysis/show --sweep prints the file's score; analysis/report --sweep plots and lists."""
    args = ["--matrix", "down", "--layer", int(s["layer"][k]), "--neuron", int(s["neuron"][k]), "--sweep", out]
    j = t.analysis_json("show", mp, *args)
    t.check(j["causal"]["score"] == float(s["score"][k]) and j["sweep_warning"] is None, f"show --sweep: {j.get('causal')}")
    p = t.analysis("report", mp, "--out", f"{tmp}/rep", "--matrix", "down", "--sweep", out)
    t.check(p.returncode == 0 and os.path.getsize(f"{tmp}/rep/sweep_per_layer.png") > 0, f"report --sweep: {p.stderr}")
    with open(f"{tmp}/rep/index.html", encoding="utf-8") as f:
        t.check("Causal scores" in f.read(), "report --sweep: no causal score section")


def check_serve(mp, out, tmp, s, k):
    """analysis/serve --sweep: /sweep plots one point per swept neuron of the matrix (each a link
    to its page) and lists disagreements; a swept neuron's page shows its score from the file, an
    unswept one says so."""
    from test_serve import Server
    srv = Server(tmp, mp, "--sweep", out)
    try:
        code, page = srv.get("/sweep?matrix=down")
        t.check(code == 200, f"/sweep: {code} {page[:300]}")
        pts = re.findall(r"<a class=\"point\" href=\"/neuron/down/(\d+)/(\d+)\"", page)
        want = sorted((int(l), int(n)) for m, l, n, d in zip(s["matrix"], s["layer"], s["neuron"], s["done"]) if m == 2 and d)
        t.check(sorted((int(l), int(n)) for l, n in pts) == want, f"/sweep points {pts}, sweep file {want}")
        t.check("id='disagree'" in page and "Warning" not in page, "/sweep: no disagreement table, or a fingerprint warning")
        code, page = srv.get(f"/neuron/down/{int(s['layer'][k])}/{int(s['neuron'][k])}")
        t.check(code == 200 and f"causal score <b>{float(s['score'][k]):+.4f}</b>" in page, f"neuron page: {page[-600:]}")
        swept = {(int(m), int(l), int(n)) for m, l, n in zip(s["matrix"], s["layer"], s["neuron"])}
        free = next(n for n in range(1024) if (0, 0, n) not in swept)
        code, page = srv.get(f"/neuron/up/0/{free}")
        t.check(code == 200 and "causal score: not in" in page, "an unswept neuron's page")
    finally:
        t.check(srv.stop() == 0, "serve did not stop cleanly on Ctrl-C")
    print(f"  serve --sweep: {len(want)} down neurons plotted (links to their pages), scores on neuron pages")


def check_select(model, mp, tmp):
    # top:K by top-1 probability: a map without the exact entropies (as maps before them were)
    shutil.copy(mp, f"{tmp}/noent.h5")
    mp = f"{tmp}/noent.h5"
    with h5py.File(mp, "r+") as f:
        for m in ("up", "gate", "down"):
            if "entropy" in f[m]:
                del f[m]["entropy"]
        prob = {m: f[m]["top_probs"][:, :, 0] for m in ("up", "gate", "down")}
        layers = {m: list(f[m].attrs["layers"]) for m in prob}
    cand = sorted((-float(prob[m][li, n]), layers[m][li], MATRIX[m], n)
                  for m in prob for li in range(prob[m].shape[0]) for n in range(prob[m].shape[1]))
    want = sorted((l, m, n) for _, l, m, n in cand[:6])
    sweep(model, mp, f"{tmp}/top.h5", "top:6", values=[0, 5])
    got, _ = read(f"{tmp}/top.h5")
    t.check(sorted(zip(got["layer"], got["matrix"], got["neuron"])) == want, f"top:6 picked {got['neuron']}, numpy {want}")
    # layer:L on a smaller model (128 neurons a layer), two matrices
    small = t.demo_model(f"{tmp}/small", "--hidden", "64", "--intermediate", "128", "--layers", "2")
    smp = t.decode(small, f"{tmp}/small.h5", "--matrices", "up,down", "--top-k", "5", "--token-index", "0")
    sweep(small, smp, f"{tmp}/layer.h5", "layer:1", values=[0, 5], extra=["--matrices", "down,up"], prompts="p1.txt")
    got, _ = read(f"{tmp}/layer.h5")
    t.check(list(got["neuron"]) == list(range(128)) * 2 and set(got["layer"]) == {1} and
            list(got["matrix"]) == [0] * 128 + [2] * 128, "layer:1 --matrices down,up: not the 2 x 128 neurons of layer 1")
    # A map with exact entropies (/<group>/entropy [L, N], from the decode's reduction stats),
    # here replaced by planted ones: top:K takes the lowest, and the file keeps them.
    shutil.copy(smp, f"{tmp}/small-ent.h5")
    rng = np.random.default_rng(3)
    with h5py.File(f"{tmp}/small-ent.h5", "r+") as f:
        ent = {m: rng.uniform(0.5, 11.0, (2, 128)).astype(np.float32) for m in ("up", "down")}
        for m in ent:  # replaces the decode's own (planted values, an order numpy knows)
            if "entropy" in f[m]:
                del f[m]["entropy"]
            f[m].create_dataset("entropy", data=ent[m])
    cand = sorted((float(ent[m][li, n]), li, MATRIX[m], n) for m in ent for li in range(2) for n in range(128))
    p = sweep(small, f"{tmp}/small-ent.h5", f"{tmp}/ent.h5", "top:5", values=[0, 5], prompts="p1.txt", extra=["--json"])
    got, _ = read(f"{tmp}/ent.h5")
    js = [json.loads(x) for x in p.stdout.splitlines()]
    t.check([(j["layer"], MATRIX[j["matrix"]], j["neuron"], j["token_id"]) for j in js] ==
            [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(got["layer"], got["matrix"], got["neuron"],
                                                                     got["top_tokens"][:, 0])] and
            all(j["score"] == float(x) and j["expert"] is None and [d["value"] for d in j["delta"]] == [0, 5]
                for j, x in zip(js, got["score"])), f"--json: {p.stdout[:300]}")
    t.check(sorted(zip(got["layer"], got["matrix"], got["neuron"])) == sorted((l, m, n) for _, l, m, n in cand[:5]),
            f"top:5 by entropy picked {list(zip(got['layer'], got['matrix'], got['neuron']))}")
    t.check(sorted(got["map_entropy"]) == sorted(np.float32(e) for e, *_ in cand[:5]), "map_entropy not the map's")


def check_resume(model, mp, tmp):
    ref = f"{tmp}/r-ref.h5"
    args = dict(values=[0, 5], extra=["--round-neurons", "2"], prompts="p1.txt")
    sweep(model, mp, ref, f"list:{tmp}/small.txt", **args)
    for point in ("sweep-data:1", "sweep-done:0", "sweep-rename"):
        out = f"{tmp}/r-{point.replace(':', '')}.h5"
        p = sweep(model, mp, out, f"list:{tmp}/small.txt", np_=2, check=False,
                  env={"FLASHINTERP_TEST_KILL_AT": point}, **args)
        t.check(p.returncode != 0 and not os.path.exists(out), f"kill at {point}: exit {p.returncode}")
        sweep(model, mp, out, f"list:{tmp}/small.txt", np_=2, values=args["values"],
              extra=[*args["extra"], "--resume"], prompts="p1.txt")
        same(ref, out, f"resumed after a kill at {point}")
    # Pipelines: killed under one pipeline of 2 stages, resumed by two.
    out = f"{tmp}/r-pipe.h5"
    p = sweep(model, mp, out, f"list:{tmp}/small.txt", np_=2, check=False, values=args["values"],
              extra=[*args["extra"], "--stages", "2"], prompts="p1.txt", env={"FLASHINTERP_TEST_KILL_AT": "sweep-data:1"})
    t.check(p.returncode != 0 and not os.path.exists(out), f"pipeline kill: exit {p.returncode}")
    sweep(model, mp, out, f"list:{tmp}/small.txt", np_=4, values=args["values"],
          extra=[*args["extra"], "--stages", "2", "--resume"], prompts="p1.txt")
    same(ref, out, "a pipeline sweep resumed after a kill")
    # A stop signal: exit 75, the rounds so far kept; --resume finishes the same bits.
    out = f"{tmp}/r-stop.h5"
    cmd = [*t.mpi_prefix(2), t.binary(), "sweep", "--model", model, "--map", mp, "--out", out, "--select",
           f"list:{tmp}/small.txt", "--values", "0,5", "--quiet", "--prompts", f"{tmp}/p1.txt", *args["extra"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FLASHINTERP_TEST_HOLD_ROUND="0"))
    time.sleep(3)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    t.check(proc.returncode == 75 and "--resume" in err, f"SIGUSR1: exit {proc.returncode}, {err!r}")
    sweep(model, mp, out, f"list:{tmp}/small.txt", np_=3, extra=[*args["extra"], "--resume"], values=[0, 5],
          prompts="p1.txt")
    same(ref, out, "resumed after SIGUSR1")
    # The same file again with --resume: nothing to do; with other values: refused.
    sweep(model, mp, out, f"list:{tmp}/small.txt", **dict(args, extra=[*args["extra"], "--resume"]))
    p = sweep(model, mp, out, f"list:{tmp}/small.txt", np_=None, values=[0, 6], extra=[*args["extra"], "--resume"],
              check=False, prompts="p1.txt")
    t.check(t.one_line_error(p, "other inputs or options"), f"resume with other values: {p.stderr!r}")


def check_pipeline(model, mp, tmp, ref):
    """--stages 2: pipelines of two ranks (layers 0-1 | 2-3 of the demo model), the neurons split
    over the pipelines; the same bits as one rank holding the whole model (np 1's file).
    Each pipeline run sweeps small.txt (8 of list.txt's 19 neurons: all three matrices, every
    layer, so both stages and, with --round-neurons 3, both pipelines of -np 4 get work; a
    planted down neuron of layer 0 and of layer 3) against an np 1 sweep of the same list: each
    of these multi-rank sweeps costs about its neurons' forwards."""
    ref_all, ref = ref, f"{tmp}/pipe-ref.h5"
    sweep(model, mp, ref, f"list:{tmp}/small.txt")
    for np_ in (2, 4):  # one pipeline; two pipelines of two stages
        out = f"{tmp}/pipe{np_}.h5"
        sweep(model, mp, out, f"list:{tmp}/small.txt", np_=np_, extra=["--stages", "2", "--round-neurons", "3"])
        same(ref, out, f"-np {np_} --stages 2 vs np 1")
        t.check(int(read(out)[1]["stages"]) == 2, f"-np {np_} --stages 2: attribute stages is not 2")
    t.check(int(read(ref_all)[1]["stages"]) == 1 and int(read(ref)[1]["stages"]) == 1, "np 1: attribute stages is not 1")
    # --stages auto (the default) where one rank's memory holds less than the whole model: the
    # fewest stages that fit, a divisor of the rank count (FLASHINTERP_TEST_STAGE_MIB stands in
    # for the machine's limits). Each rank asks for its heaviest stage's weights x 1.05 + 256 MiB;
    # the whole model does not fit a budget of (all but half the LM-head), a half does.
    st = t.SafeTensors(model)
    size = {n: w[1]["data_offsets"][1] - w[1]["data_offsets"][0] for n, w in st.where.items()}
    total, head = sum(size.values()), size["lm_head.weight"]
    mib = ((total - head / 2) * 1.05 + 256 * 2**20) / 2**20
    for np_, want in ((2, 2), (3, 3)):  # 3 ranks: pipelines of 3 (no 2-stage split of 3 ranks)
        out = f"{tmp}/auto{np_}.h5"
        sweep(model, mp, out, f"list:{tmp}/small.txt", np_=np_, extra=["--round-neurons", "5"],
              env={"FLASHINTERP_TEST_STAGE_MIB": f"{mib:.1f}"})
        same(ref, out, f"-np {np_} --stages auto under a memory limit vs np 1")
        t.check(int(read(out)[1]["stages"]) == want, f"-np {np_} auto: {read(out)[1]['stages']} stages, not {want}")
    p = sweep(model, mp, f"{tmp}/bad.h5", f"list:{tmp}/list.txt", np_=None, check=False,
              env={"FLASHINTERP_TEST_STAGE_MIB": "10"})
    t.check(t.one_line_error(p, "needs", "MiB", "split over as many ranks"), f"auto, nothing fits: {p.stderr!r}")
    p = sweep(model, mp, f"{tmp}/bad.h5", f"list:{tmp}/list.txt", np_=None, extra=["--stages", "2"], check=False)
    t.check(t.one_line_error(p, "--stages 2", "do not split"), f"--stages 2 on one rank: {p.stderr!r}")
    p = sweep(model, mp, f"{tmp}/bad.h5", f"list:{tmp}/list.txt", np_=None, extra=["--stages", "two"], check=False)
    t.check(t.one_line_error(p, "--stages", "'two'"), f"--stages two: {p.stderr!r}")
    # A rank failing in a pipeline: one error line from it and a non-zero exit, not a hang.
    p = sweep(model, mp, f"{tmp}/bad.h5", f"list:{tmp}/small.txt", np_=2, check=False,
              extra=["--stages", "2", "--round-neurons", "1"], env={"FLASHINTERP_TEST_FAIL_RANK": "1"})
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("flashinterp: error:")]
    t.check(p.returncode != 0 and len(errors) == 1 and "rank 1: injected failure" in errors[0],
            f"a failing stage: exit {p.returncode}, {p.stderr!r}")
    print("  --stages 2 under -np 2 and -np 4 (2 pipelines), auto under a memory limit (-np 2, 3): "
          "the same bits as -np 1")


def check_cuda(model, mp, tmp, ref):
    """Where a GPU is usable: the CUDA stage's batch of a neuron's values (layer_range_batch)
    against the CPU's file, and its 2-stage pipelines bit-identical to its one rank."""
    probe = t.run(["generate", "--model", model, "--backend", "cuda", "--prompt-ids", "1", "--max-new-tokens", "1"],
                  check=False)
    if probe.returncode != 0:
        print(f"  sweep --backend cuda: SKIPPED (no CUDA device: {probe.stderr.strip()[:120]})")
        return
    cpu = read(ref)[0]
    outs = {}
    for np_, extra in ((1, []), (2, ["--stages", "2"])):
        outs[np_] = f"{tmp}/cuda{np_}.h5"
        sweep(model, mp, outs[np_], f"list:{tmp}/list.txt", np_=np_, extra=["--backend", "cuda", *extra])
    got = read(outs[1])[0]
    err = float(np.abs(got["delta"] - cpu["delta"]).max())
    t.check(err < 1e-3, f"sweep --backend cuda: delta off the CPU's by {err}")
    same(outs[1], outs[2], "cuda -np 2 --stages 2 vs cuda -np 1")
    print(f"  sweep --backend cuda: delta within {err:.1e} of the CPU's; its pipeline bit-identical")


def check_errors(model, mp, tmp):
    for text, words in [("moe/up 1 3 5\n", "the map has no moe/up group"),
                        ("up 1\n", "small-bad.txt:1: expected MATRIX LAYER NEURON"),
                        ("up 1 99999\n", "out of range"),
                        ("mlp 1 2\n", "expected MATRIX LAYER NEURON")]:
        with open(f"{tmp}/small-bad.txt", "w") as f:
            f.write("# a comment\n" + text if "99999" in text else text)
        p = sweep(model, mp, f"{tmp}/bad.h5", f"list:{tmp}/small-bad.txt", np_=None, check=False)
        t.check(t.one_line_error(p, words), f"list {text!r}: exit {p.returncode}, stderr {p.stderr!r}")
    p = sweep(model, mp, f"{tmp}/bad.h5", "layer:1", np_=None, values=[3, 3], check=False)
    t.check(t.one_line_error(p, "two different values"), f"values 3,3: {p.stderr!r}")
    p = sweep(model, mp, f"{tmp}/r-ref.h5", f"list:{tmp}/small.txt", np_=None, values=[0, 5], check=False)
    t.check(t.one_line_error(p, "exists; --overwrite"), f"existing out: {p.stderr!r}")


def stamp(what, t0=[time.time()]):
    print(f"  [{time.time() - t0[0]:.0f} s] {what}", flush=True)


def test():
    if torch is None:
        print("SKIPPED test_sweep: PyTorch is not installed (apt-get install python3-torch)")
        return
    torch.set_num_threads(2)
    with t.tempdir() as tmp:
        model = t.demo_model(f"{tmp}/demo")
        planted = t.load_planted(model)
        mp = t.decode(model, f"{tmp}/map.h5", "--matrices", "up,gate,down", "--top-k", "5", "--token-index", "0")
        with open(f"{tmp}/prompts.txt", "w") as f:
            f.write("\n".join(PROMPTS) + "\n")
        with open(f"{tmp}/p1.txt", "w") as f:
            f.write("The\n")
        rng = random.Random(7)
        lines = [f"{p['matrix']} {p['layer']} {p['neuron']}" for p in planted]
        lines += [f"{m} {rng.randrange(4)} {rng.randrange(1024)}" for m in ("up", "gate", "down") for _ in range(4)]
        with open(f"{tmp}/list.txt", "w") as f:
            f.write("# planted, then random\n" + "\n".join(lines) + "\n")
        with open(f"{tmp}/small.txt", "w") as f:
            f.write("\n".join(lines[5:13]) + "\n")
        outs = {}
        for np_ in (1, 2, 3):
            outs[np_] = f"{tmp}/s{np_}.h5"
            sweep(model, mp, outs[np_], f"list:{tmp}/list.txt", np_=np_)
        stamp("decode, sweeps under np 1, 2, 3")
        same(outs[1], outs[2], "np 2 vs np 1")
        same(outs[1], outs[3], "np 3 vs np 1")
        s, attrs = read(outs[1])
        check_doc(outs[1])
        check_census(s, planted)
        keys = list(zip(s["matrix"], s["layer"], s["neuron"]))
        paris = next(p for p in planted if p["token"] == " Paris")
        k_paris = keys.index((2, paris["layer"], paris["neuron"]))
        k_up = next(i for i, k in enumerate(keys) if k[0] == 0 and k[1] == 2)
        check_torch(model, s, [k_paris, k_up])
        with h5py.File(mp, "r") as f:
            t.check(attrs["map_fingerprint"] == f.attrs["fingerprint"], "map_fingerprint is not the map's")
        check_analysis(mp, outs[1], tmp, s, k_paris)
        check_serve(mp, outs[1], tmp, s, k_paris)
        stamp("torch, analysis")
        check_pipeline(model, mp, tmp, outs[1])
        check_cuda(model, mp, tmp, outs[1])
        stamp("pipelines")
        check_select(model, mp, tmp)
        stamp("select")
        check_resume(model, mp, tmp)
        stamp("resume")
        check_errors(model, mp, tmp)
        stamp("errors")


if __name__ == "__main__":
    t.main(test)
