#include "adapters/qwen2_5_vl/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>

#include "adapters/common/error.h"

namespace vlreward::qwen {

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (!params.greedy) {
    if (!(params.temperature > 0)) throw_input_error("temperature", "must be > 0, got {}", params.temperature);
    if (params.top_k < 0) throw_input_error("top_k", "must be >= 0, got {}", params.top_k);
    if (!(params.top_p > 0 && params.top_p <= 1)) throw_input_error("top_p", "must be in (0, 1], got {}", params.top_p);
  }
}

int64_t Sampler::next(const float* logits, int64_t vocab) {
  if (params_.greedy) return std::max_element(logits, logits + vocab) - logits;  // first maximum, as argmax
  const float neg_inf = -std::numeric_limits<float>::infinity();
  scratch_.assign(logits, logits + vocab);
  const auto temperature = static_cast<float>(params_.temperature);
  for (auto& x : scratch_) x /= temperature;
  if (params_.top_k > 0 && params_.top_k < vocab) {
    // Keep every logit >= the k-th largest (ties with the k-th survive, as in transformers).
    std::vector<float> sorted(scratch_);
    std::nth_element(sorted.begin(), sorted.begin() + (params_.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[static_cast<size_t>(params_.top_k - 1)];
    for (auto& x : scratch_)
      if (x < kth) x = neg_inf;
  }
  const float max_logit = *std::max_element(scratch_.begin(), scratch_.end());
  double total = 0;
  for (auto& x : scratch_) {
    x = x == neg_inf ? 0.0f : std::exp(x - max_logit);
    total += x;
  }
  for (auto& x : scratch_) x = static_cast<float>(x / total);
  if (params_.top_p < 1.0) {
    // Drop the least likely tokens whose cumulative probability stays <= 1 - top_p; keep at least one.
    order_.resize(static_cast<size_t>(vocab));
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(), [&](int64_t a, int64_t b) { return scratch_[a] < scratch_[b]; });
    double cumulative = 0, kept = 0;
    for (size_t i = 0; i + 1 < order_.size(); ++i) {
      cumulative += scratch_[order_[i]];
      if (cumulative > 1.0 - params_.top_p) break;
      scratch_[order_[i]] = 0.0f;
    }
    for (auto x : scratch_) kept += x;
    for (auto& x : scratch_) x = static_cast<float>(x / kept);
  }
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double cumulative = 0;
  int64_t last_nonzero = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (scratch_[i] <= 0) continue;
    last_nonzero = i;
    cumulative += scratch_[i];
    if (u < cumulative) return i;
  }
  return last_nonzero;  // rounding left u just above the total
}

}  // namespace vlreward::qwen
