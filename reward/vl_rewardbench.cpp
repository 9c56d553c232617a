#include "reward/vl_rewardbench.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/jsonl.h"
#include "reward/batch_scoring.h"
#include "adapters/common/mapped_file.h"
#include "adapters/common/progress.h"

namespace vlreward {
namespace {

const char* const kCategories[] = {"general", "hallucination", "reasoning"};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// A short, single-line rendering of a JSON value for error messages.
std::string shown(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

const nlohmann::json& field(const nlohmann::json& row, const char* key, const std::string& where) {
  auto it = row.find(key);
  if (it == row.end()) throw_input_error(where, "missing field \"{}\"", key);
  return *it;
}

std::string string_field(const nlohmann::json& row, const char* key, const std::string& where, bool non_empty) {
  const auto& v = field(row, key, where);
  if (!v.is_string()) throw_input_error(where, "field \"{}\" must be a string, got {} {}", key, v.type_name(), shown(v));
  auto s = v.get<std::string>();
  if (non_empty && s.empty()) throw_input_error(where, "field \"{}\" is empty", key);
  return s;
}

}  // namespace

std::string vlrb_dataset_from_id(const std::string& id) {
  const auto cut = id.find_first_of("_-");
  const std::string prefix = cut == std::string::npos ? id : id.substr(0, cut);
  if (prefix == "RLAIF") return "rlaif-v";
  if (prefix == "RLHF") return "rlhf-v";
  if (prefix == "mathverse" || prefix == "mmmu") return "reasoning_tasks";
  if (prefix == "wildvision") return "wildvision-battle";
  if (prefix == "hallucination") return "povid";
  return "vlfeedback";
}

std::optional<std::string> vlrb_dataset_from_query_source(const std::string& query_source) {
  static const std::map<std::string, std::string> kByName = {
      {"wildvision", "wildvision-battle"}, {"wildvision-battle", "wildvision-battle"},
      {"vlfeedback", "vlfeedback"},        {"povid", "povid"},
      {"rlhf-v", "rlhf-v"},                {"rlaif-v", "rlaif-v"},
      {"mmmu-pro", "reasoning_tasks"},     {"mathverse", "reasoning_tasks"},
      {"reasoning_tasks", "reasoning_tasks"}};
  auto it = kByName.find(lower(query_source));
  if (it == kByName.end()) return std::nullopt;
  return it->second;
}

const std::string& vlrb_category_of_dataset(const std::string& dataset) {
  static const std::map<std::string, std::string> kGroup = {
      {"vlfeedback", "general"},     {"wildvision-battle", "general"}, {"povid", "hallucination"},
      {"rlhf-v", "hallucination"},   {"rlaif-v", "hallucination"},     {"reasoning_tasks", "reasoning"}};
  auto it = kGroup.find(dataset);
  if (it == kGroup.end()) throw std::out_of_range("not a VL-RewardBench dataset: " + dataset);
  return it->second;
}

VlrbPair parse_vlrb_line(const std::string& line, int64_t line_number, const std::string& source,
                         VlrbCategorySource category_source) {
  const std::string where = fmt::format("{}:{}", source, line_number);
  const nlohmann::json row = parse_json_text(line, where, "not valid JSON");
  if (!row.is_object()) throw_input_error(where, "expected a JSON object, got {}", row.type_name());

  VlrbPair pair;
  pair.line = line_number;
  pair.id = string_field(row, "id", where, true);
  pair.query = string_field(row, "query", where, false);

  const bool has_image = row.contains("image"), has_image_path = row.contains("image_path");
  if (has_image && has_image_path) throw_input_error(where, "give \"image\" or \"image_path\", not both");
  if (!has_image && !has_image_path) throw_input_error(where, "missing field \"image\" (an image file path)");
  pair.image = string_field(row, has_image ? "image" : "image_path", where, true);

  const auto& response = field(row, "response", where);
  if (!response.is_array() || response.size() != 2)
    throw_input_error(where, "field \"response\" must be a list of 2 strings, got {}", shown(response));
  for (size_t i = 0; i < 2; ++i) {
    if (!response[i].is_string())
      throw_input_error(where, "field \"response\"[{}] must be a string, got {}", i, response[i].type_name());
    pair.responses[i] = response[i].get<std::string>();
  }

  const auto& ranking = field(row, "human_ranking", where);
  const bool first = ranking == nlohmann::json::array({0, 1}), second = ranking == nlohmann::json::array({1, 0});
  // only integers: [0.0, 1.0] or [false, true] compare equal in nlohmann's == but are not the schema
  const bool integers = ranking.is_array() && std::all_of(ranking.begin(), ranking.end(), [](const auto& v) {
    return v.is_number_integer();
  });
  if (!integers || !(first || second))
    throw_input_error(where, "field \"human_ranking\" must be [0, 1] (first response preferred) or [1, 0], got {}",
                      shown(ranking));
  pair.preferred = first ? 0 : 1;

  if (auto it = row.find("query_source"); it != row.end() && !it->is_null()) {
    if (!it->is_string())
      throw_input_error(where, "field \"query_source\" must be a string or null, got {}", it->type_name());
    pair.query_source = it->get<std::string>();
  }

  if (category_source == VlrbCategorySource::kId) {
    pair.dataset = vlrb_dataset_from_id(pair.id);
  } else {
    if (pair.query_source.empty())
      throw_input_error(where, "field \"query_source\" is missing or null (needed to categorize by query_source)");
    auto dataset = vlrb_dataset_from_query_source(pair.query_source);
    if (!dataset)
      throw_input_error(where,
                        "unknown query_source \"{}\" (known: WildVision, vlfeedback, POVID, RLHF-V, RLAIF-V, "
                        "MMMU-Pro, MathVerse, any case)",
                        pair.query_source);
    pair.dataset = *dataset;
  }
  pair.category = vlrb_category_of_dataset(pair.dataset);
  return pair;
}

std::vector<VlrbPair> read_vlrb_file(const std::string& path, VlrbCategorySource category_source) {
  std::vector<VlrbPair> pairs;
  std::map<std::string, int64_t> seen;  // cal.py's item key (id + query + sorted responses) → line
  for_each_jsonl_line(path, [&](const std::string& line, const std::string&, int64_t line_number) {
    auto pair = parse_vlrb_line(line, line_number, path, category_source);
    auto sorted = pair.responses;
    std::sort(sorted.begin(), sorted.end());
    std::string key = pair.id + '\0' + pair.query + '\0' + sorted[0] + '\0' + sorted[1];
    auto [it, inserted] = seen.emplace(std::move(key), line_number);
    if (!inserted)
      throw_input_error(fmt::format("{}:{}", path, line_number),
                        "pair \"{}\" repeats line {} (same id, query and responses)", pair.id, it->second);
    pairs.push_back(std::move(pair));
  });
  if (pairs.empty()) throw_input_error(path, "no pairs (the file is empty)");
  return pairs;
}

VlrbVerdict judge_vlrb_pair(const VlrbPair& pair, const std::array<double, 2>& scores) {
  const double chosen = scores[pair.preferred], rejected = scores[1 - pair.preferred];
  return {chosen > rejected, chosen == rejected};
}

VlrbMetrics compute_vlrb_metrics(const std::vector<VlrbPair>& pairs,
                                 const std::vector<std::optional<std::array<double, 2>>>& scores) {
  if (scores.size() != pairs.size())
    throw std::invalid_argument(fmt::format("compute_vlrb_metrics: {} pairs but {} scores", pairs.size(),
                                            scores.size()));
  VlrbMetrics m;
  for (const char* c : kCategories) m.categories[c] = {};
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (!scores[i]) continue;
    const auto verdict = judge_vlrb_pair(pairs[i], *scores[i]);
    for (VlrbCounts* counts : {&m.categories.at(pairs[i].category), &m.datasets[pairs[i].dataset], &m.overall}) {
      counts->n += 1;
      counts->correct += verdict.correct ? 1 : 0;
      counts->ties += verdict.tie ? 1 : 0;
    }
  }
  const auto& c = m.categories;
  if (c.at("reasoning").n > 0 && c.at("hallucination").n > 0 && c.at("general").n > 0)
    m.macro_accuracy = (c.at("reasoning").accuracy() + c.at("hallucination").accuracy() + c.at("general").accuracy()) / 3;
  return m;
}

int64_t VlrbEvaluation::failed() const {
  return std::count_if(scores.begin(), scores.end(), [](const auto& s) { return !s.has_value(); });
}

std::array<RewardRequest, 2> vlrb_requests(const VlrbPair& pair, const std::string& image_root) {
  namespace fs = std::filesystem;
  fs::path image(pair.image);
  if (image.is_relative() && !image_root.empty()) image = fs::path(image_root) / image;
  std::array<RewardRequest, 2> requests;
  for (int k = 0; k < 2; ++k) {
    requests[k] = RewardRequest::single_turn(fmt::format("{}#{}", pair.id, k), {RewardImage::from_path(image.string())},
                                             pair.query, pair.responses[k]);
    requests[k].metadata["line"] = std::to_string(pair.line);
  }
  return requests;
}

VlrbEvaluation evaluate_vlrb(RewardBackend& backend, std::vector<VlrbPair> pairs, const VlrbEvalOptions& options) {
  if (options.batch_size <= 0) throw std::invalid_argument("evaluate_vlrb: batch_size must be positive");
  VlrbEvaluation ev;
  ev.pairs = std::move(pairs);
  const size_t n = ev.pairs.size();
  std::vector<std::array<std::optional<double>, 2>> got(n);
  std::vector<std::string> errors(n);

  std::unique_ptr<ProgressBar> progress;
  int64_t total_requests = 0;
  for (const auto& pair : ev.pairs) total_requests += pair.responses[0] == pair.responses[1] ? 1 : 2;
  if (options.progress) progress = std::make_unique<ProgressBar>("reward-eval", total_requests, "responses");
  std::vector<RewardRequest> batch;
  std::vector<std::pair<size_t, int>> owners;  // (pair, response; -1 = both) of each request in `batch`
  auto flush = [&] {
    if (batch.empty()) return;
    const auto results = score_batch(backend, batch);
    for (size_t j = 0; j < results.size(); ++j) {
      const auto [p, k] = owners[j];
      const int shown_k = std::max(k, 0);
      if (!results[j].ok()) {
        if (errors[p].empty()) errors[p] = fmt::format("response {}: {}", shown_k, results[j].error);
      } else {
        for (int r = 0; r < 2; ++r)
          if (k == r || k == -1) got[p][r] = *results[j].score;
      }
    }
    if (progress) progress->advance(static_cast<int64_t>(batch.size()));
    batch.clear();
    owners.clear();
  };
  for (size_t p = 0; p < n; ++p) {
    auto requests = vlrb_requests(ev.pairs[p], options.image_root);
    // Two identical responses are one request: the same input must give the same score (a tie), whatever
    // padding or batch position the backend would otherwise see.
    const bool same = ev.pairs[p].responses[0] == ev.pairs[p].responses[1];
    const int64_t needed = same ? 1 : 2;
    // keep a pair's responses in one backend call (same padding) unless batches hold a single request
    if (!batch.empty() && static_cast<int64_t>(batch.size()) + needed > options.batch_size) flush();
    for (int k = 0; k < needed; ++k) {
      batch.push_back(std::move(requests[k]));
      owners.emplace_back(p, same ? -1 : k);
      if (static_cast<int64_t>(batch.size()) >= options.batch_size) flush();
    }
  }
  flush();
  if (progress) progress->finish();

  ev.scores.resize(n);
  ev.errors.resize(n);
  for (size_t p = 0; p < n; ++p) {
    if (errors[p].empty() && got[p][0] && got[p][1]) {
      ev.scores[p] = std::array<double, 2>{*got[p][0], *got[p][1]};
    } else {
      ev.errors[p] = errors[p].empty() ? "no score" : errors[p];
    }
  }
  ev.metrics = compute_vlrb_metrics(ev.pairs, ev.scores);
  return ev;
}

namespace {

nlohmann::json counts_json(const VlrbCounts& c, bool with_accuracy) {
  nlohmann::json j = {{"n", c.n}, {"correct", c.correct}, {"ties", c.ties}};
  if (with_accuracy) j["accuracy"] = c.n > 0 ? nlohmann::json(c.accuracy()) : nlohmann::json(nullptr);
  return j;
}

}  // namespace

nlohmann::json vlrb_metrics_json(const VlrbMetrics& m) {
  nlohmann::json j;
  j["categories"] = nlohmann::json::object();
  for (const auto& [name, counts] : m.categories) j["categories"][name] = counts_json(counts, true);
  j["datasets"] = nlohmann::json::object();
  for (const auto& [name, counts] : m.datasets) j["datasets"][name] = counts_json(counts, true);
  j["overall"] = counts_json(m.overall, true);
  j["macro_accuracy"] = m.macro_accuracy ? nlohmann::json(*m.macro_accuracy) : nlohmann::json(nullptr);
  return j;
}

nlohmann::json vlrb_results_json(const VlrbEvaluation& ev) {
  nlohmann::json j = vlrb_metrics_json(ev.metrics);
  j["failed"] = ev.failed();
  auto& pairs = j["pairs"] = nlohmann::json::array();
  for (size_t i = 0; i < ev.pairs.size(); ++i) {
    const auto& p = ev.pairs[i];
    nlohmann::json r = {{"id", p.id}, {"line", p.line}, {"dataset", p.dataset}, {"category", p.category}};
    if (ev.scores[i]) {
      const auto verdict = judge_vlrb_pair(p, *ev.scores[i]);
      r["scores"] = {(*ev.scores[i])[0], (*ev.scores[i])[1]};
      r["preferred"] = p.preferred;
      r["correct"] = verdict.correct;
      r["tie"] = verdict.tie;
    } else {
      r["error"] = ev.errors[i];
    }
    pairs.push_back(std::move(r));
  }
  return j;
}

std::string format_vlrb_table(const VlrbMetrics& m) {
  auto percent = [](const VlrbCounts& c) { return c.n > 0 ? fmt::format("{:.2f}", 100.0 * c.accuracy()) : "-"; };
  std::string out = fmt::format("{:<15}{:>7}{:>9}{:>6}{:>10}\n", "category", "n", "correct", "ties", "accuracy");
  for (const char* name : kCategories) {
    const auto& c = m.categories.at(name);
    out += fmt::format("{:<15}{:>7}{:>9}{:>6}{:>10}\n", name, c.n, c.correct, c.ties, percent(c));
  }
  out += fmt::format("{:<15}{:>7}{:>9}{:>6}{:>10}\n", "overall", m.overall.n, m.overall.correct, m.overall.ties,
                     percent(m.overall));
  out += fmt::format("{:<15}{:>32}\n", "macro average",
                     m.macro_accuracy ? fmt::format("{:.2f}", 100.0 * *m.macro_accuracy) : "- (a category is empty)");
  return out;
}

}  // namespace vlreward
