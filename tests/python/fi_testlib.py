"""Helpers for the Python checks: find and run the flashinterp binary (plain or under mpirun), and
an independent numpy reader of safetensors checkpoints and tokenizer.json, so that the tests
compare the map against a computation that shares no code with the binary.
Run by ctest as /usr/bin/python3 tests/python/test_X.py with FLASHINTERP, MPIEXEC, FI_SOURCE_DIR.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SOURCE_DIR = os.environ.get("FI_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SOURCE_DIR, "analysis"))


# ---- running the binary -------------------------------------------------------------------
def binary():
    path = os.environ.get("FLASHINTERP") or os.path.join(SOURCE_DIR, "build", "src", "flashinterp")
    if not os.access(path, os.X_OK):
        fail(f"flashinterp binary not found at {path} (set FLASHINTERP)")
    return path


def mpiexec():
    return os.environ.get("MPIEXEC") or shutil.which("mpirun") or "mpirun"


def mpi_prefix(np_):
    flags = ["--oversubscribe"]
    if os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return [mpiexec(), *flags, "-np", str(np_)]


def run(args, np_=None, timeout=120, check=True):
    """Runs `flashinterp ARGS` (under mpirun -np np_ when given). Returns the CompletedProcess;
    with check, a non-zero exit fails the test, showing the command and its stderr."""
    cmd = ([*mpi_prefix(np_)] if np_ else []) + [binary(), *map(str, args)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"timed out after {timeout} s: {shlex.join(cmd)}")
    if check and p.returncode != 0:
        fail(f"exit {p.returncode}: {shlex.join(cmd)}\n--- stderr ---\n{p.stderr}")
    return p


def demo_model(out_dir, *args):
    """Writes a small demo checkpoint (flashinterp demo-model) and returns its directory."""
    run(["demo-model", "--out", out_dir, *args])
    return out_dir


def load_planted(model_dir, whole=False):
    """planted.json of a demo model: its "planted" list (the whole object with whole)."""
    with open(os.path.join(model_dir, "planted.json")) as f:
        pj = json.load(f)
    return pj if whole else pj["planted"]


def decode(model, out, *args, np_=2, timeout=300):
    run(["decode", "--model", model, "--out", out, "--quiet", *args], np_=np_, timeout=timeout)
    return out


def tempdir():
    """A temporary directory (a context manager); FI_KEEP_TMP=1 keeps it for debugging."""
    if os.environ.get("FI_KEEP_TMP"):
        path = tempfile.mkdtemp(prefix="fi-test-")
        print(f"keeping {path}")

        class Keep:
            def __enter__(self):
                return path

            def __exit__(self, *exc):
                return False
        return Keep()
    return tempfile.TemporaryDirectory(prefix="fi-test-")


# ---- reporting ----------------------------------------------------------------------------
class Failure(Exception):
    pass


def fail(msg):
    raise Failure(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def main(fn):
    """Runs a test function; prints PASS/FAIL and exits 0/1."""
    name = os.path.basename(sys.argv[0])
    try:
        fn()
    except Failure as e:
        print(f"FAIL {name}: {e}", flush=True)
        sys.exit(1)
    print(f"PASS {name}", flush=True)
    sys.exit(0)


# ---- safetensors, independently of the C++ reader ------------------------------------------
_DTYPES = {"F32": (4, np.dtype("<f4")), "F16": (2, np.dtype("<f2")), "BF16": (2, np.dtype("<u2")),
           "F64": (8, np.dtype("<f8")),
           "F8_E4M3": (1, np.dtype("u1")), "F8_E5M2": (1, np.dtype("u1"))}


def _fp8_table(exp_bits, man_bits, bias, ieee):
    """All 256 codes of an 8-bit float as float64, from the bit layout (E4M3: the "fn" variant,
    no infinities, S.1111.111 is NaN; E5M2: IEEE-style infinities and NaNs)."""
    out = np.zeros(256)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> man_bits) & ((1 << exp_bits) - 1)
        m = code & ((1 << man_bits) - 1)
        top = (1 << exp_bits) - 1
        if ieee and e == top:
            out[code] = sign * np.inf if m == 0 else np.nan
        elif not ieee and e == top and m == (1 << man_bits) - 1:
            out[code] = np.nan
        elif e == 0:
            out[code] = sign * m / (1 << man_bits) * 2.0 ** (1 - bias)
        else:
            out[code] = sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias)
    return out


FP8_E4M3 = _fp8_table(4, 3, 7, ieee=False)
FP8_E5M2 = _fp8_table(5, 2, 15, ieee=True)


def fp8_e4m3_encode(x):
    """float array -> the nearest F8_E4M3 codes (uint8; ties to the even code), saturating at 448."""
    pos = np.arange(0x7F)                       # 0x00..0x7E: the non-negative finite values, increasing
    vals = FP8_E4M3[pos]
    a = np.minimum(np.abs(np.asarray(x, dtype=np.float64)), 448.0)
    hi = np.clip(np.searchsorted(vals, a), 1, len(vals) - 1)
    lo = hi - 1
    d_lo, d_hi = a - vals[lo], vals[hi] - a
    pick = np.where((d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0)), hi, lo)
    return (pick | np.where(np.asarray(x) < 0, 0x80, 0)).astype(np.uint8)


def read_safetensors_header(path, keep_metadata=False):
    """Returns (header dict, without __metadata__ unless asked, data offset in the file)."""
    with open(path, "rb") as f:
        head = f.read(8)
        check(len(head) == 8, f"{path}: shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        check(n <= 100_000_000, f"{path}: header length {n} too large")
        raw = f.read(n)
        check(len(raw) == n, f"{path}: header truncated")
    header = json.loads(raw.decode("utf-8"))
    if not keep_metadata:
        header.pop("__metadata__", None)
    return header, 8 + n


class SafeTensors:
    """All tensors of a checkpoint directory (single file or sharded with an index), as float64."""

    def __init__(self, model_dir):
        self.dir = model_dir
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = ["model.safetensors"]
        self.where = {}  # tensor -> (path, info, data offset)
        for name in files:
            path = os.path.join(model_dir, name)
            header, data_off = read_safetensors_header(path)
            size = os.path.getsize(path) - data_off
            spans = sorted(tuple(v["data_offsets"]) for v in header.values())
            pos = 0
            for b, e in spans:  # contiguous, no holes, covering the buffer
                check(b == pos and e >= b, f"{path}: data offsets not contiguous at {b}")
                pos = e
            check(pos == size, f"{path}: buffer is {size} bytes, tensors cover {pos}")
            for t, info in header.items():
                self.where[t] = (path, info, data_off)

    def names(self):
        return sorted(self.where)

    def dtype(self, name):
        return self.where[name][1]["dtype"]

    def shape(self, name):
        return tuple(self.where[name][1]["shape"])

    def get(self, name):
        """The tensor as a float64 numpy array (exact widening of bf16/f16/f32)."""
        check(name in self.where, f"{self.dir}: no tensor {name}")
        path, info, data_off = self.where[name]
        dt = info["dtype"]
        check(dt in _DTYPES, f"{path}: {name}: unsupported dtype {dt}")
        size, npdt = _DTYPES[dt]
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        check(e - b == int(np.prod(shape, dtype=np.int64)) * size, f"{path}: {name}: size mismatch")
        with open(path, "rb") as f:
            f.seek(data_off + b)
            buf = f.read(e - b)
        a = np.frombuffer(buf, dtype=npdt)
        if dt == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        if dt.startswith("F8_"):
            return self._dequantize(name, (FP8_E4M3 if dt == "F8_E4M3" else FP8_E5M2)[a].reshape(shape))
        return a.astype(np.float64).reshape(shape)

    def _dequantize(self, name, q):
        """An FP8 weight times its scale, in float32 as one rounding (q * s), then float64: the
        per-block <name>_scale_inv (weight_block_size from config.json's quantization_config,
        128 x 128 when absent), or <name>_scale per row ([R, 1] or [R]) or per tensor."""
        if name + "_scale_inv" in self.where:
            s = self.get(name + "_scale_inv")
            cfg = {}
            path = os.path.join(self.dir, "config.json")
            if os.path.exists(path):
                with open(path) as f:
                    cfg = json.load(f)
            qc = cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config") or {}
            br, bc = qc.get("weight_block_size") or (128, 128)
            R, C = q.shape
            check(s.shape == (-(-R // br), -(-C // bc)), f"{name}_scale_inv: shape {s.shape} for {q.shape} / {br}x{bc}")
            s = np.repeat(np.repeat(s, br, axis=0), bc, axis=1)[:R, :C]
        elif name + "_scale" in self.where:
            s = self.get(name + "_scale")
            s = s.reshape(-1, 1) if s.size == q.shape[0] else s.reshape(())
        else:
            fail(f"{self.dir}: FP8 tensor {name} has no {name}_scale_inv or {name}_scale")
        return (q.astype(np.float32) * s.astype(np.float32)).astype(np.float64)


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: numpy array (float32/float16) or ("BF16", uint16 array)} as safetensors."""
    header, blobs, pos = {}, [], 0
    for name, t in tensors.items():
        if isinstance(t, tuple):
            dt, arr = t
        else:
            arr = t
            dt = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64"}[arr.dtype]
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    js = json.dumps(header).encode()
    js += b" " * (-len(js) % 8)
    with open(path, "wb") as f:
        f.write(len(js).to_bytes(8, "little"))
        f.write(js)
        for raw in blobs:
            f.write(raw)


def to_bf16_bits(x):
    """float32 -> bf16 bit patterns (round to nearest even), as uint16."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


# ---- config and tokenizer ------------------------------------------------------------------
def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def _byte_decoder():
    """GPT-2 byte-level alphabet: code point -> byte."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer_json_path):
    """(kind, {id: bytes}) from tokenizer.json, following HF tokenizers' decoders, written
    independently of the C++: kind "byte_level" (no decoder, or a ByteLevel one) maps each
    character back through GPT-2's alphabet (a token with a character outside it keeps its raw
    UTF-8, as HF's decoder does: DeepSeek's specials); "sentencepiece" replaces U+2581 with a space
    and reads <0xNN> as the byte NN where the decoder has ByteFallback. Added tokens not in
    model.vocab are their raw UTF-8 content."""
    with open(tokenizer_json_path, encoding="utf-8") as f:
        j = json.load(f)
    dec = j.get("decoder") or {}
    steps = dec.get("decoders", []) if dec.get("type") == "Sequence" else [dec]
    types = [st.get("type") for st in steps]
    kind = "byte_level" if not dec or "ByteLevel" in types else "sentencepiece"
    byte_fallback = "ByteFallback" in types
    inverse = _byte_decoder()
    out = {}
    for tok, i in j["model"]["vocab"].items():
        if kind == "byte_level":
            out[i] = bytes(inverse[c] for c in tok) if all(c in inverse for c in tok) else tok.encode()
        elif byte_fallback and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            out[i] = bytes([int(tok[3:5], 16)])
        else:
            out[i] = tok.replace("\u2581", " ").encode()
    for a in j.get("added_tokens", []):
        out.setdefault(a["id"], a["content"].encode())
    return kind, out


def tokenizer_vocab(model_dir):
    """{id: (bytes, special)} from tokenizer.json (token_bytes; special: an added token)."""
    path = os.path.join(model_dir, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        added = {a["id"] for a in json.load(f).get("added_tokens", [])}
    return {i: (b, i in added) for i, b in token_bytes(path)[1].items()}


# ---- the float64 reference decode ----------------------------------------------------------
class Reference:
    """The decode of docs/ARCHITECTURE.md in float64 numpy, straight from the checkpoint bytes.
    Families as their modelling code has them: Gemma 3's language model under
    language_model.model. with its fields in text_config, Phi-3's gate_up_proj (gate rows first),
    Gemma's (1 + w) norms, Gemma 2's final logit soft-cap."""

    def __init__(self, model_dir):
        self.st = SafeTensors(model_dir)
        self.cfg = load_config(model_dir)
        top = self.cfg
        kind = top.get("model_type", "")
        text = dict(top.get("text_config") or {}) if kind == "gemma3" else top
        self.gemma = kind.startswith("gemma")
        tied = bool(text.get("tie_word_embeddings", top.get("tie_word_embeddings", self.gemma)))
        self.prefix = "model."
        for p in ("model.", "language_model.model.", "model.language_model."):
            if p + "embed_tokens.weight" in self.st.where:
                self.prefix = p
                break
        untied = "language_model.lm_head.weight" if self.prefix == "language_model.model." else "lm_head.weight"
        self.lm_head_name = self.prefix + "embed_tokens.weight" if tied else untied
        self.wu = self.st.get(self.lm_head_name)  # [V, H]
        self.gamma = self.st.get(self.prefix + "norm.weight")  # [H]
        if self.gemma:
            self.gamma = 1.0 + self.gamma
        default_eps = 1e-6 if kind in ("gemma2", "gemma3", "gemma3_text") else None
        self.eps = float(text.get("rms_norm_eps") or default_eps or 1e-6)
        cap = text.get("final_logit_softcapping", 30.0 if kind == "gemma2" else None)
        self.softcap = float(cap) if cap else None
        self.fused = kind == "phi3"
        self.n = int(text["intermediate_size"])
        self._mats = {}

    def matrix(self, matrix, layer):
        """Neuron vectors of one layer: [N, H] (rows of up/gate, columns of down)."""
        key = (matrix, layer)
        if key not in self._mats:
            p = f"{self.prefix}layers.{layer}.mlp."
            if self.fused and matrix != "down":
                w = self.st.get(p + "gate_up_proj.weight")
                w = w[:self.n] if matrix == "gate" else w[self.n:]
            else:
                w = self.st.get(f"{p}{matrix}_proj.weight")
            self._mats[key] = w.T.copy() if matrix == "down" else w
        return self._mats[key]

    def norm(self, x, mode):
        if mode == "rms":
            return x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + self.eps) * self.gamma
        if mode == "gamma":
            return x * self.gamma
        check(mode == "none", f"unknown norm {mode}")
        return x

    def logits(self, matrix, layer, neurons, mode):
        """[len(neurons), V] float64 (soft-capped where the model caps its final logits)."""
        x = self.norm(self.matrix(matrix, layer)[np.asarray(neurons)], mode) @ self.wu.T
        return self.softcap * np.tanh(x / self.softcap) if self.softcap else x


def read_dump(path, rows, vocab):
    """The raw float32 logits a --dump-logits option wrote, [rows, vocab] as float64."""
    a = np.fromfile(path, dtype="<f4")
    check(a.size == rows * vocab, f"{path}: {a.size} floats, expected {rows} x {vocab}")
    return a.reshape(rows, vocab).astype(np.float64)


def logit_err(ours, ref):
    """The forward tests' error: max |ours - ref| / max(1, |ref|)."""
    return float(np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))))


def logsumexp(logits):
    m = logits.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]


def ref_topk(logits, k, lowest=False):
    """[R, k] ids by logit descending (ascending when lowest), ties: lower id first."""
    key = logits if lowest else -logits
    rows, v = key.shape
    k = min(k, v)
    # The same ids as np.argsort(key, kind="stable")[:, :k] without sorting whole rows (a full
    # sort of a 262k-token row is most of a family test's time): the k-th smallest of the
    # minima of blocks of 256 ids bounds the k-th smallest key (k blocks have an id at or below
    # it), so every id of the answer, ties at the k-th key included, is among the ids <= that bound.
    nb = v // 256
    mins = key[:, :nb * 256].reshape(rows, nb, 256).min(axis=2)
    if v > nb * 256:
        mins = np.concatenate([mins, key[:, nb * 256:].min(axis=1, keepdims=True)], axis=1)
    bound = np.partition(mins, k - 1, axis=1)[:, k - 1] if mins.shape[1] >= k else key.max(axis=1)
    out = np.empty((rows, k), dtype=np.int64)
    for r in range(rows):
        cand = np.flatnonzero(key[r] <= bound[r])
        out[r] = cand[np.lexsort((cand, key[r, cand]))[:k]]  # by key, equal keys lower id first
    return out


# ---- the token index, independently ------------------------------------------------------------
def reference_probs(ref, matrix, layer_ids, mode="rms"):
    """Softmax probabilities of every neuron of the given layers, float64: [len(layers) * N, V]
    (row l * N + n is layer layer_ids[l], neuron n)."""
    out = []
    for layer in layer_ids:
        n = ref.matrix(matrix, layer).shape[0]
        lg = ref.logits(matrix, layer, np.arange(n), mode)
        out.append(np.exp(lg - logsumexp(lg)[:, None]))
    return np.concatenate(out)


def reference_token_index(probs, layer_ids, n, m, cols=16384):
    """From reference_probs: for every token the m (layer, neuron) with the highest probability,
    ties to the lower (layer, neuron) (= the lower row). Returns layer, neuron [V, m] int32 and
    probs [V, m] float64."""
    rows, v = probs.shape
    m_ = min(m, rows)
    lay = np.full((v, m), -1, np.int32)
    neu = np.full((v, m), -1, np.int32)
    pr = np.zeros((v, m))
    lid = np.asarray(layer_ids, np.int32)
    for c in range(0, v, cols):
        block = probs[:, c:c + cols]
        order = np.argsort(-block, axis=0, kind="stable")[:m_]      # [m_, cols]
        lay[c:c + cols, :m_] = lid[order // n].T
        neu[c:c + cols, :m_] = (order % n).T
        pr[c:c + cols, :m_] = np.take_along_axis(block, order, axis=0).T
    return lay, neu, pr


def decode_with_index(model, out, m, *args, np_=2, matrices=("up",), layer_ids=None):
    """Decodes with `--token-index m`. While the binary does not implement the index yet, decodes
    without it and writes /<matrix>/token_index from reference_token_index (float64) with h5py, so
    that the analysis tools can be tested; returns (path, "binary" or "injected")."""
    cmd = ["decode", "--model", model, "--out", out, "--quiet", "--token-index", str(m), *args]
    p = run(cmd, np_=np_, check=False, timeout=300)
    if p.returncode == 0:
        return out, "binary"
    if "not implemented" not in p.stderr:
        fail(f"exit {p.returncode}: decode --token-index {m}\n--- stderr ---\n{p.stderr}")
    decode(model, out, *args, np_=np_)
    import h5py
    ref = Reference(model)
    with h5py.File(out, "r+") as f:
        for mat in matrices:
            ids = list(np.asarray(f[mat].attrs["layers"]).reshape(-1)) if layer_ids is None else layer_ids
            n = f[mat]["top_ids"].shape[1]
            lay, neu, pr = reference_token_index(reference_probs(ref, mat, ids), ids, n, m)
            g = f[mat].create_group("token_index")
            g.create_dataset("layer", data=lay)
            g.create_dataset("neuron", data=neu)
            g.create_dataset("probs", data=pr.astype(np.float32))
        f.attrs["token_index_m"] = np.int64(m)
    return out, "injected"


def analysis(script, *args, timeout=120):
    """Runs analysis/SCRIPT ARGS with /usr/bin/python3; returns the CompletedProcess."""
    path = os.path.join(SOURCE_DIR, "analysis", script)
    return subprocess.run(["/usr/bin/python3", path, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def analysis_json(script, *args):
    p = analysis(script, *args, "--json")
    check(p.returncode == 0, f"analysis/{script} {shlex.join(map(str, args))} --json: exit {p.returncode}\n"
                             f"{p.stderr}")
    return json.loads(p.stdout)


def one_line_error(p, *words):
    """A refusal: exit 1, nothing on stdout, one line on stderr holding each of words."""
    lines = p.stderr.strip().splitlines()
    return (p.returncode == 1 and len(lines) == 1 and not p.stdout.strip()
            and all(w in lines[0] for w in words))
