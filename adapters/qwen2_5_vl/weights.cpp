#include "adapters/qwen2_5_vl/weights.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/hf/safetensors_torch.h"

namespace vlreward::qwen {
namespace fs = std::filesystem;

std::string hub_name(const std::string& key) {
  auto starts = [&](const char* p) { return key.rfind(p, 0) == 0; };
  if (starts("model.visual.")) return "visual." + key.substr(13);
  if (starts("model.language_model.")) return "model." + key.substr(21);
  return key;
}

LoadReport load_checkpoint(torch::nn::Module& module, const std::string& path, bool tied_embeddings) {
  const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::open(path);
  auto params = module.named_parameters(/*recurse=*/true);
  std::map<std::string, torch::Tensor> wanted;
  for (auto& p : params) wanted.emplace(p.key(), p.value());

  std::vector<std::string> unexpected, wrong_shape, wrong_dtype, duplicated;
  std::map<std::string, std::string> source_of;  // hub name -> checkpoint key
  LoadReport report;
  torch::NoGradGuard no_grad;
  for (const auto& key : checkpoint.names()) {
    const std::string name = hub_name(key);
    auto it = wanted.find(name);
    if (it == wanted.end()) {
      if (tied_embeddings && name == "lm_head.weight") {
        ++report.ignored;
        continue;
      }
      unexpected.push_back(key);
      continue;
    }
    if (!source_of.emplace(name, key).second) {
      duplicated.push_back(key + " (also " + source_of[name] + ")");
      continue;
    }
    const TensorView& view = checkpoint.get(key);
    if (view.dtype != DType::F32 && view.dtype != DType::BF16 && view.dtype != DType::F16) {
      wrong_dtype.push_back(fmt::format("{} ({})", key, dtype_name(view.dtype)));
      continue;
    }
    if (view.shape != it->second.sizes().vec()) {
      wrong_shape.push_back(fmt::format("{} (checkpoint [{}], model [{}])", key, fmt::join(view.shape, ", "),
                                        fmt::join(it->second.sizes(), ", ")));
      continue;
    }
    auto source = to_tensor(view);
    // A CPU parameter of the checkpoint's dtype becomes a view of the copy-on-write mapping: loading a model costs
    // no second copy of its weights (peak memory = the file's pages). Otherwise copy, converting dtype/device.
    if (it->second.device().is_cpu() && source.scalar_type() == it->second.scalar_type())
      it->second.set_data(source);
    else
      it->second.copy_(source);
    ++report.loaded;
  }
  std::vector<std::string> missing;
  for (const auto& [name, tensor] : wanted)
    if (source_of.count(name) == 0) missing.push_back(name);

  std::string problems;
  auto add = [&](const char* what, const std::vector<std::string>& keys) {
    if (keys.empty()) return;
    problems += fmt::format("\n  {} ({}): {}", what, keys.size(), fmt::join(keys, ", "));
  };
  add("missing keys", missing);
  add("unexpected keys", unexpected);
  add("wrong shape", wrong_shape);
  add("unsupported dtype", wrong_dtype);
  add("duplicated keys", duplicated);
  if (!problems.empty()) throw_input_error(path, "checkpoint does not match the model:{}", problems);
  return report;
}

void load_tensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& targets,
                  bool same_dtype) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  if (file.size() != targets.size())
    throw_input_error(path, "holds {} tensors, {} expected", file.size(), targets.size());
  torch::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    const TensorView& view = file.get(name);
    if (view.shape != target.sizes().vec())
      throw_input_error(path, "{}: shape [{}], expected [{}]", name, fmt::join(view.shape, ", "),
                        fmt::join(target.sizes(), ", "));
    const auto source = to_tensor(view);
    if (same_dtype && source.scalar_type() != target.scalar_type())
      throw_input_error(path, "{}: dtype {}, expected {}", name, dtype_name(view.dtype),
                        c10::toString(target.scalar_type()));
    torch::Tensor(target).copy_(source);
  }
}

void save_checkpoint(const torch::nn::Module& module, const std::string& dir, int64_t max_shard_bytes) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) tensors.emplace_back(p.key(), p.value().detach());
  save_checkpoint(tensors, dir, max_shard_bytes);
}

void save_checkpoint(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, const std::string& dir,
                     int64_t max_shard_bytes) {
  fs::create_directories(dir);
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& [name, tensor] : tensors) {
    const int64_t bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(name, tensor.detach());
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  if (shards.size() == 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0], metadata);
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    write_safetensors((fs::path(dir) / file).string(), shards[i], metadata);
    for (const auto& [name, tensor] : shards[i]) weight_map[name] = file;
  }
  nlohmann::json index{{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

}  // namespace vlreward::qwen
