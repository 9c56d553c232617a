#pragma once
// Per-layer key/value cache for incremental decoding, preallocated to a fixed capacity.
#include <cstdint>
#include <torch/torch.h>

#include <vector>

namespace vlreward::qwen {

struct KVCache {
  std::vector<torch::Tensor> keys, values;  // per layer [B, kv_heads, capacity, head_dim]
  int64_t length = 0;                       // positions filled so far
  torch::Tensor key_mask;                   // [B, capacity] int64: 1 = real token, 0 = padding
  torch::Tensor rope_deltas;                // [B] int64, set at prefill (decode position = length + delta)

  int64_t capacity() const { return keys.empty() ? 0 : keys.front().size(2); }
};

}  // namespace vlreward::qwen
