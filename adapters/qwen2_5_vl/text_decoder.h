#pragma once
// Qwen2 decoder with multimodal rotary embeddings (M-RoPE): GQA attention with q/k/v bias, SwiGLU MLP.
#include <cstdint>
#include <torch/torch.h>

#include <vector>

#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/kv_cache.h"
#include "adapters/qwen2_5_vl/layers.h"

namespace vlreward::qwen {

// cos/sin for M-RoPE, already folded over mrope_section: [B, 1, q, head_dim] each, in `dtype`.
struct RotaryTables {
  torch::Tensor cos, sin;
};

class TextAttentionImpl : public torch::nn::Module {
 public:
  TextAttentionImpl(const Qwen2_5_VLTextConfig& config, const torch::TensorOptions& options);
  // x [B, q, hidden]; additive mask [B, 1, q, kv]; cache (optional) receives this step's keys/values at `offset`.
  torch::Tensor forward(const torch::Tensor& x, const RotaryTables& rope, const torch::Tensor& mask,
                        KVCache* cache, size_t layer) const;

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t num_heads, num_kv_heads, head_dim;
  AttentionImpl impl = default_attention_impl();
};
TORCH_MODULE(TextAttention);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const Qwen2_5_VLTextConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const RotaryTables& rope, const torch::Tensor& mask,
                        KVCache* cache, size_t layer) const;

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  TextAttention self_attn{nullptr};
  GatedMLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

struct DecoderOutput {
  torch::Tensor last_hidden_state;           // after the final norm, [B, q, hidden]
  std::vector<torch::Tensor> hidden_states;  // if requested: embeddings, each layer's output, last one normed
};

class TextDecoderImpl : public torch::nn::Module {
 public:
  TextDecoderImpl(const Qwen2_5_VLTextConfig& config, const torch::TensorOptions& options);

  torch::Tensor embed(const torch::Tensor& input_ids) const;

  // inputs_embeds [B, q, hidden]; position_ids [3, B, q]; key_mask [B, past + q] (1 real / 0 pad).
  // With a cache, keys/values are appended at cache->length and attention spans the cached prefix.
  DecoderOutput forward(const torch::Tensor& inputs_embeds, const torch::Tensor& position_ids,
                        const torch::Tensor& key_mask, KVCache* cache, bool want_hidden_states) const;

  KVCache make_cache(int64_t batch, int64_t capacity) const;
  // kFused (scaled_dot_product_attention) is the default; kExplicit is the reference path. Both agree on CPU in
  // fp32 (tested).
  void set_attention_impl(AttentionImpl impl);
  // Each decoder layer recomputes its activations in the backward pass (checkpointing.h) instead of keeping them.
  void set_gradient_checkpointing(bool enabled) { checkpoint_layers_ = enabled; }
  const Qwen2_5_VLTextConfig& config() const { return config_; }
  torch::Tensor embed_weight() const { return embed_weight_; }

 private:
  RotaryTables rotary(const torch::Tensor& position_ids, torch::ScalarType dtype) const;

  Qwen2_5_VLTextConfig config_;
  torch::Tensor embed_weight_;
  std::vector<DecoderLayer> layers_;
  RMSNorm norm_{nullptr};
  torch::Tensor inv_freq_;
  bool checkpoint_layers_ = false;
};
TORCH_MODULE(TextDecoder);

}  // namespace vlreward::qwen
