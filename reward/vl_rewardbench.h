#pragma once
// VL-RewardBench (arXiv 2411.17451) evaluation of a scalar reward model, with the metrics of the benchmark's
// cal.py (vl-rewardbench/VL_RewardBench, commit 91b241e "Fix povid bug"):
//   dataset   from the id prefix (text before the first '_' or '-'): RLAIF → rlaif-v, RLHF → rlhf-v,
//             mathverse | mmmu → reasoning_tasks, wildvision → wildvision-battle, hallucination → povid,
//             anything else → vlfeedback;
//   category  vlfeedback, wildvision-battle → general; povid, rlhf-v, rlaif-v → hallucination;
//             reasoning_tasks → reasoning;
//   accuracy  correct / total per category; overall = Σcorrect / Σtotal; macro = (reasoning + hallucination +
//             general) / 3 (summed in that order, as cal.py does).
// A pair is judged correct when the human-preferred response scores strictly higher; equal scores are a tie and
// count as wrong (reported separately).
//
// Input: JSONL, one pair per line: {"id", "query", "image" (path; "image_path" as in the GitHub data.jsonl is
// accepted too), "response": [a, b], "human_ranking": [0, 1] (a preferred) or [1, 0] (b preferred),
// "query_source" (optional; string or null)}; other fields are ignored.
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

// Where a pair's dataset comes from. cal.py uses the id; query_source is an alternative for files whose ids
// don't follow the benchmark's conventions (names compared case-insensitively; unknown names are errors).
enum class VlrbCategorySource { kId, kQuerySource };

struct VlrbPair {
  int64_t line = 0;  // 1-based line in the data file
  std::string id;
  std::string query;
  std::string image;  // as written in the file
  std::array<std::string, 2> responses;
  int preferred = 0;             // index of the human-preferred response
  std::string query_source;      // empty when absent or null
  std::string dataset;           // cal.py dataset name (e.g. "rlaif-v")
  std::string category;          // "general", "hallucination" or "reasoning"
};

// cal.py's get_dataset_from_id.
std::string vlrb_dataset_from_id(const std::string& id);
// query_source → dataset (WildVision, vlfeedback, POVID, RLHF-V, RLAIF-V, MMMU-Pro, MathVerse and cal.py's own
// dataset names, any case); std::nullopt when unknown.
std::optional<std::string> vlrb_dataset_from_query_source(const std::string& query_source);
// cal.py's group_mapping; throws std::out_of_range for a name that is not one of its six datasets.
const std::string& vlrb_category_of_dataset(const std::string& dataset);

// One line → pair. Throws InputError("<source>:<line>", problem naming the field).
VlrbPair parse_vlrb_line(const std::string& line, int64_t line_number, const std::string& source,
                         VlrbCategorySource category_source = VlrbCategorySource::kId);
// A whole file; blank lines are skipped. Also rejects a pair that repeats an earlier one (same id, query and
// responses: cal.py would merge them) and an empty file.
std::vector<VlrbPair> read_vlrb_file(const std::string& path,
                                     VlrbCategorySource category_source = VlrbCategorySource::kId);

struct VlrbCounts {
  int64_t n = 0, correct = 0, ties = 0;
  double accuracy() const { return n == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(n); }
};

struct VlrbMetrics {
  std::map<std::string, VlrbCounts> categories;  // always general, hallucination, reasoning
  std::map<std::string, VlrbCounts> datasets;    // the datasets that occur
  VlrbCounts overall;
  std::optional<double> macro_accuracy;  // absent when a category has no pairs (cal.py divides by zero there)
};

struct VlrbVerdict {
  bool correct = false;
  bool tie = false;
};
// score(preferred) > score(other) → correct; equal → tie (wrong). NaN compares unequal and is wrong.
VlrbVerdict judge_vlrb_pair(const VlrbPair& pair, const std::array<double, 2>& scores);

// Metrics over the pairs whose scores are known (`scores[i]` empty = the pair failed and is left out).
VlrbMetrics compute_vlrb_metrics(const std::vector<VlrbPair>& pairs,
                                 const std::vector<std::optional<std::array<double, 2>>>& scores);

struct VlrbEvaluation {
  std::vector<VlrbPair> pairs;
  std::vector<std::optional<std::array<double, 2>>> scores;  // per pair; empty when scoring failed
  std::vector<std::string> errors;                            // per pair; set iff scores[i] is empty
  VlrbMetrics metrics;
  int64_t failed() const;
};

struct VlrbEvalOptions {
  std::string image_root;  // relative image paths resolve here
  int64_t batch_size = 8;  // requests per backend call (each pair is two requests)
  bool progress = false;   // progress bar on stderr
};

// The two requests of a pair (RewardRequest::single_turn with the resolved image, the query and one response).
std::array<RewardRequest, 2> vlrb_requests(const VlrbPair& pair, const std::string& image_root);
// Scores every pair with `backend` and computes the metrics. A pair's two responses go to the backend in the same
// call (unless batch_size is 1); two identical responses are scored once. Per-item backend errors (and
// non-finite scores) fail their pair only.
VlrbEvaluation evaluate_vlrb(RewardBackend& backend, std::vector<VlrbPair> pairs, const VlrbEvalOptions& options);

// {"categories": {name: {n, correct, ties, accuracy}}, "datasets": {...}, "overall": {...}, "macro_accuracy"}
nlohmann::json vlrb_metrics_json(const VlrbMetrics& metrics);
// The metrics plus one record per pair ({id, line, dataset, category, scores, preferred, correct, tie} or
// {id, line, error}) and `failed`.
nlohmann::json vlrb_results_json(const VlrbEvaluation& evaluation);
// A plain-text table: one row per category (n, correct, ties, accuracy %), then overall and macro.
std::string format_vlrb_table(const VlrbMetrics& metrics);

}  // namespace vlreward
