#include "mpo/pair_builder.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "mpo/rollout.h"
#include "reward/batch_scoring.h"

namespace vlreward::mpo {
namespace {

struct Ranked {
  size_t index;
  double score;
};

bool passes(double margin, double min_margin) { return margin > 0 && margin >= min_margin; }

}  // namespace

std::string pair_mode_name(PairMode mode) { return mode == PairMode::kMaxMin ? "max_min" : "max_random"; }

const std::vector<double>& margin_histogram_edges() {
  static const std::vector<double> edges{0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0};
  return edges;
}

PromptSelection select_pairs(const std::vector<ScoredResponse>& responses, const PairOptions& options,
                             const std::string& prompt_id) {
  std::vector<Ranked> ranked;
  for (size_t i = 0; i < responses.size(); ++i)
    if (responses[i].score && std::isfinite(*responses[i].score)) ranked.push_back({i, *responses[i].score});
  // Highest first; equal scores keep sample order, so the choice never depends on the sort implementation.
  std::stable_sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) { return a.score > b.score; });
  PromptSelection out;
  if (ranked.size() < 2) return out;  // kTooFewScored
  const double spread = ranked.front().score - ranked.back().score;
  if (spread == 0) {
    out.outcome = PromptOutcome::kTie;
    return out;
  }
  if (!passes(spread, options.min_margin)) {
    out.outcome = PromptOutcome::kMargin;
    return out;
  }
  std::set<std::pair<std::string, std::string>> seen;
  auto try_add = [&](const Ranked& chosen, const Ranked& rejected) {
    const std::string& c = responses[chosen.index].text;
    const std::string& r = responses[rejected.index].text;
    if (c == r || !seen.insert({c, r}).second) return;
    out.pairs.push_back({chosen.index, rejected.index, chosen.score - rejected.score});
  };
  const auto k_max = static_cast<size_t>(options.pairs_per_prompt);
  if (options.mode == PairMode::kMaxMin) {
    for (size_t k = 0; k < ranked.size() / 2 && out.pairs.size() < k_max; ++k) {
      const Ranked& chosen = ranked[k];
      const Ranked& rejected = ranked[ranked.size() - 1 - k];
      if (!passes(chosen.score - rejected.score, options.min_margin)) break;
      try_add(chosen, rejected);
    }
  } else {
    const Ranked& best = ranked.front();
    // Candidates: far enough below the best, one per distinct text (the first in rank order).
    std::vector<Ranked> candidates;
    std::set<std::string> texts{responses[best.index].text};
    for (size_t k = 1; k < ranked.size(); ++k)
      if (passes(best.score - ranked[k].score, options.min_margin) && texts.insert(responses[ranked[k].index].text).second)
        candidates.push_back(ranked[k]);
    // Partial Fisher-Yates with our own draws (std::shuffle / distributions differ between standard libraries).
    std::mt19937_64 engine(sample_seed(options.seed, "pairs:" + prompt_id, 0));
    for (size_t i = 0; i < candidates.size() && out.pairs.size() < k_max; ++i) {
      const size_t j = i + static_cast<size_t>(engine() % static_cast<uint64_t>(candidates.size() - i));
      std::swap(candidates[i], candidates[j]);
      try_add(best, candidates[i]);
    }
  }
  out.outcome = out.pairs.empty() ? PromptOutcome::kDuplicate : PromptOutcome::kPaired;
  return out;
}

nlohmann::json PairStats::to_json() const {
  nlohmann::json bins = nlohmann::json::array();
  const auto& edges = margin_histogram_edges();
  for (size_t b = 0; b < margin_histogram.size(); ++b)
    bins.push_back({{"lower", b == 0 ? 0.0 : edges[b - 1]},
                    {"upper", b < edges.size() ? nlohmann::json(edges[b]) : nlohmann::json("inf")},
                    {"count", margin_histogram[b]}});
  return {{"prompts", prompts},
          {"responses", responses},
          {"responses_scored", responses_scored},
          {"reward_errors", reward_errors},
          {"empty_responses", empty_responses},
          {"pairs", pairs},
          {"prompts_paired", prompts_paired},
          {"dropped", {{"too_few_scored", dropped_too_few_scored}, {"tie", dropped_tie}, {"margin", dropped_margin},
                       {"duplicate", dropped_duplicate}}},
          {"drop_rate", drop_rate},
          {"reward", {{"mean", reward_mean}, {"min", reward_min}, {"max", reward_max}}},
          {"margin_mean", margin_mean},
          {"margin_histogram", bins}};
}

std::string PairStats::summary() const {
  std::string hist;
  const auto& edges = margin_histogram_edges();
  for (size_t b = 0; b < margin_histogram.size(); ++b) {
    if (margin_histogram[b] == 0) continue;
    hist += fmt::format("{}[{:g},{}):{}", hist.empty() ? "" : " ", b == 0 ? 0.0 : edges[b - 1],
                        b < edges.size() ? fmt::format("{:g}", edges[b]) : std::string("inf"), margin_histogram[b]);
  }
  return fmt::format(
      "{} prompts, {} responses ({} scored, {} reward errors, {} empty); {} pairs from {} prompts; dropped prompts: {} tie, "
      "{} margin, {} duplicate, {} too few scored (drop rate {:.1f}%); reward mean {:.4g} [{:.4g}, {:.4g}]; "
      "margin mean {:.4g}; margins {}",
      prompts, responses, responses_scored, reward_errors, empty_responses, pairs, prompts_paired, dropped_tie, dropped_margin,
      dropped_duplicate, dropped_too_few_scored, 100.0 * drop_rate, reward_mean, reward_min, reward_max, margin_mean,
      hist.empty() ? "-" : hist);
}

std::map<std::string, double> PairStats::to_metrics() const {
  std::map<std::string, double> m{
      {"pairs/prompts", static_cast<double>(prompts)},
      {"pairs/responses", static_cast<double>(responses)},
      {"pairs/responses_scored", static_cast<double>(responses_scored)},
      {"pairs/reward_errors", static_cast<double>(reward_errors)},
      {"pairs/empty_responses", static_cast<double>(empty_responses)},
      {"pairs/kept", static_cast<double>(pairs)},
      {"pairs/prompts_paired", static_cast<double>(prompts_paired)},
      {"pairs/dropped_tie", static_cast<double>(dropped_tie)},
      {"pairs/dropped_margin", static_cast<double>(dropped_margin)},
      {"pairs/dropped_duplicate", static_cast<double>(dropped_duplicate)},
      {"pairs/dropped_too_few_scored", static_cast<double>(dropped_too_few_scored)},
      {"pairs/drop_rate", drop_rate},
      {"pairs/margin_mean", margin_mean},
      {"reward/mean", reward_mean},
      {"reward/min", reward_min},
      {"reward/max", reward_max},
  };
  const auto& edges = margin_histogram_edges();
  for (size_t b = 0; b < margin_histogram.size(); ++b)
    m[fmt::format("pairs/margin_hist/{:g}", b == 0 ? 0.0 : edges[b - 1])] = static_cast<double>(margin_histogram[b]);
  return m;
}

BuiltPairs build_pairs(const std::vector<PromptRecord>& prompts, const std::vector<std::vector<std::string>>& responses,
                       RewardBackend& reward, const PairOptions& options, int64_t reward_batch_size) {
  if (responses.size() != prompts.size())
    throw std::invalid_argument(fmt::format("build_pairs: {} response lists for {} prompts", responses.size(), prompts.size()));
  if (reward_batch_size <= 0) throw std::invalid_argument("build_pairs: reward_batch_size must be positive");
  if (options.pairs_per_prompt <= 0) throw std::invalid_argument("build_pairs: pairs_per_prompt must be positive");

  // Score every response, a batch at a time.
  std::vector<std::vector<ScoredResponse>> scored(prompts.size());
  std::vector<std::pair<size_t, size_t>> where;
  for (size_t i = 0; i < prompts.size(); ++i)
    for (size_t j = 0; j < responses[i].size(); ++j) {
      scored[i].push_back({responses[i][j], std::nullopt});
      if (!responses[i][j].empty()) where.emplace_back(i, j);
    }
  BuiltPairs out;
  PairStats& s = out.stats;
  for (const auto& list : responses)
    for (const auto& text : list) s.empty_responses += text.empty() ? 1 : 0;
  s.prompts = static_cast<int64_t>(prompts.size());
  s.responses = static_cast<int64_t>(where.size()) + s.empty_responses;
  double reward_sum = 0;
  s.reward_min = std::numeric_limits<double>::infinity();
  s.reward_max = -std::numeric_limits<double>::infinity();
  const std::vector<RewardResult> results =
      score_in_batches(reward, where.size(), reward_batch_size, [&](size_t k) {
        const auto [i, j] = where[k];
        return reward_request(prompts[i], responses[i][j], fmt::format("{}/{}", prompts[i].id, j));
      });
  for (size_t k = 0; k < where.size(); ++k) {
    const RewardResult& r = results[k];
    if (!r.ok()) {
      ++s.reward_errors;
      continue;
    }
    const auto [i, j] = where[k];
    scored[i][j].score = *r.score;
    ++s.responses_scored;
    reward_sum += *r.score;
    s.reward_min = std::min(s.reward_min, *r.score);
    s.reward_max = std::max(s.reward_max, *r.score);
  }
  if (s.responses_scored > 0) {
    s.reward_mean = reward_sum / static_cast<double>(s.responses_scored);
  } else {
    s.reward_min = s.reward_max = 0;
  }

  const auto& edges = margin_histogram_edges();
  s.margin_histogram.assign(edges.size() + 1, 0);
  double margin_sum = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const PromptRecord& prompt = prompts[i];
    const PromptSelection selection = select_pairs(scored[i], options, prompt.id);
    switch (selection.outcome) {
      case PromptOutcome::kPaired: ++s.prompts_paired; break;
      case PromptOutcome::kTooFewScored: ++s.dropped_too_few_scored; break;
      case PromptOutcome::kTie: ++s.dropped_tie; break;
      case PromptOutcome::kMargin: ++s.dropped_margin; break;
      case PromptOutcome::kDuplicate: ++s.dropped_duplicate; break;
    }
    for (size_t k = 0; k < selection.pairs.size(); ++k) {
      const SelectedPair& p = selection.pairs[k];
      const std::string id = fmt::format("{}/{}", prompt.id, k);
      PreferenceRecord record{id, prompt.images, prompt.system_prompt, prompt.question, scored[i][p.chosen].text,
                              scored[i][p.rejected].text, std::nullopt, std::nullopt, "round pairs: " + id};
      out.records.push_back(std::move(record));
      nlohmann::json line{{"id", id}, {"prompt_id", prompt.id}, {"images", prompt.image_references},
                          {"question", prompt.question}};
      if (prompt.system_prompt) line["system"] = *prompt.system_prompt;
      line["chosen"] = scored[i][p.chosen].text;
      line["rejected"] = scored[i][p.rejected].text;
      line["chosen_score"] = *scored[i][p.chosen].score;
      line["rejected_score"] = *scored[i][p.rejected].score;
      out.lines.push_back(std::move(line));
      ++s.pairs;
      margin_sum += p.margin;
      const auto bin = static_cast<size_t>(std::upper_bound(edges.begin(), edges.end(), p.margin) - edges.begin());
      ++s.margin_histogram[bin];
    }
  }
  s.margin_mean = s.pairs > 0 ? margin_sum / static_cast<double>(s.pairs) : 0.0;
  s.drop_rate = s.prompts > 0 ? static_cast<double>(s.prompts - s.prompts_paired) / static_cast<double>(s.prompts) : 0.0;
  out.scored = std::move(scored);
  return out;
}

void write_pairs_jsonl(const std::string& path, const std::vector<nlohmann::json>& lines) {
  AtomicFileWriter writer(path);
  // Decoded samples may hold invalid UTF-8 (a cut multi-byte character): written as U+FFFD, never an abort.
  for (const auto& line : lines) writer.write(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  writer.commit();
}

}  // namespace vlreward::mpo
