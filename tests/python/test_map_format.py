"""The map format has one list of names: what `flashinterp map-format --json` says the writer
writes must be what a real decode writes (walked with h5py, every group, dataset and attribute,
with its dtype and rank), what analysis/flashinterp_map.py knows, and what docs/MAP_FORMAT.md
documents. Any name added on one side only fails here. Version 2 items (a mixture-of-experts
map: /moe/{matrix}, /shared/{matrix}, /token_index/{matrix}) are checked against a real decode of
the tiny Qwen2-MoE (dense, routed and shared groups); version 1 items against a dense map. The
Python reader's names are checked for both versions, and its v2 names also against a v2 map that
tests/python/make_synthetic_map.py --moe writes (the maps the analysis tests use)."""
import json
import os
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np

from fi_testlib import SOURCE_DIR, check, demo_model, fail, run
import family_models
import flashinterp_map as fm


def schema():
    s = json.loads(run(["map-format", "--json"]).stdout)
    # The binary writes versions 1 and 2 and names the newest; the reader reads both.
    check(s["format"] == fm.FORMAT and s["format_version"] == max(fm.FORMAT_VERSIONS),
          f"format {s['format']} v{s['format_version']} vs the reader's {fm.FORMAT} v{fm.FORMAT_VERSION}")
    return {it["path"]: it for it in s["items"]}


def dtype_word(obj):
    """The schema's dtype word for an h5py dataset or attribute value."""
    dt = obj.dtype
    if h5py.check_string_dtype(dt) is not None:
        return "string" if dt.kind == "S" or not h5py.check_vlen_dtype(dt) else "utf-8 string (variable length)"
    if h5py.check_vlen_dtype(dt) is not None:
        return "uint8 sequence (variable length)"
    return {"i1": "int8", "i4": "int32", "i8": "int64", "f4": "float32", "f8": "float64", "u1": "uint8"}[dt.str[1:]]


def walk(path):
    """{schema path: (kind, dtype, rank)} of everything in a real map; matrix groups as {matrix}."""
    found = {}
    with h5py.File(path, "r") as f:
        def template(name):
            parts = name.strip("/").split("/")
            if parts[0] in fm.MATRICES:
                parts[0] = "{matrix}"
            elif parts[0] in ("moe", "shared", "token_index") and len(parts) > 1 and parts[1] in fm.MATRICES:
                parts[1] = "{matrix}"       # version 2: /moe/{matrix}, /shared/{matrix}, /token_index/{matrix}
            return "/" + "/".join(parts)

        def attrs(obj, prefix):
            for k, v in obj.attrs.items():
                a = obj.attrs.get_id(k)
                word = ("string" if a.dtype.kind == "S" else
                        {"i8": "int64", "f8": "float64"}.get(a.dtype.str[1:], a.dtype.str))
                found[(prefix.rstrip("/") if prefix != "/" else "") + "/@" + k] = ("attribute", word, a.shape)

        attrs(f, "/")

        def visit(name, obj):
            t = template(name)
            if isinstance(obj, h5py.Dataset):
                found[t] = ("dataset", dtype_word(obj), len(obj.shape))
            else:
                found[t] = ("group", "", None)
            attrs(obj, t + "/")
        f.visititems(visit)
    return found


def v2_names():
    """Every version 2 item as flashinterp_map.py knows it (templates as walk() writes them)."""
    py = {"/@" + a for a in fm.ROOT_ATTRS + fm.V2_ROOT_ATTRS}
    py |= {"/vocab"} | {"/vocab/" + d for d in fm.VOCAB_DATASETS}
    for g, extra in (("/{matrix}", ()), ("/moe/{matrix}", fm.V2_MOE_GROUP_ATTRS), ("/shared/{matrix}", ())):
        py |= {g, g + "/done/@chunk_rows"} | {g + "/@" + a for a in fm.GROUP_ATTRS + extra}
        py |= {g + "/" + d for d in fm.GROUP_DATASETS + fm.V2_GROUP_DATASETS}
    py |= {"/moe", "/shared", "/token_index", "/token_index/{matrix}"}
    py |= {"/token_index/{matrix}/" + d for d in fm.V2_TOKEN_INDEX_DATASETS}
    return py


def check_synthetic_v2(tmp):
    """The test generator's v2 map (what the analysis tests read) holds the reader's v2 names."""
    out = os.path.join(tmp, "v2.h5")
    subprocess.run(["/usr/bin/python3", os.path.join(SOURCE_DIR, "tests", "python", "make_synthetic_map.py"), out,
                    "--moe", "3", "--layers", "3", "--dense-layers", "1", "--neurons", "8", "--shared", "4",
                    "--vocab", "64", "--top-k", "3", "--token-index", "2", "--chunk-rows", "4", "--bottom-k", "2",
                    "--matrices", "up,down"], check=True, capture_output=True, timeout=120)
    found = set(walk(out)) - {"/@planted"}           # planted: the test writer's own note
    py = v2_names()
    check(found == py, f"flashinterp_map.py's v2 names vs make_synthetic_map's v2 map: only Python "
          f"{sorted(py - found)}, only in the map {sorted(found - py)}")


def v1_names():
    """Every version 1 item as flashinterp_map.py knows it."""
    py = {"/@" + a for a in fm.ROOT_ATTRS}
    py |= {"/vocab"} | {"/vocab/" + d for d in fm.VOCAB_DATASETS}
    py |= {"/{matrix}"} | {"/{matrix}/@" + a for a in fm.GROUP_ATTRS}
    py |= {"/{matrix}/" + d for d in fm.GROUP_DATASETS} | {"/{matrix}/done/@chunk_rows"}
    py |= {"/{matrix}/token_index"} | {"/{matrix}/token_index/" + d for d in fm.TOKEN_INDEX_DATASETS}
    return py


def main():
    items = schema()
    with tempfile.TemporaryDirectory() as tmp:
        model = demo_model(os.path.join(tmp, "m"))
        # Every optional item present: bottom-k and a token index.
        out = os.path.join(tmp, "map.h5")
        run(["decode", "--model", model, "--out", out, "--matrices", "up,gate,down", "--bottom-k", "3",
             "--token-index", "4", "--backend", "cpu", "--quiet"], np_=2)
        found = walk(out)
        # Without the optional items, exactly the "always" ones.
        plain = os.path.join(tmp, "plain.h5")
        run(["decode", "--model", model, "--out", plain, "--token-index", "0", "--backend", "cpu",
             "--quiet"])
        found_plain = walk(plain)
        # Version 2: every optional item of a mixture-of-experts map.
        moe = os.path.join(tmp, "moe.h5")
        run(["decode", "--model", family_models.cached("qwen2_moe"), "--out", moe, "--matrices", "up", "--layers", "0-1",
             "--bottom-k", "3", "--token-index", "4", "--backend", "cpu", "--quiet"], np_=2)
        found_moe = walk(moe)
        check_synthetic_v2(tmp)

    v2 = {p: it for p, it in items.items() if not it["when"].startswith("format_version 1")}
    check(set(found_moe) == set(v2),
          f"the MoE map written and map-format's version 2 items differ: only written {sorted(set(found_moe) - set(v2))}, "
          f"only listed {sorted(set(v2) - set(found_moe))}")
    all_items = items
    items = {p: it for p, it in items.items() if not it["when"].startswith("format_version 2")}

    check(set(found) == set(items),
          f"the map written and map-format differ: only written {sorted(set(found) - set(items))}, "
          f"only listed {sorted(set(items) - set(found))}")
    always = {p for p, it in items.items() if it["when"] == "always"}
    check(set(found_plain) == always,
          f"a map without options: unexpected {sorted(set(found_plain) - always)}, "
          f"missing {sorted(always - set(found_plain))}")
    for p, (kind, dtype, rank) in list(found.items()) + list(found_moe.items()):
        it = all_items[p]
        check(it["kind"] == kind, f"{p}: written as {kind}, listed as {it['kind']}")
        if kind == "group":
            continue
        check(it["dtype"] == dtype, f"{p}: written as {dtype}, listed as {it['dtype']}")
        if kind == "dataset":
            listed_rank = it["shape"].count(",") + 1
            check(rank == listed_rank, f"{p}: rank {rank} written, shape {it['shape']} listed")
        else:
            check((it["shape"] == "scalar") == (rank == ()), f"{p}: attribute shape {rank} vs {it['shape']}")

    # The Python reader knows exactly the same names, for each version.
    py = v1_names()
    check(py == set(items), f"flashinterp_map.py vs map-format (version 1): only Python {sorted(py - set(items))}, "
          f"only C++ {sorted(set(items) - py)}")
    py2 = v2_names()
    check(py2 == set(v2), f"flashinterp_map.py vs map-format (version 2): only Python {sorted(py2 - set(v2))}, "
          f"only C++ {sorted(set(v2) - py2)}")
    check(set(fm.OPTIONAL_DATASETS) == {p.rsplit("/", 1)[1] for p, it in items.items()
                                       if it["when"] == "bottom_k > 0"}, "optional datasets differ")
    items = all_items

    # The document names every item (as `name` in backticks) and the version.
    doc = open(os.path.join(SOURCE_DIR, "docs", "MAP_FORMAT.md"), encoding="utf-8").read()
    names = {p.rsplit("/", 1)[1].lstrip("@") for p in items if p != "/{matrix}"}
    missing = sorted(n for n in names if not re.search(r"`[^`\n]*(?<![\w])" + re.escape(n) + r"(?![\w])[^`\n]*`", doc))
    check(not missing, f"docs/MAP_FORMAT.md does not document {missing}")
    check(re.search(r"format_version\D{0,40}1", doc) is not None, "docs/MAP_FORMAT.md does not give format_version 1")
    rows = {ln.strip() for ln in doc.splitlines()}
    stale = [p for p, it in items.items()
             if f"| `{p}` | {it['kind']} | {it['dtype']} | {it['shape']} | {it['when']} |".replace("|  |", "| |")
             not in {r.replace("|  |", "| |") for r in rows}]
    check(not stale, f"docs/MAP_FORMAT.md's item table differs from map-format for {stale}")
    print(f"test_map_format: {len(items)} items: map-format, a real map (2 ranks), flashinterp_map.py "
          f"and docs/MAP_FORMAT.md agree; version 2: {len(v2)} items, a real MoE map and make_synthetic_map's agree")


if __name__ == "__main__":
    main()
