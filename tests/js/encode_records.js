// Reference ids from the JS tokenizer (@lenml/tokenizers, the transformers.js port) for the tests:
// node encode_records.js NODE_MODULES TOKENIZER_JSON (FILE nul|nl|chat)...: writes FILE.js.txt,
// one line of ids per record. tokenizer_config.json is read from beside TOKENIZER_JSON. Modes: nul
// and nl split FILE at NUL bytes or newlines and encode each record (add_special_tokens: false);
// chat splits at NUL bytes and renders each record as one user message of the config's
// chat_template (add_generation_prompt), or writes "ERROR <message>" when the JS cannot.
"use strict";
const fs = require("fs");
const path = require("path");
const [modules, tokenizerJson, ...jobs] = process.argv.slice(2);
const { TokenizerLoader } = require(path.join(modules, "@lenml", "tokenizers"));
const configPath = path.join(path.dirname(tokenizerJson), "tokenizer_config.json");
// The same files as the binary under test, not only a package's bundled copy.
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(tokenizerJson, "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(configPath, "utf8")),
});
// Bytes -> string as a browser or Node would: invalid UTF-8 -> U+FFFD, a leading BOM kept.
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
for (let j = 0; j + 1 < jobs.length; j += 2) {
  const data = fs.readFileSync(jobs[j]);
  const mode = jobs[j + 1];
  const sep = mode === "nl" ? 0x0a : 0x00;
  const out = [];
  for (let start = 0; start < data.length; ) {
    let end = data.indexOf(sep, start);
    if (end < 0) end = data.length;
    const text = decoder.decode(data.subarray(start, end));
    let ids;
    if (mode === "chat") {
      try {
        ids = tok.apply_chat_template([{ role: "user", content: text }], { add_generation_prompt: true, tokenize: true });
      } catch (e) {
        ids = ["ERROR " + String(e.message).split("\n")[0]];
      }
    } else {
      ids = tok.encode(text, { add_special_tokens: false });
    }
    out.push(Array.from(ids).join(" ") + "\n");
    start = end + 1;
  }
  fs.writeFileSync(jobs[j] + ".js.txt", out.join(""));
}
