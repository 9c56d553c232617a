#include "adapters/qwen2_5_vl/generate.h"

#include <algorithm>
#include <cstdint>

#include "adapters/common/error.h"

namespace vlreward::qwen {

std::vector<GenerationResult> generate(Qwen2_5_VLModel& model, const ModelInput& prompt,
                                       const std::vector<SamplingParams>& params,
                                       const std::vector<int64_t>& stop_ids, int64_t pad_id) {
  torch::InferenceMode inference;
  const int64_t B = prompt.input_ids.size(0), S = prompt.input_ids.size(1);
  if (params.size() != 1 && static_cast<int64_t>(params.size()) != B)
    throw_input_error("sampling", "{} parameter sets for {} rows (give one, or one per row)", params.size(), B);
  if (prompt.attention_mask.defined()) {
    auto last_column = prompt.attention_mask.select(1, S - 1);
    if (!last_column.eq(1).all().item<bool>())
      throw_input_error("attention_mask", "generation needs left padding (the last column must be all tokens)");
  }
  std::vector<Sampler> samplers;
  int64_t max_new = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = params[params.size() == 1 ? 0 : static_cast<size_t>(b)];
    samplers.emplace_back(p);
    max_new = std::max(max_new, p.max_new_tokens);
  }
  std::vector<GenerationResult> results(static_cast<size_t>(B));
  if (max_new <= 0) return results;

  KVCache cache = model->model->make_cache(B, S + max_new);
  ForwardOptions options;
  options.logits = false;
  auto out = model->forward(prompt, options, &cache);
  auto logits = model->lm_logits(out.last_hidden_state.narrow(1, S - 1, 1));

  std::vector<bool> done(static_cast<size_t>(B), false);
  for (int64_t step = 0; step < max_new; ++step) {
    auto rows = logits.select(1, 0).to(torch::kCPU, torch::kFloat32).contiguous();
    const int64_t vocab = rows.size(1);
    std::vector<int64_t> next(static_cast<size_t>(B), pad_id);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      auto& r = results[static_cast<size_t>(b)];
      if (done[static_cast<size_t>(b)]) continue;
      const int64_t token = samplers[static_cast<size_t>(b)].next(rows[b].data_ptr<float>(), vocab);
      r.tokens.push_back(token);
      next[static_cast<size_t>(b)] = token;
      const auto& p = params[params.size() == 1 ? 0 : static_cast<size_t>(b)];
      if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
        r.stopped = true;
        done[static_cast<size_t>(b)] = true;
      } else if (static_cast<int64_t>(r.tokens.size()) >= p.max_new_tokens) {
        done[static_cast<size_t>(b)] = true;
      }
      all_done = all_done && done[static_cast<size_t>(b)];
    }
    if (all_done) break;
    auto next_ids = torch::tensor(next, torch::kInt64).view({B, 1}).to(model->device());
    logits = model->decode(next_ids, cache);
  }
  return results;
}

}  // namespace vlreward::qwen
