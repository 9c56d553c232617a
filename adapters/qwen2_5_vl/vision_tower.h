#pragma once
// Qwen2.5-VL vision tower: Conv3d patch embed, 2-D rotary, windowed/full attention blocks, PatchMerger.
#include <cstdint>
#include <torch/torch.h>

#include <vector>

#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/layers.h"
#include "adapters/qwen2_5_vl/rope_index.h"

namespace vlreward::qwen {

// Window layout of a set of images (transformers' get_window_index), computed on the CPU with plain loops.
struct VisionWindows {
  std::vector<int64_t> window_index;       // merged-token order inside windows -> raster id
  std::vector<int32_t> cu_window_seqlens;  // patch units, duplicates (empty windows) removed
  std::vector<int32_t> cu_seqlens;         // full attention: one segment per frame
};
VisionWindows vision_windows(const std::vector<GridTHW>& grids, const Qwen2_5_VLVisionConfig& config);

class VisionAttentionImpl : public torch::nn::Module {
 public:
  VisionAttentionImpl(const Qwen2_5_VLVisionConfig& config, const torch::TensorOptions& options);
  // x [N, hidden]; cos/sin [N, head_dim] fp32; segments: cu_seqlens boundaries (attention within each).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::vector<int32_t>& segments) const;

  Linear qkv{nullptr}, proj{nullptr};
  int64_t num_heads, head_dim;
  AttentionImpl impl = default_attention_impl();
};
TORCH_MODULE(VisionAttention);

class VisionBlockImpl : public torch::nn::Module {
 public:
  VisionBlockImpl(const Qwen2_5_VLVisionConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::vector<int32_t>& segments) const;

  RMSNorm norm1{nullptr}, norm2{nullptr};
  VisionAttention attn{nullptr};
  GatedMLP mlp{nullptr};
};
TORCH_MODULE(VisionBlock);

class VisionTowerImpl : public torch::nn::Module {
 public:
  VisionTowerImpl(const Qwen2_5_VLVisionConfig& config, const torch::TensorOptions& options);

  // pixel_values [N_patches, C*T*P*P]; returns merged embeddings [N_patches / merge^2, out_hidden] in raster
  // order, images concatenated. If block_outputs is given, it receives each block's output (window order, as
  // transformers holds them internally).
  torch::Tensor forward(const torch::Tensor& pixel_values, const std::vector<GridTHW>& grids,
                        std::vector<torch::Tensor>* block_outputs = nullptr) const;

  // kFused (scaled_dot_product_attention) is the default; kExplicit is the reference path.
  void set_attention_impl(AttentionImpl impl);
  // Each block recomputes its activations in the backward pass (checkpointing.h) instead of keeping them.
  void set_gradient_checkpointing(bool enabled) { checkpoint_blocks_ = enabled; }
  const Qwen2_5_VLVisionConfig& config() const { return config_; }

 private:
  Qwen2_5_VLVisionConfig config_;
  torch::Tensor patch_weight_;  // patch_embed.proj.weight [hidden, C, T, P, P] (Conv3d, no bias)
  std::vector<VisionBlock> blocks_;
  RMSNorm merger_norm_{nullptr};
  Linear merger_fc1_{nullptr}, merger_fc2_{nullptr};
  torch::Tensor inv_freq_;
  bool checkpoint_blocks_ = false;
};
TORCH_MODULE(VisionTower);

}  // namespace vlreward::qwen
