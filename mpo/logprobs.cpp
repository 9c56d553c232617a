#include "mpo/logprobs.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <ATen/autocast_mode.h>

#include "adapters/common/error.h"
#include "adapters/qwen2_5_vl/batch.h"

namespace vlreward::mpo {

namespace {

void check_ids(const std::vector<int64_t>& ids, size_t pair, const char* field) {
  const std::string source = "preference pair " + std::to_string(pair);
  if (ids.empty()) throw_input_error(source, "{} has no tokens", field);
  for (size_t j = 0; j < ids.size(); ++j)
    if (ids[j] < 0) throw_input_error(source, "{} token {} has negative id {}", field, j, ids[j]);
}

std::string shape(const torch::Tensor& t) { return t.defined() ? c10::str(t.sizes()) : std::string("undefined"); }

}  // namespace

ConcatenatedBatch build_concatenated_batch(const std::vector<PreferencePairTokens>& pairs, int64_t pad_id,
                                           const torch::Tensor& pixel_values,
                                           const std::vector<qwen::GridTHW>& image_grids) {
  if (pairs.empty()) throw_input_error("preference batch", "no pairs");
  const size_t B = pairs.size();
  std::vector<std::vector<int64_t>> rows(2 * B);
  std::vector<std::pair<size_t, size_t>> spans(2 * B);  // [prompt length, row length)
  for (size_t i = 0; i < B; ++i) {
    const auto& pair = pairs[i];
    check_ids(pair.prompt, i, "prompt");
    check_ids(pair.chosen, i, "chosen");
    check_ids(pair.rejected, i, "rejected");
    for (size_t half = 0; half < 2; ++half) {
      const auto& completion = half == 0 ? pair.chosen : pair.rejected;
      auto& row = rows[half * B + i];
      row.reserve(pair.prompt.size() + completion.size());
      row.insert(row.end(), pair.prompt.begin(), pair.prompt.end());
      row.insert(row.end(), completion.begin(), completion.end());
      spans[half * B + i] = {pair.prompt.size(), row.size()};
    }
  }
  auto padded = qwen::pad_batch(rows, pad_id, qwen::PaddingSide::kRight);

  ConcatenatedBatch out;
  out.num_pairs = static_cast<int64_t>(B);
  out.completion_mask = torch::zeros_like(padded.attention_mask);
  for (size_t r = 0; r < rows.size(); ++r)
    out.completion_mask[static_cast<int64_t>(r)]
        .slice(0, static_cast<int64_t>(spans[r].first), static_cast<int64_t>(spans[r].second))
        .fill_(1);
  out.input.input_ids = padded.input_ids;
  out.input.attention_mask = padded.attention_mask;

  if (!image_grids.empty() || pixel_values.defined()) {
    int64_t patches = 0;
    for (const auto& g : image_grids) patches += g[0] * g[1] * g[2];
    if (!pixel_values.defined() || pixel_values.dim() != 2 || pixel_values.size(0) != patches || patches == 0)
      throw std::invalid_argument("build_concatenated_batch: pixel_values " + shape(pixel_values) + " do not hold the " +
                                  std::to_string(patches) + " patches of the " + std::to_string(image_grids.size()) +
                                  " image grids");
    out.input.pixel_values = torch::cat({pixel_values, pixel_values}, 0);
    out.input.image_grids = image_grids;
    out.input.image_grids.insert(out.input.image_grids.end(), image_grids.begin(), image_grids.end());
  }
  return out;
}

CompletionLogps completion_logps(const torch::Tensor& logits_in, const torch::Tensor& input_ids,
                                 const torch::Tensor& completion_mask) {
  if (!logits_in.defined() || logits_in.dim() != 3 || !logits_in.is_floating_point())
    throw std::invalid_argument("completion_logps: logits must be a floating [R, S, V] tensor, got " + shape(logits_in));
  const int64_t R = logits_in.size(0), S = logits_in.size(1), V = logits_in.size(2);
  if (S < 2) throw std::invalid_argument("completion_logps: need at least 2 positions, got " + shape(logits_in));
  if (!input_ids.defined() || input_ids.sizes() != torch::IntArrayRef{R, S} ||
      input_ids.scalar_type() != torch::kInt64)
    throw std::invalid_argument("completion_logps: input_ids must be int64 " + shape(logits_in.select(2, 0)) +
                                ", got " + shape(input_ids));
  if (!completion_mask.defined() || completion_mask.sizes() != torch::IntArrayRef{R, S})
    throw std::invalid_argument("completion_logps: completion_mask must be " + shape(logits_in.select(2, 0)) +
                                ", got " + shape(completion_mask));
  const bool upcast = logits_in.scalar_type() == torch::kHalf || logits_in.scalar_type() == torch::kBFloat16;
  const auto& logits = logits_in;
  const auto device = logits.device();

  CompletionLogps out;
  out.token_mask = completion_mask.slice(1, 1).to(device).to(torch::kBool);
  // Labels outside the completion become 0 (any valid id; their log-prob is discarded), as TRL does.
  const auto labels = torch::where(out.token_mask, input_ids.slice(1, 1).to(device), torch::zeros({}, input_ids.options().device(device)));
  {
    torch::NoGradGuard no_grad;
    const int64_t top = labels.numel() ? labels.max().item<int64_t>() : 0;
    const int64_t bottom = labels.numel() ? labels.min().item<int64_t>() : 0;
    if (top >= V || bottom < 0)
      throw std::invalid_argument("completion_logps: a completion token id (" + std::to_string(top >= V ? top : bottom) +
                                  ") is outside the vocabulary of " + std::to_string(V) + " logits");
  }
  // log_softmax(x)[y] = x[y] - logsumexp(x), one row at a time (as TRL does) so the workspace is one [S, V] row.
  std::vector<torch::Tensor> rows;
  rows.reserve(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    auto row = logits[r].slice(0, 0, S - 1);
    if (upcast) row = row.to(torch::kFloat32);
    const auto selected = row.gather(1, labels[r].unsqueeze(1)).squeeze(1);
    rows.push_back(selected - torch::logsumexp(row, 1));
  }
  const auto token_logps = torch::stack(rows);
  out.token_logps = torch::where(out.token_mask, token_logps, torch::zeros({}, token_logps.options()));
  out.sequence_logps = out.token_logps.sum(1);
  return out;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// log_softmax(h·Wᵀ)[label] per row of h, chunk by chunk; see chunked_completion_logps.
struct ChunkedTokenLogps : public torch::autograd::Function<ChunkedTokenLogps> {
  // w already in the compute dtype: converted once per pass, not per chunk (a 7B lm_head is 2 GB in float32).
  static torch::Tensor logits_of(const torch::Tensor& h, const torch::Tensor& w, c10::ScalarType compute) {
    return at::linear(h.to(compute), w).to(torch::kFloat32);
  }

  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& weight,
                               const torch::Tensor& labels, int64_t chunk_rows, c10::ScalarType compute) {
    const int64_t n = hidden.size(0);
    auto logps = torch::empty({n}, hidden.options().dtype(torch::kFloat32));
    auto lse = torch::empty({n}, logps.options());
    const auto w = weight.to(compute);
    for (int64_t begin = 0; begin < n; begin += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - begin);
      const auto logits = logits_of(hidden.narrow(0, begin, rows), w, compute);
      const auto chunk_lse = torch::logsumexp(logits, 1);
      lse.narrow(0, begin, rows).copy_(chunk_lse);
      logps.narrow(0, begin, rows).copy_(logits.gather(1, labels.narrow(0, begin, rows).unsqueeze(1)).squeeze(1) - chunk_lse);
    }
    ctx->save_for_backward({hidden, weight, labels, lse});
    ctx->saved_data["chunk_rows"] = chunk_rows;
    ctx->saved_data["compute"] = compute;
    return logps;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &hidden = saved[0], &weight = saved[1], &labels = saved[2], &lse = saved[3];
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const auto compute = ctx->saved_data["compute"].toScalarType();
    const auto grad = grad_outputs[0];
    const bool need_hidden = ctx->needs_input_grad(0), need_weight = ctx->needs_input_grad(1);
    torch::Tensor grad_hidden = need_hidden ? torch::empty_like(hidden) : torch::Tensor();
    torch::Tensor grad_weight = need_weight ? torch::zeros(weight.sizes(), weight.options().dtype(torch::kFloat32))
                                            : torch::Tensor();
    const auto w = weight.to(compute);
    const int64_t n = hidden.size(0);
    for (int64_t begin = 0; begin < n; begin += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - begin);
      const auto h = hidden.narrow(0, begin, rows).to(compute);
      // d logp / d logits = onehot(label) - softmax(logits), times the incoming gradient of each row.
      auto d_logits = logits_of(h, w, compute).sub_(lse.narrow(0, begin, rows).unsqueeze(1)).exp_().neg_();
      d_logits.scatter_add_(1, labels.narrow(0, begin, rows).unsqueeze(1),
                            torch::ones({rows, 1}, d_logits.options()));
      d_logits.mul_(grad.narrow(0, begin, rows).unsqueeze(1));
      const auto d = d_logits.to(compute);
      if (need_hidden) grad_hidden.narrow(0, begin, rows).copy_(d.mm(w));
      if (need_weight) grad_weight.add_(d.t().mm(h));
    }
    if (need_weight) grad_weight = grad_weight.to(weight.scalar_type());
    return {grad_hidden, grad_weight, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

CompletionLogps chunked_completion_logps(const torch::Tensor& hidden, const torch::Tensor& lm_head_weight,
                                         const torch::Tensor& input_ids, const torch::Tensor& completion_mask,
                                         int64_t chunk_rows) {
  if (!hidden.defined() || hidden.dim() != 3 || !hidden.is_floating_point())
    throw std::invalid_argument("chunked_completion_logps: hidden states must be a floating [R, S, H] tensor, got " +
                                shape(hidden));
  const int64_t R = hidden.size(0), S = hidden.size(1), H = hidden.size(2);
  if (S < 2) throw std::invalid_argument("chunked_completion_logps: need at least 2 positions, got " + shape(hidden));
  if (!lm_head_weight.defined() || lm_head_weight.dim() != 2 || lm_head_weight.size(1) != H)
    throw std::invalid_argument("chunked_completion_logps: lm_head weight must be [V, " + std::to_string(H) + "], got " +
                                shape(lm_head_weight));
  if (!input_ids.defined() || input_ids.sizes() != torch::IntArrayRef{R, S} || input_ids.scalar_type() != torch::kInt64)
    throw std::invalid_argument("chunked_completion_logps: input_ids must be int64 [" + std::to_string(R) + ", " +
                                std::to_string(S) + "], got " + shape(input_ids));
  if (!completion_mask.defined() || completion_mask.sizes() != torch::IntArrayRef{R, S})
    throw std::invalid_argument("chunked_completion_logps: completion_mask must be [" + std::to_string(R) + ", " +
                                std::to_string(S) + "], got " + shape(completion_mask));
  if (chunk_rows < 1) throw std::invalid_argument("chunked_completion_logps: chunk_rows must be >= 1");
  const int64_t V = lm_head_weight.size(0);
  const auto device = hidden.device();
  CompletionLogps out;
  out.token_mask = completion_mask.slice(1, 1).to(device).to(torch::kBool);
  const auto labels = input_ids.slice(1, 1).to(device).masked_select(out.token_mask);
  if (labels.numel() > 0) {
    const auto [low, high] = torch::aminmax(labels);
    const auto bounds = torch::stack({low, high}).cpu();  // one device-to-host read
    const int64_t bottom = bounds[0].item<int64_t>(), top = bounds[1].item<int64_t>();
    if (top >= V || bottom < 0)
      throw std::invalid_argument("chunked_completion_logps: a completion token id (" +
                                  std::to_string(top >= V ? top : bottom) + ") is outside the vocabulary of " +
                                  std::to_string(V) + " logits");
  }
  const auto rows = hidden.slice(1, 0, S - 1).masked_select(out.token_mask.unsqueeze(-1)).view({-1, H});
  const c10::ScalarType compute = at::autocast::is_autocast_enabled(device.type())
                                      ? at::autocast::get_autocast_dtype(device.type())
                                      : hidden.scalar_type();
  const auto selected = ChunkedTokenLogps::apply(rows, lm_head_weight, labels, chunk_rows, compute);
  out.token_logps = torch::zeros(out.token_mask.sizes(), selected.options()).masked_scatter(out.token_mask, selected);
  out.sequence_logps = out.token_logps.sum(1);
  return out;
}

PairLogps split_pairs(const torch::Tensor& sequence_logps, int64_t num_pairs) {
  if (!sequence_logps.defined() || sequence_logps.dim() != 1 || num_pairs < 1 ||
      sequence_logps.size(0) != 2 * num_pairs)
    throw std::invalid_argument("split_pairs: expected [" + std::to_string(2 * num_pairs) + "] log-probs, got " +
                                shape(sequence_logps));
  return {sequence_logps.slice(0, 0, num_pairs), sequence_logps.slice(0, num_pairs, 2 * num_pairs)};
}

torch::Tensor sft_nll(const CompletionLogps& logps, const torch::Tensor& input_ids, int64_t num_pairs,
                      SftTokens tokens) {
  if (!logps.token_logps.defined() || logps.token_logps.dim() != 2 || num_pairs < 1 ||
      logps.token_logps.size(0) != 2 * num_pairs)
    throw std::invalid_argument("sft_nll: token log-probs must have 2 * " + std::to_string(num_pairs) +
                                " rows, got " + shape(logps.token_logps));
  const auto chosen_logps = logps.token_logps.slice(0, 0, num_pairs);
  auto counted = logps.token_mask.slice(0, 0, num_pairs);
  if (tokens == SftTokens::kTrl028IgnoreIdZero) {
    if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) != 2 * num_pairs ||
        input_ids.size(1) != logps.token_logps.size(1) + 1)
      throw std::invalid_argument("sft_nll: input_ids " + shape(input_ids) + " do not match the token log-probs " +
                                  shape(logps.token_logps));
    counted = counted & (input_ids.slice(0, 0, num_pairs).slice(1, 1).to(counted.device()) != 0);
  }
  const auto total = torch::where(counted, chosen_logps, torch::zeros({}, chosen_logps.options())).sum();
  const int64_t count = counted.sum().item<int64_t>();
  return -total / static_cast<double>(std::max<int64_t>(count, 1));
}

MeanLogits mean_completion_logits(const torch::Tensor& logits, const torch::Tensor& completion_mask,
                                  int64_t num_pairs) {
  if (!logits.defined() || logits.dim() != 3 || num_pairs < 1 || logits.size(0) != 2 * num_pairs ||
      !completion_mask.defined() || completion_mask.sizes() != logits.sizes().slice(0, 2))
    throw std::invalid_argument("mean_completion_logits: logits " + shape(logits) + " / completion_mask " +
                                shape(completion_mask) + " do not describe " + std::to_string(num_pairs) + " pairs");
  torch::NoGradGuard no_grad;
  const int64_t S = logits.size(1), V = logits.size(2);
  // Position t predicts token t+1, so it counts when token t+1 is a completion token.
  const auto mask = completion_mask.slice(1, 1).to(logits.device()).to(torch::kFloat64);
  const auto row_sums = logits.slice(1, 0, S - 1).sum(2, /*keepdim=*/false, torch::kFloat64);
  auto mean_of = [&](int64_t begin, int64_t end) {
    const auto m = mask.slice(0, begin, end);
    const double tokens = m.sum().item<double>();
    return (row_sums.slice(0, begin, end) * m).sum().item<double>() / (tokens * static_cast<double>(V));
  };
  return {mean_of(0, num_pairs), mean_of(num_pairs, 2 * num_pairs)};
}

}  // namespace vlreward::mpo
