#pragma once
// Rules both trainers (mpo-train, reward-train) apply to a Qwen2.5-VL model, as transformers' Trainer does.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <regex>
#include <string>

namespace vlreward::qwen {

// transformers' get_cosine_schedule_with_warmup factor of optimizer step s (0-based): s / W for s < W, else
// max(0, ½(1 + cos(π·(s − W)/max(1, T − W)))) — the first step has lr 0 when W > 0.
inline double cosine_schedule_factor(int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (step < warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

// transformers' get_decay_parameter_names rule for one parameter name: no decay for biases and norm weights.
inline bool uses_weight_decay(const std::string& parameter_name) {
  static const std::regex no_decay(R"(bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.))");
  return !std::regex_search(parameter_name, no_decay);
}

}  // namespace vlreward::qwen
