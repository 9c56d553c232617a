#pragma once
// Sampling a policy's responses to prompts with images — the first step of an online MPO round and of
// ab-compare. The prompt is rendered exactly as the trainer renders a pair's prompt (mpo/pair_tokenization.h:
// chat template with the generation prompt, image pads expanded), so what is sampled is what gets trained.
//
// Rows (prompt i, sample j) are generated in left-padded batches with a KV cache; each row draws with its own
// generator seeded from (sampling.seed, prompt id, j), so a response never depends on which batch it ran in,
// on the batch size or on the other prompts.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "adapters/hf/qwen2_5_vl_processor.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/sampling.h"
#include "reward/preference_data.h"
#include "plugin/reward.h"

namespace vlreward::mpo {

struct RolloutOptions {
  qwen::SamplingParams sampling;  // greedy, or temperature / top-k / top-p; max_new_tokens; seed: the base seed
  int64_t batch_size = 16;        // rows per generate() call
};

struct Response {
  std::string text;             // decoded, stop token and special tokens removed, not trimmed
  std::vector<int64_t> tokens;  // generated ids, including the stop token when one ended the response
  bool stopped = false;         // ended on <|im_end|> / eos (false: cut at max_new_tokens)
};

// The per-row seed: a hash of (base seed, prompt id, sample index).
uint64_t sample_seed(uint64_t base_seed, const std::string& prompt_id, int64_t sample_index);

// samples_per_prompt responses to each prompt: result[i][j]. `on_rows(done, total)` reports progress.
// Throws InputError naming the prompt's source for an undecodable image.
std::vector<std::vector<Response>> sample_responses(qwen::Qwen2_5_VLModel& policy,
                                                    const Qwen2_5_VLProcessor& processor,
                                                    const std::vector<PromptRecord>& prompts,
                                                    int64_t samples_per_prompt, const RolloutOptions& options,
                                                    const std::function<void(int64_t, int64_t)>& on_rows = {});

// The reward plugin's request for a prompt and a response (images passed on as they were given).
RewardRequest reward_request(const PromptRecord& prompt, const std::string& response, const std::string& id);

}  // namespace vlreward::mpo
