#pragma once
// The MPO trainer: policy (Qwen2.5-VL from an HF dir), a frozen reference (a copy of the initial policy, or
// reference log-probs stored with the data), AdamW with linear warmup + cosine decay (transformers'
// get_cosine_schedule_with_warmup), gradient accumulation, grad-norm clipping, a seeded data order, bf16
// autocast on CUDA, per-step metrics, and exact checkpoint/resume (checkpoint.h).
//
// Offline use (mpo-train):
//   MpoTrainer trainer(config);
//   auto data = read_preference_jsonl(config.data.train, config.data.image_root);
//   if (resume) trainer.resume(dir, fingerprint);
//   trainer.train(data, fingerprint);           // epochs over `data`, checkpoints, then the final HF export
//
// Online rounds (mpo/online.h) reuse the same object: the policy, AdamW moments and δ persist across rounds;
// train_round(r, pairs) runs round r's own schedule (warmup + cosine over epochs_per_round epochs of its pairs,
// the step index counted from the round's first step) while global_step keeps counting across rounds (metrics,
// checkpoint names). A checkpoint records the round and the step it started at next to the fingerprint of that
// round's pairs file, so a resumed run continues that round on the same pairs; a checkpoint taken at a round's
// last step lets the next round start from it. Each round shuffles with its own data-order seed.
//
// SFT (loss_type [sft] alone): no reference model is built or run and only the chosen completion is forwarded;
// the loss is w_sft times the micro-batch's token-mean NLL of the chosen completions (logprobs.h sft_nll).
//
// Data order: epoch e visits the pairs in a permutation drawn by a Fisher-Yates shuffle with
// std::mt19937_64 seeded from (seed, e) (identity when data.shuffle is false); micro-batches of batch_size
// consecutive pairs; gradient_accumulation_steps micro-batches per optimizer step; an epoch's last step may
// have fewer (an optimizer step never spans two epochs, as transformers' Trainer). Each micro-batch loss is
// divided by the number of micro-batches of its step.
//
// Learning rate of optimizer step s (0-based): lr · λ(s), λ(s) = s / W for s < W, else
// max(0, ½(1 + cos(π·(s − W)/max(1, T − W)))), W = ceil(warmup_ratio·T), T = total steps (transformers'
// LambdaLR; the first step has lr 0 when W > 0). Weight decay applies to every trainable parameter except
// biases and norm weights, by transformers' name patterns (bias, layernorm, rmsnorm, .norm., _norm).
//
// Data parallelism (a process group of W ranks, e.g. under torchrun): every rank draws the same data order and
// forms the same optimizer steps; rank r runs micro-batches r, r + W, r + 2W, … of each step, so W ranks with
// accumulation k do what one process does with accumulation W·k (loss scale 1/number of micro-batches of the step,
// gradients summed over ranks — dist::DataParallelAdamW). δ (bco_pair) folds the ranks' batch rewards in
// micro-batch order, so each micro-batch uses the δ it would use in one process (TRL under accelerate instead folds
// all ranks' rewards at once). Metrics are averaged over the step's micro-batches across ranks; rank 0 alone writes
// logs, checkpoints (the optimizer shards of a sharded run come from every rank) and the final export.
// LoRA dropout draws its masks from each rank's own generator, so only dropout 0 repeats one process exactly.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "adapters/distributed/data_parallel_adamw.h"
#include "adapters/distributed/process_group.h"
#include "adapters/hf/qwen2_5_vl_processor.h"
#include "adapters/qwen2_5_vl/lora.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/optimizer.h"
#include "adapters/qwen2_5_vl/training_rules.h"
#include "mpo/data_fingerprint.h"
#include "reward/preference_data.h"
#include "mpo/running_moments.h"
#include "mpo/train_config.h"

namespace vlreward::mpo {

struct TrainState {
  int64_t global_step = 0;      // optimizer steps done
  int64_t epoch = 0;            // the epoch of the next micro-batch
  int64_t index_in_epoch = 0;   // position of the next pair in that epoch's order
  int64_t total_steps = 0;      // T of the schedule (0 until train() sizes it)
  int64_t warmup_steps = 0;     // W
  int64_t round = -1;           // online round of the current schedule (-1: offline)
  int64_t round_start_step = 0; // global_step when that round began; the schedule counts from it
  int64_t reference_round = -1; // the round whose start set the reference to the policy (-1: the initial policy)
};

struct StepMetrics {
  int64_t step = 0;  // global step after this optimizer step (1-based)
  std::map<std::string, double> values;  // loss, loss/<term>, rewards/*, logps/*, nll_loss, delta, lr, grad_norm, ...
};

struct TrainCallbacks {
  std::function<void(const StepMetrics&)> on_step;
  std::function<void(int64_t step, const std::string& dir)> on_checkpoint;
};

// λ(s) above, and transformers' weight-decay rule for one parameter name (adapters/qwen2_5_vl/training_rules.h).
using qwen::cosine_schedule_factor;
using qwen::uses_weight_decay;
// Epoch `epoch`'s visiting order of n pairs (see above). `engine_state`, when given, receives the RNG's state
// after the shuffle (stored in checkpoints as the data-order RNG state).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle,
                                 std::string* engine_state = nullptr);
// "--resume auto": the newest checkpoint-<step> of output_dir (nullopt when there is none); any other value is
// a checkpoint directory taken as is.
std::optional<std::string> resolve_resume(const std::string& resume, const std::string& output_dir);
// The online round recorded in a checkpoint's trainer_state.json (-1 for an offline checkpoint). Throws
// InputError naming the file when it is missing or unreadable.
int64_t checkpoint_round(const std::string& checkpoint_dir);

// What an MPO trainer trains, built outside it: loaded from the config's directories (load_mpo_models), or made by
// the caller — a model already in memory, a test's randomly initialised one.
struct MpoModels {
  std::unique_ptr<Qwen2_5_VLProcessor> processor;
  qwen::Qwen2_5_VLModel policy{nullptr};
  qwen::Qwen2_5_VLModel reference{nullptr};  // none for SFT-only and precomputed-reference runs
};

// The processor and the policy from model.path, and (reference.source = model, unless SFT-only) the reference from
// reference.path or model.path, in model.dtype on model.device.
MpoModels load_mpo_models(const TrainConfig& config);

class MpoTrainer {
 public:
  // Trains load_mpo_models(config).
  explicit MpoTrainer(TrainConfig config, std::shared_ptr<dist::ProcessGroup> group = nullptr);
  // Trains the given models (moved to model.device): applies the freeze switches, builds AdamW over the trainable
  // parameters. A reference must be given exactly when the config uses one (InputError otherwise). Checkpoints and
  // the exported policy take their tokenizer and processor files from model.path. `group`: the ranks of a
  // data-parallel run (none: a single process).
  MpoTrainer(TrainConfig config, MpoModels models, std::shared_ptr<dist::ProcessGroup> group = nullptr);
  ~MpoTrainer();
  MpoTrainer(const MpoTrainer&) = delete;
  MpoTrainer& operator=(const MpoTrainer&) = delete;

  // Restores everything from a checkpoint after verifying its manifest (InputError naming the file at fault).
  // The checkpoint must belong to this data (fingerprint) and to the same training config (loss, train,
  // freeze, reference sections): a mismatch is an error naming the keys.
  void resume(const std::string& checkpoint_dir, const DataFingerprint& data);

  // Trains until total steps (epochs × steps per epoch, or train.max_steps), saving checkpoints every
  // output.save_steps and at the end, then exports the policy to <output.dir>/final_model. Returns the
  // final model dir.
  std::string train(const std::vector<PreferenceRecord>& data, const DataFingerprint& fingerprint,
                    const TrainCallbacks& callbacks = {});

  // Online round `round` on its pairs: starts the round's schedule (unless a checkpoint of this round was resumed,
  // which continues it), trains config.train.epochs epochs over `data`, saving checkpoints every
  // output.save_steps and at the round's end. No export. Rounds must come in increasing order.
  void train_round(int64_t round, const std::vector<PreferenceRecord>& data, const DataFingerprint& fingerprint,
                   const TrainCallbacks& callbacks = {});
  // The reference model takes the policy's current weights (online.reference_refresh_rounds): recorded in
  // state().reference_round, and saved in checkpoints from then on (reference.safetensors) so a resume restores it.
  void refresh_reference();

  // Summed log-probabilities of each record's chosen completion, rendered as training renders it, under the policy
  // and under the reference (the reference model, or with LoRA the base with the adapters off), without gradients
  // or dropout, `batch_size` records per forward: what a KL(policy || reference) estimate needs. Throws
  // std::logic_error when the run has no reference to run (SFT-only, precomputed reference log-probs).
  struct CompletionLogprobs {
    std::vector<double> policy, reference;
    std::vector<int64_t> tokens;  // completion tokens per record
  };
  CompletionLogprobs completion_logprobs(const std::vector<const PreferenceRecord*>& records, int64_t batch_size);
  bool can_run_reference() const { return has_reference_model() || adapters_.has_value(); }

  // One optimizer step over the given micro-batches (each a non-empty list of pairs). Advances global_step.
  StepMetrics optimizer_step(const std::vector<std::vector<const PreferenceRecord*>>& micro_batches);

  // Writes <output.dir>/checkpoint-<global_step> atomically and prunes old ones; returns its path. With LoRA the
  // checkpoint holds the adapters (PEFT format), not the base weights.
  std::string save_checkpoint(const DataFingerprint& data);
  // The policy as an HF checkpoint dir (weights, config, tokenizer, processor files). With LoRA: the merged model
  // (PEFT's merge_and_unload) and, in its adapter/ subdirectory, the adapters in PEFT's format.
  void export_policy(const std::string& dir) const;

  qwen::Qwen2_5_VLModel& policy() { return policy_; }
  const Qwen2_5_VLProcessor& processor() const { return *processor_; }
  // False for SFT-only, precomputed-reference and LoRA runs.
  bool has_reference_model() const { return !reference_.is_empty(); }
  // The policy's adapters (lora: in the config), or null.
  qwen::LoraAdapters* adapters() { return adapters_ ? &*adapters_ : nullptr; }
  const TrainState& state() const { return state_; }
  const RunningMoments& running_moments() const { return running_; }
  const TrainConfig& config() const { return config_; }
  // Trainable parameters in named_parameters() order.
  const std::vector<std::pair<std::string, torch::Tensor>>& trainable_parameters() const { return trainable_; }
  // What AdamW steps: float32 master copies of bf16 trainable parameters, else those parameters themselves.
  const qwen::MasterWeights& master_weights() const { return optimizer_->master_weights(); }
  const dist::DataParallelAdamW& optimizer() const { return *optimizer_; }
  const dist::ProcessGroup& process_group() const { return *group_; }
  void set_total_steps(int64_t total_steps);
  int64_t steps_per_epoch(int64_t num_examples) const;
  // Micro-batches of one optimizer step over all ranks: gradient_accumulation_steps × world size.
  int64_t micro_batches_per_step() const;

 private:
  // Optimizer steps until the current schedule (total steps) is done; `on_step` logs. Saves checkpoints.
  void run_schedule(const std::vector<PreferenceRecord>& data, const DataFingerprint& fingerprint,
                    const std::function<void(const StepMetrics&)>& log_step, const TrainCallbacks& callbacks);
  uint64_t data_seed() const;  // train.seed, mixed with the round in online runs
  // reference.precompute: every record's reference log-probs, from the cache in output.dir or computed (and
  // cached); then the reference model is released.
  void precompute_reference(const std::vector<PreferenceRecord>& data, const DataFingerprint& fingerprint);
  // The micro-batch's reference log-probs: stored with the data, precomputed, or a forward of `batch` (the records'
  // pairs) through the reference model, or through the policy with its adapters disabled.
  PairLogps reference_logps(const std::vector<const PreferenceRecord*>& records, const ConcatenatedBatch& batch);
  bool uses_autocast() const;  // CUDA with model.bf16_autocast

  TrainConfig config_;
  torch::Device device_;
  std::unique_ptr<Qwen2_5_VLProcessor> processor_;
  qwen::Qwen2_5_VLModel policy_{nullptr};
  qwen::Qwen2_5_VLModel reference_{nullptr};
  std::optional<qwen::LoraAdapters> adapters_;
  std::unordered_map<const PreferenceRecord*, std::pair<double, double>> precomputed_reference_;
  std::vector<std::pair<std::string, torch::Tensor>> trainable_;
  std::shared_ptr<dist::ProcessGroup> group_;
  std::unique_ptr<dist::DataParallelAdamW> optimizer_;  // AdamW, float32 masters, gradients summed over ranks
  RunningMoments running_;
  TrainState state_;
  std::string data_rng_state_;  // the data-order engine after shuffling state_.epoch
};

}  // namespace vlreward::mpo
