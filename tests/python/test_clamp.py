"""Clamping on the demo model, checked for what is actually true there.
- The planted *down* neurons write an LM-head direction (their down_proj column is the token's
  LM-head row over the final norm's gamma), so clamping one at site act to rising values raises its
  token's probability monotonically until it is the top token, and greedy generation with that
  clamp produces the token: the paper's experiment in miniature, true by construction.
- The planted *up* " dog" neuron only READS the dog direction; what it writes (its down_proj column)
  is random, so a clamp moves the next-token distribution in a random direction and P(" dog") need
  not rise. For it the test checks that the clamp curve at both sites is the one the independent
  torch forward computes, and that value 0 silences the neuron identically at both sites.
- generate: greedy output equals the torch greedy continuation, with and without a clamp; --map
  watches the neuron's top token from a decoded map; bad input gives one clear error line.
"""
import json
import os
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fi_testlib as t  # noqa: E402

try:
    import torch
    from torch_llama import TorchLlama
except ImportError:
    torch = None

SIZE = ["--hidden", "64", "--intermediate", "128", "--layers", "2", "--heads", "4", "--kv-heads", "2"]
PROMPT = "My favourite animal is the"
VALUES = [0, 1, 2, 5, 10, 20]


def planted(model):
    with open(os.path.join(model, "planted.json")) as f:
        return {(p["matrix"], p["token"]): p for p in json.load(f)["planted"]}


def clamp_json(model, layer, neuron, values, *args):
    p = t.run(["clamp", "--model", model, "--layer", layer, "--neuron", neuron, "--values",
               ",".join(map(str, values)), "--prompt", PROMPT, "--json", *args])
    return json.loads(p.stdout)


def check_down_neuron(model, p):
    """Rising clamp values raise P(token) monotonically; the top value makes it the top token."""
    out = clamp_json(model, p["layer"], p["neuron"], VALUES, "--matrix", "down", "--watch", p["token"])
    t.check(out["watch"][0]["id"] == p["token_id"], f"watch {p['token']!r} -> {out['watch']}")
    curve = [r["probs"][0] for r in out["rows"][1:]]
    t.check(all(b > a for a, b in zip(curve, curve[1:])),
            f"down neuron {p['layer']}:{p['neuron']} ({p['token']!r}): P not increasing: {curve}")
    t.check(out["rows"][-1]["top"][0]["id"] == p["token_id"],
            f"clamped to {VALUES[-1]}, the top token is {out['rows'][-1]['top'][0]} not {p['token']!r}")
    t.check(curve[-1] > 3 * out["rows"][0]["probs"][0], f"{p['token']!r}: clamp barely moved P: {curve}")
    print(f"  down {p['layer']}:{p['neuron']} {p['token']!r}: P = " + ", ".join(f"{x:.2e}" for x in curve))


def check_up_neuron(model, ref, p):
    """The dog neuron's clamp curves at both sites equal torch's; value 0 is the same at both."""
    rows = {}
    for site in ("act", "up"):
        out = clamp_json(model, p["layer"], p["neuron"], VALUES, "--clamp-site", site, "--watch", " dog")
        ids = out["prompt_ids"]
        for row, value in zip(out["rows"], [None, *VALUES]):
            clamps = [] if value is None else [(p["layer"], p["neuron"], value)]
            want = torch.softmax(ref.logits(ids, clamps, site)[-1], 0)[p["token_id"]].item()
            rel = abs(row["probs"][0] - want) / want
            t.check(rel < 1e-4, f"site {site} value {value}: P(dog) {row['probs'][0]} vs torch {want}")
        rows[site] = out["rows"]
        print(f"  up {p['layer']}:{p['neuron']} ' dog' site {site}: P = " +
              ", ".join(f"{r['probs'][0]:.3e}" for r in out["rows"]))
    a0, u0 = rows["act"][1], rows["up"][1]  # value 0: act(gate)*0 == 0, the neuron is off either way
    t.check(abs(a0["probs"][0] - u0["probs"][0]) <= 1e-6 * a0["probs"][0],
            f"value 0 differs between sites: {a0['probs']} vs {u0['probs']}")
    t.check(rows["act"][-1]["top"] != rows["act"][0]["top"], "clamping the dog neuron to 20 changed nothing")


def check_generate(model, ref, ids, clamps, steps=5):
    args = ["generate", "--model", model, "--prompt", PROMPT, "--max-new-tokens", steps, "--print-ids"]
    for layer, neuron, value in clamps:
        args += ["--clamp", f"{layer}:{neuron}={value}"]
    got = [int(x) for x in t.run(args).stdout.split()]
    want = ref.greedy(ids, steps, clamps)
    t.check(got == want, f"greedy with clamps {clamps}: {got}, torch {want}")
    return got


def check_map(model, tmp, dog):
    t.run(["decode", "--model", model, "--out", os.path.join(tmp, "map.h5"), "--matrices", "up",
               "--quiet"])
    out = clamp_json(model, dog["layer"], dog["neuron"], [5], "--map", os.path.join(tmp, "map.h5"))
    t.check([w["id"] for w in out["watch"]] == [dog["token_id"]], f"--map watched {out['watch']}")


def check_errors(model):
    for args, words in [(["--layer", 2, "--neuron", 0], "layer 2 is out of range"),
                        (["--layer", 0, "--neuron", 128], "neuron 128 is out of range"),
                        (["--layer", 0, "--neuron", 0, "--prompt-ids", "1,x"], "--prompt-ids")]:
        prompt = [] if "--prompt-ids" in args else ["--prompt", PROMPT]
        p = t.run(["clamp", "--model", model, "--values", "1", *prompt, *args], check=False)
        lines = p.stderr.strip().splitlines()
        t.check(p.returncode != 0 and len(lines) == 1 and words in lines[0],
                f"clamp {args}: exit {p.returncode}, stderr {p.stderr!r}")
    p = t.run(["clamp", "--model", model, "--layer", 0, "--neuron", 0, "--values", "1", "--prompt",
               PROMPT, "--watch", " dogs and cats"])
    t.check("first" in p.stderr and "dogs" in p.stdout.splitlines()[1],
            f"multi-token watch: no notice or table: {p.stderr!r} {p.stdout!r}")


def test():
    if torch is None:
        print("SKIPPED test_clamp: PyTorch is not installed (apt-get install python3-torch)")
        return
    torch.set_num_threads(2)
    with t.tempdir() as tmp:
        model = t.demo_model(os.path.join(tmp, "demo"), *SIZE)
        ref = TorchLlama(model)
        pl = planted(model)
        paris, ocean, dog = pl[("down", " Paris")], pl[("down", " ocean")], pl[("up", " dog")]
        check_down_neuron(model, paris)
        check_down_neuron(model, ocean)
        check_up_neuron(model, ref, dog)
        ids = clamp_json(model, 0, 0, [0])["prompt_ids"]
        plain = check_generate(model, ref, ids, [])
        steered = check_generate(model, ref, ids, [(paris["layer"], paris["neuron"], 20)])
        t.check(steered[0] == paris["token_id"] and plain[0] != paris["token_id"],
                f"steered greedy {steered} does not start with {paris['token']!r} (plain {plain})")
        check_generate(model, ref, ids, [(dog["layer"], dog["neuron"], 10), (0, 3, -5)])
        check_map(model, tmp, dog)
        check_errors(model)


if __name__ == "__main__":
    t.main(test)
