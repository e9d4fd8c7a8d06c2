"""`flashinterp tokenize` against the JS reference tokenizer (@lenml/tokenizers, installed by
launch/setup-deps.sh under .cache/js) for each dense family's real tokenizer (Llama 3.1, Llama 2
(the package's SentencePiece file), Qwen 3, Gemma 3, DeepSeek V3; .cache/tokenizers/<name>):
>= 1,000 seeded, varied strings each (scripts, emoji with ZWJ, NFD input, CRLF, digit runs, the
family's special-token text) must give identical ids, and --chat must give the ids of the prompt
its chat_template renders (hand-written from the template text below, encoded by JS; also JS's
own apply_chat_template where its Jinja can run the template).
Run by ctest as /usr/bin/python3 tests/python/test_tokenizer_js.py with FLASHINTERP, FI_SOURCE_DIR and
FI_TOKENIZER_DIR (the Llama 3.1 one). Skips (exit 0, "SKIPPED") only when node or the JS packages
are missing.

Documented differences, asserted separately rather than compared:
- The pre-tokenizer regexes (Llama 3, Qwen, DeepSeek) run in PCRE2 with Unicode classes here, in
  ECMAScript in JS, whose \\s differs: for U+0085 (NEL, Unicode White_Space) and U+FEFF (not
  White_Space) PCRE2 follows Unicode as HF's Rust tokenizers (Oniguruma) do and JS does not; U+180E
  is whitespace to PCRE2 only. Those characters are kept out of the compared strings; PROBES pins
  our behaviour on them for Llama 3.1.
- Jinja's trim (Gemma's and Llama 3's templates trim the message) is Python's str.strip() in HF
  transformers and JS's String.trim in @lenml/tokenizers: they differ on U+001C..U+001F, U+0085
  (Python only) and U+FEFF (JS only). The chat messages avoid them at their ends.
- JS's Jinja cannot run Gemma 3's template ("Unknown test: string") nor Qwen 3's (a parser error),
  so their --chat is checked against the hand-written rendering only.
Invalid UTF-8 becomes U+FFFD first on both sides (TextDecoder here).
"""
import os
import json
import random
import shutil
import subprocess
import sys
import time
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fi_testlib as fi  # noqa: E402

JS_HELPER = os.path.join(fi.SOURCE_DIR, "tests", "js", "encode_records.js")
DIFFERENT_SPACES = "\u0085\ufeff\u180e"  # see the docstring
TRIM_DIFFERENT = "\x1c\x1d\x1e\x1f\x85\ufeff"  # Python's strip and JS's trim disagree (docstring)

WORDS = {
    "latin": "naïve café résumé über straße señor façade Ærøskøbing Łódź český žluťoučký kůň "
             "garçon déjà-vu ÉCOLE Ñandú".split(),
    "english": "the quick brown fox jumps over lazy dog hello world tokenizer neuron clamp "
               "Model LLaMA Transformer HTTP JSONDecoder".split(),
    "cyrillic": "Привет мир съешь же ещё этих мягких французских булок ДА нет".split(),
    "greek": "Καλημέρα κόσμε ξεσκεπάζω την ψυχοφθόρα βδελυγμία ΑΘΗΝΑ".split(),
    "arabic": "مرحبا بالعالم اللغة العربية جميلة كتاب".split(),
    "hebrew": "שלום עולם עברית ספר תודה".split(),
    "cjk": "你好世界 中文分词 東京都 日本語のテキスト カタカナ ひらがな 漢字".split(),
    "hindi": "नमस्ते दुनिया हिन्दी भाषा किताब".split(),
    "thai": "สวัสดีชาวโลก ภาษาไทย หนังสือ".split(),
    "korean": "안녕하세요 세계 한국어 텍스트 책".split(),
    # Words whose token BPE alone would not reach: they exercise ignore_merges.
    "vietnamese": "Tôi làm việc ở Việt Nam nhiều điều hợp ngoài nhiên biệt".split(),
    "turkish": "geliyor yapılmaktadır insanlardan oldu geldi ıldı".split(),
    "persian": "ایران زبان فارسی کتاب".split(),
}
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵🇺🇸", "❤️", "1️⃣", "🧑🏿‍💻", "🐶", "✨✨✨", "🙂\u200d"]
CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "const x = {a: 1, 'b': [2, 3]};\n\tconsole.log(x?.a ?? 0);",
    "<div class=\"row\"><a href='/x?y=1&z=2'>link</a></div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "if [ -f \"$HOME/.bashrc\" ]; then . ~/.bashrc; fi",
    "{\"key\": \"value\", \"n\": 12345.678e-9, \"ok\": true}",
    "fn main() -> Result<(), Box<dyn Error>> {\r\n    Ok(())\r\n}",
]
LLAMA3_SPECIALS = ["<|eot_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|reserved_special_token_7|>", "<|eot_id|", "<|EOT_ID|>",
            "<|eot_id|>>", "<<|eot_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]
PUNCT = "!@#$%^&*()_+-=[]{};':\",./<>?`~\\|…—–«»“”‘’¡¿·•°±§¶"
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n ", "\u00a0", "\u3000", "\u2009", "\r", "\t\t ", "\x0b", "\x0c"]
RANGES = [(0x20, 0x7E), (0xA1, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
          (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
          (0x2000, 0x206F), (0x1F300, 0x1F64F), (0x300, 0x36F), (0xFF01, 0xFF5E), (0x660, 0x669)]


def contraction(r):
    base = r.choice(["I", "you", "he", "she", "it", "we", "they", "don", "can", "Bob", "ROBERT"])
    suf = r.choice(["s", "t", "re", "ve", "m", "ll", "d"])
    suf = "".join(c.upper() if r.random() < 0.5 else c for c in suf)
    return base + r.choice(["'", "'", "’"]) + suf


def number(r):
    k = r.random()
    if k < 0.4:
        return str(r.randrange(10 ** r.randint(1, 25)))
    if k < 0.6:
        return f"{r.uniform(-1e6, 1e6):,.{r.randint(0, 6)}f}"
    if k < 0.8:
        return r.choice(["٠١٢٣٤٥٦٧٨٩", "०१२३", "１２３４５", "Ⅻ", "½", "²³"]) + str(r.randint(0, 999))
    return f"{r.randint(1900, 2100)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def url(r):
    host = r.choice(["example.com", "hf.co", "www.wikipedia.org", "localhost:8080", "日本.jp"])
    path = "/".join(r.choice(WORDS["english"]) for _ in range(r.randint(0, 3)))
    return f"{r.choice(['http', 'https', 'ftp'])}://{host}/{path}?q={r.randint(0, 99999)}&lang=en#top"


def random_chars(r):
    s = []
    for _ in range(r.randint(1, 12)):
        lo, hi = r.choice(RANGES)
        c = chr(r.randint(lo, hi))
        if c not in DIFFERENT_SPACES:
            s.append(c)
    return "".join(s)


def segment(r, specials):
    k = r.randrange(10)
    if k == 0:
        return contraction(r)
    if k == 1:
        return number(r)
    if k == 2:
        return r.choice(EMOJI)
    if k == 3:
        return r.choice(CODE)
    if k == 4:
        return url(r)
    if k == 5:
        return "".join(r.choice(PUNCT) for _ in range(r.randint(1, 8)))
    if k == 6:
        return r.choice(specials)
    if k == 7:
        return random_chars(r)
    lang = r.choice(list(WORDS))
    words = [r.choice(WORDS[lang]) for _ in range(r.randint(1, 6))]
    if r.random() < 0.3:
        words = [w.upper() if r.random() < 0.5 else w.capitalize() for w in words]
    return " ".join(words)


# Text that decomposes (NFD): Qwen's NFC normalizer recomposes it, the others keep it as it is.
NFD_WORDS = ["café", "naïve", "Ångström", "việc", "Điều", "한국어", "ñandú", "résumé", "Ǆemal", "ﬁ ﬂ ㎏ ①"]
SP_TEXT = ["\u2581", "\u2581\u2581x", "<0x0A>", "<0xFF>", "<unk>", "▁the", "a▁b"]  # SentencePiece spellings typed in


def family_specials(tok_json, r):
    """A sample of the tokenizer's added tokens, and near misses of them."""
    with open(tok_json, encoding="utf-8") as fh:
        added = [a["content"] for a in json.load(fh).get("added_tokens", [])]
    picked = added[:12] + r.sample(added, min(20, len(added)))
    near = [t[:-1] for t in picked[:6]] + [t.upper() for t in picked[:6]] + [t + t[-1:] for t in picked[:4]]
    return picked + near


def make_strings(n, specials, seed=1234):
    r = random.Random(seed)
    out = ["", " ", "\n", "Hello, my dog is cute", "What is your favourite animal?",
           "    indented", "trailing   ", "a\r\nb\r\n\r\nc", "\t\t\tx", "''''", "'s", "'S'T'LL'Re",
           "1234567890123", "3.14159265358979", "<|eot_id|>", "a<|eot_id|>b", " " * 40 + "x", "!!!???...",
           "👨‍👩‍👧‍👦👨‍👩‍👧‍👦", "x" * 300, "日本語" * 50, "a\r\n\r\n\r\nb", "12345678901234567890",
           " 1 22 333 4444 ", "x\u0301\u0301"] + specials[:8] + SP_TEXT
    out += [unicodedata.normalize("NFD", w) for w in NFD_WORDS] + [" ".join(NFD_WORDS)]
    while len(out) < n:
        parts = [segment(r, specials) for _ in range(r.randint(1, 6))]
        if r.random() < 0.15:
            parts.append(r.choice(SP_TEXT))
        glue = [r.choice(SPACES) if r.random() < 0.8 else "" for _ in parts]
        s = "".join(p + g for p, g in zip(parts, glue))
        if r.random() < 0.2:
            s = r.choice(SPACES) + s
        if r.random() < 0.25:
            s = unicodedata.normalize("NFD", s)
        out.append(s.replace("\0", ""))
    return out


INVALID = [b"abc\xff", b"\xff", b"\xc3(", b"caf\xc3", b"\xe2\x82", b"\xe2\x82 euro", b"\xf0\x9f\x98",
           b"\xf0\x9f\x98 smile", b"\xed\xa0\x80 surrogate", b"\xc0\xaf overlong", b"\xf4\x90\x80\x80 big",
           b"\x80\x80\x80", b"ok \xfe\xfe ok", b"\xe6\x97\xa5\xe6\x9c", b"a\xc3\xa9\xc3b", b"<|eot_id|>\xff<|eot_id|>",
           b"\xf8\x88\x80\x80\x80", b"\xef\xbb\xbf BOM then \xa0"]


# Documented differences: PCRE2's Unicode \\s against ECMAScript's \\s (see the docstring).
PROBES = {"a \u0085b": "64 220 116360 65",  # NEL is whitespace: " " and NEL apart (JS: together)
          "a \ufeffb": "64 76880 65",  # U+FEFF is not: " \ufeff" together (JS: apart)
          "a \u180eb": "64 220 157 254 236 65"}  # U+180E is whitespace to PCRE2 (JS: not)


def write_records(path, records, sep):
    with open(path, "wb") as fh:
        fh.write(b"".join(r + sep for r in records))
    return path


def compare(name, records, ours, ref):
    if len(ours) != len(records) or len(ref) != len(records):
        fi.fail(f"{name}: {len(records)} records but {len(ours)} lines from flashinterp, {len(ref)} from JS")
    bad = [i for i in range(len(records)) if ours[i] != ref[i]]
    for i in bad[:10]:
        print(f"MISMATCH {name}[{i}] {records[i].decode('utf-8', 'backslashreplace')!r}\n  flashinterp: {ours[i]}\n  js:          {ref[i]}")
    print(f"  {name}: {len(records) - len(bad)}/{len(records)} records match the JS reference")
    return len(bad)


BOS_DS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"


def rendered_chat(name, message):
    """The prompt each template renders for one user message with add_generation_prompt, written
    by hand from the template text in that package's tokenizer_config.json (None: no template)."""
    if name == "llama3_1":  # '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>'
        return ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + message.strip() +
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    if name == "qwen3":  # '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n'; then '<|im_start|>assistant\n'
        return "<|im_start|>user\n" + message + "<|im_end|>\n<|im_start|>assistant\n"
    if name == "gemma3":  # bos; '<start_of_turn>' + role + '\n'; content | trim; '<end_of_turn>\n'; '<start_of_turn>model\n'
        return "<bos><start_of_turn>user\n" + message.strip() + "<end_of_turn>\n<start_of_turn>model\n"
    if name == "deepseek_v3":  # bos_token; '<｜User｜>' + content; '<｜Assistant｜>'
        return BOS_DS + "<\uff5cUser\uff5c>" + message + "<\uff5cAssistant\uff5c>"
    return None  # llama2: the package's tokenizer_config.json has no chat_template


FAMILIES = ["llama3_1", "llama2", "qwen3", "gemma3", "deepseek_v3"]


def tokenizer_dir(name, modules):
    """.cache/tokenizers/<name> (FI_TOKENIZER_DIR for Llama 3.1), else the package's models/."""
    dirs = [os.path.join(fi.SOURCE_DIR, ".cache", "tokenizers", name),
            os.path.join(modules, "@lenml", f"tokenizer-{name}", "models")]
    if name == "llama3_1" and os.environ.get("FI_TOKENIZER_DIR"):
        dirs.insert(0, os.environ["FI_TOKENIZER_DIR"])
    for d in dirs:
        if all(os.path.isfile(os.path.join(d, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
            return d
    return None


def run_all(procs, timeout=300):
    procs = {k: (cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
             for k, cmd in procs.items()}
    out = {}
    for k, (cmd, p) in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            fi.fail(f"timed out: {' '.join(cmd)}")
        out[k] = (p.returncode, stdout.decode().splitlines(), stderr.decode(errors="replace"))
    return out


def check_family(name, tok_dir, node, modules, tmp):
    t0 = time.time()
    tok_json = os.path.join(tok_dir, "tokenizer.json")
    model_dir = os.path.join(tmp, name)  # tokenize reads only these two files
    os.mkdir(model_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), model_dir)
    strings = make_strings(1200, family_specials(tok_json, random.Random(name)))
    # NUL-separated records (newlines inside strings allowed), valid and invalid UTF-8.
    records = [s.encode("utf-8") for s in strings] + INVALID
    probes = PROBES if name == "llama3_1" else {}
    f_rec = write_records(os.path.join(tmp, f"{name}.rec"), records, b"\0")
    f_ours = write_records(os.path.join(tmp, f"{name}.ours"), records + [p.encode() for p in probes], b"\0")
    # The documented line mode: one output line per input line, newline excluded.
    lines = [r for r in records if b"\n" not in r][:400]
    f_lines = write_records(os.path.join(tmp, f"{name}.lines"), lines, b"\n")
    chat = [c.encode() for c in strings[:80] if c[:1] not in TRIM_DIFFERENT and c[-1:] not in TRIM_DIFFERENT][:60]
    f_chat = write_records(os.path.join(tmp, f"{name}.chat"), chat, b"\0")
    render = [rendered_chat(name, c.decode()) for c in chat]
    f_rendered = write_records(os.path.join(tmp, f"{name}.rendered"),
                               [r.encode() for r in render] if render[0] is not None else [], b"\0")

    tok = [fi.binary(), "tokenize", "--model", model_dir, "--file"]
    out = run_all({"js": [node, JS_HELPER, modules, tok_json, f_rec, "nul", f_lines, "nl", f_rendered, "nul",
                          f_chat, "chat"],
                   "rec": tok + [f_ours, "-z"], "lines": tok + [f_lines], "chat": tok + [f_chat, "-z", "--chat"]})
    for k in ("js", "rec", "lines"):
        rc, _, err = out[k]
        fi.check(rc == 0, f"{name}: {k} exited {rc}\n{err[-3000:]}")

    def js_out(f):
        with open(f + ".js.txt") as fh:
            return fh.read().splitlines()
    ours_rec = out["rec"][1]
    fi.check(len(ours_rec) == len(records) + len(probes),
             f"{name}: {len(ours_rec)} lines from flashinterp for {len(records) + len(probes)} records")
    bad = compare(f"{name} strings (-z)", records, ours_rec[:len(records)], js_out(f_rec))
    bad += compare(f"{name} lines", lines, out["lines"][1], js_out(f_lines))
    rc, ours_chat, err = out["chat"]
    if render[0] is None:  # no template: one clear error
        fi.check(rc != 0 and "no chat_template" in err, f"{name}: --chat without a template: rc {rc}, {err!r}")
        print(f"  {name} chat: refused as expected ({err.strip()})")
    else:
        fi.check(rc == 0, f"{name}: --chat exited {rc}\n{err[-3000:]}")
        bad += compare(f"{name} chat (template by hand)", chat, ours_chat, js_out(f_rendered))
        js_chat = js_out(f_chat)
        if all(line.startswith("ERROR") for line in js_chat):
            print(f"  {name} chat: JS cannot render the template ({js_chat[0]}); see the docstring")
        else:
            bad += compare(f"{name} chat (JS apply_chat_template)", chat, ours_chat, js_chat)
    for (text, expect), got in zip(probes.items(), ours_rec[len(records):]):
        if got != expect:
            print(f"MISMATCH documented behaviour {text!r}: got {got}, expected {expect}")
            bad += 1
    print(f"  {name}: {len(records)} strings, {len(lines)} lines, {len(chat)} chats in {time.time() - t0:.1f} s")
    return bad


def main():
    node = shutil.which("node") or ("/usr/bin/node" if os.access("/usr/bin/node", os.X_OK) else None)
    modules = os.environ.get("FI_JS_MODULES") or os.path.join(fi.SOURCE_DIR, ".cache", "js", "node_modules")
    if not node or not os.path.isdir(os.path.join(modules, "@lenml", "tokenizers")):
        print(f"SKIPPED (node or the JS package @lenml/tokenizers in {modules} is missing; run launch/setup-deps.sh)")
        sys.exit(0)
    only = [f for f in os.environ.get("FI_TOKENIZERS", "").split(",") if f] or FAMILIES
    bad, done = 0, 0
    with fi.tempdir() as tmp:
        for name in only:
            tok_dir = tokenizer_dir(name, modules)
            if tok_dir is None:
                print(f"  SKIPPED {name} (no .cache/tokenizers/{name} and no package @lenml/tokenizer-{name})")
                continue
            bad += check_family(name, tok_dir, node, modules, tmp)
            done += 1
    if done == 0:
        print("SKIPPED (none of the tokenizers is installed; run launch/setup-deps.sh)")
        sys.exit(0)
    fi.check(bad == 0, f"{bad} records differ from the JS reference or the documented behaviour")


if __name__ == "__main__":
    fi.main(main)
