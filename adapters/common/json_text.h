#pragma once
// JSON text from outside the process (request bodies, JSONL lines, config files). nlohmann::json reports a failed
// parse as more than one exception type: parse_error for syntax and ill-formed UTF-8, out_of_range for a number
// beyond the range of a double (1e400). Readers must treat all of them as bad input; these helpers do, and say
// where in the document the parser stopped ("samples[0].images[2]").
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace vlreward {

// At most `limit` bytes of `text` for an error message: valid UTF-8 (ill-formed bytes replaced), cut at a character
// boundary and marked "..." when longer.
std::string message_excerpt(std::string_view text, size_t limit);

// Describes why `text` failed to parse with exception `e` (any nlohmann::json::exception):
//   a number out of range  →  "samples[0]: number out of range (number overflow parsing '1e400')"
//   anything else          →  "<syntax> at samples[0]: <the parser's message>"   (`syntax`: e.g. "invalid JSON")
// The result is valid UTF-8 (ill-formed bytes the parser quotes are replaced) and at most a few hundred bytes.
// `path`, when given, receives where the parser stopped ("" at the top level).
std::string describe_json_failure(std::string_view text, const nlohmann::json::exception& e, std::string_view syntax,
                                  std::string* path = nullptr);

// Parses `text`; any failure throws InputError(source, describe_json_failure(...)).
nlohmann::json parse_json_text(std::string_view text, const std::string& source, std::string_view syntax = "invalid JSON");

// Reads and parses the JSON file at `path` (config.json, tokenizer.json, checkpoint state, ...); a missing or
// unreadable file and every parse failure throw InputError naming the path.
nlohmann::json read_json_file(const std::string& path, std::string_view syntax = "invalid JSON");

}  // namespace vlreward
