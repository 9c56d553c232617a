#pragma once
// init-model: a randomly initialised Qwen2.5-VL Hugging Face checkpoint directory from a config.json, for models
// trained from scratch (the bundled shapes task's tiny policy and reward model). The tokenizer, chat template and
// preprocessor files are copied from another checkpoint directory (by default the committed tiny fixture).
#include <cstdint>
#include <string>

namespace vlreward::datasets {

struct InitModelOptions {
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
bool init_model(const InitModelOptions& options);

}  // namespace vlreward::datasets
