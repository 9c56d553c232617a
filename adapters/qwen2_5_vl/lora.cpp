#include "adapters/qwen2_5_vl/lora.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/safetensors_torch.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "adapters/qwen2_5_vl/weights.h"

namespace vlreward::qwen {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kKeyPrefix = "base_model.model.";

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

bool contains(const std::vector<std::string>& list, const std::string& name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

// The linear layers of a model by hub module name, in module order.
std::vector<std::pair<std::string, Linear>> linear_layers(torch::nn::Module& model) {
  std::vector<std::pair<std::string, Linear>> out;
  for (const auto& item : model.named_modules()) {
    auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value());
    if (linear) out.emplace_back(item.key(), Linear(linear));
  }
  return out;
}

bool targeted(const std::string& hub, const LoraSettings& settings) {
  const std::string last = hub.substr(hub.rfind('.') + 1);
  if (starts_with(hub, "model.layers.")) return contains(settings.target_modules, last);
  if (starts_with(hub, "visual.blocks.")) return contains(settings.vision_target_modules, last);
  if (starts_with(hub, "visual.merger.")) return contains(settings.vision_target_modules, "merger");
  return false;
}

std::string peft_key(const std::string& hub, const char* matrix) {
  return kKeyPrefix + transformers_name(hub) + ".lora_" + matrix + ".weight";
}

}  // namespace

std::string transformers_name(const std::string& hub) {
  if (starts_with(hub, "model.")) return "model.language_model." + hub.substr(6);
  if (starts_with(hub, "visual.")) return "model.visual." + hub.substr(7);
  return hub;
}

LoraAdapters::LoraAdapters(LoraSettings settings, std::vector<Layer> layers, std::shared_ptr<bool> enabled)
    : settings_(std::move(settings)), layers_(std::move(layers)), enabled_(std::move(enabled)) {
  for (auto& layer : layers_) {
    layer.branch->A.set_requires_grad(true);
    layer.branch->B.set_requires_grad(true);
    parameters_.emplace_back(peft_key(layer.hub_name, "A"), layer.branch->A);
    parameters_.emplace_back(peft_key(layer.hub_name, "B"), layer.branch->B);
    layer.linear->lora = layer.branch;
  }
}

LoraAdapters::LoraAdapters(LoraAdapters&& other) noexcept
    : settings_(std::move(other.settings_)),
      layers_(std::exchange(other.layers_, {})),
      enabled_(std::move(other.enabled_)),
      parameters_(std::exchange(other.parameters_, {})) {}

LoraAdapters& LoraAdapters::operator=(LoraAdapters&& other) noexcept {
  if (this != &other) {
    detach();
    settings_ = std::move(other.settings_);
    layers_ = std::exchange(other.layers_, {});
    enabled_ = std::move(other.enabled_);
    parameters_ = std::exchange(other.parameters_, {});
  }
  return *this;
}

LoraAdapters::~LoraAdapters() { detach(); }

void LoraAdapters::detach() {
  for (auto& layer : layers_)
    if (layer.linear->lora == layer.branch) layer.linear->lora.reset();
  layers_.clear();
  parameters_.clear();
}

LoraAdapters LoraAdapters::attach(Qwen2_5_VLModel& model, const LoraSettings& settings, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto enabled = std::make_shared<bool>(true);
  std::vector<Layer> layers;
  torch::NoGradGuard no_grad;
  for (auto& [hub, linear] : linear_layers(*model)) {
    if (!targeted(hub, settings)) continue;
    const int64_t out_features = linear->weight.size(0), in_features = linear->weight.size(1);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));  // kaiming_uniform_(a=√5)
    auto branch = std::make_shared<LoraBranch>();
    const auto device = linear->weight.device();
    branch->A = torch::empty({settings.r, in_features}, torch::kFloat32).uniform_(-bound, bound, gen).to(device);
    branch->B = torch::zeros({out_features, settings.r}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
    branch->scaling = settings.scaling();
    branch->dropout = settings.dropout;
    branch->enabled = enabled;
    layers.push_back({hub, linear, std::move(branch)});
  }
  if (layers.empty())
    throw InputError("lora.target_modules", "matches no linear layer of the model");
  return LoraAdapters(settings, std::move(layers), std::move(enabled));
}

LoraAdapters LoraAdapters::load(Qwen2_5_VLModel& model, const std::string& dir) {
  const std::string config_path = (fs::path(dir) / kConfigFile).string();
  LoraSettings settings = parse_peft_lora_config(read_file(config_path), config_path);
  settings.init_from = dir;

  const std::string weights_path = (fs::path(dir) / kWeightsFile).string();
  const SafetensorsFile file = SafetensorsFile::open(weights_path);
  std::map<std::string, std::map<char, std::string>> keys_of;  // hub module name -> 'A'/'B' -> key
  for (const auto& key : file.names()) {
    std::string module = starts_with(key, kKeyPrefix) ? key.substr(std::string(kKeyPrefix).size()) : key;
    char matrix = 0;
    for (const char m : {'A', 'B'}) {
      const std::string suffix = std::string(".lora_") + m + ".weight";
      if (module.size() > suffix.size() && module.compare(module.size() - suffix.size(), suffix.size(), suffix) == 0) {
        module.resize(module.size() - suffix.size());
        matrix = m;
      }
    }
    if (matrix == 0) throw InputError(weights_path, fmt::format("{}: not a LoRA weight (…lora_A.weight / …lora_B.weight)", key));
    keys_of[hub_name(module)][matrix] = key;
  }

  auto enabled = std::make_shared<bool>(true);
  std::vector<Layer> layers;
  torch::NoGradGuard no_grad;
  for (auto& [hub, linear] : linear_layers(*model)) {
    auto it = keys_of.find(hub);
    if (it == keys_of.end()) continue;
    const auto& pair = it->second;
    if (pair.size() != 2) throw InputError(weights_path, fmt::format("{}: has only lora_{}", hub, pair.begin()->first));
    auto branch = std::make_shared<LoraBranch>();
    const auto device = linear->weight.device();
    const int64_t out_features = linear->weight.size(0), in_features = linear->weight.size(1);
    for (const char m : {'A', 'B'}) {
      const TensorView& view = file.get(pair.at(m));
      const std::vector<int64_t> want = m == 'A' ? std::vector<int64_t>{settings.r, in_features}
                                                 : std::vector<int64_t>{out_features, settings.r};
      if (view.shape != want)
        throw InputError(weights_path, fmt::format("{}: shape [{}], the model's layer needs [{}] (r = {})", pair.at(m),
                                                   fmt::join(view.shape, ", "), fmt::join(want, ", "), settings.r));
      (m == 'A' ? branch->A : branch->B) = to_tensor(view).to(device, torch::kFloat32, false, /*copy=*/true);
    }
    branch->scaling = settings.scaling();
    branch->dropout = settings.dropout;
    branch->enabled = enabled;
    const std::string last = hub.substr(hub.rfind('.') + 1);
    auto& names = starts_with(hub, "visual.") ? settings.vision_target_modules : settings.target_modules;
    const std::string name = starts_with(hub, "visual.merger.") ? "merger" : last;
    if (!contains(names, name)) names.push_back(name);
    layers.push_back({hub, linear, std::move(branch)});
    keys_of.erase(it);
  }
  if (!keys_of.empty()) {
    std::vector<std::string> unknown;
    for (const auto& [hub, pair] : keys_of) unknown.push_back(pair.begin()->second);
    throw InputError(weights_path, fmt::format("{} key(s) name no linear layer of the model: {}", unknown.size(),
                                               fmt::join(unknown, ", ")));
  }
  if (layers.empty()) throw InputError(weights_path, "holds no LoRA weights");
  return LoraAdapters(std::move(settings), std::move(layers), std::move(enabled));
}

LoraAdapters LoraAdapters::for_training(Qwen2_5_VLModel& model, const LoraSettings& settings, uint64_t seed) {
  for (auto& p : model->parameters()) p.set_requires_grad(false);  // the base stays as it is
  return settings.init_from.empty() ? attach(model, settings, seed) : load(model, settings.init_from);
}

void LoraAdapters::export_merged(const torch::nn::Module& model, const std::string& source_dir, const std::string& dir,
                                 const std::string& dtype_name, const std::vector<std::string>& marker_files) const {
  export_pretrained(merged_parameters(model), source_dir, dir, dtype_name, marker_files);
  save((fs::path(dir) / kAdapterDir).string(), source_dir);
}

void LoraAdapters::load_weights(const std::string& dir) {
  load_tensors((fs::path(dir) / kWeightsFile).string(), parameters_);
}

void LoraAdapters::save(const std::string& dir, const std::string& base_model) const {
  fs::create_directories(dir);
  std::vector<std::string> modules;
  for (const auto& layer : layers_) modules.push_back(transformers_name(layer.hub_name));
  const json config{{"peft_type", "LORA"},
                    {"task_type", nullptr},
                    {"base_model_name_or_path", base_model},
                    {"r", settings_.r},
                    {"lora_alpha", settings_.alpha},
                    {"lora_dropout", settings_.dropout},
                    {"use_rslora", settings_.use_rslora},
                    {"target_modules", modules},
                    {"bias", "none"},
                    {"fan_in_fan_out", false},
                    {"use_dora", false},
                    {"modules_to_save", nullptr},
                    {"init_lora_weights", true},
                    {"inference_mode", true}};
  write_safetensors((fs::path(dir) / kWeightsFile).string(), parameters_, {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / kConfigFile).string(), config.dump(2) + "\n");
}

NamedParameters LoraAdapters::merged_parameters(const torch::nn::Module& model) const {
  std::map<std::string, const Layer*> adapted;
  for (const auto& layer : layers_) adapted.emplace(layer.hub_name + ".weight", &layer);
  NamedParameters out;
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    auto it = adapted.find(item.key());
    if (it == adapted.end()) {
      out.emplace_back(item.key(), item.value().detach());
      continue;
    }
    const LoraBranch& b = *it->second->branch;
    const auto weight = item.value().detach().cpu();
    // PEFT: delta = (B @ A) * scaling in the adapter's dtype, added in place to the base weight.
    const auto delta = at::matmul(b.B.detach().cpu(), b.A.detach().cpu()) * b.scaling;
    out.emplace_back(item.key(), (weight.to(torch::kFloat32) + delta).to(weight.scalar_type()));
  }
  return out;
}

}  // namespace vlreward::qwen
