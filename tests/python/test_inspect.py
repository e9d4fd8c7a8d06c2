"""`flashinterp inspect` against numbers computed here from the checkpoint's own headers (the
independent safetensors reader in fi_testlib): tensor counts and bytes per dtype, the decode's
rows and GEMM FLOPs, and the clamp/generate pipeline plan for 1..5 ranks: the layer split must
cover every layer once, contiguously, and be as light as any contiguous split can be (brute force
over every split, the embedding and LM-head counted in layer-equivalents on the end stages), and
the weights per rank must be the bytes of the tensors each rank holds. `inspect --sweep`: the cost
model docs/SWEEP_FORMAT.md states, evaluated here from config.json (FLOPs per run from each layer,
averaged over the layers; weights read once per prompt, as the values run as one batch)."""
import itertools
import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}
LAYERS = 5


def size(text):
    value, unit = text.split()
    return float(value) * UNITS[unit]


def near(printed, want, what):
    """printed: a human size (one decimal); want: bytes."""
    got = size(printed)
    unit = max(u for u in UNITS.values() if want >= u) if want >= 1 else 1
    t.check(abs(got - want) <= 0.051 * unit, f"{what}: printed {printed}, expected {want} bytes")


def tensor_bytes(st, name):
    b, e = st.where[name][1]["data_offsets"]
    return e - b


def best_split_max(loads, stages, e):
    """The lightest heaviest stage over every contiguous split of per-layer loads."""
    best = None
    for cuts in itertools.combinations(range(1, len(loads)), stages - 1):
        bounds = [0, *cuts, len(loads)]
        w = [sum(loads[a:b]) for a, b in zip(bounds, bounds[1:])]
        w[0] += e
        w[-1] += e
        best = max(w) if best is None else min(best, max(w))
    return best


def check_model(model, tied):
    st = t.SafeTensors(model)
    cfg = t.load_config(model)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = H // nh
    names = st.names()
    out = t.run(["inspect", "--model", model]).stdout
    m = re.search(r"tensors\s+(\d+) in (\d+) shard", out)
    t.check(m and int(m.group(1)) == len(names), f"tensor count: {m and m.group(1)} vs {len(names)}")
    for dtype in {st.dtype(n) for n in names}:
        m = re.search(rf"^\s+{dtype}\s+(\d+) tensors\s+([0-9.]+ \w+)$", out, re.M)
        want = [n for n in names if st.dtype(n) == dtype]
        t.check(m and int(m.group(1)) == len(want), f"{dtype}: count line {m and m.group(0)}")
        near(m.group(2), sum(tensor_bytes(st, n) for n in want), f"{dtype} bytes")
    m = re.search(r"per matrix: (\d+) rows, ([0-9.e+]+) GFLOP", out)
    t.check(int(m.group(1)) == LAYERS * I, f"rows {m.group(1)}")
    t.check(abs(float(m.group(2)) - 2 * LAYERS * I * V * H / 1e9) <= 0.0051 * float(m.group(2)), "GFLOP")

    layer_bytes = [sum(tensor_bytes(st, n) for n in names if n.startswith(f"model.layers.{l}."))
                   for l in range(LAYERS)]
    emb = "model.embed_tokens.weight"
    head = emb if tied else "lm_head.weight"
    e = V * H / (2 * H * nh * hd + 2 * H * nkv * hd + 3 * H * I)
    for ranks in range(1, LAYERS + 1):
        out = t.run(["inspect", "--model", model, "--ranks", ranks]).stdout
        m = re.search(r"forward\s+clamp/generate over (\d+) ranks?[^:]*: layers ([0-9 |-]+)\n\s+weights per rank "
                      r"\(checkpoint dtype; the CPU holds FP8 as fp32\): up to ([0-9.]+ \w+) on a GPU, ([0-9.]+ \w+) on CPU", out)
        t.check(m is not None, f"--ranks {ranks}: no forward plan in\n{out}")
        spans = [tuple(map(int, s.strip().split("-"))) for s in m.group(2).split("|")]
        t.check(len(spans) == ranks and [l for a, b in spans for l in range(a, b + 1)] == list(range(LAYERS)),
                f"--ranks {ranks}: spans {spans}")
        heaviest = max((b - a + 1) + (e if i == 0 else 0) + (e if i == ranks - 1 else 0)
                       for i, (a, b) in enumerate(spans))
        t.check(abs(heaviest - best_split_max([1] * LAYERS, ranks, e)) < 1e-9,
                f"--ranks {ranks}: split {spans} is heavier than the best contiguous split")
        gpu, cpu = [], []
        for i, (a, b) in enumerate(spans):
            first, last = i == 0, i == ranks - 1
            g = sum(layer_bytes[a:b + 1]) + (tensor_bytes(st, head) if last else 0)
            c = g
            if first and not (last and tied):
                g += tensor_bytes(st, emb)
                c += tensor_bytes(st, emb) if tied else 0  # the CPU reads an untied embedding per token
            gpu.append(g)
            cpu.append(c)
        near(m.group(3), max(gpu), f"--ranks {ranks}: GPU weights per rank")
        near(m.group(4), max(cpu), f"--ranks {ranks}: CPU weights per rank")
    out = t.run(["inspect", "--model", model, "--ranks", LAYERS + 1]).stdout
    t.check(f"at most {LAYERS} ranks" in out, f"--ranks {LAYERS + 1}: {out.splitlines()[-1]}")


def check_sweep(model):
    import json
    with open(os.path.join(model, "config.json")) as f:
        c = json.load(f)
    H, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = c.get("head_dim") or H // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    params = 2 * H * q + 2 * H * kv + 3 * H * I
    values, prompts, tokens, neurons, ranks = 3, 5, 7, 11, 2
    flops = sum((L - l) * (2 * params * tokens + 2 * tokens * tokens * q) + 2 * V * H for l in range(L)) / L
    reads = sum(2 * ((L - l) * params + V * H) for l in range(L)) / L
    out = t.run(["inspect", "--model", model, "--sweep", "--sweep-values", values, "--sweep-prompts", prompts,
                 "--sweep-tokens", tokens, "--sweep-neurons", neurons, "--ranks", ranks, "--cpu-gflops", 1,
                 "--cpu-gbps", 1000]).stdout
    m = re.search(r"per neuron: (\d+) clamped runs .*: ([0-9.e+]+) GFLOP, ([0-9.]+ \w+) of weights read", out)
    t.check(m and int(m.group(1)) == values * prompts, f"inspect --sweep: {out}")
    gflop = values * prompts * flops / 1e9
    t.check(abs(float(m.group(2)) - gflop) <= 0.006 * gflop, f"inspect --sweep: {m.group(2)} GFLOP, want {gflop:.4g}")
    near(m.group(3), prompts * reads, "inspect --sweep: weights read per neuron")
    # 1 GFLOP/s and 1 TB/s: the FLOPs bound the CPU time of `neurons` split over `ranks`
    m = re.search(rf"{neurons} neurons on {ranks} ranks: CPU ~([0-9.]+) s", out)
    want = neurons * values * prompts * flops / ranks / 1e9
    t.check(m and abs(float(m.group(1)) - want) <= 0.006 * want, f"inspect --sweep: CPU time {m and m.group(1)}, want {want:.4g} s")


def test():
    with t.tempdir() as tmp:
        size_args = ["--hidden", "64", "--intermediate", "128", "--layers", str(LAYERS)]
        # A nested --out whose parents do not exist yet: demo-model creates them (launch/demo.sh).
        check_model(t.demo_model(os.path.join(tmp, "nested", "dirs", "untied"), *size_args), tied=False)
        check_model(t.demo_model(os.path.join(tmp, "tied"), *size_args, "--tied", "--dtype", "f32", "--shards", "2"),
                    tied=True)
        check_sweep(os.path.join(tmp, "tied"))
        print(f"  inspect: counts, bytes, FLOPs and the pipeline plan for 1..{LAYERS} ranks agree; --sweep's cost model")


t.main(test)
