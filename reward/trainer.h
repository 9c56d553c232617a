#pragma once
// Bradley-Terry training of a Skywork-VL style reward model: the Qwen2.5-VL backbone + a value head (Linear
// hidden -> 1 with bias, fp32) read at the last real token of each right-padded row, exactly as the skywork_vl
// backend scores (reward/model_inputs.h builds both). Loss −log σ(r⁺ − r⁻), mean over the pairs of a
// micro-batch; a micro-batch of B pairs is one forward over 2B rows (B chosen, then B rejected).
//
// Stages (the paper's schedule: multimodal pairs at 1e-5, then + text-only pairs at 1e-6, vision tower frozen)
// run in order, each with its own data, epochs, learning rate, warmup and batch size, and a fresh AdamW (the
// moments do not carry over between stages). Within a stage:
//   - data order: epoch e of stage k visits the pairs in a Fisher-Yates permutation drawn with std::mt19937_64
//     seeded from (seed, k, e) (identity when data.shuffle is false); micro-batches of batch_size consecutive
//     pairs, gradient_accumulation_steps micro-batches per optimizer step (an epoch's last step may have fewer;
//     a step never spans two epochs); each micro-batch loss is divided by the number of micro-batches of its step;
//   - learning rate of step s (0-based) of T: lr · λ(s), λ(s) = s / W for s < W, else
//     max(0, ½(1 + cos(π·(s − W)/max(1, T − W)))), W = ceil(warmup_ratio·T) (transformers'
//     get_cosine_schedule_with_warmup; the first step has lr 0 when W > 0);
//   - gradients clipped to max_grad_norm over every trainable parameter (value head included); weight decay on
//     every trainable parameter except biases and norm weights (transformers' name patterns).
// Per step: loss, accuracy (fraction of pairs with r⁺ > r⁻; ties count as wrong), margin (mean r⁺ − r⁻),
// rewards/chosen, rewards/rejected, lr, grad_norm → the console progress bar and <output>/metrics.jsonl.
//
// LoRA (a lora: section): the backbone is frozen whole and adapters train with the value head (which trains fully,
// as PEFT's modules_to_save would); exported directories hold the merged backbone, the value head and the adapters in
// PEFT's format under adapter/; a resumed run loads the adapters onto model.path's backbone.
//
// Output: after stage k, <output>/stage-<k>/ (k from 1), and at the end <output>/final_model/: an HF checkpoint
// (weights, config.json with the training dtype, tokenizer/processor files copied from model.path) plus
// value_head.safetensors — a directory the skywork_vl backend loads as is. Each is written into a .tmp- directory
// and renamed into place; a stage directory's DONE file (written last) records the stage's config and data.
//
// Resume is at stage granularity: a rerun skips every stage whose directory has a DONE file matching the current
// config (a mismatch is an error naming what changed) and starts the next stage from the last finished one's
// weights. Because each stage starts with a fresh optimizer and draws its data order from (seed, stage, epoch),
// a resumed run ends with the same weights as an uninterrupted one (float32; bfloat16 checkpoints round-trip
// exactly too). A stage interrupted midway is redone from its start.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapters/distributed/data_parallel_adamw.h"
#include "adapters/distributed/process_group.h"
#include "adapters/hf/qwen2_5_vl_processor.h"
#include "adapters/qwen2_5_vl/lora.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/optimizer.h"
#include "reward/preference_data.h"
#include "adapters/qwen2_5_vl/training_rules.h"
#include "reward/model_inputs.h"
#include "reward/train_config.h"
#include "reward/value_head.h"

namespace vlreward {

// λ(s) above, and the weight-decay rule: the same as mpo-train's (adapters/qwen2_5_vl/training_rules.h).
using qwen::cosine_schedule_factor;
using qwen::uses_weight_decay;
// The visiting order of n pairs in epoch `epoch` of stage `stage` (see above).
std::vector<int64_t> pair_order(int64_t n, uint64_t seed, int64_t stage, int64_t epoch, bool shuffle);

struct RewardStepMetrics {
  int64_t step = 0;  // optimizer steps done in this stage, after this one (1-based)
  std::map<std::string, double> values;  // loss, accuracy, margin, rewards/chosen, rewards/rejected, lr, grad_norm
};

struct PairEvaluation {
  int64_t pairs = 0;
  double loss = 0, accuracy = 0, margin = 0;
  std::vector<double> chosen, rejected;  // per pair, in data order
};

struct RewardTrainCallbacks {
  std::function<void(int64_t stage, const RewardStepMetrics&)> on_step;           // stage from 1
  std::function<void(int64_t stage, const std::string& dir)> on_stage_done;       // also for skipped stages
  std::function<void(int64_t stage, const PairEvaluation&)> on_eval;
};

// What a reward trainer trains, built outside it: loaded from the config (load_reward_models), or made by the
// caller — a model already in memory, a test's randomly initialised one.
struct RewardModels {
  std::unique_ptr<Qwen2_5_VLProcessor> processor;
  qwen::Qwen2_5_VLModel backbone{nullptr};
  ValueHead value_head{nullptr};
};

// The processor and the backbone from model.path (in model.dtype on model.device), and the value head from
// value_head.path or freshly initialised by value_head.init and value_head.seed.
RewardModels load_reward_models(const RewardTrainConfig& config);

class RewardTrainer {
 public:
  // Trains load_reward_models(config).
  explicit RewardTrainer(RewardTrainConfig config, std::shared_ptr<dist::ProcessGroup> group = nullptr);
  // Trains the given models (moved to model.device): applies the freeze switches. Exports take their tokenizer and
  // processor files from model.path.
  // `group`: the ranks of a data-parallel run (none: a single process). Rank r runs micro-batches r, r + W, … of
  // every step (W ranks with accumulation k equal one process with accumulation W·k); rank 0 alone writes logs and
  // exported directories; evaluation splits the batches over the ranks.
  RewardTrainer(RewardTrainConfig config, RewardModels models, std::shared_ptr<dist::ProcessGroup> group = nullptr);
  ~RewardTrainer();
  RewardTrainer(const RewardTrainer&) = delete;
  RewardTrainer& operator=(const RewardTrainer&) = delete;

  // Runs every stage not yet done (see Resume above), then exports <output>/final_model; returns its path.
  std::string train(const RewardTrainCallbacks& callbacks = {});

  // --- building blocks (train() uses them; tests drive them directly) -----------------------------------------
  // Rewards of the pairs' chosen and rejected sides from one right-padded forward: {chosen [B], rejected [B]},
  // float32, differentiable. Throws InputError naming the pair's "path:line" for an undecodable image.
  std::pair<torch::Tensor, torch::Tensor> score_pairs(const std::vector<const PreferenceRecord*>& pairs);
  // Starts a stage: a fresh AdamW at `learning_rate` over the trainable parameters, a schedule of total_steps.
  void begin_stage(double learning_rate, double warmup_ratio, int64_t total_steps);
  // One optimizer step over the micro-batches (each a non-empty list of pairs), at the schedule's current lr.
  RewardStepMetrics optimizer_step(const std::vector<std::vector<const PreferenceRecord*>>& micro_batches);
  // Loss/accuracy/margin over `pairs` without gradients, batch_size pairs per forward.
  PairEvaluation evaluate(const std::vector<PreferenceRecord>& pairs, int64_t batch_size);
  // The backbone + value head as a directory the skywork_vl backend loads (written in place: callers rename).
  void export_model(const std::string& dir) const;
  // Loads backbone weights and value head from an exported directory.
  void load_model(const std::string& dir);

  qwen::Qwen2_5_VLModel& model() { return model_; }
  ValueHead& value_head() { return head_; }
  const RewardTrainConfig& config() const { return config_; }
  // Trainable parameters (hub names; the value head as v_head.summary.weight / .bias), in a fixed order.
  const std::vector<std::pair<std::string, torch::Tensor>>& trainable_parameters() const { return trainable_; }

 private:
  RewardTrainConfig config_;
  torch::Device device_;
  std::unique_ptr<Qwen2_5_VLProcessor> processor_;
  qwen::Qwen2_5_VLModel model_{nullptr};
  ValueHead head_{nullptr};
  std::optional<qwen::LoraAdapters> adapters_;  // lora: in the config
  std::vector<std::pair<std::string, torch::Tensor>> trainable_;
  std::shared_ptr<dist::ProcessGroup> group_;
  std::unique_ptr<dist::DataParallelAdamW> optimizer_;  // the stage's AdamW, float32 masters, gradients over ranks
  double learning_rate_ = 0;
  int64_t step_ = 0, total_steps_ = 0, warmup_steps_ = 0;
};

}  // namespace vlreward
