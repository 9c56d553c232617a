#include "adapters/qwen2_5_vl/text_decoder.h"

#include <cstdint>

#include "adapters/common/error.h"
#include "adapters/qwen2_5_vl/checkpointing.h"

namespace vlreward::qwen {

TextAttentionImpl::TextAttentionImpl(const Qwen2_5_VLTextConfig& c, const torch::TensorOptions& options)
    : num_heads(c.num_attention_heads), num_kv_heads(c.num_key_value_heads), head_dim(c.hidden_size / c.num_attention_heads) {
  q_proj = register_module("q_proj", Linear(c.hidden_size, num_heads * head_dim, true, options));
  k_proj = register_module("k_proj", Linear(c.hidden_size, num_kv_heads * head_dim, true, options));
  v_proj = register_module("v_proj", Linear(c.hidden_size, num_kv_heads * head_dim, true, options));
  o_proj = register_module("o_proj", Linear(num_heads * head_dim, c.hidden_size, false, options));
}

torch::Tensor TextAttentionImpl::forward(const torch::Tensor& x, const RotaryTables& rope, const torch::Tensor& mask,
                                         KVCache* cache, size_t layer) const {
  const int64_t B = x.size(0), q_len = x.size(1);
  const auto shared = lora_input(x, {q_proj.get(), k_proj.get(), v_proj.get()});
  auto q = q_proj->forward(x, shared).view({B, q_len, -1, head_dim}).transpose(1, 2);
  auto k = k_proj->forward(x, shared).view({B, q_len, -1, head_dim}).transpose(1, 2);
  auto v = v_proj->forward(x, shared).view({B, q_len, -1, head_dim}).transpose(1, 2);
  q = q * rope.cos + rotate_half(q) * rope.sin;
  k = k * rope.cos + rotate_half(k) * rope.sin;
  if (cache != nullptr) {
    const int64_t end = cache->length + q_len;
    cache->keys[layer].narrow(2, cache->length, q_len).copy_(k);
    cache->values[layer].narrow(2, cache->length, q_len).copy_(v);
    k = cache->keys[layer].narrow(2, 0, end);
    v = cache->values[layer].narrow(2, 0, end);
  }
  // No mask: every key is visible (causal within the prefill when there is no cached prefix).
  const bool is_causal = !mask.defined() && (cache == nullptr || cache->length == 0) && q_len > 1;
  auto out = attention(q, k, v, mask, impl, is_causal);  // grouped K/V: attention() handles the heads
  return o_proj->forward(out.transpose(1, 2).reshape({B, q_len, -1}));
}

DecoderLayerImpl::DecoderLayerImpl(const Qwen2_5_VLTextConfig& c, const torch::TensorOptions& options) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  self_attn = register_module("self_attn", TextAttention(c, options));
  mlp = register_module("mlp", GatedMLP(c.hidden_size, c.intermediate_size, false, options));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const RotaryTables& rope, const torch::Tensor& mask,
                                        KVCache* cache, size_t layer) const {
  auto h = x + self_attn->forward(input_layernorm->forward(x), rope, mask, cache, layer);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

TextDecoderImpl::TextDecoderImpl(const Qwen2_5_VLTextConfig& c, const torch::TensorOptions& options) : config_(c) {
  auto embed = register_module("embed_tokens", std::make_shared<torch::nn::Module>());
  embed_weight_ = embed->register_parameter("weight", torch::empty({c.vocab_size, c.hidden_size}, options));
  auto layers = register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    layers_.push_back(layers->register_module(std::to_string(i), DecoderLayer(c, options)));
  norm_ = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  inv_freq_ = rope_inv_freq(c.hidden_size / c.num_attention_heads, c.rope_theta);
}

torch::Tensor TextDecoderImpl::embed(const torch::Tensor& input_ids) const {
  return torch::embedding(embed_weight_, input_ids.to(embed_weight_.device()));
}

RotaryTables TextDecoderImpl::rotary(const torch::Tensor& position_ids, torch::ScalarType dtype) const {
  // freqs[c, b, s, j] = position * inv_freq[j] in fp32 (one multiply, as transformers' K=1 matmul).
  auto freqs = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq_.to(position_ids.device());
  auto emb = torch::cat({freqs, freqs}, -1);  // [3, B, q, head_dim]
  auto cos = emb.cos().to(dtype), sin = emb.sin().to(dtype);
  // Channel chunks (mrope_section, repeated twice) take the t, h, w axis in turn.
  std::vector<int64_t> sections = config_.mrope_section;
  sections.insert(sections.end(), config_.mrope_section.begin(), config_.mrope_section.end());
  auto fold = [&](const torch::Tensor& table) {
    std::vector<torch::Tensor> chunks;
    int64_t start = 0;
    for (size_t i = 0; i < sections.size(); ++i) {
      chunks.push_back(table[static_cast<int64_t>(i % 3)].narrow(-1, start, sections[i]));
      start += sections[i];
    }
    return torch::cat(chunks, -1).unsqueeze(1);
  };
  return {fold(cos), fold(sin)};
}

DecoderOutput TextDecoderImpl::forward(const torch::Tensor& inputs_embeds, const torch::Tensor& position_ids,
                                       const torch::Tensor& key_mask, KVCache* cache,
                                       bool want_hidden_states) const {
  const int64_t B = inputs_embeds.size(0), q_len = inputs_embeds.size(1);
  const int64_t past = cache != nullptr ? cache->length : 0;
  const int64_t kv_len = past + q_len;
  if (key_mask.size(0) != B || key_mask.size(1) != kv_len)
    throw_input_error("attention_mask", "expected shape [{}, {}], got [{}, {}]", B, kv_len, key_mask.size(0),
                      key_mask.size(1));
  if (cache != nullptr && kv_len > cache->capacity())
    throw_input_error("kv_cache", "{} positions exceed the cache capacity {}", kv_len, cache->capacity());
  const auto device = inputs_embeds.device();
  const auto dtype = inputs_embeds.scalar_type();

  // No mask where none is needed, so the fused path can use its flash kernel: a prefill whose padding is only on
  // the right (a causal query never reaches a later pad key; outputs at pad positions are never read), or a step
  // over a cache with no padding at all. Otherwise the causal + padding mask, additive with finfo.min as
  // transformers' eager path builds it.
  const auto keys = key_mask.to(torch::kInt64);
  // Both facts in one device-to-host read (this runs on every forward and decode step).
  const auto facts = torch::stack({std::get<0>(keys.cummin(1)).eq(keys).all(), keys.eq(1).all()}).cpu();
  const bool unpadded_or_right_padded = facts[0].item<bool>();
  const bool no_padding = facts[1].item<bool>();
  torch::Tensor mask;
  if (!((past == 0 && unpadded_or_right_padded) || (q_len == 1 && no_padding))) {
    auto query_pos = torch::arange(past, kv_len, torch::TensorOptions().dtype(torch::kInt64).device(device));
    auto key_pos = torch::arange(kv_len, torch::TensorOptions().dtype(torch::kInt64).device(device));
    auto allowed = key_pos.view({1, 1, 1, kv_len}).le(query_pos.view({1, 1, q_len, 1})) &
                   keys.to(device).view({B, 1, 1, kv_len}).eq(1);
    mask = torch::zeros(allowed.sizes(), torch::TensorOptions().dtype(dtype).device(device))
               .masked_fill(allowed.logical_not(), masked_score(dtype));
  }

  const RotaryTables rope = rotary(position_ids.to(device), dtype);
  DecoderOutput out;
  auto h = inputs_embeds;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (want_hidden_states) out.hidden_states.push_back(h);
    if (checkpoint_layers_ && cache == nullptr) {
      const DecoderLayer layer = layers_[i];
      h = checkpointed([layer, rope, mask, i](const torch::Tensor& x) { return layer->forward(x, rope, mask, nullptr, i); },
                       h, trainable_tensors(*layer));
    } else {
      h = layers_[i]->forward(h, rope, mask, cache, i);
    }
  }
  h = norm_->forward(h);
  if (want_hidden_states) out.hidden_states.push_back(h);
  if (cache != nullptr) {
    cache->key_mask.narrow(1, 0, kv_len).copy_(key_mask);
    cache->length = kv_len;
  }
  out.last_hidden_state = h;
  return out;
}

void TextDecoderImpl::set_attention_impl(AttentionImpl impl) {
  for (auto& layer : layers_) layer->self_attn->impl = impl;
}

KVCache TextDecoderImpl::make_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  const int64_t head_dim = config_.hidden_size / config_.num_attention_heads;
  auto options = embed_weight_.options().requires_grad(false);
  for (size_t i = 0; i < layers_.size(); ++i) {
    cache.keys.push_back(torch::zeros({batch, config_.num_key_value_heads, capacity, head_dim}, options));
    cache.values.push_back(torch::zeros({batch, config_.num_key_value_heads, capacity, head_dim}, options));
  }
  cache.key_mask = torch::zeros({batch, capacity}, torch::TensorOptions().dtype(torch::kInt64).device(options.device()));
  return cache;
}

}  // namespace vlreward::qwen
