// JSON files read whole into nlohmann::json, every fault one fi::Error naming the file:
// "<path>: cannot open", "<path>: cannot open (a directory)", "<path>: invalid JSON: <parser's message>".
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace fi {

// The file's bytes; throws "<path>: cannot open" (missing or unreadable; "(a directory)" added
// for a directory, which would otherwise read as an empty file).
std::string read_text_file(const std::string& path);

// The file parsed as JSON (from memory: much faster than from the stream). Any JSON value may come
// back; the caller checks the type it expects at the top level.
nlohmann::json read_json_file(const std::string& path);

}  // namespace fi
