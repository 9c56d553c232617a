#pragma once
// mpo-train's configuration: a YAML (or JSON) file read strictly against the schema below, then key=value
// overrides. Unknown keys and bad values are rejected with their key path ("train.learning_rate: ...").
//
//   model:     {path, dtype: float32|bfloat16, device: cpu|cuda|cuda:N, bf16_autocast, min_pixels, max_pixels}
//   reference: {source: model|precomputed, path, precompute}  # model: frozen copy of the initial policy (or `path`);
//                                                      # precomputed: ref_chosen_logp/ref_rejected_logp per pair
//   freeze:    {vision_tower, merger, llm}             # requires_grad false on that parameter group
//   lora:      {r, alpha, dropout, use_rslora, target_modules, vision_target_modules, init_from}  # adapters only
//   data:      {train, image_root, shuffle}
//   loss:      {loss_type, loss_weights, beta, label_smoothing, sft_tokens: completion|trl_0.28, bco_reward_shift}
//   train:     {learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon, warmup_ratio, max_grad_norm,
//               batch_size, gradient_accumulation_steps, epochs, max_steps, seed, num_threads,
//               gradient_checkpointing: bool | {decoder, vision}, logprob_chunk_size,
//               shard_optimizer, allreduce_bucket_mb, collective_timeout_s}  (the last three: torchrun runs)
//   output:    {dir, save_steps, save_total_limit, tensorboard, jsonl, progress}
//   online:    {prompts, rounds, samples_per_prompt, temperature, top_p, top_k, max_new_tokens, seed, min_margin,
//               pair_mode: max_min|max_random, pairs_per_prompt, epochs_per_round, batch_size, reward_batch_size,
//               reference_refresh_rounds, monitor: {prompts, max_prompts, format, correct, seed, alarms}}
//   reward:    any reward backend config ({type: exact_match}, {type: skywork_vl, model: ...}, {type: composite, ...})
//
// online (with reward) switches mpo-train to online rounds (mpo/online.h): data.train is then not used (the pairs
// come from sampling online.prompts), train.epochs is online.epochs_per_round and train.max_steps is not used.
// loss_type [sft] alone is SFT: data lines need only "answer" (or "chosen"), and no reference model is built.
//
// Relative paths are taken relative to the working directory (as the other command lines do).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/qwen2_5_vl/memory_plan.h"
#include "adapters/qwen2_5_vl/pretrained_config.h"
#include "mpo/logprobs.h"
#include "mpo/losses.h"
#include "mpo/monitor_config.h"
#include "mpo/pair_builder.h"

namespace vlreward::mpo {

enum class ReferenceSource { kModel, kPrecomputed };

struct TrainConfig {
  struct Model : qwen::ModelSource {  // path: the initial policy
    bool bf16_autocast = true;         // CUDA only: forward passes under bf16 autocast (float32 master weights)
  } model;
  struct Reference {
    ReferenceSource source = ReferenceSource::kModel;
    std::string path;  // reference checkpoint; empty = model.path (the initial policy)
    // Offline, source model: every pair's reference log-probs computed once before training and cached in
    // output.dir (mpo/reference_cache.h); the reference model is then released.
    bool precompute = false;
  } reference;
  qwen::FreezeRules freeze;  // lm_head trains with the decoder (lm_head_in_objective)
  struct Data {
    std::string train;       // JSONL preference pairs
    std::string image_root;  // for relative image paths; empty = the JSONL's directory
    bool shuffle = true;
  } data;
  LossConfig loss;
  SftTokens sft_tokens = SftTokens::kCompletion;
  struct Train {
    double learning_rate = 5e-6;
    double weight_decay = 0.05;
    double adam_beta1 = 0.9;
    double adam_beta2 = 0.999;
    double adam_epsilon = 1e-8;
    double warmup_ratio = 0.03;
    double max_grad_norm = 1.0;  // 0 = no clipping
    int64_t batch_size = 1;      // pairs per micro-batch
    int64_t gradient_accumulation_steps = 1;
    int64_t epochs = 1;
    int64_t max_steps = 0;  // > 0: stop after this many optimizer steps (and size the schedule by it)
    uint64_t seed = 42;
    int64_t num_threads = 0;  // 0 = LibTorch's default
    qwen::CheckpointingRules gradient_checkpointing;  // recompute activations in the backward pass
    int64_t logprob_chunk_size = 256;  // positions per lm_head + log-softmax chunk (chunked_completion_logps)
    qwen::DataParallelRules data_parallel;  // shard_optimizer, allreduce_bucket_mb, collective_timeout_s
  } train;
  // Low-rank adapters instead of full fine-tuning: the base is frozen whole (freeze: does not apply) and the
  // reference, when the loss uses one, is the base model itself with the adapters disabled (no second copy).
  std::optional<qwen::LoraSettings> lora;
  struct Output {
    std::string dir;
    int64_t save_steps = 0;  // 0 = only at the end
    int64_t save_total_limit = 2;
    bool tensorboard = true;
    bool jsonl = true;
    bool progress = true;
  } output;
  struct Online {
    std::string prompts;  // prompt JSONL (reward/preference_data.h); images relative to data.image_root or its directory
    int64_t rounds = 1;
    int64_t samples_per_prompt = 4;
    double temperature = 1.0;  // 0 = greedy
    double top_p = 1.0;
    int64_t top_k = 0;
    int64_t max_new_tokens = 256;
    uint64_t seed = 0;  // round r samples with seed + r (and draws max_random pairs with it)
    PairOptions pairs;  // min_margin, pair_mode, pairs_per_prompt (seed set per round)
    int64_t epochs_per_round = 1;
    int64_t batch_size = 16;         // generation rows per batch
    int64_t reward_batch_size = 64;  // requests per reward score() call
    // > 0: the reference becomes the current policy at the start of every k-th round (iterative DPO practice);
    // 0: it stays the initial policy.
    int64_t reference_refresh_rounds = 0;
    // Reward-hacking and drift monitors with their alarms (mpo/monitor.h); none: not monitored.
    std::optional<MonitorSettings> monitor;
  };
  std::optional<Online> online;
  nlohmann::json reward;  // the reward backend config (online only), created through the registry

  // loss_type is [sft] alone: no rejected completions, no reference model.
  bool sft_only() const { return loss.terms.size() == 1 && loss.terms[0] == LossTerm::kSft; }
  // A reference model is loaded and run: reference.source = model, unless SFT-only.
  // A reference model is loaded and run: reference.source = model, unless SFT-only or LoRA (whose reference is the
  // policy's own base, reference_is_base_model()).
  bool uses_reference_model() const { return reference.source == ReferenceSource::kModel && !sft_only() && !lora; }
  bool reference_is_base_model() const { return reference.source == ReferenceSource::kModel && !sft_only() && lora; }

  // What the memory planner needs of this config (adapters/qwen2_5_vl/memory_plan.h).
  qwen::TrainingSetup memory_setup() const;

  // Parses and validates. `source` names the file in errors. Throws InputError "<source>: <key.path>: problem".
  static TrainConfig from_json(const nlohmann::json& config, const std::string& source);
  // The normalised config (every key, defaults filled in), as stored in checkpoints.
  nlohmann::json to_json() const;
};

// load_config_file(path), then each "a.b=value" override (adapters/common/config_file.h), then from_json.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace vlreward::mpo
