#include "mpo/rollout.h"

#include <algorithm>
#include <cstdint>

#include <torch/torch.h>

#include "adapters/common/error.h"
#include "adapters/qwen2_5_vl/batch.h"
#include "adapters/qwen2_5_vl/generate.h"
#include "mpo/pair_tokenization.h"

namespace vlreward::mpo {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::vector<int64_t> stop_ids(const Qwen2_5_VLProcessor& processor) {
  std::vector<int64_t> ids;
  if (auto im_end = processor.tokenizer().token_to_id("<|im_end|>")) ids.push_back(*im_end);
  if (auto eos = processor.tokenizer().eos_token_id()) {
    if (std::find(ids.begin(), ids.end(), *eos) == ids.end()) ids.push_back(*eos);
  }
  if (ids.empty()) throw InputError("tokenizer", "has neither <|im_end|> nor an eos token to stop generation on");
  return ids;
}

}  // namespace

uint64_t sample_seed(uint64_t base_seed, const std::string& prompt_id, int64_t sample_index) {
  uint64_t h = splitmix64(base_seed);
  for (unsigned char c : prompt_id) h = splitmix64(h ^ c);  // byte-wise: the same on every platform
  return splitmix64(h ^ static_cast<uint64_t>(sample_index));
}

std::vector<std::vector<Response>> sample_responses(qwen::Qwen2_5_VLModel& policy,
                                                    const Qwen2_5_VLProcessor& processor,
                                                    const std::vector<PromptRecord>& prompts,
                                                    int64_t samples_per_prompt, const RolloutOptions& options,
                                                    const std::function<void(int64_t, int64_t)>& on_rows) {
  if (samples_per_prompt <= 0) throw InputError("samples_per_prompt", "must be positive");
  if (options.batch_size <= 0) throw InputError("batch_size", "must be positive");
  torch::NoGradGuard no_grad;
  const bool was_training = policy->is_training();
  policy->eval();
  const auto device = policy->parameters().front().device();
  const std::vector<int64_t> stops = stop_ids(processor);

  std::vector<TokenizedPrompt> tokenized;
  tokenized.reserve(prompts.size());
  for (const auto& p : prompts)
    tokenized.push_back(tokenize_prompt(processor, p.images, p.system_prompt, p.question, p.source));

  // Rows in prompt order, a prompt's samples side by side: equal lengths share a batch, so little padding.
  struct Row {
    size_t prompt;
    int64_t sample;
  };
  std::vector<Row> rows;
  for (size_t i = 0; i < prompts.size(); ++i)
    for (int64_t j = 0; j < samples_per_prompt; ++j) rows.push_back({i, j});

  std::vector<std::vector<Response>> out(prompts.size(), std::vector<Response>(samples_per_prompt));
  const int64_t total = static_cast<int64_t>(rows.size());
  for (int64_t start = 0; start < total; start += options.batch_size) {
    const int64_t end = std::min(total, start + options.batch_size);
    std::vector<std::vector<int64_t>> ids;
    std::vector<float> pixels;
    std::vector<qwen::GridTHW> grids;
    std::vector<qwen::SamplingParams> params;
    int64_t patch_rows = 0, row_size = 0;
    for (int64_t r = start; r < end; ++r) {
      const auto& t = tokenized[rows[r].prompt];
      ids.push_back(t.ids);
      pixels.insert(pixels.end(), t.images.pixel_values.begin(), t.images.pixel_values.end());
      grids.insert(grids.end(), t.images.grid_thw.begin(), t.images.grid_thw.end());
      patch_rows += t.images.rows;
      if (t.images.rows > 0) row_size = t.images.row_size;
      qwen::SamplingParams p = options.sampling;
      p.seed = sample_seed(options.sampling.seed, prompts[rows[r].prompt].id, rows[r].sample);
      params.push_back(p);
    }
    auto batch = qwen::pad_batch(ids, processor.pad_token_id(), qwen::PaddingSide::kLeft);
    qwen::ModelInput input{batch.input_ids.to(device), batch.attention_mask.to(device), {}, grids};
    if (patch_rows > 0)
      input.pixel_values = torch::from_blob(pixels.data(), {patch_rows, row_size}, torch::kFloat32).to(device);
    auto generated = qwen::generate(policy, input, params, stops, processor.pad_token_id());
    for (int64_t r = start; r < end; ++r) {
      auto& g = generated[static_cast<size_t>(r - start)];
      Response& response = out[rows[r].prompt][static_cast<size_t>(rows[r].sample)];
      std::vector<int32_t> text_ids;
      for (int64_t id : g.tokens) {
        if (std::find(stops.begin(), stops.end(), id) != stops.end()) break;
        text_ids.push_back(static_cast<int32_t>(id));
      }
      response.text = processor.tokenizer().decode(text_ids, /*skip_special_tokens=*/true);
      response.tokens = std::move(g.tokens);
      response.stopped = g.stopped;
    }
    if (on_rows) on_rows(end, total);
  }
  if (was_training) policy->train();
  return out;
}

RewardRequest reward_request(const PromptRecord& prompt, const std::string& response, const std::string& id) {
  RewardRequest request = RewardRequest::single_turn(id, prompt.images, prompt.question, response, prompt.reference);
  request.system_prompt = prompt.system_prompt;
  return request;
}

}  // namespace vlreward::mpo
