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

// ---- MPO trainer: bf16 autocast and optimizer-state keys -------------------------------------------------------
#include <ATen/autocast_mode.h>

#include <sstream>
#include <string>
#include <type_traits>

namespace vlreward::compat {

// CUDA bf16 autocast for a scope (torch.autocast("cuda", dtype=torch.bfloat16)): matmuls and convolutions run
// in bf16, reductions in float32; restores the previous mode on exit. LibTorch 2.4 generalised the API per
// device type (the 1.13 names are deprecated there).
class CudaBf16Autocast {
 public:
  explicit CudaBf16Autocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
#if VLREWARD_TORCH_AT_LEAST(2, 4)
    was_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    previous_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
    was_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
    at::autocast::increment_nesting();
  }
  ~CudaBf16Autocast() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if VLREWARD_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, was_enabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, previous_dtype_);
#else
    at::autocast::set_enabled(was_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
#endif
  }
  CudaBf16Autocast(const CudaBf16Autocast&) = delete;
  CudaBf16Autocast& operator=(const CudaBf16Autocast&) = delete;

 private:
  bool enabled_;
  bool was_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

// The key of a parameter in Optimizer::state(): LibTorch 1.13 keys by the TensorImpl address printed as a string,
// 2.x by the TensorImpl pointer itself. Picked from the map's key type, so no version number is guessed.
template <typename Optimizer>
auto optimizer_state_key(Optimizer& optimizer, const torch::Tensor& param) {
  using Key = typename std::decay_t<decltype(optimizer.state())>::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << static_cast<const void*>(param.unsafeGetTensorImpl());
    return text.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

}  // namespace vlreward::compat
