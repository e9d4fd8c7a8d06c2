"""Reader of `flashinterp sweep` files (docs/SWEEP_FORMAT.md): per neuron its causal score (the
slope of the change in log p of its decoded top token over the clamp values) beside what the map
says of it, for analysis/show (--sweep) and analysis/report (--sweep).

    import flashinterp_sweep as fs
    s = fs.open_sweep("sweep.h5")
    s.lookup("up", 20, 1234)    # dict, or None when the neuron was not swept
    s.lookup("moe/up", 20, 1234, expert=3)   # a routed expert's neuron ("shared/up": the shared expert's)
    fs.disagreements(s, 20)     # the neurons whose specialisation and score disagree most
Runs with Debian's /usr/bin/python3 (numpy + h5py).
"""
import h5py
import numpy as np

FORMAT = "flashinterp-sweep"
MATRICES = ("up", "gate", "down")  # the file's matrix codes 0, 1, 2
GROUPS = ("", "moe/", "shared/")  # the file's group codes 0 (dense), 1 (routed experts), 2 (shared)


class SweepError(Exception):
    pass


def _str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


class Sweep:
    """The whole file in memory (a few hundred bytes a neuron)."""

    def __init__(self, path):
        self.path = path
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise SweepError(f"{path}: not an HDF5 file ({e})") from None
        with f:
            if _str(f.attrs.get("format", b"")) != FORMAT:
                raise SweepError(f"{path}: not a flashinterp sweep file")
            self.attrs = {k: (_str(v) if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            for k in ("matrix", "layer", "neuron", "top_tokens", "map_top_prob", "map_entropy", "score",
                      "top1_share", "delta", "done", "values"):
                setattr(self, k, f[k][()])
            # A file of a dense map may lack group/expert (before MoE sweeps): all dense.
            K = len(self.neuron)
            self.group = f["group"][()] if "group" in f else np.zeros(K, np.int32)
            self.expert = f["expert"][()] if "expert" in f else np.full(K, -1, np.int32)
        self.complete = int(self.attrs.get("complete", 0)) == 1
        self.keys = {(GROUPS[g] + MATRICES[m], int(l), int(e), int(n)): i
                     for i, (g, m, l, e, n) in enumerate(zip(self.group, self.matrix, self.layer, self.expert,
                                                              self.neuron))}

    def matches(self, map_attrs):
        """Whether this sweep was made from the map with these root attributes."""
        return _str(map_attrs.get("fingerprint", b"")) == self.attrs.get("map_fingerprint")

    def lookup(self, matrix, layer, neuron, expert=-1):
        """matrix: up|gate|down (dense), moe/up... (with expert, the routed expert's id), shared/up..."""
        i = self.keys.get((matrix, int(layer), int(expert), int(neuron)))
        if i is None or not self.done[i]:
            return None
        per_value = self.delta[i].mean(axis=1)
        return dict(score=float(self.score[i]), top1_share=float(self.top1_share[i]),
                    token_id=int(self.top_tokens[i, 0]),
                    dlogp=[dict(value=float(v), dlogp=float(d)) for v, d in zip(self.values, per_value)])

    def specialisation(self):
        """(values [K], name): the map's exact entropy where every neuron has it (lower = more
        specialised, so negated here), else its top-1 probability; higher = more specialised."""
        if (self.map_entropy >= 0).all():
            return -self.map_entropy.astype(np.float64), "-entropy (nats)"
        return self.map_top_prob.astype(np.float64), "top-1 probability"


def open_sweep(path):
    return Sweep(path)


def _rank01(x):
    """Ranks of x scaled to [0, 1] (ties by position: stable)."""
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r / max(len(x) - 1, 1)


def disagreements(s, n):
    """Indices of the n done neurons whose specialisation rank and score rank differ most, with
    the difference (positive: specialised but the clamp does little)."""
    idx = np.flatnonzero(s.done)
    if len(idx) == 0:
        return [], np.zeros(0)
    spec, _ = s.specialisation()
    diff = _rank01(spec[idx]) - _rank01(s.score[idx].astype(np.float64))
    order = np.argsort(-np.abs(diff), kind="stable")[:n]
    return idx[order], diff[order]


def plot_per_layer(s, out_png, plt):
    """One panel per layer: the map's specialisation against the causal score of each swept
    neuron, coloured by matrix. Saved as out_png."""
    done = s.done.astype(bool)
    layers = sorted(set(int(x) for x in s.layer[done]))
    spec, name = s.specialisation()
    cols = min(4, max(1, len(layers)))
    rows = -(-len(layers) // cols) if layers else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        for m, colour in zip(range(3), ("tab:blue", "tab:orange", "tab:green")):
            sel = done & (s.layer == layer) & (s.matrix == m)
            if sel.any():
                ax.scatter(spec[sel], s.score[sel], s=6, c=colour, label=MATRICES[m])
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel("causal score (dlogp / value)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
