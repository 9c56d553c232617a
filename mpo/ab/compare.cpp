#include "mpo/ab/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>

#include <torch/torch.h>

#include "adapters/common/error.h"
#include "adapters/common/progress.h"
#include "adapters/image/thumbnail.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "plugin/registry.h"
#include "reward/backends.h"
#include "reward/batch_scoring.h"

namespace vlreward::mpo {
namespace fs = std::filesystem;

std::vector<Response> generate_for_policy(const std::string& dir, const std::string& label,
                                          const std::vector<PromptRecord>& prompts, const AbCompareOptions& options) {
  const auto dtype = qwen::parse_parameter_dtype(options.dtype, "--policy-dtype");
  const torch::Device device = qwen::parse_device(options.device, "--policy-device");
  // The model lives only in this scope: freed before the next policy loads.
  auto model = qwen::load_pretrained(dir, dtype, device).model;
  const auto processor = Qwen2_5_VLProcessor::from_directory(dir, options.processor);

  std::unique_ptr<ProgressBar> bar;
  if (options.progress) bar = std::make_unique<ProgressBar>("generate " + label, static_cast<int64_t>(prompts.size()), "prompts");
  int64_t reported = 0;
  auto responses = sample_responses(model, processor, prompts, 1, options.rollout, [&](int64_t done, int64_t) {
    if (bar) bar->advance(done - reported);
    reported = done;
  });
  if (bar) bar->finish();
  std::vector<Response> out;
  out.reserve(responses.size());
  for (auto& r : responses) out.push_back(std::move(r.front()));
  return out;
}

std::vector<AbRow> make_rows(const std::vector<PromptRecord>& prompts, const std::vector<Response>& a,
                             const std::vector<Response>& b) {
  if (a.size() != prompts.size() || b.size() != prompts.size())
    throw std::invalid_argument("make_rows: one response per prompt and policy expected");
  std::vector<AbRow> rows(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    rows[i].id = prompts[i].id;
    rows[i].question = prompts[i].question;
    rows[i].reference = prompts[i].reference;
    rows[i].response_a = a[i].text;
    rows[i].response_b = b[i].text;
    rows[i].stopped_a = a[i].stopped;
    rows[i].stopped_b = b[i].stopped;
    for (size_t k = 0; k < prompts[i].images.size(); ++k) {
      try {
        rows[i].thumbnails.push_back(thumbnail_data_uri(prompts[i].images[k], prompts[i].source));
      } catch (const InputError& e) {  // the report shows the prompt without it; the comparison is unaffected
        std::fprintf(stderr, "ab-compare: no thumbnail for image %zu of %s: %s\n", k + 1, prompts[i].id.c_str(), e.what());
      }
    }
  }
  return rows;
}

void score_rows(RewardBackend& reward, const std::vector<PromptRecord>& prompts, std::vector<AbRow>& rows,
                int64_t batch_size, bool progress) {
  if (batch_size <= 0) throw InputError("--reward-batch-size", "must be positive");
  if (rows.size() != prompts.size()) throw std::invalid_argument("score_rows: one row per prompt expected");
  // Items in order (row 0 A, row 0 B, row 1 A, ...): a row's two responses usually share a batch. When both
  // policies gave the same text, it is scored once and both get that score: a tie, not a win decided by the
  // float noise of two different batches.
  struct Item {
    size_t row;
    bool b;
  };
  std::vector<Item> items;
  for (size_t i = 0; i < rows.size(); ++i) {
    items.push_back({i, false});
    if (rows[i].response_b != rows[i].response_a) items.push_back({i, true});
  }
  std::unique_ptr<ProgressBar> bar;
  if (progress) bar = std::make_unique<ProgressBar>("score", static_cast<int64_t>(items.size()), "responses");
  int64_t failed = 0;
  const auto results = score_in_batches(
      reward, items.size(), batch_size,
      [&](size_t k) {
        const auto& row = rows[items[k].row];
        return reward_request(prompts[items[k].row], items[k].b ? row.response_b : row.response_a,
                              row.id + (items[k].b ? "/b" : "/a"));
      },
      [&](const std::vector<RewardResult>& batch_results) {
        for (const auto& r : batch_results) failed += r.ok() ? 0 : 1;
        if (bar) bar->advance(static_cast<int64_t>(batch_results.size()), failed ? std::to_string(failed) + " failed" : "");
      });
  for (size_t k = 0; k < items.size(); ++k) {
    auto& row = rows[items[k].row];
    std::optional<double>& score = items[k].b ? row.reward_b : row.reward_a;
    std::string& error = items[k].b ? row.error_b : row.error_a;
    score = results[k].score;
    error = results[k].error;
  }
  for (auto& row : rows)
    if (row.response_b == row.response_a) {
      row.reward_b = row.reward_a;
      row.error_b = row.error_a;
    }
  if (bar) bar->finish(failed ? std::to_string(failed) + " failed" : "");
}

void check_ab_compare_options(const AbCompareOptions& options) {
  auto require = [](bool ok, const char* option, const char* rule) {
    if (!ok) throw InputError(option, rule);
  };
  require(!options.label_a.empty() && !options.label_b.empty(), "--label-a/--label-b", "must not be empty");
  const auto& s = options.rollout.sampling;
  require(s.max_new_tokens > 0, "--max-new-tokens", "must be positive");
  if (!s.greedy) {
    require(s.temperature > 0, "--temperature", "must be >= 0 (0: greedy decoding)");
    require(s.top_p > 0 && s.top_p <= 1, "--top-p", "must be in (0, 1]");
    require(s.top_k >= 0, "--top-k", "must be >= 0");
  }
  require(options.rollout.batch_size > 0, "--batch-size", "must be positive");
  require(options.reward_batch_size > 0, "--reward-batch-size", "must be positive");
  require(options.tie_epsilon >= 0, "--tie-epsilon", "must be >= 0");
  require(options.bootstrap.resamples > 0, "--bootstrap", "must be positive");
}

AbResult run_ab_compare(const AbCompareOptions& options, const nlohmann::json& reward_config) {
  check_ab_compare_options(options);
  const auto prompts = read_prompt_jsonl(options.prompts_path, options.image_root);
  for (const auto* dir : {&options.policy_a, &options.policy_b})
    if (!fs::exists(fs::path(*dir) / "config.json"))
      throw InputError(*dir, "not a Hugging Face checkpoint directory (no config.json)");

  RewardRegistry registry;
  register_reward_backends(registry);
  auto reward = registry.create(reward_config);  // before generating: a bad config fails in seconds, not hours

  auto responses_a = generate_for_policy(options.policy_a, options.label_a, prompts, options);
  auto responses_b = generate_for_policy(options.policy_b, options.label_b, prompts, options);

  AbResult result;
  result.label_a = options.label_a;
  result.label_b = options.label_b;
  result.policy_a = options.policy_a;
  result.policy_b = options.policy_b;
  result.prompts_path = options.prompts_path;
  result.reward_name = reward->name();
  result.tie_epsilon = options.tie_epsilon;
  result.bootstrap = options.bootstrap;
  const auto& s = options.rollout.sampling;
  result.settings = {
      {"generation",
       {{"greedy", s.greedy}, {"max_new_tokens", s.max_new_tokens}, {"batch_size", options.rollout.batch_size},
        {"dtype", options.dtype}, {"device", options.device}}},
      // Only the backend type: configs can hold credentials (a remote backend's token).
      {"reward", {{"type", reward_config.value("type", std::string())}, {"batch_size", options.reward_batch_size}}}};
  if (!s.greedy) {
    auto& g = result.settings["generation"];
    g["temperature"] = s.temperature;
    g["top_k"] = s.top_k;
    g["top_p"] = s.top_p;
    g["seed"] = s.seed;
  }
  if (options.processor.min_pixels) result.settings["generation"]["min_pixels"] = *options.processor.min_pixels;
  if (options.processor.max_pixels) result.settings["generation"]["max_pixels"] = *options.processor.max_pixels;

  result.rows = make_rows(prompts, responses_a, responses_b);
  score_rows(*reward, prompts, result.rows, options.reward_batch_size, options.progress);
  summarize(result);
  return result;
}

}  // namespace vlreward::mpo
