#pragma once
// Building blocks shared by the vision tower and the text decoder. Parameters are created with the caller's
// TensorOptions, so the same code builds a CPU/CUDA model or a shapes-only model on the meta device.
// Forward math mirrors transformers op for op (at::linear, fp32 RMSNorm statistics) for bit-level parity.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <torch/torch.h>

namespace vlreward::qwen {

// A low-rank adapter on one Linear (PEFT's LoRA layer): y = W x + b + scaling · B(A(dropout(x))), the branch
// computed in the adapter's dtype (float32 over a bf16 base, as PEFT keeps it) and the sum cast back to the layer's
// output dtype. Owned by the adapter set (lora.h), which switches all its branches on and off at once.
struct LoraBranch {
  torch::Tensor A;  // [r, in]
  torch::Tensor B;  // [out, r]
  double scaling = 1;
  double dropout = 0;  // applied in training mode only
  std::shared_ptr<const bool> enabled;
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool with_bias, const torch::TensorOptions& options);
  // One row (a decode step at batch 1) goes through gemv: BLAS gemm would repack the whole weight per call.
  torch::Tensor forward(const torch::Tensor& x) const;
  // The same, the adapter reading `lora_input` (x already in the adapter's dtype, from lora_input()) so layers that
  // read one input share one converted copy (and autograd keeps one) instead of each converting its own.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& lora_input) const;

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when the layer has none
  std::shared_ptr<LoraBranch> lora;  // null when the layer has no adapter (not a registered parameter: the base
                                     // checkpoint's names and files stay as they are)

 private:
  torch::Tensor base_forward(const torch::Tensor& x) const;
};
TORCH_MODULE(Linear);

// x in the adapter dtype of the first of `layers` with an enabled adapter (undefined when none has one): the input
// q/k/v (or gate/up) share.
torch::Tensor lora_input(const torch::Tensor& x, std::initializer_list<const LinearImpl*> layers);

// Qwen2RMSNorm: statistics in fp32, the weight multiplies the value cast back to the input dtype.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;

  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// gate/up/down with SiLU gating: down(silu(gate(x)) * up(x)).
class GatedMLPImpl : public torch::nn::Module {
 public:
  GatedMLPImpl(int64_t hidden, int64_t intermediate, bool with_bias, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(GatedMLP);

// x rotated by half its last dimension: cat(-x2, x1).
torch::Tensor rotate_half(const torch::Tensor& x);

// 1 / theta^(arange(0, dim, 2) / dim), computed with the same float32 ops as transformers.
torch::Tensor rope_inv_freq(int64_t dim, double theta);

// Additive-mask value for masked attention scores, as transformers' eager path uses (finfo(dtype).min).
double masked_score(torch::ScalarType dtype);

}  // namespace vlreward::qwen

namespace vlreward::qwen {

// How attention scores are computed. kFused (the default) is at::scaled_dot_product_attention: flash or
// memory-efficient kernels on CUDA, the fused kernel on CPU. kExplicit is transformers' eager path (matmul, fp32
// softmax), kept as the reference the tests compare against.
enum class AttentionImpl { kExplicit, kFused };
AttentionImpl default_attention_impl();

// q k^T * scale over the last two dims ([..., q, d] x [..., kv, d] -> [..., q, kv]), the scale applied by the
// BLAS product itself (one pass less over the scores than multiplying afterwards).
torch::Tensor scaled_scores(const torch::Tensor& q, const torch::Tensor& k, double scale);

// q [B, H, q, d], k/v [B, H_kv, kv, d] with H a multiple of H_kv (grouped-query attention: query head h reads kv
// head h / (H / H_kv), as transformers' repeat_kv); additive mask [B, 1, q, kv] or undefined.
// is_causal (only with q == kv and no mask): query i sees keys 0..i, which lets the fused path pick the flash kernel.
// Grouped K/V reach the fused CPU kernel as they are (no [B, H, kv, d] copy of the cache per call); elsewhere they
// are expanded first.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& additive_mask, AttentionImpl impl, bool is_causal = false);

}  // namespace vlreward::qwen
