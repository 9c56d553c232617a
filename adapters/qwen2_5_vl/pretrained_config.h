#pragma once
// The sections of a training config that name a pretrained Qwen2.5-VL checkpoint and which of its parameters
// train — `model:` and `freeze:` — read the same way by mpo-train and reward-train. Torch-free.
#include <cstdint>
#include <optional>
#include <string>

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

}  // namespace vlreward::qwen
