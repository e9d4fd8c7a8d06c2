#!/usr/bin/python3
"""The token -> neuron index (/<matrix>/token_index) against an independent float64 computation
over the full logits of a small model: for every token, the M (layer, neuron) pairs with the
highest probability, best first, ties to the lower (layer, neuron). Also: the same bits for
1, 2 and 3 ranks, and --token-index 0 writes no index. A map the CUDA backend wrote (on a GPU
machine, where auto picks it) is held to its contract instead: probabilities within 1e-3
relative, near-ties within 1e-4 in log-probability (fp32 lse, hi + lo GEMM)."""
import h5py
import numpy as np

import fi_testlib as t

M = 6


def reference_index(ref, matrix, layers, n):
    """[V, M] layer ids, neuron ids and log-probs by the index's order, from float64 logits."""
    lp = []
    for layer in layers:
        logits = ref.logits(matrix, layer, np.arange(n), "rms")  # [N, V]
        lp.append(logits - t.logsumexp(logits)[:, None])
    lp = np.concatenate(lp, axis=0)  # [L*N, V], row = layer_index * N + neuron
    # Sort each token's column by (-logp, row): row order is (layer, neuron) order.
    order = np.lexsort((np.broadcast_to(np.arange(lp.shape[0])[:, None], lp.shape), -lp), axis=0)[:M]
    rows = order.T  # [V, M]
    lps = np.take_along_axis(lp.T, rows, axis=1)
    return np.asarray(layers)[rows // n], rows % n, lps


def check_index(f, ref, matrix, layers, n):
    g = f[matrix]["token_index"]
    lay, neu, probs = g["layer"][:], g["neuron"][:], g["probs"][:]
    V = ref.wu.shape[0]
    t.check(lay.shape == (V, M) and lay.dtype == np.int32 and probs.dtype == np.float32,
            f"{matrix}: token_index shapes/dtypes {lay.shape} {lay.dtype} {probs.dtype}")
    rl, rn, rlp = reference_index(ref, matrix, layers, n)
    # The map's own probabilities must be right for the pairs it lists ...
    lp_of = {}
    for li, layer in enumerate(layers):
        logits = ref.logits(matrix, layer, np.arange(n), "rms")
        lp_of[layer] = logits - t.logsumexp(logits)[:, None]
    listed = np.stack([lp_of[int(l)][n_, v] for v in range(0, V, 997) for l, n_ in zip(lay[v], neu[v])])
    got = probs[::997].reshape(-1).astype(np.float64)
    backend = f.attrs["backend"]
    backend = backend.decode() if isinstance(backend, bytes) else str(backend)
    cuda = backend == "cuda"
    t.check(np.allclose(got, np.exp(listed), rtol=1e-3 if cuda else 1e-4, atol=0),
            f"{matrix}: listed probabilities off")
    # ... and the lists must equal the reference, except where two candidates are within a tiny
    # log-prob of each other (float32 logits cannot order those).
    same = (lay == rl) & (neu == rn)
    bad = np.argwhere(~same)
    for v, j in bad:
        mine = lp_of[int(lay[v, j])][neu[v, j], v]
        t.check(abs(mine - rlp[v, j]) < (1e-4 if cuda else 1e-5), f"{matrix}: token {v} slot {j}: map has layer {lay[v, j]} "
                f"neuron {neu[v, j]} (logp {mine:.7f}), reference layer {rl[v, j]} neuron {rn[v, j]} "
                f"(logp {rlp[v, j]:.7f})")
    t.check(np.all(np.diff(probs, axis=1) <= 0), f"{matrix}: index lists not sorted best first")
    print(f"  {matrix} [{backend}]: {V} tokens x {M}: {same.mean() * 100:.3f}% slots identical to the float64 "
          f"reference, the rest are near-ties ({len(bad)})")


def test():
    with t.tempdir() as tmp:
        model = t.demo_model(f"{tmp}/m", "--hidden", "64", "--intermediate", "96", "--layers", "3")
        ref = t.Reference(model)
        maps = {}
        for np_ in (1, 2, 3):
            maps[np_] = t.decode(model, f"{tmp}/map{np_}.h5", "--matrices", "up,down", "--layers", "1-2",
                                 "--token-index", str(M), "--chunk-rows", "20", np_=np_)
        with h5py.File(maps[2], "r") as f:
            t.check(int(f.attrs["token_index_m"]) == M, "token_index_m attribute")
            for matrix in ("up", "down"):
                check_index(f, ref, matrix, [1, 2], 96)
        with h5py.File(maps[1], "r") as a:
            for np_ in (2, 3):
                with h5py.File(maps[np_], "r") as b:
                    for matrix in ("up", "down"):
                        for name in ("layer", "neuron", "probs"):
                            x, y = a[matrix]["token_index"][name][:], b[matrix]["token_index"][name][:]
                            t.check(x.tobytes() == y.tobytes(), f"{matrix}/token_index/{name}: -np 1 and -np {np_} differ")
        print("  token index bit-identical for 1, 2 and 3 ranks")
        off = t.decode(model, f"{tmp}/off.h5", "--token-index", "0", np_=1)
        with h5py.File(off, "r") as f:
            t.check("token_index" not in f["up"] and int(f.attrs["token_index_m"]) == 0, "--token-index 0 still wrote an index")


t.main(test)
