"""Reader for flashinterp neuron maps (HDF5 schema version 1, see ARCHITECTURE.md).

    import flashinterp_map as fm
    with fm.open_map("map.h5") as m:
        t = m.top("up", layer=20, neuron=1234)   # ids, text, probs, logits, lse
Requires h5py and numpy (Debian: /usr/bin/python3). Everything is vectorised over neurons.
"""
import os

import numpy as np
import h5py

FORMAT = "flashinterp-map"
FORMAT_VERSION = 1
MATRICES = ("up", "gate", "down")


class MapError(Exception):
    """A file that is not a readable flashinterp map (the message names file and fault)."""


def _attr_str(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v[()])
    return v if isinstance(v, str) else str(v)


def _attr_int(v):
    return int(np.asarray(v).reshape(-1)[0])


class NeuronTokens:
    """Top (or bottom) tokens of one neuron, best first. ids/probs/logits: [k]; text: list of str."""

    def __init__(self, matrix, layer, neuron, ids, text, probs, logits, lse):
        self.matrix, self.layer, self.neuron = matrix, layer, neuron
        self.ids, self.text, self.probs, self.logits, self.lse = ids, text, probs, logits, lse

    def __repr__(self):
        pairs = ", ".join(f"{t!r}:{p:.3g}" for t, p in zip(self.text[:5], self.probs[:5]))
        return f"NeuronTokens({self.matrix} L{self.layer} N{self.neuron}: {pairs})"


class MapFile:
    """An open map. Use open_map(); close() or a `with` block releases the file."""

    def __init__(self, path, partial=False):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise MapError(f"{self.path}: no such file")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise MapError(f"{self.path}: cannot open as HDF5 ({e})") from None
        try:
            self._check(partial)
        except Exception:
            self.h5.close()
            raise
        self._text = None

    def _check(self, partial):
        a = self.h5.attrs
        fmt = _attr_str(a["format"]) if "format" in a else None
        if fmt != FORMAT:
            raise MapError(f"{self.path}: not a flashinterp map (format attribute is {fmt!r})")
        if "format_version" not in a or _attr_int(a["format_version"]) != FORMAT_VERSION:
            got = _attr_int(a["format_version"]) if "format_version" in a else None
            raise MapError(f"{self.path}: map format_version {got}, this reader reads {FORMAT_VERSION}")
        self.complete = "complete" in a and _attr_int(a["complete"]) == 1
        if not self.complete and not partial:
            raise MapError(f"{self.path}: partial map (complete=0: the decode did not finish); "
                           "pass partial=True / --partial to read it anyway")

    # ---- file-level ---------------------------------------------------------------------
    def close(self):
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def attrs(self):
        """Root attributes as a plain dict (strings decoded)."""
        return {k: _attr_str(v) if isinstance(v, (bytes, str)) else v for k, v in self.h5.attrs.items()}

    def matrices(self):
        """The matrices present, in the order up, gate, down."""
        return [m for m in MATRICES if m in self.h5]

    def group(self, matrix):
        if matrix not in self.h5:
            raise MapError(f"{self.path}: no matrix {matrix!r} in this map (present: {self.matrices()})")
        return self.h5[matrix]

    def layers(self, matrix):
        """Layer ids present for `matrix`: [L] int64; dataset index i holds model layer layers[i]."""
        return np.asarray(self.group(matrix).attrs["layers"], dtype=np.int64).reshape(-1)

    def layer_index(self, matrix, layer):
        ids = self.layers(matrix)
        hit = np.nonzero(ids == int(layer))[0]
        if hit.size == 0:
            raise MapError(f"{self.path}: layer {layer} not in /{matrix} (layers present: "
                           f"{_ranges(ids)})")
        return int(hit[0])

    def num_neurons(self, matrix):
        return int(self.group(matrix)["top_ids"].shape[1])

    # ---- vocabulary ---------------------------------------------------------------------
    @property
    def vocab_size(self):
        return int(self.h5["vocab/text"].shape[0])

    def vocab_text(self):
        """[V] object array of str (printable token text), read once and cached."""
        if self._text is None:
            self._text = self.h5["vocab/text"].asstr()[...]
        return self._text

    def token_text(self, ids):
        return [str(t) for t in self.vocab_text()[np.asarray(ids, dtype=np.int64)]]

    def token_bytes(self, ids):
        ds = self.h5["vocab/bytes"]
        return [bytes(np.asarray(ds[int(i)], dtype=np.uint8)) for i in np.asarray(ids).reshape(-1)]

    def special(self):
        """[V] bool: added/special tokens."""
        return self.h5["vocab/special"][...].astype(bool)

    def token_id(self, text):
        """Ids whose printable text equals `text` exactly (an int64 array, maybe empty)."""
        return np.nonzero(self.vocab_text() == text)[0]

    # ---- per neuron / per layer ---------------------------------------------------------
    def logsumexp(self, matrix, layer):
        """[N] float32 log-sum-exp of every neuron of one layer."""
        return self.group(matrix)["logsumexp"][self.layer_index(matrix, layer)]

    def done(self, matrix):
        """[L, C] bool: chunk c of dataset layer l was written."""
        return self.group(matrix)["done"][...].astype(bool)

    def written(self, matrix, layer, neuron):
        """Whether the neuron's chunk is marked done: True, False, or None when the map does not
        say which chunk holds it (no chunk_rows attribute and the layer is only partly done)."""
        row = self.done(matrix)[self.layer_index(matrix, layer)]
        if row.all() or not row.any():
            return bool(row.all())
        for a in (self.group(matrix)["done"].attrs, self.group(matrix).attrs, self.h5.attrs):
            if "chunk_rows" in a:
                return bool(row[self._neuron(matrix, neuron) // _attr_int(a["chunk_rows"])])
        return None

    def top(self, matrix, layer, neuron, k=None):
        """The neuron's top-k tokens (all stored ones when k is None)."""
        g, li, n = self.group(matrix), self.layer_index(matrix, layer), self._neuron(matrix, neuron)
        ids = g["top_ids"][li, n]
        logits = g["top_logits"][li, n]
        probs = g["top_probs"][li, n]
        keep = ids >= 0  # entries past the vocabulary are -1
        if k is not None:
            keep &= np.arange(ids.size) < k
        lse = float(g["logsumexp"][li, n])
        return NeuronTokens(matrix, int(layer), n, ids[keep], self.token_text(ids[keep]),
                            probs[keep], logits[keep], lse)

    def bottom(self, matrix, layer, neuron, k=None):
        """The neuron's lowest-logit tokens, lowest first, or None when the map has none."""
        g = self.group(matrix)
        if "bottom_ids" not in g:
            return None
        li, n = self.layer_index(matrix, layer), self._neuron(matrix, neuron)
        ids, logits = g["bottom_ids"][li, n], g["bottom_logits"][li, n]
        keep = ids >= 0
        if k is not None:
            keep &= np.arange(ids.size) < k
        lse = float(g["logsumexp"][li, n])
        ids, logits = ids[keep], logits[keep]
        probs = np.exp(logits.astype(np.float64) - lse).astype(np.float32)
        return NeuronTokens(matrix, int(layer), n, ids, self.token_text(ids), probs, logits, lse)

    def top1(self, matrix, layer):
        """[N] int32 top-1 token id of every neuron of one layer (one read, no loop)."""
        return self.group(matrix)["top_ids"][self.layer_index(matrix, layer), :, 0]

    def _neuron(self, matrix, neuron):
        n, count = int(neuron), self.num_neurons(matrix)
        if not 0 <= n < count:
            raise MapError(f"{self.path}: neuron {n} out of range for /{matrix} (0..{count - 1})")
        return n


def open_map(path, partial=False):
    """Opens a map, checking format, format_version and (unless partial) complete == 1."""
    return MapFile(path, partial=partial)


def _ranges(ids):
    ids = list(map(int, ids))
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(map(str, ids))
