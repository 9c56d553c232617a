#include "adapters/qwen2_5_vl/model.h"

#include <cstdint>

#include "adapters/common/error.h"

namespace vlreward::qwen {

Qwen2_5_VLModelImpl::Qwen2_5_VLModelImpl(const Qwen2_5_VLConfig& config, const torch::TensorOptions& options)
    : config_(config) {
  visual = register_module("visual", VisionTower(config.vision, options));
  model = register_module("model", TextDecoder(config.text, options));
  if (!config.text.tie_word_embeddings)
    lm_head = register_module("lm_head", Linear(config.text.hidden_size, config.text.vocab_size, false, options));
}

torch::Tensor Qwen2_5_VLModelImpl::image_embeddings(const torch::Tensor& pixel_values,
                                                    const std::vector<GridTHW>& grids) const {
  return visual->forward(pixel_values, grids);
}

torch::Tensor Qwen2_5_VLModelImpl::lm_logits(const torch::Tensor& hidden) const {
  return lm_head ? lm_head->forward(hidden) : at::linear(hidden, model->embed_weight());
}

RopeIndex Qwen2_5_VLModelImpl::rope_index(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                          const std::vector<GridTHW>& grids) const {
  auto ids = input_ids.to(torch::kCPU, torch::kInt64).contiguous();
  torch::Tensor mask;
  if (attention_mask.defined()) mask = attention_mask.to(torch::kCPU, torch::kInt64).contiguous();
  RopeIndexInput in;
  in.input_ids = ids.data_ptr<int64_t>();
  in.attention_mask = mask.defined() ? mask.data_ptr<int64_t>() : nullptr;
  in.batch = ids.size(0);
  in.seq = ids.size(1);
  in.image_grids = grids;
  const VisionTokenIds token_ids{config_.image_token_id, config_.video_token_id, config_.vision_start_token_id};
  return compute_rope_index(in, token_ids, config_.vision.spatial_merge_size,
                            static_cast<int64_t>(config_.vision.tokens_per_second));
}

ModelOutput Qwen2_5_VLModelImpl::forward(const ModelInput& input, const ForwardOptions& options, KVCache* cache) {
  const auto& ids = input.input_ids;
  if (ids.dim() != 2) throw_input_error("input_ids", "expected [batch, seq], got {} dims", ids.dim());
  const int64_t B = ids.size(0), S = ids.size(1);
  torch::Tensor mask = input.attention_mask.defined() ? input.attention_mask.to(torch::kInt64)
                                                      : torch::ones({B, S}, torch::kInt64);
  if (mask.sizes() != ids.sizes())
    throw_input_error("attention_mask", "shape must equal input_ids' [{}, {}]", B, S);

  auto embeds = model->embed(ids);
  const int64_t image_tokens = ids.eq(config_.image_token_id).sum().item<int64_t>();
  if (input.pixel_values.defined()) {
    auto image_embeds = image_embeddings(input.pixel_values, input.image_grids).to(embeds.scalar_type());
    if (image_embeds.size(0) != image_tokens)
      throw_input_error("input_ids", "image features and image tokens do not match: tokens: {}, features {}",
                        image_tokens, image_embeds.size(0));
    auto where = ids.to(embeds.device()).eq(config_.image_token_id).unsqueeze(-1).expand_as(embeds);
    embeds = embeds.masked_scatter(where, image_embeds);
  } else if (image_tokens > 0) {
    throw_input_error("input_ids", "{} image tokens but no pixel_values", image_tokens);
  }

  const RopeIndex rope = rope_index(ids, mask, input.image_grids);
  auto position_ids = torch::tensor(rope.position_ids, torch::kInt64).view({3, B, S});
  auto deltas = torch::tensor(rope.rope_deltas, torch::kInt64);
  if (cache != nullptr) {
    if (cache->length != 0) throw_input_error("kv_cache", "forward() prefills an empty cache; use decode()");
    cache->rope_deltas = deltas;
  }
  DecoderOutput decoded = model->forward(embeds, position_ids, mask, cache, options.hidden_states);
  ModelOutput out;
  out.last_hidden_state = decoded.last_hidden_state;
  out.hidden_states = std::move(decoded.hidden_states);
  if (options.logits) out.logits = lm_logits(out.last_hidden_state);
  out.position_ids = position_ids;
  out.rope_deltas = deltas;
  return out;
}

torch::Tensor Qwen2_5_VLModelImpl::decode(const torch::Tensor& next_ids, KVCache& cache) {
  const int64_t B = next_ids.size(0), q = next_ids.size(1);
  auto steps = torch::arange(cache.length, cache.length + q, torch::kInt64);
  auto positions = (steps.view({1, q}) + cache.rope_deltas.view({B, 1})).unsqueeze(0).expand({3, B, q});
  auto key_mask = torch::cat({cache.key_mask.narrow(1, 0, cache.length).cpu(), torch::ones({B, q}, torch::kInt64)}, 1);
  auto decoded = model->forward(model->embed(next_ids), positions, key_mask, &cache, false);
  return lm_logits(decoded.last_hidden_state);
}

void Qwen2_5_VLModelImpl::set_gradient_checkpointing(const CheckpointingRules& rules) {
  model->set_gradient_checkpointing(rules.decoder_layers);
  visual->set_gradient_checkpointing(rules.vision_blocks);
}

void Qwen2_5_VLModelImpl::set_attention_impl(AttentionImpl impl) {
  model->set_attention_impl(impl);
  visual->set_attention_impl(impl);
}

void Qwen2_5_VLModelImpl::init_weights(uint64_t seed, double std) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : named_parameters()) {
    auto& t = p.value();
    const auto& name = p.key();
    auto cpu = torch::empty(t.sizes(), torch::kFloat32);
    const bool is_norm = name.find("norm") != std::string::npos || name.find("ln_q") != std::string::npos;
    if (is_norm) cpu.fill_(1.0);
    else if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) cpu.zero_();
    else cpu.normal_(0.0, std, gen);
    t.copy_(cpu);
  }
}

}  // namespace vlreward::qwen
