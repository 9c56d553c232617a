#pragma once
// Response log-probs for preference pairs: chosen and rejected in ONE batched forward, summed over the response
// (completion) tokens only — prompt, image and padding positions never count — as TRL 0.28's
// DPOTrainer.concatenated_forward computes them, plus the SFT term's token-mean NLL.
//
// Typical use (trainer):
//   auto batch = build_concatenated_batch(pairs, pad_id, pixel_values, grids);
//   auto logits = model->forward(batch.input).logits;                          // [2B, S, V]
//   auto lp = completion_logps(logits, batch.input.input_ids, batch.completion_mask);
//   auto policy = split_pairs(lp.sequence_logps, batch.num_pairs);
//   auto nll = sft_nll(lp, batch.input.input_ids, batch.num_pairs);
//   // reference: same batch through the frozen reference model under NoGradGuard (or stored log-probs)
#include <cstdint>
#include <torch/torch.h>

#include <vector>

#include "adapters/qwen2_5_vl/model.h"

namespace vlreward::mpo {

struct PreferencePairTokens {
  std::vector<int64_t> prompt;    // chat-templated prompt incl. the image pad tokens, up to the assistant header
  std::vector<int64_t> chosen;    // completion token ids (incl. end-of-turn tokens if they are trained)
  std::vector<int64_t> rejected;
};

struct ConcatenatedBatch {
  qwen::ModelInput input;         // [2B, S]: rows 0..B-1 prompt+chosen, rows B..2B-1 prompt+rejected; right padded
  torch::Tensor completion_mask;  // [2B, S] int64: 1 on completion tokens, 0 on prompt (and image) and padding
  int64_t num_pairs = 0;
};

// Rows are prompt ++ completion, right-padded with pad_id: the same rows, masks and padding TRL 0.28 feeds the
// model (its left-padded prompt + right-padded completion, flushed left). pixel_values / image_grids hold the B
// prompts' images in pair order (as the processor returns them for the B prompts) or are undefined / empty;
// they are repeated for the rejected half. Throws InputError naming the pair and field for an empty prompt,
// chosen or rejected, or a negative id; std::invalid_argument when pixel_values does not match image_grids.
ConcatenatedBatch build_concatenated_batch(const std::vector<PreferencePairTokens>& pairs, int64_t pad_id,
                                           const torch::Tensor& pixel_values = {},
                                           const std::vector<qwen::GridTHW>& image_grids = {});

struct CompletionLogps {
  torch::Tensor token_logps;     // [R, S-1]: log p(ids[:, t+1] | ids[:, ..t]) where ids[:, t+1] is a completion token, else 0
  torch::Tensor token_mask;      // [R, S-1] bool: completion_mask[:, 1:]
  torch::Tensor sequence_logps;  // [R]: token_logps summed over t (no length normalisation)
};

// From logits [R, S, V] (position t predicts token t+1), input_ids [R, S] and completion_mask [R, S].
// Rows are processed one at a time (peak workspace one [S, V] row, as TRL). Float16/bfloat16 rows are upcast to
// float32 for the log-softmax (TRL 0.28 stays in bf16 there); autograd then keeps those float32 rows for the
// backward pass, 2x the bf16 logits' memory. float32/float64 stay as they are. Throws std::invalid_argument on
// bad shapes or a completion id >= V.
CompletionLogps completion_logps(const torch::Tensor& logits, const torch::Tensor& input_ids,
                                 const torch::Tensor& completion_mask);

// The same log-probs from the last hidden states [R, S, H] and lm_head's weight [V, H], without the logits of the
// whole batch: only the positions that predict a completion token go through lm_head + log-softmax + gather, at
// most `chunk_rows` of them at a time, and the backward pass recomputes each chunk's logits instead of keeping them.
// At no point does more than one [chunk_rows, V] block of float32 logits exist (a 7B model's 152064-entry vocabulary
// at 4k positions would otherwise take 2.5 GB per row of the batch; 256 rows are 150 MB). Logits are computed in the hidden states' dtype
// (the autocast dtype under CUDA bf16 autocast) and normalised in float32, as completion_logps does with
// model->forward()'s logits. Throws std::invalid_argument on bad shapes or a completion id >= V.
CompletionLogps chunked_completion_logps(const torch::Tensor& hidden, const torch::Tensor& lm_head_weight,
                                         const torch::Tensor& input_ids, const torch::Tensor& completion_mask,
                                         int64_t chunk_rows = 256);

struct PairLogps {
  torch::Tensor chosen;    // [B]
  torch::Tensor rejected;  // [B]
};
// Rows 0..B-1 and B..2B-1 of a [2B] tensor.
PairLogps split_pairs(const torch::Tensor& sequence_logps, int64_t num_pairs);

// Which chosen tokens the SFT term averages over.
enum class SftTokens {
  // Every chosen completion token (our default; TRL >= 0.29 and InternVL's trainer do the same).
  kCompletion,
  // TRL 0.20-0.28: labels outside the completion are set to 0 and cross_entropy uses ignore_index=0, so a real
  // completion token with id 0 is silently skipped too. Differs from kCompletion only when a chosen completion
  // contains id 0 (for Qwen2.5 that is "!"). Use for parity with TRL 0.28.
  kTrl028IgnoreIdZero,
};

// SFT term: mean NLL over the chosen rows' (rows 0..B-1) counted completion tokens of the whole micro-batch
// (a token mean, not a per-sequence mean). 0 (with a zero gradient) if no token counts (TRL gives NaN there).
torch::Tensor sft_nll(const CompletionLogps& logps, const torch::Tensor& input_ids, int64_t num_pairs,
                      SftTokens tokens = SftTokens::kCompletion);

// TRL's logits/chosen and logits/rejected metrics: the mean logit (over the vocabulary and the positions that
// predict a completion token) of the chosen rows and of the rejected rows. NaN for rows without completions.
struct MeanLogits {
  double chosen = 0;
  double rejected = 0;
};
MeanLogits mean_completion_logits(const torch::Tensor& logits, const torch::Tensor& completion_mask,
                                  int64_t num_pairs);

}  // namespace vlreward::mpo
