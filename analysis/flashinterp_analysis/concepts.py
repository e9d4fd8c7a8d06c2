"""Words -> token ids, for analysis/search, export and serve: the variants a word may have as one
token (leading space, case, English plural and inflections, Unicode forms), a split of a word that
is no single token, a regular expression over token text, and concept sets (a JSON file
{"animals": ["dog", ...]} or the resolved /concepts/<name> a newer decode stores in the map).

Everything here is plain Python over the map's vocabulary (/vocab/text, /vocab/bytes), read once
per map by a Lexicon; the neuron side is flashinterp_map (token index, top-k lists).
"""
import json
import re
import unicodedata

import numpy as np

import flashinterp_map as fm

VARIANT_KINDS = ("case", "plural", "inflect", "script")
VARIANTS_HELP = (
    "comma-separated extra spellings: case (lower, UPPER, Capitalised), plural (English: +s, +es, "
    "y -> ies, and the singular of a word ending in s), inflect (English: +ed, +ing, +er, with a final "
    "e dropped, y -> i, and a short consonant-vowel-consonant ending doubled: dogging), script (Unicode "
    "NFC, NFD and NFKC forms and the form with accents removed, e.g. Zurich for Zürich; no "
    "transliteration between scripts), or all. Every form is tried as typed, with a leading space and "
    "without")


def normalise(text):
    """The concept-set rule: leading white space stripped, Unicode lower case (str.lower)."""
    return text.lstrip().lower()


def parse_kinds(spec):
    """'case,plural' / 'all' / '' -> a tuple of VARIANT_KINDS; ValueError for an unknown kind."""
    kinds = [k.strip() for k in (spec or "").split(",") if k.strip()]
    if "all" in kinds:
        return VARIANT_KINDS
    bad = [k for k in kinds if k not in VARIANT_KINDS]
    if bad:
        raise ValueError(f"unknown --variants kind {bad[0]!r} (known: {', '.join(VARIANT_KINDS)}, all)")
    return tuple(k for k in VARIANT_KINDS if k in kinds)


def _plural(w):
    if len(w) < 2 or not w[-1].isalpha():
        return []
    if w.endswith("s"):
        return [w[:-1]] if len(w) > 2 else []   # the singular of dogs
    low = w.lower()
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return [w[:-1] + ("IES" if w.isupper() else "ies")]
    if low.endswith(("ch", "sh", "x", "z")):
        return [w + ("ES" if w.isupper() else "es")]
    return [w + ("S" if w.isupper() else "s")]


def _inflect(w):
    if len(w) < 2 or not w[-1].isalpha():
        return []
    up = w.isupper()
    sfx = lambda s: s.upper() if up else s   # noqa: E731
    low = w.lower()
    if low.endswith("e"):
        stem = w[:-1]
        return [w + sfx("d"), stem + sfx("ing"), w + sfx("r")]
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return [w[:-1] + sfx("ied"), w + sfx("ing"), w[:-1] + sfx("ier")]
    vowels = "aeiou"
    if len(low) >= 3 and low[-1] not in vowels + "wxy" and low[-2] in vowels and low[-3] not in vowels:
        w = w + w[-1]            # a short consonant-vowel-consonant word doubles: dog -> dogging
    return [w + sfx("ed"), w + sfx("ing"), w + sfx("er")]


def _script(w):
    forms = [unicodedata.normalize(f, w) for f in ("NFC", "NFD", "NFKC")]
    bare = "".join(c for c in unicodedata.normalize("NFD", w) if not unicodedata.combining(c))
    return forms + [unicodedata.normalize("NFC", bare)]


def variants(word, kinds=()):
    """[(text, how)]: the word as typed, then every form with and without a leading space; how is
    'as typed', 'space' or the kind that made the form. Order kept, no repeats. ValueError for an
    empty or white-space-only word (it would only find the space tokens)."""
    fm.word_variants(word)          # the same refusal as the one-token search
    core = word[1:] if word.startswith(" ") and len(word) > 1 else word
    forms = [(core, "space")]
    if "case" in kinds:
        forms += [(f, "case") for f in (core.lower(), core.upper(), core[:1].upper() + core[1:].lower())]
    base = [f for f, _ in forms]
    if "plural" in kinds:
        forms += [(p, "plural") for f in base for p in _plural(f)]
    if "inflect" in kinds:
        forms += [(p, "inflect") for f in base for p in _inflect(f)]
    if "script" in kinds:
        forms += [(p, "script") for f, _ in list(forms) for p in _script(f)]
    out = {word: "as typed"}
    for f, how in forms:
        for v in (" " + f, f):
            out.setdefault(v, how)
    return list(out.items())


class Lexicon:
    """The vocabulary of one open map, for lookups by exact bytes, by normalised text and by
    regular expression. Reads /vocab once (about 0.3 s for V = 128256)."""

    MAX_TOKEN_BYTES = 128

    def __init__(self, m):
        self.m = m
        self.text = m.vocab_text()                       # [V] str
        self.special = m.special()                       # [V] bool
        # Exact bytes -> id. A text without U+FFFD / U+2400 is the token's bytes (MAP_FORMAT), so the
        # fast contiguous /vocab/text read serves; the few tokens holding part of a character are
        # added from /vocab/bytes only when a split needs them (_full).
        self.by_bytes = {}
        for i, t in enumerate(m._vocab_text_raw()):
            if not self.special[i] and t and b"\xef\xbf\xbd" not in t and b"\xe2\x90\x80" not in t:
                self.by_bytes.setdefault(bytes(t), i)     # the lowest id of equal bytes
        self._full = False
        self._norm = None

    def _all_bytes(self):
        if not self._full:
            for i, b in enumerate(self.m.h5["vocab/bytes"][...]):
                if not self.special[i] and len(b):
                    self.by_bytes.setdefault(bytes(b), i)
            self._full = True

    def single(self, text):
        """[ids] whose exact bytes are text's UTF-8 (flashinterp_map.find_tokens' rule)."""
        return self.m.find_tokens([text])[text]

    def split(self, text):
        """A split of text into token ids: greedy longest match of its UTF-8 bytes over the
        vocabulary (not special tokens). Not the tokenizer's BPE merges, which the map does not
        hold; for a word of letters the two usually agree. None when some byte has no token."""
        out = self._split(text.encode("utf-8"))
        if out is None and not self._full:
            self._all_bytes()
            out = self._split(text.encode("utf-8"))
        return out

    def _split(self, b):
        out, i = [], 0
        while i < len(b):
            for j in range(min(len(b), i + self.MAX_TOKEN_BYTES), i, -1):
                tid = self.by_bytes.get(b[i:j])
                if tid is not None:
                    out.append(tid)
                    i = j
                    break
            else:
                return None
        return out

    def normalised(self):
        """{normalise(text): [ids]} over the non-special tokens, built once."""
        if self._norm is None:
            self._norm = {}
            for i, t in enumerate(self.text):
                if not self.special[i]:
                    self._norm.setdefault(normalise(t), []).append(i)
        return self._norm

    def concept_ids(self, words):
        """The concept-set rule: every non-special token whose text, normalised, equals a listed
        word, normalised. Sorted int64 ids."""
        norm = self.normalised()
        ids = {i for w in words for i in norm.get(normalise(w), [])}
        return np.array(sorted(ids), np.int64)

    def regex_ids(self, pattern, limit=None):
        """Non-special token ids whose text matches the (Python, Unicode) regular expression
        anywhere (re.search). ValueError naming the pattern when it does not compile."""
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"--regex {pattern!r} is not a regular expression ({e})") from None
        ids = [i for i, t in enumerate(self.text) if not self.special[i] and rx.search(t)]
        return np.array(ids[:limit] if limit else ids, np.int64)


def load_concepts(path):
    """A concepts file: JSON {name: [word, ...]}. ValueError naming the file for anything else."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the concepts file ({fm._first_line(e)})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, list) and all(isinstance(w, str) for w in v)
                                            for v in obj.values()):
        raise ValueError(f"{path}: a concepts file is a JSON object of name -> list of words")
    return obj


def concept_set(m, lex, name, concepts_file=None):
    """(ids, source) of concept set `name`: the map's /concepts/<name> when it has it, else the
    concepts file through Lexicon.concept_ids. ValueError when neither holds the name."""
    stored = m.concepts()
    if name in stored:
        return stored[name], f"/concepts/{name} in the map"
    if concepts_file:
        sets = load_concepts(concepts_file)
        if name in sets:
            return lex.concept_ids(sets[name]), f"{concepts_file} (resolved against the map's vocabulary)"
        known = sorted(set(sets) | set(stored))
    else:
        known = sorted(stored)
    raise ValueError(f"no concept set {name!r} (known: {', '.join(known) or 'none'}"
                     + ("" if concepts_file else "; give --concepts FILE") + ")")


def multi_token_hits(m, groups, splits, top=20):
    """For each split (a list of >= 2 token ids of one multi-token word): the neurons of the given
    groups (names such as ["up", "moe/up", "shared/up"]; one name is one group) whose stored list
    holds every one of its tokens, scored by the sum of the tokens' log-probabilities (logit -
    logsumexp) over that list. Returns [{"top": hits, "bottom": hits or None}] in the order of
    splits ("bottom" only when the map has bottom lists, --bottom-k).
    hits: [(sum_logp, layer, group, expert, neuron)], expert -1 outside moe/*; top: highest sum
    first, bottom: lowest first (the neurons that most suppress the word). Ties go to the lower
    layer id, then group code (dense, moe/, shared/, as in the token index), then expert, then
    neuron: the same order for any map layout. Reads one (layer, expert) slice of a group at a
    time (two reads per list) and keeps at most a few times `top` candidates per split."""
    groups = [groups] if isinstance(groups, str) else list(groups)
    splits = [[int(i) for i in s] for s in splits]
    every = np.unique(np.concatenate([np.asarray(s, np.int64) for s in splits])) if splits else np.zeros(0, np.int64)
    has_bottom = {g: "bottom_ids" in m.group(g) for g in groups}
    lists = ("top", "bottom") if any(has_bottom.values()) else ("top",)
    cand = [{w: [] for w in lists} for _ in splits]
    order = {"top": lambda h: (-h[0], h[1], h[2], h[3], h[4]), "bottom": lambda h: (h[0], h[1], h[2], h[3], h[4])}

    def keep_best(hits, which):
        hits.sort(key=order[which])
        del hits[top:]
    for g in groups:
        code = fm.GROUP_PREFIXES.index(g[:len(g) - len(fm.base_matrix(g))])
        written = m.written_mask(g)                      # [L, N] or [L, E, N]
        for pos, layer, expert in m.units(g):
            w = written[pos]
            if not w.any():
                continue
            e = -1 if expert is None else int(expert)
            for which in lists:
                if which == "bottom" and not has_bottom[g]:
                    continue
                b = m._block(g, pos, slice(None), (f"{which}_ids", f"{which}_logits"))
                tid = b[f"{which}_ids"]
                rows = np.nonzero(np.isin(tid, every).any(axis=1) & w)[0]   # any token of any split
                tid, lg = tid[rows], b[f"{which}_logits"][rows].astype(np.float64)
                lse = b["lse"][rows].astype(np.float64)
                for si, ids in enumerate(splits):
                    have = np.ones(rows.size, bool)
                    score = np.zeros(rows.size)
                    for t in ids:
                        hit = tid == t
                        have &= hit.any(axis=1)
                        score += np.where(hit, lg, -np.inf).max(axis=1, initial=-np.inf) - lse
                    hits = cand[si][which]
                    hits += [(float(score[r]), int(layer), code, e, int(rows[r])) for r in np.nonzero(have)[0]]
                    if len(hits) > 4 * top:
                        keep_best(hits, which)
    out = []
    for c in cand:
        res = {"bottom": None}
        for which, hits in c.items():
            keep_best(hits, which)
            res[which] = hits
        out.append(res)
    return out
