"""Reader for flashinterp neuron maps (format version 1, docs/MAP_FORMAT.md), and the
computations behind the scripts beside it (show, search, compare, report).

    import flashinterp_map as fm
    with fm.open_map("map.h5") as m:
        t = m.top("up", layer=20, neuron=1234)   # ids, text, probs, logits, lse
        ids = m.find_tokens(fm.word_variants("dog"))   # {variant: [token ids]}
        hits = m.search("up", [5679], top=20)          # best neurons for those tokens
    fm.compare_maps(a, b, "up")                          # top-1 agreement, Jaccard, most changed
Requires h5py and numpy (Debian: /usr/bin/python3). Everything is vectorised over neurons; whole
layers are read at once (one layer of the 8B shape is 14336 x 20 values).
"""
import json
import os
import sys

import numpy as np
import h5py

FORMAT = "flashinterp-map"
FORMAT_VERSION = 1
MATRICES = ("up", "gate", "down")
# Every item of a map as this reader knows it (docs/MAP_FORMAT.md). The writer's list is
# `flashinterp map-format --json`; tests/python/test_map_format.py holds the two to each other.
ROOT_ATTRS = ("format", "format_version", "tool_version", "model_dir", "model_type", "hidden_size",
              "intermediate_size", "num_layers", "vocab_size", "norm", "top_k", "bottom_k",
              "token_index_m", "backend", "world_size", "command_line", "created_utc", "elapsed_s",
              "complete", "fingerprint")
VOCAB_DATASETS = ("text", "bytes", "special")
GROUP_ATTRS = ("tensor_pattern", "axis", "layers", "chunk_rows")
GROUP_DATASETS = ("top_ids", "top_logits", "top_probs", "logsumexp", "bottom_ids", "bottom_logits",
                  "done")
OPTIONAL_DATASETS = ("bottom_ids", "bottom_logits")  # only with --bottom-k
TOKEN_INDEX_DATASETS = ("layer", "neuron", "probs", "logp", "included")


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
        for name in ("vocab/" + d for d in VOCAB_DATASETS):
            if name not in self.h5:
                raise MapError(f"{self.path}: the map has no dataset /{name}")
        for m in (m for m in MATRICES if m in self.h5):
            g = self.h5[m]
            for d in GROUP_DATASETS:
                if d not in g and d not in OPTIONAL_DATASETS:
                    raise MapError(f"{self.path}: the map has no dataset /{m}/{d}")
            if "layers" not in g.attrs:
                raise MapError(f"{self.path}: /{m} has no 'layers' attribute")
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

    def top_k(self, matrix):
        """K, the number of top tokens stored per neuron."""
        return int(self.group(matrix)["top_ids"].shape[2])

    def layer_top(self, matrix, layer):
        """One whole layer: (ids [N, K] int32, probs [N, K] float32), two contiguous reads."""
        g, li = self.group(matrix), self.layer_index(matrix, layer)
        return g["top_ids"][li], g["top_probs"][li]

    def neurons_top(self, matrix, pairs, k=None):
        """Top tokens of several neurons: pairs [(layer, neuron), ...] -> [NeuronTokens] in that
        order; one read per (layer, sorted neurons) group."""
        out = {}
        by_layer = {}
        for lay, n in pairs:
            by_layer.setdefault(int(lay), set()).add(self._neuron(matrix, n))
        g = self.group(matrix)
        for lay, ns in by_layer.items():
            li, ns = self.layer_index(matrix, lay), sorted(ns)
            ids, probs = g["top_ids"][li, ns], g["top_probs"][li, ns]
            logits, lse = g["top_logits"][li, ns], g["logsumexp"][li, ns]
            for j, n in enumerate(ns):
                keep = ids[j] >= 0
                if k is not None:
                    keep &= np.arange(keep.size) < k
                out[(lay, n)] = NeuronTokens(matrix, lay, n, ids[j][keep], self.token_text(ids[j][keep]),
                                             probs[j][keep], logits[j][keep], float(lse[j]))
        return [out[(int(lay), int(n))] for lay, n in pairs]

    # ---- token -> neurons -------------------------------------------------------------------
    def find_tokens(self, words):
        """{word: [token ids whose exact /vocab/bytes are the word's UTF-8]} for each word.
        The printable text (a fast contiguous read) narrows the candidates, /vocab/bytes decides:
        a token whose bytes are valid UTF-8 without NUL has exactly those bytes as its text, and a
        word given on a command line is such a string. Words holding U+FFFD or U+2400 (the
        replacements the text uses) are looked up in the whole /vocab/bytes."""
        out = {}
        raw = None
        for w in words:
            wb = w.encode("utf-8")
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
        if getattr(self, "_text_raw", None) is None:
            self._text_raw = self.h5["vocab/text"][...]
        return self._text_raw

    def token_index_m(self, matrix):
        """M of /<matrix>/token_index (0 when the map has no index for that matrix)."""
        g = self.group(matrix)
        return int(g["token_index/probs"].shape[1]) if "token_index" in g else 0

    def token_index(self, matrix, token_ids):
        """Rows of the token index: (layer, neuron, probs), each [n, M], for the given token ids,
        in that order. Empty slots: layer -1, probability 0."""
        g = self.group(matrix)
        if "token_index" not in g:
            raise MapError(f"{self.path}: /{matrix} has no token index (decode with --token-index M)")
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size and not (0 <= ids.min() and ids.max() < self.vocab_size):
            raise MapError(f"{self.path}: token id out of range 0..{self.vocab_size - 1}")
        uniq, inv = np.unique(ids, return_inverse=True)
        ti = g["token_index"]
        rows = [ti[name][uniq.tolist()] if uniq.size else np.zeros((0, ti[name].shape[1]), ti[name].dtype)
                for name in ("layer", "neuron", "probs")]
        return tuple(r[inv] for r in rows)

    def search(self, matrix, token_ids, top=20):
        """The neurons that give the highest probability to any of token_ids, best first, each
        neuron once (with its best token): a structured array of (prob, layer, neuron, token).
        From the token index when the map has one (exact for top <= M), else from a scan of the
        stored top-k of every layer (source says which)."""
        ids = np.unique(np.asarray(token_ids, dtype=np.int64))
        if self.token_index_m(matrix) > 0:
            lay, neu, prob = self.token_index(matrix, ids)
            tok = np.repeat(ids, lay.shape[1]).reshape(lay.shape)
            keep = lay >= 0
            hits = (prob[keep], lay[keep], neu[keep], tok[keep])
            source = "token_index"
        else:
            parts = []
            for layer in self.layers(matrix):
                tid, tp = self.layer_top(matrix, layer)
                n, j = np.nonzero(np.isin(tid, ids))
                parts.append((tp[n, j], np.full(n.size, layer), n, tid[n, j]))
            hits = tuple(np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(4))
            source = "top_k_scan"
        return _best_neurons(*hits, top), source

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


# ---- search helpers -------------------------------------------------------------------------
HIT_DTYPE = np.dtype([("prob", np.float32), ("layer", np.int32), ("neuron", np.int32), ("token", np.int64)])


def _best_neurons(prob, layer, neuron, token, top):
    """Sorts hits by probability (desc), ties to the lower (layer, neuron), then token id; keeps
    each (layer, neuron) once and the first `top`."""
    h = np.empty(np.asarray(prob).size, HIT_DTYPE)
    h["prob"], h["layer"], h["neuron"], h["token"] = prob, layer, neuron, token
    h = h[np.lexsort((h["token"], h["neuron"], h["layer"], -h["prob"].astype(np.float64)))]
    key = h["layer"].astype(np.int64) << 32 | h["neuron"].astype(np.int64)
    _, first = np.unique(key, return_index=True)
    return h[np.sort(first)][:top]


def word_variants(word, case=False):
    """The strings a word may be as one token: as typed, with a leading space and without one;
    with case, also lower case, UPPER case and Capitalised. Order kept, no repeats."""
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
        raise MapError(f"{b.path}: /{matrix} layers {_ranges(lb)} differ from {a.path}'s {_ranges(la)}")
    for what, sa, sb in (("neurons", ga["top_ids"].shape[1], gb["top_ids"].shape[1]),
                         ("top-k", ga["top_ids"].shape[2], gb["top_ids"].shape[2])):
        if sa != sb:
            raise MapError(f"{b.path}: /{matrix} has {sb} {what}, {a.path} has {sa}")
    if a.vocab_size != b.vocab_size:
        raise MapError(f"{b.path}: vocabulary of {b.vocab_size} tokens, {a.path} has {a.vocab_size}")
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
        raise MapError(f"{b.path}: vocabulary differs from {a.path}'s at {int((~same).sum())} token(s), "
                       f"first id {i}: {bytes(va[i])!r} vs {bytes(vb[i])!r}")


def topk_jaccard(ids_a, ids_b):
    """Per-row Jaccard overlap |A & B| / |A | B| of two top-k id sets: [N, K] x 2 -> [N] float64
    (ids < 0 are empty slots; two empty sets count as 1). Vectorised: a [N, K, K] comparison."""
    va, vb = ids_a >= 0, ids_b >= 0
    eq = (ids_a[:, :, None] == ids_b[:, None, :]) & va[:, :, None] & vb[:, None, :]
    inter = eq.any(axis=2).sum(axis=1)
    union = va.sum(axis=1) + vb.sum(axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def compare_maps(a, b, matrix="up", most=20):
    """The same matrix in two maps, layer by layer (whole layers read at once). Returns a dict:
    layers [L], neurons N, top_k K, per layer: same_top1 (count), same_top1_share,
    top1_in_other_topk_share, jaccard_mean, jaccard_median, jaccard_q25, jaccard_q75; overall
    the same over all neurons; most_changed: the `most` neurons with the lowest Jaccard (ties:
    top-1 changed first, then the more confident neuron, then the lower (layer, neuron))."""
    check_comparable(a, b, matrix)
    layers = a.layers(matrix)
    n, k = a.num_neurons(matrix), a.top_k(matrix)
    per = {key: [] for key in ("same_top1", "same_top1_share", "top1_in_other_topk_share",
                               "jaccard_mean", "jaccard_median", "jaccard_q25", "jaccard_q75")}
    cand = []
    all_j, all_same, all_in = [], [], []
    for layer in layers:
        ia, pa = a.layer_top(matrix, layer)
        ib, pb = b.layer_top(matrix, layer)
        same = ia[:, 0] == ib[:, 0]
        in_other = ((ia[:, :1] == ib) & (ib >= 0)).any(axis=1) & (ia[:, 0] >= 0)
        jac = topk_jaccard(ia, ib)
        q25, med, q75 = np.percentile(jac, [25, 50, 75])
        per["same_top1"].append(int(same.sum()))
        per["same_top1_share"].append(float(same.mean()))
        per["top1_in_other_topk_share"].append(float(in_other.mean()))
        per["jaccard_mean"].append(float(jac.mean()))
        per["jaccard_median"].append(float(med))
        per["jaccard_q25"].append(float(q25))
        per["jaccard_q75"].append(float(q75))
        all_j.append(jac)
        all_same.append(same)
        all_in.append(in_other)
        conf = np.maximum(pa[:, 0], pb[:, 0]).astype(np.float64)
        order = np.lexsort((np.arange(n), -conf, same, jac))[:most]
        cand += [(float(jac[i]), bool(same[i]), -float(conf[i]), int(layer), int(i)) for i in order]
    all_j, all_same, all_in = np.concatenate(all_j), np.concatenate(all_same), np.concatenate(all_in)
    cand.sort()
    changed = []
    for jac, same, negconf, layer, i in cand[:most]:
        ta, tb = a.top(matrix, layer, i, k=5), b.top(matrix, layer, i, k=5)
        changed.append(dict(layer=layer, neuron=i, jaccard=jac, same_top1=same,
                            a_top=_tokens_json(ta), b_top=_tokens_json(tb)))
    return dict(matrix=matrix, a=a.path, b=b.path, layers=[int(x) for x in layers], neurons=n, top_k=k,
                per_layer=per,
                overall=dict(neurons=int(all_j.size), same_top1=int(all_same.sum()),
                             same_top1_share=float(all_same.mean()) if all_j.size else float("nan"),
                             top1_in_other_topk_share=float(all_in.mean()) if all_j.size else float("nan"),
                             jaccard_mean=float(all_j.mean()) if all_j.size else float("nan"),
                             jaccard_median=float(np.median(all_j)) if all_j.size else float("nan")),
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
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 1


def short(text, width=16):
    """repr() of a token text, cut to `width` characters for tables."""
    r = repr(text)
    return r if len(r) <= width else r[:width - 1] + "…"
