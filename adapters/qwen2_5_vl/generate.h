#pragma once
// Batched generation with a KV cache: left-padded prompts, per-row sampling and per-row stopping.
#include <cstdint>
#include <vector>

#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/sampling.h"

namespace vlreward::qwen {

struct GenerationResult {
  std::vector<int64_t> tokens;  // generated ids, including the stop token when one ended the row
  bool stopped = false;         // ended on a stop token (false: max_new_tokens reached)
};

// prompt: left-padded batch (pad_batch(..., kLeft)) with its images. params: one per row, or one for all rows.
// stop_ids: e.g. eos and <|im_end|>. Finished rows are fed pad_id until every row is done.
std::vector<GenerationResult> generate(Qwen2_5_VLModel& model, const ModelInput& prompt,
                                       const std::vector<SamplingParams>& params,
                                       const std::vector<int64_t>& stop_ids, int64_t pad_id);

}  // namespace vlreward::qwen
