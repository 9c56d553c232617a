#pragma once
// Low-rank adapters (LoRA) on a Qwen2.5-VL model's linear layers, read and written in PEFT's format: a directory
// with adapter_config.json and adapter_model.safetensors whose keys are
// base_model.model.<transformers module name>.lora_{A,B}.weight, so adapters trained by PEFT load here and
// adapters trained here load in PEFT. The base model stays frozen in its own dtype; the adapters are float32 (as
// PEFT keeps them over a bf16 base). The adapters are not registered parameters of the model: its checkpoint
// files, names and loaders stay those of the base.
//
//   auto adapters = LoraAdapters::attach(model, settings, seed);   // or LoraAdapters::load(model, dir)
//   ... train adapters.parameters() ...
//   { AdaptersDisabled base(adapters); reference = model->forward(...); }   // the base model, no second copy
//   adapters.save(dir, base_model_path);
//   export_pretrained(adapters.merged_parameters(*model), ...);           // PEFT's merge_and_unload
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/optimizer.h"          // NamedParameters
#include "adapters/qwen2_5_vl/pretrained_config.h"  // LoraSettings

namespace vlreward::qwen {

// The subdirectory of an exported merged model that holds its adapters (LoraAdapters::export_merged).
inline constexpr const char* kAdapterDir = "adapter";

// The transformers (>= 4.52) module name of a hub name, the names PEFT keys use:
// model.X -> model.language_model.X, visual.X -> model.visual.X, anything else unchanged.
std::string transformers_name(const std::string& hub_name);

class LoraAdapters {
 public:
  // Fresh adapters on each linear layer of `model` that `settings` targets, initialised as PEFT does by default:
  // A kaiming-uniform (a = √5, i.e. U(±1/√in)) drawn from a generator seeded with `seed`, B zero. Float32, on the
  // model's device. InputError naming `lora.target_modules` when no layer matches.
  static LoraAdapters attach(Qwen2_5_VLModel& model, const LoraSettings& settings, uint64_t seed);

  // A PEFT adapter directory attached to `model`: r, lora_alpha, lora_dropout and use_rslora from
  // adapter_config.json, the adapted layers from adapter_model.safetensors' keys (older key layouts, such as
  // base_model.model.model.layers.*, are accepted). InputError naming the file for features not implemented here
  // (DoRA, LoRA biases, per-module rank or alpha patterns, fan_in_fan_out, modules_to_save, target_parameters), for a
  // key naming no linear layer of the model and for a mis-shaped tensor.
  static LoraAdapters load(Qwen2_5_VLModel& model, const std::string& dir);

  // What a trainer starts from: every base parameter of `model` stops requiring gradients, then the adapters are
  // loaded from settings.init_from, or attached fresh (attach) when it is empty.
  static LoraAdapters for_training(Qwen2_5_VLModel& model, const LoraSettings& settings, uint64_t seed);

  LoraAdapters(LoraAdapters&&) noexcept;
  LoraAdapters& operator=(LoraAdapters&&) noexcept;
  ~LoraAdapters();  // detaches the adapters from the model's layers

  // Overwrites the weights with `dir`'s adapter_model.safetensors, which must hold exactly these layers' adapters
  // with these shapes (a checkpoint of the same run).
  void load_weights(const std::string& dir);
  // The merged model as a Hugging Face checkpoint directory (export_pretrained of merged_parameters, the other files
  // from `source_dir`) with these adapters in its kAdapterDir subdirectory: a LoRA run's final model or stage.
  void export_merged(const torch::nn::Module& model, const std::string& source_dir, const std::string& dir,
                     const std::string& dtype_name, const std::vector<std::string>& marker_files) const;

  // adapter_config.json (target_modules: the adapted modules' full names, which PEFT matches exactly) and
  // adapter_model.safetensors, each written atomically; `base_model` is recorded as base_model_name_or_path.
  void save(const std::string& dir, const std::string& base_model) const;

  // The trainable tensors with their PEFT key names, in the model's module order (A then B per layer).
  const NamedParameters& parameters() const { return parameters_; }
  const LoraSettings& settings() const { return settings_; }
  size_t num_layers() const { return layers_.size(); }

  void set_enabled(bool enabled) { *enabled_ = enabled; }
  bool enabled() const { return *enabled_; }

  // The model's parameters (hub names, model order) with each adapted weight replaced by W + scaling·(B·A) in W's
  // dtype, computed on the CPU: PEFT's merge_and_unload, without changing the model.
  NamedParameters merged_parameters(const torch::nn::Module& model) const;

 private:
  struct Layer {
    std::string hub_name;  // of the Linear module, e.g. model.layers.0.self_attn.q_proj
    Linear linear{nullptr};
    std::shared_ptr<LoraBranch> branch;
  };
  LoraAdapters(LoraSettings settings, std::vector<Layer> layers, std::shared_ptr<bool> enabled);
  void detach();

  LoraSettings settings_;
  std::vector<Layer> layers_;
  std::shared_ptr<bool> enabled_;
  NamedParameters parameters_;
};

// The base model for a scope: every adapter of the set off, restored on exit (PEFT's disable_adapter()).
class AdaptersDisabled {
 public:
  explicit AdaptersDisabled(LoraAdapters& adapters) : adapters_(adapters), was_enabled_(adapters.enabled()) {
    adapters_.set_enabled(false);
  }
  ~AdaptersDisabled() { adapters_.set_enabled(was_enabled_); }
  AdaptersDisabled(const AdaptersDisabled&) = delete;
  AdaptersDisabled& operator=(const AdaptersDisabled&) = delete;

 private:
  LoraAdapters& adapters_;
  bool was_enabled_;
};

}  // namespace vlreward::qwen
