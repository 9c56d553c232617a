#pragma once
// Reward-hacking and drift monitors of online MPO (settings: mpo/monitor_config.h). Each round reports, as
// "monitor/<name>" in the round's summary line of metrics.jsonl and in TensorBoard:
//   on the round's samples (the policy that entered the round, as scored for its pairs):
//     sample_format_violations      share of responses the format check rejects
//     sample_accuracy               share of responses that are correct (prompts with a reference)
//     reward_correctness_agreement  over every (correct, wrong) pair of one prompt's responses, the share the reward
//                                   ranks correct-first (ties count one half): a reward paying for something other
//                                   than correctness (a format, a length, a misspelling) pulls it below 1/2
//     sample_tokens                 mean response length in tokens
//   on the held-out prompts (the policy after the round's training):
//     heldout_accuracy, heldout_format_violations, heldout_tokens   of greedy responses
//     kl                            KL(policy || reference) in nats per response: one response per prompt sampled
//                                   from the policy itself (temperature 1, no top-k/top-p), the mean of
//                                   log pi(y) - log pi_ref(y) summed over its tokens (the unbiased k1 estimator)
// A metric without data (no references, no (correct, wrong) pair) is left out of that round. Alarms compare the
// round's values with their thresholds; the caller acts on them (warn, or stop after the round).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mpo/monitor_config.h"
#include "mpo/pair_builder.h"
#include "plugin/reward.h"
#include "reward/preference_data.h"

namespace vlreward::mpo {

class MpoTrainer;

struct FiredAlarm {
  MonitorAlarm alarm;
  double value = 0;
  std::string message;  // "monitor/kl = 7.2 is above 5 (stop)"
};

class RoundMonitor {
 public:
  // Builds the format and correctness backends and reads the held-out prompts (relative images against
  // image_root, as online.prompts). `max_new_tokens` and `batch_size`: the rounds' generation settings.
  RoundMonitor(const MonitorSettings& settings, const std::string& image_root, int64_t max_new_tokens,
               int64_t batch_size, int64_t reward_batch_size);
  ~RoundMonitor();

  // The sample metrics of one round: responses[i] are prompt i's responses with their rewards.
  std::map<std::string, double> on_samples(const std::vector<PromptRecord>& prompts,
                                           const std::vector<std::vector<ScoredResponse>>& responses,
                                           const std::vector<std::vector<int64_t>>& tokens);
  // The held-out metrics of the trainer's current policy (empty without held-out prompts).
  std::map<std::string, double> on_policy(MpoTrainer& trainer);
  // The alarms the round's metrics set off.
  std::vector<FiredAlarm> check(const std::map<std::string, double>& metrics) const;

  bool has_heldout() const { return !heldout_.empty(); }
  const MonitorSettings& settings() const { return settings_; }

 private:
  // Per response: in format (1), not (0), or unchecked (-1: the format backend failed on it).
  std::vector<int> format_ok(const std::vector<const PromptRecord*>& prompts, const std::vector<std::string>& texts);
  // Per response with a reference: correct (1) or not (0); -1 without a reference or when the check failed.
  std::vector<int> correct(const std::vector<const PromptRecord*>& prompts, const std::vector<std::string>& texts);

  MonitorSettings settings_;
  int64_t max_new_tokens_, batch_size_, reward_batch_size_;
  std::unique_ptr<RewardBackend> format_, correct_;
  std::vector<PromptRecord> heldout_;
};

// Round lines of a run's metrics.jsonl ("round_summary"), each round's monitor/* values, for the end-of-run
// summary: {"rounds": [{"round", "monitor/...": ...}], "alarms": n}.
nlohmann::json monitor_summary(const std::vector<std::map<std::string, double>>& round_lines);
// The summary as a table for the console: a row per round, a column per metric.
std::string monitor_table(const nlohmann::json& summary);

}  // namespace vlreward::mpo
