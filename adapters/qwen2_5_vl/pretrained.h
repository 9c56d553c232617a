#pragma once
// A pretrained Qwen2.5-VL checkpoint directory (Hugging Face layout: config.json, weights, tokenizer, processor)
// in and out of memory, and the rules every trainer applies to its parameters. The one place that loads a model
// directory, exports one, and decides which parameters train.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/pretrained_config.h"  // FreezeRules

namespace vlreward::qwen {

// "float32" or "bfloat16" (the parameter dtypes the project trains and serves in); anything else is an InputError
// naming `source` (the config key or option).
torch::ScalarType parse_parameter_dtype(const std::string& name, const std::string& source);

// "cpu", "cuda" or "cuda:N" as a device; InputError naming `source` for a name torch does not know, or for CUDA on
// a machine without it (before anything is allocated there).
torch::Device parse_device(const std::string& name, const std::string& source);

struct Pretrained {
  Qwen2_5_VLConfig config;
  Qwen2_5_VLModel model{nullptr};
};

// Loads `dir`'s config.json and weights into a model whose parameters are created with `dtype` on `device` and
// filled straight from the mapped checkpoint (no second host copy; on CPU, parameters of the checkpoint's own dtype
// are views of the mapping). Throws InputError naming `dir` when it has no config.json, and whatever
// load_checkpoint throws for missing, extra or mis-shaped weights.
Pretrained load_pretrained(const std::string& dir, torch::ScalarType dtype, const torch::Device& device);

// Writes `module`'s parameters into `dir` (save_checkpoint) and copies every other file of `source_dir` that
// belongs to a checkpoint (config, tokenizer, processor, chat template, generation config), each atomically, with
// config.json's dtype set to `dtype_name`. Weight files and `marker_files` (files describing `source_dir` itself,
// such as a checkpoint manifest) are not copied. `dir` is created if needed.
void export_pretrained(const torch::nn::Module& module, const std::string& source_dir, const std::string& dir,
                       const std::string& dtype_name, const std::vector<std::string>& marker_files = {});
// The same for named tensors in hub names (a LoRA-merged model: LoraAdapters::merged_parameters).
void export_pretrained(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, const std::string& source_dir,
                       const std::string& dir, const std::string& dtype_name,
                       const std::vector<std::string>& marker_files = {});

// A randomly initialised checkpoint directory from a config.json, for models trained from scratch (the bundled
// shapes task's tiny policy and reward model). The tokenizer, chat template and preprocessor files are copied from
// another checkpoint directory (e.g. the committed tiny fixture).
struct InitPretrainedOptions {
  std::string config_path;  // a Qwen2.5-VL config.json (any layout Qwen2_5_VLConfig reads)
  std::string out_dir;
  std::string files_from;   // directory with tokenizer.json, tokenizer_config.json, preprocessor_config.json, ...
  uint64_t seed = 0;
  double std = 0.02;        // normal(0, std) weights (Qwen2_5_VLModel::init_weights)
};

// Writes config.json (dtype float32), model.safetensors and the copied files, then a marker recording the
// settings. Returns false (writing nothing) when the marker already records the same settings; throws InputError
// when it records different ones, when the config does not parse, or when its vocabulary or special token ids
// do not match the tokenizer's.
bool init_pretrained(const InitPretrainedOptions& options);

// Whether `parameter_name` (a hub name) stays frozen under `rules`.
bool is_frozen(const std::string& parameter_name, const FreezeRules& rules);

}  // namespace vlreward::qwen
