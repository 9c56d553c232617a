#pragma once
// Qwen2_5_VLForConditionalGeneration in LibTorch: vision tower + M-RoPE decoder + lm_head.
// Module names follow the Hugging Face hub layout (visual.*, model.*, lm_head.*), so named_parameters() are
// checkpoint keys.
#include <cstdint>
#include <torch/torch.h>

#include <optional>
#include <vector>

#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/kv_cache.h"
#include "adapters/qwen2_5_vl/pretrained_config.h"  // CheckpointingRules
#include "adapters/qwen2_5_vl/rope_index.h"
#include "adapters/qwen2_5_vl/text_decoder.h"
#include "adapters/qwen2_5_vl/vision_tower.h"

namespace vlreward::qwen {

struct ModelInput {
  torch::Tensor input_ids;       // [B, S] int64
  torch::Tensor attention_mask;  // [B, S] int64, 1 = token, 0 = padding (left or right)
  torch::Tensor pixel_values;    // [N_patches, C*T*P*P] for every image in the batch, or undefined
  std::vector<GridTHW> image_grids;
};

struct ForwardOptions {
  bool hidden_states = false;  // return the L+1 per-layer hidden states
  bool logits = true;          // run lm_head over all positions
};

struct ModelOutput {
  torch::Tensor logits;                      // [B, S, vocab] if requested
  torch::Tensor last_hidden_state;           // [B, S, hidden], after the final norm
  std::vector<torch::Tensor> hidden_states;  // if requested
  torch::Tensor position_ids;                // [3, B, S]
  torch::Tensor rope_deltas;                 // [B]
};

class Qwen2_5_VLModelImpl : public torch::nn::Module {
 public:
  // options: dtype/device of the parameters; torch::kMeta builds shapes only (no memory).
  Qwen2_5_VLModelImpl(const Qwen2_5_VLConfig& config, const torch::TensorOptions& options);

  // Full forward (prefill). With a cache, fills it from position 0 and records rope deltas.
  ModelOutput forward(const ModelInput& input, const ForwardOptions& options = {}, KVCache* cache = nullptr);

  // One incremental step: next_ids [B, q] appended after the cached prefix; returns logits [B, q, vocab].
  // New tokens are real (mask 1). Decode positions = cache length + rope delta, on all three axes.
  torch::Tensor decode(const torch::Tensor& next_ids, KVCache& cache);

  torch::Tensor image_embeddings(const torch::Tensor& pixel_values, const std::vector<GridTHW>& grids) const;
  torch::Tensor lm_logits(const torch::Tensor& hidden) const;
  // lm_head's weight [vocab, hidden] (the embedding matrix when tied).
  torch::Tensor lm_head_weight() const { return lm_head ? lm_head->weight : model->embed_weight(); }
  RopeIndex rope_index(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                       const std::vector<GridTHW>& grids) const;

  const Qwen2_5_VLConfig& config() const { return config_; }
  torch::Device device() const { return model->embed_weight().device(); }
  torch::ScalarType dtype() const { return model->embed_weight().scalar_type(); }

  // Deterministic random init (normal(0, std) weights, zero biases, unit norms) for models trained from scratch.
  void init_weights(uint64_t seed, double std = 0.02);
  // Attention of the vision tower and the decoder: kFused (scaled_dot_product_attention, the default) or kExplicit
  // (transformers' eager op order: in bf16 it rounds where transformers' eager attention does).
  void set_attention_impl(AttentionImpl impl);
  // Which layers recompute their activations in the backward pass (checkpointing.h).
  void set_gradient_checkpointing(const CheckpointingRules& rules);

  VisionTower visual{nullptr};
  TextDecoder model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  Qwen2_5_VLConfig config_;
};
TORCH_MODULE(Qwen2_5_VLModel);

}  // namespace vlreward::qwen
