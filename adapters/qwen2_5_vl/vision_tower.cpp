#include "adapters/qwen2_5_vl/vision_tower.h"

#include <algorithm>
#include <cstdint>

#include "adapters/common/error.h"
#include "adapters/qwen2_5_vl/checkpointing.h"

namespace vlreward::qwen {

VisionWindows vision_windows(const std::vector<GridTHW>& grids, const Qwen2_5_VLVisionConfig& config) {
  const int64_t merge = config.spatial_merge_size;
  const int64_t unit = merge * merge;
  const int64_t window = config.window_size / merge / config.patch_size;  // in merged tokens
  VisionWindows out;
  out.cu_window_seqlens.push_back(0);
  out.cu_seqlens.push_back(0);
  int64_t offset = 0;
  for (const auto& g : grids) {
    const int64_t t = g[0], lh = g[1] / merge, lw = g[2] / merge;
    // transformers pads by a full window even when the side divides evenly; those windows are empty.
    const int64_t nh = (lh + window - lh % window) / window;
    const int64_t nw = (lw + window - lw % window) / window;
    for (int64_t f = 0; f < t; ++f) {
      for (int64_t wy = 0; wy < nh; ++wy) {
        for (int64_t wx = 0; wx < nw; ++wx) {
          int64_t count = 0;
          for (int64_t y = wy * window; y < std::min((wy + 1) * window, lh); ++y)
            for (int64_t x = wx * window; x < std::min((wx + 1) * window, lw); ++x) {
              out.window_index.push_back(offset + (f * lh + y) * lw + x);
              ++count;
            }
          const int32_t next = out.cu_window_seqlens.back() + static_cast<int32_t>(count * unit);
          if (next != out.cu_window_seqlens.back()) out.cu_window_seqlens.push_back(next);  // unique_consecutive
        }
      }
      out.cu_seqlens.push_back(out.cu_seqlens.back() + static_cast<int32_t>(g[1] * g[2]));
    }
    offset += t * lh * lw;
  }
  return out;
}

VisionAttentionImpl::VisionAttentionImpl(const Qwen2_5_VLVisionConfig& c, const torch::TensorOptions& options)
    : num_heads(c.num_heads), head_dim(c.hidden_size / c.num_heads) {
  qkv = register_module("qkv", Linear(c.hidden_size, 3 * c.hidden_size, true, options));
  proj = register_module("proj", Linear(c.hidden_size, c.hidden_size, true, options));
}

torch::Tensor VisionAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                           const torch::Tensor& sin, const std::vector<int32_t>& segments) const {
  const int64_t n = x.size(0);
  auto parts = qkv->forward(x).reshape({n, 3, num_heads, head_dim}).permute({1, 0, 2, 3}).unbind(0);
  // Rotary in fp32, cast back (transformers' apply_rotary_pos_emb_vision).
  auto c = cos.unsqueeze(-2).to(torch::kFloat32), s = sin.unsqueeze(-2).to(torch::kFloat32);
  auto q32 = parts[0].to(torch::kFloat32), k32 = parts[1].to(torch::kFloat32);
  auto q = (q32 * c + rotate_half(q32) * s).to(x.scalar_type()).transpose(0, 1);  // [heads, N, hd]
  auto k = (k32 * c + rotate_half(k32) * s).to(x.scalar_type()).transpose(0, 1);
  auto v = parts[2].transpose(0, 1);
  // Attention within each segment. A run of consecutive segments of one length is one batched call
  // ([segments, heads, len, hd]): the windows of an image are mostly equal, and so are same-sized images.
  std::vector<torch::Tensor> outputs;
  size_t i = 0;
  while (i + 1 < segments.size()) {
    const int64_t start = segments[i], len = segments[i + 1] - segments[i];
    size_t end = i + 1;
    while (end + 1 < segments.size() && segments[end + 1] - segments[end] == len) ++end;
    const int64_t count = static_cast<int64_t>(end - i);
    auto batch = [&](const torch::Tensor& t) {  // [heads, count * len, hd] -> [count, heads, len, hd]
      return t.narrow(1, start, count * len).reshape({num_heads, count, len, head_dim}).transpose(0, 1);
    };
    auto o = attention(batch(q), batch(k), batch(v), {}, impl);  // [count, heads, len, hd]
    outputs.push_back(o.permute({0, 2, 1, 3}).reshape({count * len, num_heads, head_dim}));
    i = end;
  }
  auto out = (outputs.size() == 1 ? outputs[0] : torch::cat(outputs, 0)).reshape({n, -1});
  return proj->forward(out);
}

VisionBlockImpl::VisionBlockImpl(const Qwen2_5_VLVisionConfig& c, const torch::TensorOptions& options) {
  norm1 = register_module("norm1", RMSNorm(c.hidden_size, 1e-6, options));
  norm2 = register_module("norm2", RMSNorm(c.hidden_size, 1e-6, options));
  attn = register_module("attn", VisionAttention(c, options));
  mlp = register_module("mlp", GatedMLP(c.hidden_size, c.intermediate_size, true, options));
}

torch::Tensor VisionBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                       const std::vector<int32_t>& segments) const {
  auto h = x + attn->forward(norm1->forward(x), cos, sin, segments);
  return h + mlp->forward(norm2->forward(h));
}

VisionTowerImpl::VisionTowerImpl(const Qwen2_5_VLVisionConfig& c, const torch::TensorOptions& options)
    : config_(c) {
  auto patch_embed = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  auto proj = patch_embed->register_module("proj", std::make_shared<torch::nn::Module>());
  patch_weight_ = proj->register_parameter(
      "weight", torch::empty({c.hidden_size, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size},
                             options));
  auto blocks = register_module("blocks", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < c.depth; ++i)
    blocks_.push_back(blocks->register_module(std::to_string(i), VisionBlock(c, options)));
  const int64_t merged = c.hidden_size * c.spatial_merge_size * c.spatial_merge_size;
  auto merger = register_module("merger", std::make_shared<torch::nn::Module>());
  merger_norm_ = merger->register_module("ln_q", RMSNorm(c.hidden_size, 1e-6, options));
  auto mlp = merger->register_module("mlp", std::make_shared<torch::nn::Module>());
  merger_fc1_ = mlp->register_module("0", Linear(merged, merged, true, options));
  merger_fc2_ = mlp->register_module("2", Linear(merged, c.out_hidden_size, true, options));
  inv_freq_ = rope_inv_freq(c.hidden_size / c.num_heads / 2, 10000.0);
}

void VisionTowerImpl::set_attention_impl(AttentionImpl impl) {
  for (auto& block : blocks_) block->attn->impl = impl;
}

torch::Tensor VisionTowerImpl::forward(const torch::Tensor& pixel_values, const std::vector<GridTHW>& grids,
                                       std::vector<torch::Tensor>* block_outputs) const {
  const auto& c = config_;
  const int64_t merge = c.spatial_merge_size, unit = merge * merge;
  int64_t expected_rows = 0, max_side = 0;
  for (const auto& g : grids) {
    if (g[0] <= 0 || g[1] <= 0 || g[2] <= 0 || g[1] % merge != 0 || g[2] % merge != 0)
      throw_input_error("image_grid_thw", "grid ({}, {}, {}) must be positive with h and w divisible by {}", g[0],
                        g[1], g[2], merge);
    expected_rows += g[0] * g[1] * g[2];
    max_side = std::max({max_side, g[1], g[2]});
  }
  const int64_t patch_dim = c.in_channels * c.temporal_patch_size * c.patch_size * c.patch_size;
  if (pixel_values.dim() != 2 || pixel_values.size(0) != expected_rows || pixel_values.size(1) != patch_dim)
    throw_input_error("pixel_values", "expected shape [{}, {}] from image_grid_thw, got {}", expected_rows,
                      patch_dim, fmt::format("{}", fmt::join(pixel_values.sizes(), ", ")));

  const auto device = patch_weight_.device();
  auto x = pixel_values.to(device, patch_weight_.scalar_type())
               .view({-1, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size});
  auto hidden = at::conv3d(x, patch_weight_, {}, patch_weight_.sizes().slice(2)).view({-1, c.hidden_size});

  // 2-D rotary: (row, col) of each patch in the processor's merge-block order.
  std::vector<int64_t> pos;
  pos.reserve(static_cast<size_t>(2 * expected_rows));
  for (const auto& g : grids)
    for (int64_t t = 0; t < g[0]; ++t)
      for (int64_t bh = 0; bh < g[1] / merge; ++bh)
        for (int64_t bw = 0; bw < g[2] / merge; ++bw)
          for (int64_t ih = 0; ih < merge; ++ih)
            for (int64_t iw = 0; iw < merge; ++iw) {
              pos.push_back(bh * merge + ih);
              pos.push_back(bw * merge + iw);
            }
  auto pos_ids = torch::from_blob(pos.data(), {expected_rows, 2}, torch::kInt64);
  auto table = torch::outer(torch::arange(max_side, torch::kFloat32), inv_freq_);
  auto rot = table.index({pos_ids}).flatten(1);  // [N, head_dim/2]

  const VisionWindows windows = vision_windows(grids, c);
  auto window_index = torch::tensor(windows.window_index, torch::kInt64);
  const int64_t n = hidden.size(0);
  hidden = hidden.reshape({n / unit, unit, -1}).index({window_index.to(device)}).reshape({n, -1});
  rot = rot.reshape({n / unit, unit, -1}).index({window_index}).reshape({n, -1});
  auto emb = torch::cat({rot, rot}, -1).to(device);
  auto cos = emb.cos(), sin = emb.sin();

  const auto& full = c.fullatt_block_indexes;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const bool is_full = std::find(full.begin(), full.end(), static_cast<int64_t>(i)) != full.end();
    const std::vector<int32_t>& segments = is_full ? windows.cu_seqlens : windows.cu_window_seqlens;
    if (checkpoint_blocks_) {
      const VisionBlock block = blocks_[i];
      hidden = checkpointed([block, cos, sin, segments](const torch::Tensor& x) { return block->forward(x, cos, sin, segments); },
                            hidden, trainable_tensors(*block));
    } else {
      hidden = blocks_[i]->forward(hidden, cos, sin, segments);
    }
    if (block_outputs != nullptr) block_outputs->push_back(hidden);
  }
  const int64_t merged = c.hidden_size * unit;
  auto out = merger_fc2_->forward(
      torch::gelu(merger_fc1_->forward(merger_norm_->forward(hidden).view({-1, merged}))));
  auto reverse = torch::argsort(window_index).to(device);
  return out.index({reverse});
}

}  // namespace vlreward::qwen
