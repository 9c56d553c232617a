#pragma once
// ab-compare's results and reports (torch-free): the per-prompt rows, the statistics computed from them
// (mpo/ab/stats.h), a JSON file with everything, a self-contained HTML report (inline CSS + inline SVG charts,
// no JavaScript, no external URLs) and the console summary.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "mpo/ab/stats.h"

namespace vlreward::mpo {

// One prompt: both policies' responses, their rewards (or the reward backend's error) and correctness.
struct AbRow {
  std::string id;
  std::string question;
  std::optional<std::string> reference;
  std::string response_a, response_b;
  bool stopped_a = true, stopped_b = true;  // false: cut at max_new_tokens
  std::optional<double> reward_a, reward_b;
  std::string error_a, error_b;              // the reward backend's per-item error, when it failed
  std::optional<bool> correct_a, correct_b;  // set iff reference
  std::vector<std::string> thumbnails;       // the prompt's images as small PNG data URIs, for the HTML report

  bool compared() const { return reward_a.has_value() && reward_b.has_value(); }
};

struct AbResult {
  std::string label_a = "A", label_b = "B";
  std::string policy_a, policy_b;  // checkpoint directories
  std::string prompts_path;
  std::string reward_name;          // the backend's name()
  nlohmann::json settings = nlohmann::json::object();  // generation and reward settings, recorded as given
  double tie_epsilon = 0;
  BootstrapOptions bootstrap;

  std::vector<AbRow> rows;  // prompt order
  // Filled by summarize():
  int64_t reward_errors = 0;  // prompts left out of the comparison because a reward failed
  RewardComparison rewards;
  std::optional<AccuracyComparison> accuracy;  // when any prompt has a reference
  std::string verdict;
};

// Fills correct_a/correct_b from the references (answer_matches) and computes the statistics: rows with both
// rewards enter the reward comparison, rows with a reference the accuracy comparison.
void summarize(AbResult& result);

nlohmann::json report_json(const AbResult& result);
// max_rows: how many prompts the response table shows (all are in the JSON).
std::string report_html(const AbResult& result, int64_t max_rows = 50);
std::string console_summary(const AbResult& result);

// Writes `dir`/ab_compare.json and `dir`/report.html atomically (creating dir). Returns the two paths.
std::pair<std::string, std::string> write_reports(const AbResult& result, const std::string& dir, int64_t max_rows = 50);

// Text for HTML element content and attribute values: & < > " ' escaped, invalid UTF-8 and control characters
// (other than tab and newline) replaced with U+FFFD.
std::string html_escape(std::string_view text);

}  // namespace vlreward::mpo
