#pragma once
// Skywork-VL Reward: Qwen2.5-VL backbone + value head, scoring exactly as the model card does: chat template
// without an explicit system message (so the default one is inserted), user [images..., question], the
// assistant response, no generation prompt; the score is the value head at the last non-pad token.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

struct SkyworkVLOptions {
  std::string model_dir;                // HF checkpoint (config.json, safetensors, tokenizer, preprocessor)
  std::string value_head_path;          // default: <model_dir>/value_head.safetensors
  std::string dtype = "float32";        // or "bfloat16"
  std::string device = "cpu";           // "cpu", "cuda", "cuda:1"
  // Attention (vision tower and decoder), named as transformers' attn_implementation: "sdpa" (scaled_dot_product_attention: flash /
  // memory-efficient kernels) or "eager" (transformers' eager op order: q k^T in the model dtype, scale, additive
  // mask, float32 softmax rounded back, probs x v). In float32 both agree to rounding; in bfloat16 only "eager"
  // rounds where transformers' eager attention does, so it reproduces an eager bf16 reference.
  std::string attention = "sdpa";
  int64_t max_batch_tokens = 8192;      // padded tokens per forward (batch size x longest sequence)
  int64_t max_batch_size = 16;
  // Most padding a batched forward may add, as a fraction of its real tokens. Default: 0.05 on CPU, where
  // batching buys no parallelism but every padded token costs as much as a real one (and attention
  // quadratically more), so only near-equal lengths share a forward; no limit on accelerators.
  std::optional<double> max_padding_fraction;
  std::optional<int64_t> min_pixels, max_pixels;
  // Longest sample scored, in tokens after the chat template (image tokens included); a longer one fails alone
  // with an error naming both numbers, before any forward. Activation memory grows with the square of a
  // sequence's length, so no text or image limit bounds it on its own. Default: the model's
  // max_position_embeddings, at most kDefaultMaxSampleTokens.
  std::optional<int64_t> max_sample_tokens;
  static constexpr int64_t kDefaultMaxSampleTokens = 32768;

  static SkyworkVLOptions from_config(const nlohmann::json& config, const std::string& where);
};

std::unique_ptr<RewardBackend> make_skywork_vl_backend(const SkyworkVLOptions& options);

}  // namespace vlreward
