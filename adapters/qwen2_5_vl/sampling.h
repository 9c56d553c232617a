#pragma once
// Next-token selection: greedy, or temperature → top-k → top-p (transformers' warper order) then a draw from
// a per-request seeded generator, so a request's samples do not depend on what else is in the batch.
#include <cstdint>
#include <random>
#include <vector>

namespace vlreward::qwen {

struct SamplingParams {
  bool greedy = true;
  double temperature = 1.0;
  int64_t top_k = 0;    // 0 = off
  double top_p = 1.0;   // 1 = off
  uint64_t seed = 0;
  int64_t max_new_tokens = 64;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // logits: one row of `vocab` floats. Returns the chosen token id.
  int64_t next(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;
  std::vector<int64_t> order_;
};

}  // namespace vlreward::qwen
