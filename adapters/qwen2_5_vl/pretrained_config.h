#pragma once
// The sections of a training config that name a pretrained Qwen2.5-VL checkpoint and which of its parameters
// train — `model:` and `freeze:` — read the same way by mpo-train and reward-train. Torch-free.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace vlreward {
class ConfigReader;
}

namespace vlreward::qwen {

// `model:` — which checkpoint, in which parameter dtype, on which device, with which image pixel bounds.
struct ModelSource {
  std::string path;               // HF checkpoint dir (config, weights, tokenizer, processor)
  std::string dtype = "float32";  // parameter dtype while training (and of the exported checkpoint)
  std::string device = "cpu";
  std::optional<int64_t> min_pixels, max_pixels;  // image processor bounds; unset: the checkpoint's own
};

// Reads path, dtype ("float32" or "bfloat16"), device ("cpu", "cuda", "cuda:N"), min_pixels and max_pixels (> 0).
// Leaves finish() to the caller, which may read keys of its own first.
ModelSource read_model_section(ConfigReader& model);

// Which parameters train (hub names: visual.merger.*, visual.*, model.*, lm_head.*).
struct FreezeRules {
  bool vision_tower = false;  // visual.* except visual.merger.*
  bool merger = false;        // visual.merger.*
  bool llm = false;           // model.*, and lm_head.* when the objective uses it
  // lm_head produces the policy's log-probs, so MPO trains it with the decoder; a reward model reads the last hidden
  // state through its value head and never uses lm_head, so reward-train keeps it frozen (no gradient could reach it).
  bool lm_head_in_objective = true;
};

// `freeze:` — vision_tower, merger and llm flags over `defaults` (which also carries lm_head_in_objective); finishes
// the section.
FreezeRules read_freeze_section(ConfigReader& freeze, FreezeRules defaults);

// `lora:` — low-rank adapters instead of full fine-tuning (PEFT's LoraConfig; lora.h). The base model is frozen
// whole and keeps its dtype; only the adapters train.
struct LoraSettings {
  int64_t r = 8;
  double alpha = 8;           // lora_alpha
  double dropout = 0;         // lora_dropout, on the adapter's input in training mode
  bool use_rslora = false;    // scaling alpha / sqrt(r) (rsLoRA) instead of alpha / r
  // Decoder layers' linear layers by name: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  // Vision blocks' linear layers (qkv, proj, gate_proj, up_proj, down_proj) and "merger" (both merger layers).
  std::vector<std::string> vision_target_modules;
  std::string init_from;      // a PEFT adapter directory to start from; empty: PEFT's initialisation
  double scaling() const;
};

// Reads r (> 0), alpha (> 0), dropout ([0, 1)), use_rslora, target_modules, vision_target_modules (names checked
// against the lists above, at least one target in all) and init_from; finishes the section.
// With init_from, the other keys come from the adapter's adapter_config.json and must not be given.
LoraSettings read_lora_section(ConfigReader& lora);
// A PEFT adapter_config.json (PEFT's LoraConfig): r, lora_alpha, lora_dropout and use_rslora, the target lists left
// empty (an adapter's layers are the keys of its weights file). InputError naming `source` for another PEFT type, a
// missing or mistyped field, or a feature vlreward's LoRA does not implement (DoRA, LoRA biases, bias other than
// "none", rank or alpha patterns, fan_in_fan_out, modules_to_save, target_parameters, layer_replication).
LoraSettings parse_peft_lora_config(std::string_view json_text, const std::string& source);

// A training config's `lora:` section, if it has one; with LoRA the base is frozen whole, so a `freeze:` section
// beside it is an error.
std::optional<LoraSettings> read_optional_lora(ConfigReader& root);
// The section as read (every key), for normalised configs stored in checkpoints.
nlohmann::json lora_to_json(const LoraSettings& settings);

// Which layers recompute their activations in the backward pass instead of keeping them (transformers'
// gradient_checkpointing): each decoder layer, each vision block. `train.gradient_checkpointing` is a bool (both)
// or {decoder: bool, vision: bool}.
struct CheckpointingRules {
  bool decoder_layers = false;
  bool vision_blocks = false;
  bool any() const { return decoder_layers || vision_blocks; }
};
CheckpointingRules read_gradient_checkpointing(ConfigReader& train);
nlohmann::json checkpointing_to_json(const CheckpointingRules& rules);

// How a data-parallel run (several ranks under torchrun) steps: `train.shard_optimizer` (ZeRO-1: each rank keeps
// 1/world size of the float32 masters and AdamW state), `train.allreduce_bucket_mb` (gradients per collective),
// `train.collective_timeout_s` (how long a rank waits for a peer before naming it as dead or hung).
struct DataParallelRules {
  bool shard_optimizer = false;
  double bucket_mb = 25;
  double timeout_s = 1800;
};
DataParallelRules read_data_parallel(ConfigReader& train);
// The keys as read, merged into a normalised train section.
void data_parallel_to_json(const DataParallelRules& rules, nlohmann::json& train);

}  // namespace vlreward::qwen
