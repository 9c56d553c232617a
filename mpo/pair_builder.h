#pragma once
// Reward-ranked preference pairs for online MPO rounds: N sampled responses per prompt
// are scored by a reward backend; chosen = the highest score, rejected = the lowest.
//
// Empty responses (the policy ended its turn at once) are counted and left out before scoring: a pair needs text
// on both sides (the pair file and the trainer refuse an empty completion).
// Per prompt, with the responses that scored (an item error — or a non-finite score — is counted and that
// response dropped; the round goes on) sorted by score, highest first (ties in sample order):
//   fewer than 2 scored                 → dropped (too_few_scored)
//   every score equal                   → dropped (tie)
//   best − worst < min_margin           → dropped (margin)                  (Skywork R1V2's "MPO threshold")
//   max_min   : pair k = (k-th best, k-th worst), k = 0, 1, … while k-th best is above k-th worst and their
//               margin is ≥ min_margin (the margins only shrink inward, so the first failure ends the list)
//   max_random: the best against up to K responses drawn at random (seeded by (seed, prompt id)) from those
//               scoring below it by ≥ min_margin
// Every pair has margin > 0 and ≥ min_margin. A pair whose chosen text equals its rejected text, or repeats an
// earlier pair's (chosen, rejected) texts, is skipped without counting towards K (pairs_per_prompt); a prompt
// whose every candidate was skipped so is dropped (duplicate). RLHFlow's max_min / max_random (K = 1, min_margin 0
// keeps pairs only when rewards strictly differ) are the special cases.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "reward/preference_data.h"
#include "plugin/reward.h"

namespace vlreward::mpo {

enum class PairMode { kMaxMin, kMaxRandom };
std::string pair_mode_name(PairMode mode);  // "max_min", "max_random"

struct PairOptions {
  PairMode mode = PairMode::kMaxMin;
  int64_t pairs_per_prompt = 1;  // K
  double min_margin = 0.0;       // chosen − rejected must be ≥ this (and > 0)
  uint64_t seed = 0;             // max_random draws
};

// One response as the pair builder sees it: its text and its score (nullopt: the reward failed on it).
struct ScoredResponse {
  std::string text;
  std::optional<double> score;
};

enum class PromptOutcome { kPaired, kTooFewScored, kTie, kMargin, kDuplicate };

struct SelectedPair {
  size_t chosen = 0;    // indices into the prompt's responses
  size_t rejected = 0;
  double margin = 0;
};

struct PromptSelection {
  PromptOutcome outcome = PromptOutcome::kTooFewScored;
  std::vector<SelectedPair> pairs;
};

// The pairs of one prompt (see above). `prompt_id` seeds max_random's draws.
PromptSelection select_pairs(const std::vector<ScoredResponse>& responses, const PairOptions& options,
                             const std::string& prompt_id);

// Upper edges of the margin histogram's bins: [0, 0.1), [0.1, 0.25), …, [20, ∞). Fixed so rounds and runs compare.
const std::vector<double>& margin_histogram_edges();

struct PairStats {
  int64_t prompts = 0;
  int64_t responses = 0;         // sampled
  int64_t responses_scored = 0;  // with a finite score
  int64_t reward_errors = 0;     // item errors and non-finite scores
  int64_t empty_responses = 0;   // left out unscored
  int64_t pairs = 0;             // kept
  int64_t prompts_paired = 0;
  int64_t dropped_too_few_scored = 0, dropped_tie = 0, dropped_margin = 0, dropped_duplicate = 0;  // prompts
  double drop_rate = 0;          // prompts without a pair / prompts
  double reward_mean = 0, reward_min = 0, reward_max = 0;  // over scored responses (0 when none)
  double margin_mean = 0;        // over kept pairs (0 when none)
  std::vector<int64_t> margin_histogram;  // kept pairs per bin of margin_histogram_edges() (+1 open bin)

  nlohmann::json to_json() const;
  // "prompts 8, responses 32 scored 32 (0 reward errors), pairs 6 from 5 prompts; dropped 1 tie, ..."
  std::string summary() const;
  // Numeric values for metrics.jsonl / TensorBoard: "pairs/kept", "pairs/drop_rate", "reward/mean", ...
  std::map<std::string, double> to_metrics() const;
};

struct BuiltPairs {
  std::vector<PreferenceRecord> records;  // ready for MpoTrainer (source "round pairs: <id>")
  std::vector<nlohmann::json> lines;      // the pairs JSONL lines (write_pairs_jsonl)
  PairStats stats;
  std::vector<std::vector<ScoredResponse>> scored;  // every response with its reward, [prompt][sample]
};

// Scores responses[i][j] (prompt i, sample j) with `reward` in batches of reward_batch_size (requests from
// reward_request, id "<prompt id>/<j>") and selects the pairs. A backend that throws or returns the wrong
// number of results aborts (that is a backend failure, not an item error).
BuiltPairs build_pairs(const std::vector<PromptRecord>& prompts, const std::vector<std::vector<std::string>>& responses,
                       RewardBackend& reward, const PairOptions& options, int64_t reward_batch_size = 64);

// The pairs as JSONL, one {"id", "prompt_id", "images", "question", ["system"], "chosen", "rejected",
// "chosen_score", "rejected_score"} per line, images as the prompt file gave them (so the file is read back with
// the prompt file's image root), written atomically. Invalid UTF-8 in a text is written as U+FFFD.
void write_pairs_jsonl(const std::string& path, const std::vector<nlohmann::json>& lines);

}  // namespace vlreward::mpo
