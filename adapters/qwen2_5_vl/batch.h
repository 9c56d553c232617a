#pragma once
// Padding token rows into a batch: right padding for scoring/training, left padding for generation.
#include <cstdint>
#include <torch/torch.h>

#include <vector>

namespace vlreward::qwen {

enum class PaddingSide { kLeft, kRight };

struct PaddedBatch {
  torch::Tensor input_ids;       // [B, S] int64
  torch::Tensor attention_mask;  // [B, S] int64, 1 = token
};

PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id, PaddingSide side);

// Index of the last real token per row: [B] int64 (for right padding: length - 1).
torch::Tensor last_token_index(const torch::Tensor& attention_mask);

}  // namespace vlreward::qwen
