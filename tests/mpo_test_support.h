#pragma once
// The multimodal preference pairs of tests/fixtures/mpo_step as the MPO trainer batches them, for the suites that
// run the model on them.
#include <cstdint>
#include <string>
#include <vector>

#include "adapters/hf/qwen2_5_vl_processor.h"
#include "mpo/logprobs.h"
#include "mpo/pair_tokenization.h"
#include "reward/preference_data.h"

namespace vlreward::test_support {

inline const std::string kMpoStepPairs = std::string(VLREWARD_FIXTURES_DIR) + "/mpo_step/pairs.jsonl";

// Pairs first .. first + count - 1 of the fixture, tokenized and concatenated (chosen rows, then rejected rows).
inline mpo::ConcatenatedBatch fixture_micro_batch(const Qwen2_5_VLProcessor& processor, int64_t first, int64_t count) {
  const auto records = read_preference_jsonl(kMpoStepPairs);
  std::vector<mpo::PreferencePairTokens> tokens;
  std::vector<float> pixels;
  std::vector<qwen::GridTHW> grids;
  int64_t rows = 0, row_size = 0;
  for (int64_t i = first; i < first + count; ++i) {
    const auto& record = records.at(static_cast<size_t>(i));
    auto pair = mpo::tokenize_pair(processor, record, record.source);
    tokens.push_back(pair.tokens);
    pixels.insert(pixels.end(), pair.images.pixel_values.begin(), pair.images.pixel_values.end());
    grids.insert(grids.end(), pair.images.grid_thw.begin(), pair.images.grid_thw.end());
    rows += pair.images.rows;
    row_size = pair.images.row_size;
  }
  const auto pixel_values = torch::from_blob(pixels.data(), {rows, row_size}, torch::kFloat32).clone();
  return mpo::build_concatenated_batch(tokens, processor.pad_token_id(), pixel_values, grids);
}

}  // namespace vlreward::test_support
