#pragma once
// Rule rewards: verifiable checks of a response against a reference answer or a format, scored without a model.
//
//   {"type": "exact_match", "extract": "boxed", "case_fold": true}            answer == reference → 1.0 else 0.0
//   {"type": "regex_match", "extract": "regex", "extract_pattern": "Answer: (.*)"}
//                                     the reference (or "pattern") is a regex that must match the whole answer
//   {"type": "format", "pattern": "<think>.*</think>\\s*\\S.*"}                 the whole response must match
//
// Answer extraction (exact_match, regex_match):
//   "extract": "response" (default, the whole response), "boxed" (the content of the last complete
//   \boxed{...}, nested braces balanced), or "regex" ("extract_pattern" with exactly one capture group; the
//   last match wins). No answer found scores as a mismatch.
// Normalisation of answer and reference: whitespace is always trimmed; "case_fold" (ASCII, default false) and
// "collapse_whitespace" (runs → one space, default false) are optional.
// Scores: "match_score" (default 1.0) and "mismatch_score" (default 0.0).
// format: "pattern" (required) must match the whole response ("full_match": false: anywhere in it); "dotall"
// (default true: "." also matches newlines), "case_fold" (default false), "match_score"/"mismatch_score".
// regex_match: a configured "pattern" replaces the per-request reference; "case_fold" matches caselessly.
// Regexes are PCRE2 (Perl/ECMAScript-like syntax), UTF-8 aware; invalid UTF-8 in a response never matches.
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

std::unique_ptr<RewardBackend> make_exact_match_backend(const nlohmann::json& config, const std::string& where);
std::unique_ptr<RewardBackend> make_regex_match_backend(const nlohmann::json& config, const std::string& where);
std::unique_ptr<RewardBackend> make_format_backend(const nlohmann::json& config, const std::string& where);

// The content of the last complete \boxed{...} in `text` (outermost braces; \{ and \} do not count as braces),
// or nullopt when there is none.
std::optional<std::string> last_boxed_content(const std::string& text);

}  // namespace vlreward
