#pragma once
// reward-train's configuration: a YAML (or JSON) file read strictly, then key=value overrides. Unknown keys and
// bad values are errors naming the key path ("stages[1].learning_rate: must be > 0").
//
//   model:      {path, dtype: float32|bfloat16, device: cpu|cuda|cuda:N, min_pixels, max_pixels}
//   value_head: {path, init: normal|zeros, seed}   # path: start from a saved head (value_head.safetensors);
//                                                  # else a fresh head: weight ~ normal(0, 1/sqrt(hidden+1)) (the
//                                                  # reward-head init of OpenAI's lm-human-preferences), bias 0,
//                                                  # drawn from `seed`; or all zeros (every pair starts tied)
//   freeze:     {vision_tower, merger, llm}        # vision_tower (visual.* except visual.merger.*) is frozen by
//                                                  # default, as the paper trains; the value head always trains
//   data:       {image_root, shuffle}
//   train:      {weight_decay, adam_beta1, adam_beta2, adam_epsilon, max_grad_norm, gradient_accumulation_steps,
//                seed, num_threads, gradient_checkpointing,
//                shard_optimizer, allreduce_bucket_mb,
//                collective_timeout_s}             # shared by every stage
//   stages:     [{name, data: FILE | [FILE, ...], epochs, learning_rate, warmup_ratio, batch_size}, ...]
//   eval:       {data, batch_size}                 # optional: accuracy/margin on these pairs after every stage
//   output:     {dir, jsonl, tensorboard, progress}
//
// Overrides: "train.seed=3", and stages by index, "stages.1.learning_rate=1e-6" (0-based).
// Relative paths are relative to the working directory (as the other command lines do).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/qwen2_5_vl/memory_plan.h"
#include "adapters/qwen2_5_vl/pretrained_config.h"

namespace vlreward {

struct RewardTrainConfig {
  qwen::ModelSource model;
  struct ValueHeadInit {
    std::string path;               // empty: a fresh head
    std::string init = "normal";    // "normal" or "zeros" (fresh heads only)
    uint64_t seed = 0;
  } value_head;
  // The vision tower (visual.* except visual.merger.*) is frozen by default, as the paper trains; lm_head is never
  // used by a reward model (lm_head_in_objective false); the value head always trains.
  qwen::FreezeRules freeze{/*vision_tower=*/true, /*merger=*/false, /*llm=*/false, /*lm_head_in_objective=*/false};
  // Low-rank adapters on the backbone instead of full fine-tuning (the backbone frozen whole, freeze: does not
  // apply); the value head still trains fully.
  std::optional<qwen::LoraSettings> lora;
  struct Data {
    std::string image_root;  // for relative image paths; empty = each JSONL's directory
    bool shuffle = true;
  } data;
  struct Train {
    double weight_decay = 0.0;  // LLaMA-Factory's default; the paper reports none
    double adam_beta1 = 0.9;
    double adam_beta2 = 0.999;
    double adam_epsilon = 1e-8;
    double max_grad_norm = 1.0;  // 0 = no clipping
    int64_t gradient_accumulation_steps = 1;
    uint64_t seed = 42;
    int64_t num_threads = 0;  // 0 = LibTorch's default
    qwen::CheckpointingRules gradient_checkpointing;  // recompute activations in the backward pass
    qwen::DataParallelRules data_parallel;  // shard_optimizer, allreduce_bucket_mb, collective_timeout_s
  } train;
  struct Stage {
    std::string name;                // default "stage-<k>"
    std::vector<std::string> data;   // JSONL pair files, concatenated
    int64_t epochs = 1;
    double learning_rate = 1e-5;
    double warmup_ratio = 0.0;
    int64_t batch_size = 1;          // pairs per micro-batch (each pair is two rows of the forward)
  };
  std::vector<Stage> stages;
  struct Eval {
    std::string data;  // empty: no evaluation
    int64_t batch_size = 4;
  } eval;
  struct Output {
    std::string dir;
    bool jsonl = true;
    bool tensorboard = true;  // tensorboard/stage-N: one TensorBoard run per stage
    bool progress = true;
  } output;

  // What the memory planner needs of this config (adapters/qwen2_5_vl/memory_plan.h): no reference, no lm_head.
  qwen::TrainingSetup memory_setup() const;

  // Parses and validates. `source` names the file in errors: InputError "<source>: <key.path>: problem".
  static RewardTrainConfig from_json(const nlohmann::json& config, const std::string& source);
  // The normalised config (every key, defaults filled in).
  nlohmann::json to_json() const;
};

// load_config_file(path), then each override (stages.N.key=value reaches into the stage list), then from_json.
RewardTrainConfig load_reward_train_config(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace vlreward
