#include "adapters/qwen2_5_vl/layers.h"

#include <cstdint>
#include <limits>

namespace vlreward::qwen {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias,
                       const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}, options));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_features}, options));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) const { return forward(x, torch::Tensor()); }

torch::Tensor lora_input(const torch::Tensor& x, std::initializer_list<const LinearImpl*> layers) {
  for (const LinearImpl* layer : layers)
    if (layer->lora && *layer->lora->enabled) return x.to(layer->lora->A.scalar_type());
  return {};
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x, const torch::Tensor& lora_input) const {
  auto out = base_forward(x);
  if (!lora || !*lora->enabled) return out;
  auto h = lora_input.defined() && lora_input.scalar_type() == lora->A.scalar_type() ? lora_input
                                                                                    : x.to(lora->A.scalar_type());
  if (lora->dropout > 0 && is_training()) h = torch::dropout(h, lora->dropout, /*train=*/true);
  return (out + at::linear(at::linear(h, lora->A), lora->B) * lora->scaling).to(out.scalar_type());
}

torch::Tensor LinearImpl::base_forward(const torch::Tensor& x) const {
  const int64_t in_features = weight.size(1);
  if (x.numel() != in_features || x.scalar_type() != weight.scalar_type()) return at::linear(x, weight, bias);
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  auto row = x.reshape({in_features});
  return (bias.defined() ? at::addmv(bias, weight, row) : at::mv(weight, row)).view(sizes);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, const torch::TensorOptions& options) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}, options));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) const {
  auto x32 = x.to(torch::kFloat32);
  auto variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  x32 = x32 * torch::rsqrt(variance + eps);
  return weight * x32.to(x.scalar_type());
}

GatedMLPImpl::GatedMLPImpl(int64_t hidden, int64_t intermediate, bool with_bias,
                           const torch::TensorOptions& options) {
  gate_proj = register_module("gate_proj", Linear(hidden, intermediate, with_bias, options));
  up_proj = register_module("up_proj", Linear(hidden, intermediate, with_bias, options));
  down_proj = register_module("down_proj", Linear(intermediate, hidden, with_bias, options));
}

torch::Tensor GatedMLPImpl::forward(const torch::Tensor& x) const {
  const auto shared = lora_input(x, {gate_proj.get(), up_proj.get()});
  return down_proj->forward(torch::silu(gate_proj->forward(x, shared)) * up_proj->forward(x, shared));
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, x.size(-1) - half);
  return torch::cat({-x2, x1}, -1);
}

torch::Tensor rope_inv_freq(int64_t dim, double theta) {
  auto exponents = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  return 1.0 / torch::pow(theta, exponents);
}

double masked_score(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return std::numeric_limits<float>::lowest();
    case torch::kFloat64: return std::numeric_limits<double>::lowest();
    case torch::kBFloat16: return -3.3895313892515355e38;  // finfo(bfloat16).min
    case torch::kFloat16: return -65504.0;
    default: TORCH_CHECK(false, "masked_score: unsupported dtype ", dtype);
  }
}

}  // namespace vlreward::qwen

namespace vlreward::qwen {

AttentionImpl default_attention_impl() { return AttentionImpl::kFused; }

torch::Tensor scaled_scores(const torch::Tensor& q, const torch::Tensor& k, double scale) {
  // [..., q, d] x [..., kv, d] -> [..., q, kv], then the scale, in transformers' eager order. Not baddbmm with
  // beta = 0: some small-batch kernels still multiply their uninitialised output by beta, so garbage that happens
  // to be NaN survives (seen as a flaky NaN in one-token decode steps).
  const int64_t q_len = q.size(-2), kv_len = k.size(-2), d = q.size(-1);
  auto q3 = q.reshape({-1, q_len, d});
  auto k3 = k.reshape({-1, kv_len, d});
  auto out_sizes = q.sizes().vec();
  out_sizes.back() = kv_len;
  return at::bmm(q3, k3.transpose(1, 2)).mul_(scale).view(out_sizes);
}

namespace {

// [B, kv_heads, S, d] -> [B, kv_heads * n_rep, S, d], as transformers' repeat_kv.
torch::Tensor repeat_kv(const torch::Tensor& x, int64_t n_rep) {
  const auto B = x.size(0), H = x.size(1), S = x.size(2), D = x.size(3);
  return x.unsqueeze(2).expand({B, H, n_rep, S, D}).reshape({B, H * n_rep, S, D});
}

}  // namespace

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& additive_mask, AttentionImpl impl, bool is_causal) {
  TORCH_CHECK(!is_causal || (!additive_mask.defined() && q.size(-2) == k.size(-2)),
              "attention: is_causal needs q_len == kv_len and no mask");
  const int64_t n_rep = q.size(1) / k.size(1);
  TORCH_CHECK(n_rep >= 1 && q.size(1) == n_rep * k.size(1) && v.size(1) == k.size(1),
              "attention: query heads must be a multiple of the key/value heads");
  // The CPU flash kernel takes grouped K/V directly; CUDA's memory-efficient kernel (the one masked batches need)
  // does not, so there the heads are expanded as before.
  if (impl == AttentionImpl::kFused && (n_rep == 1 || q.device().is_cpu()))
    return at::scaled_dot_product_attention(q, k, v, additive_mask.defined() ? std::optional(additive_mask)
                                                                             : std::nullopt,
                                            0.0, is_causal, std::nullopt, /*enable_gqa=*/n_rep > 1);
  if (n_rep > 1) return attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), additive_mask, impl, is_causal);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = scaled_scores(q, k, scale);
  if (additive_mask.defined()) scores.add_(additive_mask);
  if (is_causal) {
    const int64_t n = q.size(-2);
    auto above = torch::ones({n, n}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(1);
    scores.masked_fill_(above, masked_score(scores.scalar_type()));
  }
  auto probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  return torch::matmul(probs, v);
}

}  // namespace vlreward::qwen
