"""Reader for flashinterp neuron maps (format versions 1 and 2, docs/MAP_FORMAT.md), and the
computations behind the scripts beside it (show, search, compare, report).

A neuron is addressed as (group, layer, expert, neuron): group is a path inside the map, one of
GROUPS ("up", "gate", "down"; version 2 also "moe/up"... for the routed experts [L, E, N, ...]
and "shared/up"... for the shared experts), expert is None outside moe/* (methods take it as the
keyword expert=). Version 1 maps hold only up/gate/down and read exactly as before.

    import flashinterp_map as fm
    with fm.open_map("map.h5") as m:
        t = m.top("up", layer=20, neuron=1234)   # ids, text, probs, logits, lse
        ids = m.find_tokens(fm.word_variants("dog"))   # {variant: [token ids]}
        hits = m.search("up", [5679], top=20)          # best neurons for those tokens
    fm.compare_maps(a, b, "up")                          # top-1 agreement, Jaccard, most changed
    with fm.open_map("moe.h5") as m:                      # format version 2
        t = m.top("moe/up", layer=3, neuron=17, expert=5)
        hits, _ = m.search("up", [5679])                  # every up group; hits["group"], ["expert"]
        for pos, layer, expert in m.units("moe/up"): ...  # each (layer, expert) slice
Requires h5py and numpy (Debian: /usr/bin/python3). Everything is vectorised over neurons; whole
layers are read at once (one layer of the 8B shape is 14336 x 20 values).
"""
import json
import os
import sys

import numpy as np
import h5py

FORMAT = "flashinterp-map"
FORMAT_VERSION = 1          # a dense model's map (the version test_map_format holds to the writer)
FORMAT_VERSIONS = (1, 2)    # what this reader reads; 2 = 1 plus the mixture-of-experts groups
MATRICES = ("up", "gate", "down")
# Version 2's groups: the prefix's index is the group code of /token_index/<matrix>/group.
GROUP_PREFIXES = ("", "moe/", "shared/")
GROUPS = tuple(p + m for p in GROUP_PREFIXES for m in MATRICES)
# Every item of a map as this reader knows it (docs/MAP_FORMAT.md). The writer's list is
# `flashinterp map-format --json`; tests/python/test_map_format.py holds the two to each other.
ROOT_ATTRS = ("format", "format_version", "tool_version", "build", "model_dir", "model_type",
              "hidden_size", "intermediate_size", "num_layers", "vocab_size", "norm", "top_k",
              "bottom_k", "token_index_m", "backend", "world_size", "command_line", "created_utc",
              "elapsed_s", "complete", "fingerprint")
VOCAB_DATASETS = ("text", "bytes", "special")
GROUP_ATTRS = ("tensor_pattern", "axis", "layers", "chunk_rows")
GROUP_DATASETS = ("top_ids", "top_logits", "top_probs", "logsumexp", "bottom_ids", "bottom_logits",
                  "done", "entropy", "margin")
STATS_DATASETS = ("entropy", "margin")  # [L, N] float32; absent from maps written before them
OPTIONAL_DATASETS = ("bottom_ids", "bottom_logits")  # only with --bottom-k
# Exact per-neuron statistics of newer decodes ([L, N] float32 each; maps of older binaries have
# neither: the readers then estimate the entropy from the top-k and take the margin from the list).
STATS_DATASETS = ("entropy", "margin")
TOKEN_INDEX_DATASETS = ("layer", "neuron", "probs", "logp", "included")
# Version 2 names (the agreed layout of issue 13), in addition to the version 1 ones above.
V2_ROOT_ATTRS = ("num_experts", "expert_size", "shared_size")
V2_MOE_GROUP_ATTRS = ("experts", "num_experts")        # /moe/<matrix>@..., besides GROUP_ATTRS
V2_GROUP_DATASETS = ("included",)                      # [L, C] / [L, E, C], with a token index
V2_TOKEN_INDEX_DATASETS = ("group", "layer", "expert", "neuron", "probs", "logp")  # /token_index/<matrix>/


def base_matrix(group):
    """"moe/up" -> "up"."""
    return group.rsplit("/", 1)[-1]


def group_name(code, matrix):
    """/token_index/<matrix>/group code (0 dense, 1 routed, 2 shared) -> the group's path."""
    return GROUP_PREFIXES[int(code)] + base_matrix(matrix)


def is_routed(group):
    return group.startswith("moe/")


def neuron_label(group, layer, expert, neuron):
    """How a neuron is named in text output: "up L3 N17", "moe/up L3 E5 N17"."""
    return f"{group} L{int(layer)}" + ("" if expert is None or expert < 0 else f" E{int(expert)}") + f" N{int(neuron)}"


class MapError(Exception):
    """A file that is not a readable flashinterp map, or data in it that cannot be right. The
    message is one line naming the file and the dataset (or attribute) at fault."""


# A stored probability is exp(logit - logsumexp) <= 1; rounding (the fp32 lse of the CUDA backend)
# may push it past 1 by an ulp or so, never by this much.
PROB_TOL = 1e-3


def _attr_str(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v[()])
    return v if isinstance(v, str) else str(v)


def _attr_int(v):
    return int(np.asarray(v).reshape(-1)[0])


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _value(x):
    """A value from a dataset for an error message: int, float or repr, never a numpy type."""
    x = np.asarray(x).reshape(-1)[0] if np.ndim(x) else x
    if isinstance(x, (np.integer, int)):
        return str(int(x))
    if isinstance(x, (np.floating, float)):
        return repr(float(x))
    return repr(x)


class NeuronTokens:
    """Top (or bottom) tokens of one neuron, best first. ids/probs/logits: [k]; text: list of str."""

    def __init__(self, matrix, layer, neuron, ids, text, probs, logits, lse, expert=None):
        self.matrix, self.layer, self.neuron, self.expert = matrix, layer, neuron, expert
        self.ids, self.text, self.probs, self.logits, self.lse = ids, text, probs, logits, lse

    def __repr__(self):
        pairs = ", ".join(f"{t!r}:{p:.3g}" for t, p in zip(self.text[:5], self.probs[:5]))
        return f"NeuronTokens({neuron_label(self.matrix, self.layer, self.expert, self.neuron)}: {pairs})"


class MapFile:
    """An open map. Use open_map(); close() or a `with` block releases the file.

    Every read checks what it read (vectorised, on those values only): token ids must lie in
    -1..V-1, probabilities in 0..1 (NaN only where the neuron's logsumexp is not finite, as the
    writer makes them), logits must not be NaN, done/included bits must be 0 or 1, and token index
    slots must name a decoded layer and an existing neuron. Anything else raises MapError naming
    the file, the dataset and the first bad place: a corrupt map is refused, never trusted."""

    def __init__(self, path, partial=False):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise MapError(f"{self.path}: no such file")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise MapError(f"{self.path}: cannot open as HDF5 ({e})") from None
        self._text = None
        self._text_raw = None
        self._index_state_cache = {}
        try:
            self._check(partial)
        except MapError:
            self.h5.close()
            raise
        except Exception as e:   # h5py faults on a damaged file: one line, the file named
            self.h5.close()
            raise MapError(f"{self.path}: cannot read the map's layout ({_first_line(e)})") from None

    def _err(self, name, msg):
        """A MapError for dataset or attribute `name` (a path inside the file, without '/')."""
        return MapError(f"{self.path}: /{name}: {msg}")

    def _check(self, partial):
        """The layout, from metadata alone (no data read): format, version, every dataset there
        with the shape and kind of dtype the format gives it."""
        a = self.h5.attrs
        fmt = _attr_str(a["format"]) if "format" in a else None
        if fmt != FORMAT:
            raise MapError(f"{self.path}: /@format: not a flashinterp map (format attribute is {fmt!r})")
        got = _attr_int(a["format_version"]) if "format_version" in a else None
        if got not in FORMAT_VERSIONS:
            raise MapError(f"{self.path}: /@format_version: map format_version {got}, this reader reads "
                           f"{' and '.join(map(str, FORMAT_VERSIONS))}")
        self.version = got
        if got >= 2:
            for k in V2_ROOT_ATTRS:
                if k not in a:
                    raise MapError(f"{self.path}: /@{k}: missing (format_version 2 needs {', '.join(V2_ROOT_ATTRS)})")
        self.complete = "complete" in a and _attr_int(a["complete"]) == 1
        for d in VOCAB_DATASETS:
            self._dataset(self.h5, "vocab/" + d)
        v = self.h5["vocab/text"].shape
        for d in VOCAB_DATASETS:
            if self.h5["vocab/" + d].shape != v or len(v) != 1:
                raise self._err("vocab/" + d, f"shape {self.h5['vocab/' + d].shape}, expected [V] with "
                                              f"V = {v[0] if v else '?'} (/vocab/text)")
        if "vocab_size" in a and _attr_int(a["vocab_size"]) != v[0]:
            raise self._err("vocab/text", f"{v[0]} tokens, but the vocab_size attribute says "
                                          f"{_attr_int(a['vocab_size'])}")
        if not self.groups():
            raise MapError(f"{self.path}: /: no neuron group in this map (expected one of {', '.join(GROUPS)})")
        for m in self.groups():
            self._check_group(m, v[0])
        if self.version >= 2:
            self._check_v2_index(v[0])
        if not self.complete and not partial:
            raise MapError(f"{self.path}: /@complete: partial map (complete=0: the decode did not finish); "
                           "pass partial=True / --partial to read it anyway")

    def _dataset(self, g, name):
        obj = g.get(name)
        if not isinstance(obj, h5py.Dataset):
            full = (g.name.strip("/") + "/" + name).strip("/")
            raise self._err(full, "no such dataset in this map" if obj is None else "not a dataset")
        return obj

    def _check_group(self, m, V):
        g = self.h5[m]
        if not isinstance(g, h5py.Group):
            raise self._err(m, "not a group")
        if "layers" not in g.attrs:
            raise self._err(m, "no 'layers' attribute")
        L = np.asarray(g.attrs["layers"]).reshape(-1).size
        lead = (L,)
        if is_routed(m):            # [L, E, ...]: E from the experts attribute
            if "experts" not in g.attrs:
                raise self._err(m, "no 'experts' attribute (a routed-expert group needs the decoded expert ids)")
            lead = (L, np.asarray(g.attrs["experts"]).reshape(-1).size)
        d = len(lead)

        def shaped(name, shape, kind):
            ds = self._dataset(g, name)
            if ds.shape != tuple(shape):
                raise self._err(f"{m}/{name}", f"shape {list(ds.shape)}, expected {list(shape)}")
            if ds.dtype.kind not in kind:
                raise self._err(f"{m}/{name}", f"dtype {ds.dtype}, expected "
                                               + ("an integer type" if kind == "iu" else "a float type"))
            return ds

        ids = self._dataset(g, "top_ids")
        if ids.ndim != d + 2 or ids.shape[:d] != lead or ids.shape[-1] < 1:
            want = "[L, E, N, K] with L, E" if d == 2 else "[L, N, K] with L"
            raise self._err(f"{m}/top_ids", f"shape {list(ids.shape)}, expected {want} = {', '.join(map(str, lead))} "
                                            f"(the 'layers'{' and experts' if d == 2 else ''} attribute) and K >= 1")
        N, K = ids.shape[d:]
        size = {"moe/": "expert_size", "shared/": "shared_size"}.get(m[:m.find("/") + 1])
        if size and self.version >= 2 and _attr_int(self.h5.attrs[size]) != N:
            raise self._err(f"{m}/top_ids", f"{N} neurons, but the {size} attribute says {_attr_int(self.h5.attrs[size])}")
        shaped("top_ids", lead + (N, K), "iu")
        shaped("top_logits", lead + (N, K), "f")
        shaped("top_probs", lead + (N, K), "f")
        shaped("logsumexp", lead + (N,), "f")
        for name in STATS_DATASETS:
            if name in g:
                shaped(name, lead + (N,), "f")
        if "bottom_ids" in g or "bottom_logits" in g:
            b = self._dataset(g, "bottom_ids")
            B = b.shape[-1] if b.ndim == d + 2 else -1
            shaped("bottom_ids", lead + (N, B), "iu")
            shaped("bottom_logits", lead + (N, B), "f")
        done = self._dataset(g, "done")
        if done.ndim != d + 1 or done.shape[:d] != lead:
            raise self._err(f"{m}/done", f"shape {list(done.shape)}, expected [{'L, E' if d == 2 else 'L'}, C] with "
                                         f"{'L, E' if d == 2 else 'L'} = {', '.join(map(str, lead))}")
        R = self._chunk_rows(m)
        C = done.shape[-1]
        if R is not None and -(-N // R) != C:
            raise self._err(f"{m}/done", f"{C} chunks per layer, but chunk_rows {R} makes {-(-N // R)} "
                                         f"of {N} neurons")
        if "concept_mass" in g:
            cm = self._dataset(g, "concept_mass")
            shaped("concept_mass", lead + (N, cm.shape[-1] if cm.ndim == d + 2 else -1), "f")
        if "included" in g and self.version >= 2:
            shaped("included", done.shape, "iu")
        if "token_index" in g and self.version < 2:
            ti = g["token_index"]
            if not isinstance(ti, h5py.Group):
                raise self._err(f"{m}/token_index", "not a group")
            lay = self._dataset(ti, "layer")
            M = lay.shape[1] if lay.ndim == 2 else -1
            shaped("token_index/layer", (V, M), "iu")
            shaped("token_index/neuron", (V, M), "iu")
            shaped("token_index/probs", (V, M), "f")
            if "logp" in ti:
                shaped("token_index/logp", (V, M), "f")
            if "included" in ti:
                shaped("token_index/included", done.shape, "iu")

    def _check_v2_index(self, V):
        """/token_index/<matrix>/ of a version 2 map: every dataset [V, M], the same M."""
        ti = self.h5.get("token_index")
        if ti is None:
            return
        for mat in ti:
            g = ti[mat]
            if mat not in MATRICES or not isinstance(g, h5py.Group):
                raise self._err(f"token_index/{mat}", "not a token index of up, gate or down")
            prob = self._dataset(g, "probs")
            M = prob.shape[1] if prob.ndim == 2 else -1
            for name, kind in (("group", "iu"), ("layer", "iu"), ("expert", "iu"), ("neuron", "iu"),
                               ("probs", "f"), ("logp", "f")):
                ds = self._dataset(g, name)
                if ds.shape != (V, M) or ds.dtype.kind not in kind:
                    raise self._err(f"token_index/{mat}/{name}", f"shape {list(ds.shape)} dtype {ds.dtype}, expected "
                                                                 f"[{V}, {M}] (V, M of token_index/{mat}/probs), "
                                                                 + ("an integer type" if kind == "iu" else "a float type"))
            if not [x for x in self.groups() if base_matrix(x) == mat]:
                raise self._err(f"token_index/{mat}", f"a token index of {mat}, but no {mat} group in this map")

    def _chunk_rows(self, matrix):
        """R of /<matrix> (from done's, the group's or the root's chunk_rows attribute), or None
        when no attribute holds it; MapError when it is not a positive integer."""
        g = self.h5[matrix]
        for where, a in ((f"{matrix}/done", g["done"].attrs if "done" in g else {}), (matrix, g.attrs),
                         ("", self.h5.attrs)):
            if "chunk_rows" in a:
                try:
                    r = _attr_int(a["chunk_rows"])
                except (TypeError, ValueError, IndexError):
                    r = 0
                if r < 1:
                    raise MapError(f"{self.path}: /{where}@chunk_rows: {a['chunk_rows']!r}, expected a "
                                   "positive integer")
                return r
        return None

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
        """The dense matrices present (version 1's groups), in the order up, gate, down."""
        return [m for m in MATRICES if m in self.h5]

    def groups(self):
        """Every neuron group present, in GROUPS order (a version 1 map: matrices())."""
        names = GROUPS if getattr(self, "version", 1) >= 2 else MATRICES
        return [m for m in names if m in self.h5]

    def group(self, matrix):
        if matrix not in GROUPS or matrix not in self.h5:
            raise MapError(f"{self.path}: /{matrix}: no matrix {matrix!r} in this map (present: {self.groups()})")
        return self.h5[matrix]

    def resolve(self, matrix, expert=None):
        """The group a command line means: --matrix up with --expert E on a version 2 map is
        moe/up, and so is plain up where the map has no dense up but routed experts."""
        if matrix in MATRICES and self.version >= 2 and ("moe/" + matrix) in self.groups():
            if expert is not None or matrix not in self.h5:
                return "moe/" + matrix
        if expert is not None and not is_routed(matrix):
            why = (f"format version {self.version} has no experts" if self.version < 2 else
                   f"/{matrix} is not a routed-expert group (those are moe/*: {[g for g in self.groups() if is_routed(g)]})")
            raise MapError(f"{self.path}: /{matrix}: --expert {expert} given, but {why}")
        return matrix

    def experts(self, matrix):
        """Decoded expert ids of a routed group ([E] int64; dataset index j holds expert experts[j]),
        None for any other group."""
        g = self.group(matrix)
        return np.asarray(g.attrs["experts"], dtype=np.int64).reshape(-1) if is_routed(matrix) else None

    def expert_index(self, matrix, expert):
        ids = self.experts(matrix)
        if ids is None:
            if expert is not None and int(expert) >= 0:
                raise MapError(f"{self.path}: /{matrix}: expert {expert} given, but /{matrix} has no experts")
            return None
        if expert is None or int(expert) < 0:
            raise MapError(f"{self.path}: /{matrix}: a routed-expert group: give the expert (experts present: "
                           f"{_ranges(ids)})")
        hit = np.nonzero(ids == int(expert))[0]
        if hit.size == 0:
            raise MapError(f"{self.path}: /{matrix}: expert {expert} not in this map (experts present: {_ranges(ids)})")
        return int(hit[0])

    def pos(self, matrix, layer, expert=None):
        """The leading index of one layer (and expert) in the group's datasets: (li,) or (li, ei)."""
        li, ei = self.layer_index(matrix, layer), self.expert_index(matrix, expert)
        return (li,) if ei is None else (li, ei)

    def units(self, matrix):
        """Every (pos, layer, expert) slice of a group, in dataset order (expert None outside moe/*)."""
        layers, experts = self.layers(matrix), self.experts(matrix)
        if experts is None:
            return [((li,), int(lay), None) for li, lay in enumerate(layers)]
        return [((li, ei), int(lay), int(e)) for li, lay in enumerate(layers) for ei, e in enumerate(experts)]

    def layers(self, matrix):
        """Layer ids present for `matrix`: [L] int64; dataset index i holds model layer layers[i]."""
        return np.asarray(self.group(matrix).attrs["layers"], dtype=np.int64).reshape(-1)

    def layer_index(self, matrix, layer):
        ids = self.layers(matrix)
        hit = np.nonzero(ids == int(layer))[0]
        if hit.size == 0:
            raise MapError(f"{self.path}: /{matrix}: layer {layer} not in this map (layers present: "
                           f"{_ranges(ids)})")
        return int(hit[0])

    def num_neurons(self, matrix):
        return int(self.group(matrix)["top_ids"].shape[-2])

    # ---- checked reads ------------------------------------------------------------------
    def _read(self, matrix, name, sel=Ellipsis):
        """/<matrix>/<name>[sel] as a numpy array; an HDF5 read fault becomes a MapError."""
        ds = self._dataset(self.group(matrix), name)
        try:
            return np.asarray(ds[sel])
        except (OSError, RuntimeError) as e:
            raise self._err(f"{matrix}/{name}", f"cannot read ({_first_line(e)})") from None

    def _refuse(self, name, bad, values, what, where):
        """Raises MapError when any of the boolean array `bad` is set: the first such value of
        `values` (same shape), where(position) says where it is."""
        if not bad.any():
            return
        pos = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
        count = int(np.count_nonzero(bad))
        raise self._err(name, f"{what}: {_value(values[pos])} at {where(pos)}"
                              + (f" ({count} such values in what was read)" if count > 1 else "")
                              + "; the map is corrupt")

    @staticmethod
    def _at(layer, neurons, expert=None):
        """where() for a [n, K] block of one layer (and expert): row j is neuron neurons[j]."""
        neurons = np.asarray(neurons).reshape(-1)
        ex = "" if expert is None else f", expert {int(expert)}"
        return lambda pos: f"layer {int(layer)}{ex}, neuron {int(neurons[pos[0]])}, entry {int(pos[1])}"

    def _check_ids(self, name, ids, where):
        V = self.vocab_size
        self._refuse(name, (ids < -1) | (ids >= V), ids, f"token id outside -1..{V - 1}", where)

    def _check_probs(self, name, probs, lse, where):
        """probs [n, K], lse [n]: finite and in 0..1, or NaN where the neuron's lse is not finite
        (a NaN logit makes the logsumexp, and so every probability of that neuron, NaN)."""
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(probs) & (probs >= 0) & (probs <= 1 + PROB_TOL)
        ok |= np.isnan(probs) & ~np.isfinite(np.asarray(lse))[:, None]
        self._refuse(name, ~ok, probs, "probability not in 0..1", where)

    def _check_logits(self, name, logits, where):
        self._refuse(name, np.isnan(logits), logits, "NaN logit (a NaN never enters a list)", where)

    def _bits(self, matrix, name):
        """[L, C] (moe/*: [L, E, C]) bool from a uint8 0/1 dataset (done, included)."""
        b = self._read(matrix, name)
        layers, experts = self.layers(matrix), self.experts(matrix)
        self._refuse(f"{matrix}/{name}", (b != 0) & (b != 1), b, "value other than 0 or 1",
                     lambda pos: f"layer {int(layers[pos[0]])}, "
                                 + (f"expert {int(experts[pos[1]])}, " if b.ndim == 3 else "") + f"chunk {int(pos[-1])}")
        return b.astype(bool)

    def _block(self, matrix, li, neurons, names):
        """Checked rows of one layer (and expert): {name: array [n, K]} for top_*/bottom_* names,
        plus "lse" ([n]); li: the layer index or a pos() tuple; neurons: a slice or sorted list of
        neuron indices (for messages: `rows`)."""
        pos = tuple(li) if isinstance(li, tuple) else (li,)
        layer = self.layers(matrix)[pos[0]]
        expert = None if len(pos) < 2 else self.experts(matrix)[pos[1]]
        sel = pos + (neurons,)
        rows = np.arange(self.num_neurons(matrix))[neurons]
        where = self._at(layer, rows, expert)
        out = {"lse": self._read(matrix, "logsumexp", sel)}
        for name in names:
            x = self._read(matrix, name, sel)
            if name.endswith("_ids"):
                self._check_ids(f"{matrix}/{name}", x, where)
            elif name.endswith("_logits"):
                self._check_logits(f"{matrix}/{name}", x, where)
            elif name == "top_probs":
                self._check_probs(f"{matrix}/{name}", x, out["lse"], where)
            out[name] = x
        return out

    # ---- vocabulary ---------------------------------------------------------------------
    @property
    def vocab_size(self):
        return int(self.h5["vocab/text"].shape[0])

    def vocab_text(self):
        """[V] object array of str (printable token text), read once and cached."""
        if self._text is None:
            self._text = self.h5["vocab/text"].asstr()[...]
        return self._text

    def _vocab_ids(self, ids):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and not (0 <= ids.min() and ids.max() < self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)][0]
            raise MapError(f"{self.path}: /vocab/text: token id {int(bad)} out of range 0..{self.vocab_size - 1}")
        return ids

    def token_text(self, ids):
        return [str(t) for t in self.vocab_text()[self._vocab_ids(ids)]]

    def token_bytes(self, ids):
        ds = self.h5["vocab/bytes"]
        return [bytes(np.asarray(ds[int(i)], dtype=np.uint8)) for i in self._vocab_ids(ids)]

    def special(self):
        """[V] bool: added/special tokens."""
        return self.h5["vocab/special"][...].astype(bool)

    def token_id(self, text):
        """Ids whose printable text equals `text` exactly (an int64 array, maybe empty)."""
        return np.nonzero(self.vocab_text() == text)[0]

    # ---- per neuron / per layer ---------------------------------------------------------
    def logsumexp(self, matrix, layer, expert=None):
        """[N] float32 log-sum-exp of every neuron of one layer (NaN where a logit was NaN)."""
        return self._read(matrix, "logsumexp", self.pos(matrix, layer, expert))

    def done(self, matrix):
        """[L, C] bool (moe/*: [L, E, C]): chunk c of dataset layer l (expert e) was written."""
        return self._bits(matrix, "done")

    def _chunk_mask(self, matrix, bits, what):
        """[..., C] chunk bits -> [..., N] neuron mask (neuron n is in chunk n // chunk_rows)."""
        n = self.num_neurons(matrix)
        full, empty = bits.all(axis=-1), ~bits.any(axis=-1)
        if (full | empty).all():
            return np.repeat(full[..., None], n, axis=-1)
        r = self._chunk_rows(matrix)
        if r is None:
            raise self._err(f"{matrix}/{what}", "some chunks are marked and others not, and no chunk_rows "
                                                "attribute says which neurons a chunk holds")
        return bits[..., np.arange(n) // r]

    def written_mask(self, matrix):
        """[L, N] bool (moe/*: [L, E, N]): the neuron's chunk is marked in `done` (all True in a
        complete map)."""
        return self._chunk_mask(matrix, self.done(matrix), "done")

    def written(self, matrix, layer, neuron, expert=None):
        """Whether the neuron's chunk is marked done: True, False, or None when the map does not
        say which chunk holds it (no chunk_rows attribute and the layer is only partly done)."""
        row = self.done(matrix)[self.pos(matrix, layer, expert)]
        n = self._neuron(matrix, neuron)
        if row.all() or not row.any():
            return bool(row.all())
        r = self._chunk_rows(matrix)
        return None if r is None else bool(row[n // r])

    def top(self, matrix, layer, neuron, k=None, expert=None):
        """The neuron's top-k tokens (all stored ones when k is None)."""
        li, n = self.pos(matrix, layer, expert), self._neuron(matrix, neuron)
        b = self._block(matrix, li, [n], ("top_ids", "top_logits", "top_probs"))
        ids, logits, probs = b["top_ids"][0], b["top_logits"][0], b["top_probs"][0]
        keep = ids >= 0  # entries past the vocabulary are -1
        if k is not None:
            keep &= np.arange(ids.size) < k
        return NeuronTokens(matrix, int(layer), n, ids[keep], self.token_text(ids[keep]),
                            probs[keep], logits[keep], float(b["lse"][0]), expert)

    def bottom(self, matrix, layer, neuron, k=None, expert=None):
        """The neuron's lowest-logit tokens, lowest first, or None when the map has none."""
        g = self.group(matrix)
        li, n = self.pos(matrix, layer, expert), self._neuron(matrix, neuron)
        if "bottom_ids" not in g:
            return None
        b = self._block(matrix, li, [n], ("bottom_ids", "bottom_logits"))
        ids, logits = b["bottom_ids"][0], b["bottom_logits"][0]
        keep = ids >= 0
        if k is not None:
            keep &= np.arange(ids.size) < k
        lse = float(b["lse"][0])
        ids, logits = ids[keep], logits[keep]
        with np.errstate(over="ignore", invalid="ignore"):
            probs = np.exp(logits.astype(np.float64) - lse).astype(np.float32)
        return NeuronTokens(matrix, int(layer), n, ids, self.token_text(ids), probs, logits, lse, expert)

    def top1(self, matrix, layer, expert=None):
        """[N] int32 top-1 token id of every neuron of one layer (one read, no loop)."""
        li = self.pos(matrix, layer, expert)
        ids = self._read(matrix, "top_ids", li + (slice(None), 0))
        self._check_ids(f"{matrix}/top_ids", ids[:, None], self._at(layer, np.arange(ids.size), expert))
        return ids

    def top_k(self, matrix):
        """K, the number of top tokens stored per neuron."""
        return int(self.group(matrix)["top_ids"].shape[-1])

    def layer_top(self, matrix, layer, expert=None):
        """One whole layer (of one expert): (ids [N, K] int32, probs [N, K] float32), two
        contiguous reads (and the layer's logsumexp, to check the probabilities against)."""
        b = self._block(matrix, self.pos(matrix, layer, expert), slice(None), ("top_ids", "top_probs"))
        return b["top_ids"], b["top_probs"]

    def neurons_top(self, matrix, pairs, k=None):
        """Top tokens of several neurons: pairs [(layer, neuron), ...] (moe/*: triples (layer,
        expert, neuron)) -> [NeuronTokens] in that order; one read per (layer, expert) slice."""
        out = {}
        by_unit = {}
        key = lambda p: (int(p[0]), None if len(p) < 3 else int(p[1]), int(p[-1]))   # noqa: E731
        for p in pairs:
            lay, e, n = key(p)
            by_unit.setdefault((lay, e), set()).add(self._neuron(matrix, n))
        for (lay, e), ns in by_unit.items():
            li, ns = self.pos(matrix, lay, e), sorted(ns)
            b = self._block(matrix, li, ns, ("top_ids", "top_logits", "top_probs"))
            ids, probs, logits, lse = b["top_ids"], b["top_probs"], b["top_logits"], b["lse"]
            for j, n in enumerate(ns):
                keep = ids[j] >= 0
                if k is not None:
                    keep &= np.arange(keep.size) < k
                out[(lay, e, n)] = NeuronTokens(matrix, lay, n, ids[j][keep], self.token_text(ids[j][keep]),
                                                probs[j][keep], logits[j][keep], float(lse[j]), e)
        return [out[key(p)] for p in pairs]

    # ---- per-neuron statistics -------------------------------------------------------------
    def has_exact_entropy(self, matrix):
        """Whether /<matrix>/entropy (the decode's exact entropy over all V tokens) exists."""
        return "entropy" in self.group(matrix)

    def stats(self, matrix, layer, neurons=slice(None), expert=None):
        """Entropy and margin of neurons of one layer (a slice or sorted list of neurons):
        {"entropy": [n] float64 nats, "entropy_exact": bool, "entropy_lower": [n] (the lower bound
        when estimated, = entropy when exact), "margin": [n] float64, "margin_exact": bool}.
        Exact values from /<matrix>/entropy and /margin where the map has them; else the entropy is
        entropy_from_topk's estimate (an upper bound) and the margin is top_logits[0] - [1] of the
        stored list, which is the exact top-1 minus top-2 logit (NaN when K < 2 or the row has one
        finite logit)."""
        li = self.pos(matrix, layer, expert)
        g = self.group(matrix)
        out = {}
        if "entropy" in g:
            e = self._read(matrix, "entropy", li + (neurons,)).astype(np.float64)
            out.update(entropy=e, entropy_lower=e, entropy_exact=True)
        else:
            b = self._block(matrix, li, neurons, ("top_probs",))
            hi, lo, _ = entropy_from_topk(b["top_probs"], self.vocab_size)
            out.update(entropy=hi, entropy_lower=lo, entropy_exact=False)
        if "margin" in g:
            out.update(margin=self._read(matrix, "margin", li + (neurons,)).astype(np.float64), margin_exact=True)
        else:
            k2 = min(2, self.top_k(matrix))
            lg = self._read(matrix, "top_logits", li + (neurons, slice(0, k2))).astype(np.float64)
            with np.errstate(invalid="ignore"):
                mg = lg[:, 0] - lg[:, 1] if k2 == 2 else np.full(lg.shape[0], np.nan)
            out.update(margin=np.where(np.isfinite(mg), mg, np.nan), margin_exact=False)
        return out

    def concepts(self):
        """{name: sorted int64 token ids} from /concepts/<name> (written by newer decodes; {}
        when the map has none)."""
        g = self.h5.get("concepts")
        if not isinstance(g, h5py.Group):
            return {}
        return {k: np.asarray(g[k][...], np.int64) for k in g if isinstance(g[k], h5py.Dataset)}

    # ---- token -> neurons -------------------------------------------------------------------
    def find_tokens(self, words):
        """{word: [token ids whose exact /vocab/bytes are the word's UTF-8]} for each word.
        The printable text (a fast contiguous read) narrows the candidates, /vocab/bytes decides:
        a token whose bytes are valid UTF-8 without NUL has exactly those bytes as its text, and a
        word given on a command line is such a string. Words holding U+FFFD or U+2400 (the
        replacements the text uses) are looked up in the whole /vocab/bytes. The empty word is
        no token (padding ids have empty bytes): it finds nothing."""
        out = {}
        raw = None
        for w in words:
            wb = w.encode("utf-8")
            if not wb:
                out[w] = []
                continue
            if "\ufffd" in w or "\u2400" in w:
                if raw is None:
                    raw = self.h5["vocab/bytes"][...]
                cand = [i for i, b in enumerate(raw) if len(b) == len(wb) and bytes(b) == wb]
            else:
                cand = np.nonzero(self._vocab_text_raw() == wb)[0]
            out[w] = [int(i) for i, b in zip(cand, self.token_bytes(cand)) if b == wb]
        return out

    def _vocab_text_raw(self):
        """[V] object array of the printable text as UTF-8 bytes (no decoding), cached."""
        if self._text_raw is None:
            self._text_raw = self.h5["vocab/text"][...]
        return self._text_raw

    def token_index_m(self, matrix):
        """M of /<matrix>/token_index (version 2: /token_index/<matrix>/; 0 when the map has no
        index for that matrix)."""
        if self.version >= 2:
            ti = self.h5.get(f"token_index/{base_matrix(matrix)}")
            return int(ti["probs"].shape[1]) if ti is not None else 0
        g = self.group(matrix)
        return int(g["token_index/probs"].shape[1]) if "token_index" in g else 0

    def index_coverage(self, matrix):
        """What /<matrix>/token_index can be used for: (usable, included, note).
        usable: False when the map has no index, or its lists mean nothing (a partial map whose
        `included` has no bit set: never saved, or cut off inside a save; or a partial map with no
        `included` at all). included: None when the lists cover every chunk, else the [L, C] bool
        chunks they cover. note: None, or one sentence saying what the lists cover or why they
        cannot be used."""
        if matrix in self._index_state_cache:
            return self._index_state_cache[matrix]
        if self.version >= 2:
            state = self._index_coverage_v2(base_matrix(matrix))
            self._index_state_cache[matrix] = state
            return state
        g = self.group(matrix)
        if "token_index" not in g:
            state = (False, None, None)
        elif "included" in g["token_index"]:
            inc = self._bits(matrix, "token_index/included")
            if inc.all():
                state = (True, None, None)
            elif not inc.any():
                state = (False, None, f"the token index was never saved (no chunk is marked in "
                                      f"/{matrix}/token_index/included)")
            else:
                state = (True, inc, f"the token index covers only {int(inc.sum())} of {inc.size} chunks "
                                    f"(those marked in /{matrix}/token_index/included)")
        elif self.complete:
            state = (True, None, None)
        else:
            state = (False, None, f"partial map without /{matrix}/token_index/included: what the token "
                                  "index covers is not recorded")
        self._index_state_cache[matrix] = state
        return state

    def index_groups(self, matrix):
        """The groups of one matrix name present in the map ("up" -> up, moe/up, shared/up)."""
        return [g for g in self.groups() if base_matrix(g) == base_matrix(matrix)]

    def _index_coverage_v2(self, base):
        """index_coverage of /token_index/<base>/: included is then {group: bits} (each group's
        own `included`, [L, C] or [L, E, C]) when the lists cover only some chunks."""
        if f"token_index/{base}" not in self.h5:
            return (False, None, None)
        inc, missing = {}, []
        for g in self.index_groups(base):
            if "included" in self.h5[g]:
                inc[g] = self._bits(g, "included")
            elif self.complete:
                inc[g] = np.ones(self.h5[g]["done"].shape, bool)
            else:
                missing.append(g)
        if missing:
            return (False, None, f"partial map without /{missing[0]}/included: what the token index covers "
                                 "is not recorded")
        where = ", ".join(f"/{g}/included" for g in inc)
        marked, total = sum(int(b.sum()) for b in inc.values()), sum(b.size for b in inc.values())
        if marked == total:
            return (True, None, None)
        if marked == 0:
            return (False, None, f"the token index was never saved (no chunk is marked in {where})")
        return (True, inc, f"the token index covers only {marked} of {total} chunks (those marked in {where})")

    def token_index_v2(self, matrix, token_ids):
        """Rows of a version 2 map's /token_index/<matrix>/ for the given token ids, in that order:
        (group code, layer, expert, neuron, probs), each [n, M]. Empty slots: group, layer, expert
        and neuron -1, probability 0 (so is any slot outside the chunks marked in its group's
        `included`). MapError when the index cannot be used or holds a slot that cannot be right."""
        base = base_matrix(matrix)
        name = f"token_index/{base}"
        if name not in self.h5:
            raise MapError(f"{self.path}: /{name}: no token index in this map (decode with --token-index M)")
        usable, inc, note = self.index_coverage(base)
        if not usable:
            raise MapError(f"{self.path}: /{name}: {note}")
        ids = self._vocab_ids(token_ids)
        uniq, inv = np.unique(ids, return_inverse=True)
        ti = self.h5[name]
        sel = slice(None) if uniq.size > 256 else uniq.tolist()

        def read(d):
            try:
                x = np.asarray(ti[d][sel]) if uniq.size else np.zeros((0, ti[d].shape[1]), ti[d].dtype)
            except (OSError, RuntimeError) as e:
                raise self._err(f"{name}/{d}", f"cannot read ({_first_line(e)})") from None
            return x[uniq] if uniq.size > 256 else x
        grp, lay, exp_, neu, prob = (read(d) for d in ("group", "layer", "expert", "neuron", "probs"))
        where = lambda pos: f"token {int(uniq[pos[0]])}, slot {int(pos[1])}"   # noqa: E731
        filled = prob != 0
        with np.errstate(invalid="ignore"):
            okp = np.isfinite(prob) & (prob > 0) & (prob <= 1 + PROB_TOL)
        self._refuse(f"{name}/probs", filled & ~okp, prob, "probability not in 0..1", where)
        present = self.index_groups(base)
        codes = [GROUP_PREFIXES.index(g[:len(g) - len(base)]) for g in present]
        self._refuse(f"{name}/group", filled & ~np.isin(grp, codes), grp,
                     f"group code not among this map's {base} groups ({', '.join(f'{c} = {g}' for c, g in zip(codes, present))})",
                     where)
        for c, g in zip(codes, present):
            mine = filled & (grp == c)
            if not mine.any():
                continue
            layers = self.layers(g)
            self._refuse(f"{name}/layer", mine & ~np.isin(lay, layers), lay,
                         f"layer id not among /{g}'s decoded layers ({_ranges(layers)})", where)
            experts = self.experts(g)
            if experts is None:
                self._refuse(f"{name}/expert", mine & (exp_ != -1), exp_, f"expert id for /{g} (not -1)", where)
            else:
                self._refuse(f"{name}/expert", mine & ~np.isin(exp_, experts), exp_,
                             f"expert id not among /{g}'s decoded experts ({_ranges(experts)})", where)
            n = self.num_neurons(g)
            self._refuse(f"{name}/neuron", mine & ((neu < 0) | (neu >= n)), neu, f"neuron outside 0..{n - 1} of /{g}",
                         where)
            if inc is not None:         # partial coverage: only slots inside the included chunks
                cover = self._chunk_mask(g, inc[g], "included")          # [L, (E,) N]
                idx = (np.searchsorted(layers, lay[mine]),) if experts is None else \
                      (np.searchsorted(layers, lay[mine]), np.searchsorted(experts, exp_[mine]))
                filled[mine] = cover[idx + (neu[mine],)]
        out = []
        for x, empty in ((grp, -1), (lay, -1), (exp_, -1), (neu, -1)):
            out.append(np.where(filled, x, empty).astype(np.int8 if x is grp else np.int32)[inv])
        out.append(np.where(filled, prob, 0).astype(np.float32)[inv])
        return tuple(out)

    def token_index(self, matrix, token_ids):
        """Rows of the token index: (layer, neuron, probs), each [n, M], for the given token ids,
        in that order. Empty slots: layer -1, neuron -1, probability 0; a slot stored with
        probability 0 (the fill value of a slot never saved) is empty, and in a partial map so is
        any slot outside the chunks marked in token_index/included. MapError when the index
        cannot be used (index_coverage) or holds a slot that cannot be right."""
        if self.version >= 2:
            raise MapError(f"{self.path}: /token_index/{base_matrix(matrix)}: a version 2 token index (with group "
                           "and expert columns): read it with token_index_v2()")
        g = self.group(matrix)
        if "token_index" not in g:
            raise MapError(f"{self.path}: /{matrix}/token_index: no token index in this map "
                           "(decode with --token-index M)")
        usable, inc, note = self.index_coverage(matrix)
        if not usable:
            raise MapError(f"{self.path}: /{matrix}/token_index: {note}")
        ids = self._vocab_ids(token_ids)
        uniq, inv = np.unique(ids, return_inverse=True)
        m = self.token_index_m(matrix)
        if uniq.size > 256:     # many rows (a regex, a set): one whole read beats a point selection
            lay = self._read(matrix, "token_index/layer")[uniq]
            neu = self._read(matrix, "token_index/neuron")[uniq]
            prob = self._read(matrix, "token_index/probs")[uniq]
        elif uniq.size:
            sel = uniq.tolist()
            lay = self._read(matrix, "token_index/layer", sel)
            neu = self._read(matrix, "token_index/neuron", sel)
            prob = self._read(matrix, "token_index/probs", sel)
        else:
            lay = neu = np.zeros((0, m), np.int32)
            prob = np.zeros((0, m), np.float32)
        where = lambda pos: f"token {int(uniq[pos[0]])}, slot {int(pos[1])}"   # noqa: E731
        filled = prob != 0          # NaN != 0: a NaN probability is checked, and refused
        with np.errstate(invalid="ignore"):
            okp = np.isfinite(prob) & (prob > 0) & (prob <= 1 + PROB_TOL)
        self._refuse(f"{matrix}/token_index/probs", filled & ~okp, prob, "probability not in 0..1", where)
        layers = self.layers(matrix)
        self._refuse(f"{matrix}/token_index/layer", filled & ~np.isin(lay, layers), lay,
                     f"layer id not among the decoded layers ({_ranges(layers)})", where)
        n = self.num_neurons(matrix)
        self._refuse(f"{matrix}/token_index/neuron", filled & ((neu < 0) | (neu >= n)), neu,
                     f"neuron outside 0..{n - 1}", where)
        if inc is not None:         # partial coverage: only slots inside the included chunks
            order = np.argsort(layers, kind="stable")
            li = order[np.clip(np.searchsorted(layers[order], lay), 0, layers.size - 1)]
            cover = self._chunk_mask(matrix, inc, "token_index/included")   # [L, N]
            filled &= cover[li, np.clip(neu, 0, n - 1)]
        lay = np.where(filled, lay, -1).astype(np.int32)
        neu = np.where(filled, neu, -1).astype(np.int32)
        prob = np.where(filled, prob, 0).astype(np.float32)
        return lay[inv], neu[inv], prob[inv]

    def search(self, matrix, token_ids, top=20, info=None):
        """The neurons that give the highest probability to any of token_ids, best first, each
        neuron once (with its best token): a structured array of (prob, layer, neuron, token).
        From the token index when the map has a usable one (exact for top <= M, over the chunks
        it covers), else from a scan of the stored top-k of every written neuron (source says
        which). A dict passed as info receives "note": None or a sentence on what was searched
        (a partial map, an index never saved)."""
        ids = np.unique(self._vocab_ids(token_ids))
        if self.version >= 2:
            return self._search_v2(matrix, ids, top, info)
        usable, _, note = self.index_coverage(matrix)
        if usable:
            lay, neu, prob = self.token_index(matrix, ids)
            tok = np.repeat(ids, lay.shape[1]).reshape(lay.shape)
            keep = lay >= 0
            hits = (prob[keep], lay[keep], neu[keep], tok[keep])
            source = "token_index"
        else:
            written = self.written_mask(matrix)
            parts = []
            for li, layer in enumerate(self.layers(matrix)):
                if not written[li].any():
                    continue
                tid, tp = self.layer_top(matrix, layer)
                n, j = np.nonzero(np.isin(tid, ids) & written[li][:, None])
                parts.append((tp[n, j], np.full(n.size, layer), n, tid[n, j]))
            hits = tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4))
            source = "top_k_scan"
            if not written.all():
                scan = (f"the scan covers the {int(written.sum())} of {written.size} neurons whose chunk is "
                        f"marked in /{matrix}/done")
                note = f"{note}; {scan}" if note else scan
            elif note:
                note += "; searched by a scan of the stored top-k instead"
        if info is not None:
            info["note"] = note
        return _best_neurons(*hits, top), source

    def _search_v2(self, matrix, ids, top, info):
        """search() of a version 2 map: every group of the matrix name (a group path such as
        "moe/up" keeps that group's hits only); hits carry group codes and experts."""
        if matrix in MATRICES:
            groups = self.index_groups(matrix)
        else:
            self.group(matrix)      # refuses a group the map does not hold
            groups = [matrix]
        if not groups:
            raise MapError(f"{self.path}: /{matrix}: no {matrix} group in this map (present: {self.groups()})")
        codes = [GROUP_PREFIXES.index(g[:len(g) - len(base_matrix(g))]) for g in groups]
        usable, _, note = self.index_coverage(base_matrix(matrix))
        if usable:
            grp, lay, exp_, neu, prob = self.token_index_v2(matrix, ids)
            tok = np.repeat(ids, lay.shape[1]).reshape(lay.shape)
            keep = np.isin(grp, codes) & (lay >= 0)
            hits = (prob[keep], lay[keep], neu[keep], tok[keep], grp[keep], exp_[keep])
            source = "token_index"
        else:
            parts, cover, total = [], 0, 0
            for g, c in zip(groups, codes):
                written = self.written_mask(g)
                cover, total = cover + int(written.sum()), total + written.size
                for pos, layer, expert in self.units(g):
                    w = written[pos]
                    if not w.any():
                        continue
                    tid, tp = self.layer_top(g, layer, expert)
                    n, j = np.nonzero(np.isin(tid, ids) & w[:, None])
                    parts.append((tp[n, j], np.full(n.size, layer), n, tid[n, j], np.full(n.size, c),
                                  np.full(n.size, -1 if expert is None else expert)))
            hits = tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(6))
            source = "top_k_scan"
            if cover < total:
                scan = f"the scan covers the {cover} of {total} neurons whose chunk is marked done"
                note = f"{note}; {scan}" if note else scan
            elif note:
                note += "; searched by a scan of the stored top-k instead"
        if info is not None:
            info["note"] = note
        return _best_neurons(*hits[:4], top, *hits[4:]), source

    def _neuron(self, matrix, neuron):
        n, count = int(neuron), self.num_neurons(matrix)
        if not 0 <= n < count:
            raise MapError(f"{self.path}: /{matrix}: neuron {n} out of range (0..{count - 1})")
        return n


def open_map(path, partial=False):
    """Opens a map, checking format, format_version and (unless partial) complete == 1."""
    return MapFile(path, partial=partial)


def _ranges(ids):
    ids = list(map(int, ids))
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(map(str, ids))


# ---- search helpers -------------------------------------------------------------------------
# group: the group code (0 dense, 1 routed moe/*, 2 shared/*; always 0 in a version 1 map),
# expert: -1 outside moe/*.
HIT_DTYPE = np.dtype([("prob", np.float32), ("layer", np.int32), ("neuron", np.int32), ("token", np.int64),
                      ("group", np.int8), ("expert", np.int32)])


def _best_neurons(prob, layer, neuron, token, top, group=0, expert=-1):
    """Sorts hits by probability (desc), ties to the lower (layer, group, expert, neuron), then
    token id; keeps each neuron once and the first `top`."""
    h = np.empty(np.asarray(prob).size, HIT_DTYPE)
    h["prob"], h["layer"], h["neuron"], h["token"] = prob, layer, neuron, token
    h["group"], h["expert"] = group, expert
    h = h[np.lexsort((h["token"], h["neuron"], h["expert"], h["group"], h["layer"], -h["prob"].astype(np.float64)))]
    key = np.stack([h["layer"].astype(np.int64), h["group"].astype(np.int64), h["expert"].astype(np.int64),
                    h["neuron"].astype(np.int64)], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    return h[np.sort(first)][:top]


def word_variants(word, case=False):
    """The strings a word may be as one token: as typed, with a leading space and without one;
    with case, also lower case, UPPER case and Capitalised. Order kept, no repeats. An empty or
    whitespace-only word is refused (ValueError): it would only find the space tokens."""
    if not word.strip():
        raise ValueError(f"the word to search for is {'empty' if not word else 'only white space'} "
                         f"({word!r}); give a word")
    core = word[1:] if word.startswith(" ") and len(word) > 1 else word
    forms = [core]
    if case:
        forms += [core.lower(), core.upper(), core[:1].upper() + core[1:].lower()]
    out = [word]
    for f in forms:
        out += [" " + f, f]
    return list(dict.fromkeys(out))


# ---- per-neuron statistics ----------------------------------------------------------------
def entropy_from_topk(probs, vocab_size):
    """Entropy (nats) of each neuron's next-token distribution, bounded from its top-k alone.
    probs: [..., K] top probabilities, descending (exact: they are exp(logit - logsumexp over the
    whole vocab)), entries < 0 or NaN ignored. The top-k terms -p log p are exact; the remaining
    mass r = 1 - sum(p) lies on the other V - k tokens, each at most p_k (the k-th probability):
      estimate (= upper bound): r spread evenly over the V - k tokens, -r log(r / (V - k));
      lower bound: r packed into as few tokens as p_k allows (floor(r / p_k) at p_k, the rest in one).
    Returns (estimate, lower, topk_mass), each of shape probs.shape[:-1]."""
    p = np.asarray(probs, dtype=np.float64)
    p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
    k = (p > 0).sum(axis=-1)
    mass = p.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_top = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=-1)
        r = np.clip(1.0 - mass, 0.0, 1.0)
        rest = np.maximum(vocab_size - k, 1)
        h_hi = h_top + np.where(r > 0, -r * np.log(np.where(r > 0, r, 1.0) / rest), 0.0)
        pk = np.where(k > 0, np.take_along_axis(p, np.maximum(k - 1, 0)[..., None], axis=-1)[..., 0], 1.0)
        q = np.minimum(np.floor(r / pk), rest)
        rem = np.clip(r - q * pk, 0.0, None)
        h_lo = h_top - q * pk * np.log(pk) + np.where(rem > 0, -rem * np.log(np.where(rem > 0, rem, 1.0)), 0.0)
    return h_hi, np.minimum(h_lo, h_hi), mass


# ---- two maps -------------------------------------------------------------------------------
def check_comparable(a, b, matrix):
    """Raises MapError unless maps a and b hold the same layers, neurons and top-k for `matrix`
    and the same vocabulary (/vocab/bytes and /vocab/special, byte for byte)."""
    ga, gb = a.group(matrix), b.group(matrix)
    la, lb = list(a.layers(matrix)), list(b.layers(matrix))
    if la != lb:
        raise MapError(f"{b.path}: /{matrix}@layers: layers {_ranges(lb)} differ from {a.path}'s {_ranges(la)}")
    ea, eb = a.experts(matrix), b.experts(matrix)
    if ea is not None and list(ea) != list(eb):
        raise MapError(f"{b.path}: /{matrix}@experts: experts {_ranges(eb)} differ from {a.path}'s {_ranges(ea)}")
    for what, sa, sb in (("neurons", ga["top_ids"].shape[-2], gb["top_ids"].shape[-2]),
                         ("top-k", ga["top_ids"].shape[-1], gb["top_ids"].shape[-1])):
        if sa != sb:
            raise MapError(f"{b.path}: /{matrix}/top_ids: {sb} {what}, {a.path} has {sa}")
    if a.vocab_size != b.vocab_size:
        raise MapError(f"{b.path}: /vocab/text: vocabulary of {b.vocab_size} tokens, {a.path} has {a.vocab_size}")
    va, vb = a.h5["vocab/bytes"][...], b.h5["vocab/bytes"][...]
    lena = np.fromiter(map(len, va), np.int64, va.size)
    lenb = np.fromiter(map(len, vb), np.int64, vb.size)
    same = lena == lenb
    if same.all():
        cata = np.concatenate(list(va)) if va.size else np.zeros(0, np.uint8)
        catb = np.concatenate(list(vb)) if vb.size else np.zeros(0, np.uint8)
        if not np.array_equal(cata, catb):
            ends = np.cumsum(lena)
            same = np.ones(va.size, bool)
            same[np.searchsorted(ends, np.nonzero(cata != catb)[0], side="right")] = False
    same &= a.h5["vocab/special"][...] == b.h5["vocab/special"][...]
    if not same.all():
        i = int(np.nonzero(~same)[0][0])
        raise MapError(f"{b.path}: /vocab/bytes, /vocab/special: vocabulary differs from {a.path}'s at "
                       f"{int((~same).sum())} token(s), "
                       f"first id {i}: {bytes(va[i])!r} vs {bytes(vb[i])!r}")


def topk_jaccard(ids_a, ids_b):
    """Per-row Jaccard overlap |A & B| / |A | B| of two top-k id sets: [N, K] x 2 -> [N] float64
    (ids < 0 are empty slots; two empty sets count as 1). Vectorised: a [N, K, K] comparison."""
    va, vb = ids_a >= 0, ids_b >= 0
    eq = (ids_a[:, :, None] == ids_b[:, None, :]) & va[:, :, None] & vb[:, None, :]
    inter = eq.any(axis=2).sum(axis=1)
    union = va.sum(axis=1) + vb.sum(axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


PER_LAYER_KEYS = ("neurons", "same_top1", "same_top1_share", "top1_in_other_topk_share", "jaccard_mean",
                  "jaccard_median", "jaccard_q25", "jaccard_q75")


def _agreement(jac, same, in_other):
    """compare_maps' statistics of one layer (or one expert of a layer) from its counted neurons:
    a dict of PER_LAYER_KEYS (NaN shares when no neuron counted)."""
    nan = float("nan")
    if not jac.size:
        return dict(neurons=0, same_top1=0, same_top1_share=nan, top1_in_other_topk_share=nan,
                    jaccard_mean=nan, jaccard_median=nan, jaccard_q25=nan, jaccard_q75=nan)
    q25, med, q75 = np.percentile(jac, [25, 50, 75])
    return dict(neurons=int(jac.size), same_top1=int(same.sum()), same_top1_share=float(same.mean()),
                top1_in_other_topk_share=float(in_other.mean()), jaccard_mean=float(jac.mean()),
                jaccard_median=float(med), jaccard_q25=float(q25), jaccard_q75=float(q75))


def compare_maps(a, b, matrix="up", most=20):
    """The same matrix in two maps, layer by layer (whole layers read at once). Returns a dict:
    layers [L], neurons N, top_k K, per layer: neurons (counted), same_top1 (count),
    same_top1_share, top1_in_other_topk_share, jaccard_mean, jaccard_median, jaccard_q25,
    jaccard_q75; overall the same over all counted neurons; left_out: neurons not counted;
    most_changed: the `most` neurons with the lowest Jaccard (ties: top-1 changed first, then the
    more confident neuron, then the lower (layer, expert, neuron)).
    A routed group (moe/*, format version 2): per_layer pools each layer's experts, per_expert
    holds the same statistics for every (layer, expert), most_changed entries name the expert.
    Only neurons whose chunk is marked in `done` in both maps count (all of them for two complete
    maps): a chunk not written holds the fill value 0 (token 0), which is no data."""
    check_comparable(a, b, matrix)
    layers = a.layers(matrix)
    n, k = a.num_neurons(matrix), a.top_k(matrix)
    counted = a.written_mask(matrix) & b.written_mask(matrix)     # [L, N] (moe/*: [L, E, N])
    per = {key: [] for key in PER_LAYER_KEYS}
    per_expert = []
    cand = []
    by_layer = {int(x): ([], [], []) for x in layers}       # jac, same, in_other of each layer's units
    for pos, layer, expert in a.units(matrix):
        rows = np.nonzero(counted[pos])[0]
        jac, same, in_other = np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)
        if rows.size:
            ia, pa = a.layer_top(matrix, layer, expert)
            ib, pb = b.layer_top(matrix, layer, expert)
            ia, pa, ib, pb = ia[rows], pa[rows], ib[rows], pb[rows]
            same = ia[:, 0] == ib[:, 0]
            in_other = ((ia[:, :1] == ib) & (ib >= 0)).any(axis=1) & (ia[:, 0] >= 0)
            jac = topk_jaccard(ia, ib)
            conf = np.maximum(pa[:, 0], pb[:, 0]).astype(np.float64)
            order = np.lexsort((rows, -conf, same, jac))[:most]
            e = -1 if expert is None else expert
            cand += [(float(jac[i]), bool(same[i]), -float(conf[i]), int(layer), e, int(rows[i])) for i in order]
        for lst, x in zip(by_layer[layer], (jac, same, in_other)):
            lst.append(x)
        if expert is not None:
            per_expert.append(dict(layer=layer, expert=expert, **_agreement(jac, same, in_other)))
    cat = lambda x, dt: np.concatenate(x) if x else np.zeros(0, dt)   # noqa: E731
    for layer in layers:
        jac, same, in_other = (cat(x, dt) for x, dt in zip(by_layer[int(layer)], (np.float64, bool, bool)))
        for key, v in _agreement(jac, same, in_other).items():
            per[key].append(v)
    all_j, all_same, all_in = (cat([x for v in by_layer.values() for x in v[i]], dt)
                               for i, dt in ((0, np.float64), (1, bool), (2, bool)))
    nan = float("nan")
    cand.sort()
    changed = []
    for jac, same, negconf, layer, e, i in cand[:most]:
        e = None if e < 0 else e
        ta, tb = a.top(matrix, layer, i, k=5, expert=e), b.top(matrix, layer, i, k=5, expert=e)
        changed.append(dict(layer=layer, **({} if e is None else dict(expert=e)), neuron=i, jaccard=jac,
                            same_top1=same, a_top=_tokens_json(ta), b_top=_tokens_json(tb)))
    extra = {} if a.experts(matrix) is None else dict(experts=[int(x) for x in a.experts(matrix)],
                                                      per_expert=per_expert)
    return dict(matrix=matrix, a=a.path, b=b.path, layers=[int(x) for x in layers], **extra, neurons=n, top_k=k,
                per_layer=per, left_out=int(counted.size - all_j.size),
                overall=dict(neurons=int(all_j.size), same_top1=int(all_same.sum()),
                             same_top1_share=float(all_same.mean()) if all_j.size else nan,
                             top1_in_other_topk_share=float(all_in.mean()) if all_j.size else nan,
                             jaccard_mean=float(all_j.mean()) if all_j.size else nan,
                             jaccard_median=float(np.median(all_j)) if all_j.size else nan),
                most_changed=changed)


def _tokens_json(t):
    return [dict(id=int(i), token=s, prob=float(p)) for i, s, p in zip(t.ids, t.text, t.probs)]


# ---- command-line plumbing shared by the scripts ------------------------------------------------
def tokens_json(t):
    """NeuronTokens -> [{id, token, prob, logit}] (plain Python types)."""
    return [dict(id=int(i), token=s, prob=float(p), logit=float(lg))
            for i, s, p, lg in zip(t.ids, t.text, t.probs, t.logits)]


def print_json(obj):
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=1, allow_nan=True, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def run_cli(prog, fn, argv):
    """Runs fn(argv) -> exit code; a MapError or I/O fault becomes one line on stderr and exit 1."""
    try:
        return fn(argv)
    except BrokenPipeError:   # e.g. `search ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (MapError, OSError, KeyError, ValueError) as e:
        print(f"{prog}: error: {_first_line(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prog}: error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:   # a fault of this tool, not of the map: still one line, no traceback
        if os.environ.get("FLASHINTERP_TRACEBACK"):
            raise
        print(f"{prog}: error: internal error {type(e).__name__}: {_first_line(e)} "
              "(FLASHINTERP_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1


def command(prog, fn):
    """The main(argv=None) of an analysis command (a console entry point of the package): runs
    fn(argv or sys.argv[1:]) under run_cli and returns the exit code."""
    def main(argv=None):
        return run_cli(prog, fn, sys.argv[1:] if argv is None else argv)
    return main


def short(text, width=16):
    """repr() of a token text, cut to `width` characters for tables."""
    r = repr(text)
    return r if len(r) <= width else r[:width - 1] + "…"
