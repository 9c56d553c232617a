#pragma once
// ab-compare: generate from two policies on the same prompts, score both responses with a reward backend, and
// compare (mpo/ab/stats.h) — win/tie/loss, win rate and mean reward difference with bootstrap CIs, and accuracy
// against the prompts' reference answers where they have one. Reports: mpo/ab/report.h.
//
// Memory: the reward backend is created first (a bad reward config fails before any generation), then policy A
// is loaded, generates and is freed, then policy B: peak memory is the reward model plus one policy.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/hf/qwen2_5_vl_processor.h"
#include "mpo/ab/report.h"
#include "reward/preference_data.h"
#include "mpo/rollout.h"
#include "plugin/reward.h"

namespace vlreward::mpo {

struct AbCompareOptions {
  std::string policy_a, policy_b;  // Hugging Face checkpoint directories (config.json, weights, tokenizer)
  std::string label_a = "A", label_b = "B";
  std::string prompts_path, image_root;
  RolloutOptions rollout;            // greedy by default; the same seeds for both policies
  std::string dtype = "float32";     // policy parameters: float32 or bfloat16
  std::string device = "cpu";        // policy device: cpu, cuda, cuda:N
  ProcessorOptions processor;        // min/max pixels (default: each checkpoint's preprocessor_config.json)
  int64_t reward_batch_size = 8;     // requests per reward backend call
  double tie_epsilon = 0;
  BootstrapOptions bootstrap;
  bool progress = true;              // progress bars on stderr
};

// Checks the values a user sets: non-empty labels; max_new_tokens, the batch sizes and the bootstrap resamples
// positive; when sampling, temperature > 0, top_p in (0, 1], top_k >= 0; tie_epsilon >= 0. Throws InputError
// naming the ab-compare option. run_ab_compare checks first.
void check_ab_compare_options(const AbCompareOptions& options);

// Loads the policy in `dir`, generates one response per prompt and frees the model again.
std::vector<Response> generate_for_policy(const std::string& dir, const std::string& label,
                                          const std::vector<PromptRecord>& prompts, const AbCompareOptions& options);

// Rows with both responses, in prompt order (rewards not yet set).
std::vector<AbRow> make_rows(const std::vector<PromptRecord>& prompts, const std::vector<Response>& a,
                             const std::vector<Response>& b);

// Scores every row's two responses (ids "<prompt id>/a" and "/b") in batches of batch_size. A per-item error, a
// missing result or an exception from a batch's score() lands in that row's error_a / error_b: it never aborts.
void score_rows(RewardBackend& reward, const std::vector<PromptRecord>& prompts, std::vector<AbRow>& rows,
                int64_t batch_size, bool progress);

// The whole run: reads the prompts, builds the reward backend from `reward_config` (registry, as reward-score),
// generates, scores and summarizes. Throws InputError for unreadable prompts or checkpoints, ConfigError
// for a bad reward config.
AbResult run_ab_compare(const AbCompareOptions& options, const nlohmann::json& reward_config);

}  // namespace vlreward::mpo
