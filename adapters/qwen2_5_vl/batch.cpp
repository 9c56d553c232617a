#include "adapters/qwen2_5_vl/batch.h"

#include <algorithm>
#include <cstdint>

#include "adapters/common/error.h"

namespace vlreward::qwen {

PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id, PaddingSide side) {
  if (rows.empty()) throw_input_error("batch", "no sequences");
  size_t longest = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].empty()) throw_input_error("batch", "sequence {} is empty", i);
    longest = std::max(longest, rows[i].size());
  }
  const auto B = static_cast<int64_t>(rows.size()), S = static_cast<int64_t>(longest);
  PaddedBatch out{torch::full({B, S}, pad_id, torch::kInt64), torch::zeros({B, S}, torch::kInt64)};
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& row = rows[static_cast<size_t>(b)];
    const int64_t offset = side == PaddingSide::kLeft ? S - static_cast<int64_t>(row.size()) : 0;
    for (size_t j = 0; j < row.size(); ++j) {
      ids[b][offset + static_cast<int64_t>(j)] = row[j];
      mask[b][offset + static_cast<int64_t>(j)] = 1;
    }
  }
  return out;
}

torch::Tensor last_token_index(const torch::Tensor& attention_mask) {
  // Rightmost position holding a real token (works for either padding side).
  const int64_t S = attention_mask.size(1);
  auto positions = torch::arange(S, attention_mask.options().dtype(torch::kInt64)).unsqueeze(0);
  return (positions * attention_mask.to(torch::kInt64)).argmax(1);
}

}  // namespace vlreward::qwen
