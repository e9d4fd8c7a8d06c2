// Reference ids from the JS tokenizer (@lenml/tokenizers, the transformers.js port) for the tests:
// node encode_records.js NODE_MODULES TOKENIZER_JSON (FILE nul|nl)...: writes FILE.js.txt, one line of ids per record.
"use strict";
const fs = require("fs");
const path = require("path");
const [modules, tokenizerJson, ...jobs] = process.argv.slice(2);
const { fromPreTrained } = require(path.join(modules, "@lenml", "tokenizer-llama3_1"));
// Use the same tokenizer.json as the binary under test, not only the package's bundled copy.
const tok = fromPreTrained({ tokenizerJSON: JSON.parse(fs.readFileSync(tokenizerJson, "utf8")) });
// Bytes -> string as a browser or Node would: invalid UTF-8 -> U+FFFD, a leading BOM kept.
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
for (let j = 0; j + 1 < jobs.length; j += 2) {
  const data = fs.readFileSync(jobs[j]);
  const sep = jobs[j + 1] === "nl" ? 0x0a : 0x00;
  const out = [];
  for (let start = 0; start < data.length; ) {
    let end = data.indexOf(sep, start);
    if (end < 0) end = data.length;
    const text = decoder.decode(data.subarray(start, end));
    out.push(tok.encode(text, { add_special_tokens: false }).join(" ") + "\n");
    start = end + 1;
  }
  fs.writeFileSync(jobs[j] + ".js.txt", out.join(""));
}
