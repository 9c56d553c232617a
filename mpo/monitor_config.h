#pragma once
// The settings of online MPO's reward-hacking and drift monitors (online.monitor in mpo-train's config; what they
// measure: mpo/monitor.h). Torch-free: read with the rest of the training config.
//
//   online:
//     monitor:
//       prompts: data/heldout_prompts.jsonl       # held-out prompts ("reference" where known); none: sample monitors only
//       max_prompts: 200                          # the first N of them (0: all)
//       format: {type: format, pattern: "..."}    # a reward backend config: score > 0 = the expected answer format
//       correct: {type: exact_match, extract: boxed}  # score > 0 = correct (default: ab-compare's answer rule)
//       seed: 0                                   # the KL estimate's sampling seed
//       alarms:                                   # checked after every round
//         - {metric: reward_correctness_agreement, below: 0.6, action: stop}
//         - {metric: kl, above: 5.0, action: warn}
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlreward {
class ConfigReader;
}

namespace vlreward::mpo {

struct MonitorAlarm {
  std::string metric;  // a monitor metric's name without "monitor/" (monitor_metric_names())
  std::optional<double> above, below;  // fires when the value is above / below (at least one is set)
  bool stop = false;   // action: stop (end the run after the round) or warn
  // "reward_correctness_agreement below 0.6 (stop)"
  std::string describe() const;
};

struct MonitorSettings {
  std::string prompts;
  int64_t max_prompts = 0;
  nlohmann::json format;   // null: the format is not monitored
  nlohmann::json correct;  // null: answer_matches (mpo/ab/stats.h)
  uint64_t seed = 0;
  std::vector<MonitorAlarm> alarms;

  nlohmann::json to_json() const;
};

// Every metric the monitors report, without the "monitor/" prefix of metrics.jsonl and TensorBoard.
const std::vector<std::string>& monitor_metric_names();

// Reads online.monitor (the reader is positioned on it). Throws ConfigError naming the key: an unknown metric, an
// alarm without a threshold or with a bad action, a format metric without `format`, a held-out metric without
// `prompts`.
MonitorSettings read_monitor_settings(ConfigReader& monitor);

}  // namespace vlreward::mpo
