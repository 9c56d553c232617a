#include "mpo/monitor.h"

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "mpo/ab/stats.h"
#include "mpo/rollout.h"
#include "mpo/trainer.h"
#include "reward/backends.h"
#include "reward/batch_scoring.h"

namespace vlreward::mpo {
namespace {

using nlohmann::json;

// Scores texts[k] (the response to prompts[k]) with a check backend: 1 when the score is > 0, 0 when not, -1 when the
// backend failed on it.
std::vector<int> run_check(RewardBackend& backend, const std::vector<const PromptRecord*>& prompts,
                           const std::vector<std::string>& texts, int64_t batch_size) {
  const auto results = score_in_batches(backend, texts.size(), batch_size, [&](size_t k) {
    return reward_request(*prompts[k], texts[k], fmt::format("{}/monitor-{}", prompts[k]->id, k));
  });
  std::vector<int> out;
  out.reserve(results.size());
  for (const auto& r : results) out.push_back(r.ok() ? (*r.score > 0 ? 1 : 0) : -1);
  return out;
}

// The share of `which` among the checked values (0/1; -1 = unchecked); NaN when none was checked.
double share_of(const std::vector<int>& values, int which) {
  int64_t checked = 0, hits = 0;
  for (int v : values) {
    if (v < 0) continue;
    ++checked;
    hits += v == which ? 1 : 0;
  }
  return checked > 0 ? static_cast<double>(hits) / static_cast<double>(checked) : std::nan("");
}

void set_if_measured(std::map<std::string, double>& out, const std::string& name, double value) {
  if (!std::isnan(value)) out["monitor/" + name] = value;
}

}  // namespace

RoundMonitor::RoundMonitor(const MonitorSettings& settings, const std::string& image_root, int64_t max_new_tokens,
                           int64_t batch_size, int64_t reward_batch_size)
    : settings_(settings), max_new_tokens_(max_new_tokens), batch_size_(batch_size),
      reward_batch_size_(reward_batch_size) {
  if (!settings_.format.is_null()) format_ = make_reward_backend(settings_.format);
  if (!settings_.correct.is_null()) correct_ = make_reward_backend(settings_.correct);
  if (!settings_.prompts.empty()) {
    heldout_ = read_prompt_jsonl(settings_.prompts, image_root);
    if (settings_.max_prompts > 0 && static_cast<int64_t>(heldout_.size()) > settings_.max_prompts)
      heldout_.resize(static_cast<size_t>(settings_.max_prompts));
  }
}

RoundMonitor::~RoundMonitor() = default;

std::vector<int> RoundMonitor::format_ok(const std::vector<const PromptRecord*>& prompts,
                                         const std::vector<std::string>& texts) {
  if (!format_) return std::vector<int>(texts.size(), -1);
  return run_check(*format_, prompts, texts, reward_batch_size_);
}

std::vector<int> RoundMonitor::correct(const std::vector<const PromptRecord*>& prompts,
                                       const std::vector<std::string>& texts) {
  std::vector<int> out(texts.size(), -1);
  std::vector<const PromptRecord*> with_reference;
  std::vector<std::string> their_texts;
  std::vector<size_t> where;
  for (size_t k = 0; k < texts.size(); ++k) {
    if (!prompts[k]->reference) continue;
    if (!correct_) {
      out[k] = answer_matches(texts[k], *prompts[k]->reference) ? 1 : 0;
      continue;
    }
    with_reference.push_back(prompts[k]);
    their_texts.push_back(texts[k]);
    where.push_back(k);
  }
  if (correct_ && !where.empty()) {
    const auto checked = run_check(*correct_, with_reference, their_texts, reward_batch_size_);
    for (size_t m = 0; m < where.size(); ++m) out[where[m]] = checked[m];
  }
  return out;
}

std::map<std::string, double> RoundMonitor::on_samples(const std::vector<PromptRecord>& prompts,
                                                       const std::vector<std::vector<ScoredResponse>>& responses,
                                                       const std::vector<std::vector<int64_t>>& tokens) {
  std::vector<const PromptRecord*> owner;
  std::vector<std::string> texts;
  int64_t token_sum = 0, rows = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (size_t j = 0; j < responses[i].size(); ++j) {
      owner.push_back(&prompts[i]);
      texts.push_back(responses[i][j].text);
      token_sum += tokens[i][j];
      ++rows;
    }
  }
  std::map<std::string, double> out;
  if (rows > 0) out["monitor/sample_tokens"] = static_cast<double>(token_sum) / static_cast<double>(rows);
  set_if_measured(out, "sample_format_violations", share_of(format_ok(owner, texts), 0));
  const std::vector<int> right = correct(owner, texts);
  set_if_measured(out, "sample_accuracy", share_of(right, 1));

  // Agreement: every (correct, wrong) pair of one prompt's scored responses.
  double agreeing = 0;
  int64_t compared = 0;
  size_t k = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<double> good, bad;
    for (size_t j = 0; j < responses[i].size(); ++j, ++k) {
      if (right[k] < 0 || !responses[i][j].score) continue;
      (right[k] == 1 ? good : bad).push_back(*responses[i][j].score);
    }
    for (double g : good)
      for (double b : bad) {
        agreeing += g > b ? 1.0 : (g == b ? 0.5 : 0.0);
        ++compared;
      }
  }
  if (compared > 0) out["monitor/reward_correctness_agreement"] = agreeing / static_cast<double>(compared);
  return out;
}

std::map<std::string, double> RoundMonitor::on_policy(MpoTrainer& trainer) {
  std::map<std::string, double> out;
  if (heldout_.empty()) return out;
  std::vector<const PromptRecord*> owner;
  for (const auto& p : heldout_) owner.push_back(&p);

  RolloutOptions greedy;
  greedy.sampling.greedy = true;
  greedy.sampling.max_new_tokens = max_new_tokens_;
  greedy.batch_size = batch_size_;
  const auto answers = sample_responses(trainer.policy(), trainer.processor(), heldout_, 1, greedy);
  std::vector<std::string> texts;
  int64_t token_sum = 0;
  for (const auto& a : answers) {
    texts.push_back(a.at(0).text);
    token_sum += static_cast<int64_t>(a.at(0).tokens.size());
  }
  out["monitor/heldout_tokens"] = static_cast<double>(token_sum) / static_cast<double>(texts.size());
  set_if_measured(out, "heldout_format_violations", share_of(format_ok(owner, texts), 0));
  set_if_measured(out, "heldout_accuracy", share_of(correct(owner, texts), 1));

  if (trainer.can_run_reference()) {
    RolloutOptions policy_samples;  // the policy's own distribution
    policy_samples.sampling.temperature = 1.0;
    policy_samples.sampling.top_k = 0;
    policy_samples.sampling.top_p = 1.0;
    policy_samples.sampling.max_new_tokens = max_new_tokens_;
    policy_samples.sampling.seed = settings_.seed;
    policy_samples.batch_size = batch_size_;
    const auto drawn = sample_responses(trainer.policy(), trainer.processor(), heldout_, 1, policy_samples);
    std::vector<PreferenceRecord> records;
    for (size_t i = 0; i < heldout_.size(); ++i) {
      const PromptRecord& p = heldout_[i];
      PreferenceRecord r;
      r.id = p.id;
      r.images = p.images;
      r.system_prompt = p.system_prompt;
      r.question = p.question;
      r.chosen = drawn[i].at(0).text;
      r.source = p.source;
      records.push_back(std::move(r));
    }
    std::vector<const PreferenceRecord*> pointers;
    for (const auto& r : records) pointers.push_back(&r);
    const auto logprobs = trainer.completion_logprobs(pointers, batch_size_);
    double sum = 0;
    for (size_t i = 0; i < records.size(); ++i) sum += logprobs.policy[i] - logprobs.reference[i];
    out["monitor/kl"] = sum / static_cast<double>(records.size());
  }
  return out;
}

std::vector<FiredAlarm> RoundMonitor::check(const std::map<std::string, double>& metrics) const {
  std::vector<FiredAlarm> fired;
  for (const auto& alarm : settings_.alarms) {
    const auto it = metrics.find("monitor/" + alarm.metric);
    if (it == metrics.end()) continue;
    const double v = it->second;
    const char* side = nullptr;
    double threshold = 0;
    if (alarm.above && v > *alarm.above) side = "above", threshold = *alarm.above;
    if (alarm.below && v < *alarm.below) side = "below", threshold = *alarm.below;
    if (side == nullptr) continue;
    fired.push_back({alarm, v,
                     fmt::format("monitor/{} = {:.4g} is {} {} ({})", alarm.metric, v, side, threshold,
                                 alarm.stop ? "stop" : "warn")});
  }
  return fired;
}

json monitor_summary(const std::vector<std::map<std::string, double>>& round_lines) {
  json rounds = json::array();
  int64_t alarms = 0;
  for (const auto& line : round_lines) {
    json row{{"round", line.count("round") ? line.at("round") : -1.0}};
    for (const auto& [key, value] : line)
      if (key.rfind("monitor/", 0) == 0) row[key] = value;
    if (line.count("monitor/alarms")) alarms += static_cast<int64_t>(line.at("monitor/alarms"));
    rounds.push_back(row);
  }
  return {{"rounds", rounds}, {"alarms", alarms}};
}

std::string monitor_table(const json& summary) {
  std::vector<std::string> columns;
  for (const auto& name : monitor_metric_names())
    for (const auto& row : summary.at("rounds"))
      if (row.contains("monitor/" + name)) {
        columns.push_back(name);
        break;
      }
  std::string out = fmt::format("{:>5}", "round");
  for (const auto& c : columns) out += fmt::format("  {:>{}}", c, std::max<size_t>(c.size(), 8));
  out += "  alarms\n";
  for (const auto& row : summary.at("rounds")) {
    out += fmt::format("{:>5}", row.at("round").get<double>());
    for (const auto& c : columns) {
      const size_t width = std::max<size_t>(c.size(), 8);
      if (row.contains("monitor/" + c))
        out += fmt::format("  {:>{}.4f}", row.at("monitor/" + c).get<double>(), width);
      else
        out += fmt::format("  {:>{}}", "-", width);
    }
    out += fmt::format("  {:>6}\n", row.value("monitor/alarms", 0.0));
  }
  return out;
}

}  // namespace vlreward::mpo
