#pragma once
// How much memory training a Qwen2.5-VL model takes on one device, computed from its config.json without
// allocating anything: weights, a reference copy, trainable parameters, gradients, AdamW state, and the
// activations autograd keeps for one micro-batch (with and without gradient checkpointing), per tensor that the
// forward pass of this implementation saves. Torch-free.
//
// Activations per token of one decoder layer (h hidden, kv = key/value width, i intermediate, a bytes per
// activation element): a·(7h + 4kv + 4i) — the normed inputs of attention and MLP, q/k/v and their rotated
// copies, the attention output and o_proj's input, gate, up, silu(gate) and their product — plus 8h bytes of float32
// residual stream that the RMSNorms keep; a vision block the same with its own widths over image patches; LoRA adds
// each adapted layer's float32 input (over a bf16 base) and its rank-r intermediate. A checkpointed layer keeps only
// its input, and one layer's activations exist again during its recomputation. The log-probs keep the final hidden
// states and one chunk of logits (2.5 float32 [chunk, vocab] buffers' worth at the peak).
#include <cstdint>
#include <optional>
#include <string>

#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/pretrained_config.h"

namespace boost::program_options {
class options_description;
class variables_map;
}  // namespace boost::program_options

namespace vlreward::qwen {

struct TrainingSetup {
  int64_t parameter_bytes = 4;  // model.dtype: 4 float32, 2 bfloat16
  std::optional<LoraSettings> lora;  // set: adapters (float32) train, the base is frozen
  FreezeRules freeze;           // full fine-tuning: which groups train
  bool reference_copy = false;  // a second, frozen model in memory
  CheckpointingRules checkpointing;
  int64_t logprob_chunk = 256;
  bool lm_head_logits = true;   // MPO's log-probs; a reward model reads one hidden state through its value head
  int64_t world_size = 1;       // data-parallel ranks, one device each
  bool shard_optimizer = false; // ZeRO-1: each rank keeps 1/world_size of the masters and AdamW state
};

// The setup a trainer's sections describe (the rest keeps its defaults): parameter bytes from model.dtype.
TrainingSetup training_setup(const ModelSource& model, const std::optional<LoraSettings>& lora,
                             const FreezeRules& freeze, const CheckpointingRules& checkpointing);

// One micro-batch: `rows` sequences of `tokens` tokens, each with `image_patches` vision patches (14×14 pixels
// each, before merging) and `completion_tokens` tokens that get log-probs. MPO: rows = 2 × pairs.
struct MicroBatchShape {
  int64_t rows = 2;
  int64_t tokens = 2048;
  int64_t image_patches = 0;
  int64_t completion_tokens = 512;
};

struct ParameterCounts {
  int64_t total = 0;      // every parameter of the model
  int64_t vision = 0;     // visual.* except the merger
  int64_t merger = 0;     // visual.merger.*
  int64_t decoder = 0;    // model.* (embeddings, layers, final norm)
  int64_t lm_head = 0;    // 0 when tied
  int64_t trainable = 0;  // under the setup: adapters, or the unfrozen groups
};
ParameterCounts count_parameters(const Qwen2_5_VLConfig& config, const TrainingSetup& setup);

struct MemoryPlan {
  ParameterCounts parameters;
  int64_t weights = 0;     // the model's parameters
  int64_t reference = 0;   // a frozen copy, when the setup has one
  int64_t trainable = 0;   // adapters (float32) — included in weights for full fine-tuning
  int64_t gradients = 0;
  int64_t optimizer = 0;   // AdamW's two float32 moments, plus float32 masters of parameters that are not float32;
                           // divided over the ranks when sharded
  int64_t optimizer_shards = 1;
  int64_t activations = 0;               // kept for the backward pass, under the setup's checkpointing
  int64_t activations_without_checkpointing = 0;
  int64_t activations_with_checkpointing = 0;
  int64_t transient = 0;   // the largest short-lived buffer: one layer's recomputation or a chunk of logits
  int64_t total() const { return weights + reference + trainable + gradients + optimizer + activations + transient; }
};
MemoryPlan plan_training_memory(const Qwen2_5_VLConfig& config, const TrainingSetup& setup, const MicroBatchShape& shape);

// The largest number of examples per micro-batch (rows = rows_per_example × examples: 2 for preference pairs, 1 for
// SFT answers) whose plan fits in `budget_bytes`; 0 if none does.
int64_t largest_fitting_batch(const Qwen2_5_VLConfig& config, const TrainingSetup& setup, MicroBatchShape shape,
                              int64_t budget_bytes, int64_t rows_per_example = 2);

// "80GiB", "80 GB", "512MiB", "1e9" (bytes) as bytes; InputError naming `source` otherwise.
int64_t parse_memory_size(const std::string& text, const std::string& source);

// A readable table of the plan (GiB), and the fit against `budget_bytes` when > 0.
std::string format_memory_plan(const MemoryPlan& plan, const MicroBatchShape& shape, int64_t budget_bytes,
                               int64_t largest_pairs);

// The trainers' command-line side: --plan, --plan-gpu-memory, --plan-tokens, --plan-completion-tokens,
// --plan-image-pixels, --plan-world-size (ranks sharing a sharded optimizer's state); and the plan those options ask for, as text, for the checkpoint at `model_path` trained with
// `setup` at `examples_per_micro_batch` examples of `rows_per_example` rows. InputError naming the option for a bad
// value.
void add_memory_plan_options(boost::program_options::options_description& options);
std::string memory_plan_for_options(const boost::program_options::variables_map& options, const std::string& model_path,
                                    const TrainingSetup& setup, int64_t examples_per_micro_batch,
                                    int64_t rows_per_example);

}  // namespace vlreward::qwen
