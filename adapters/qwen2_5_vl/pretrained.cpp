#include "adapters/qwen2_5_vl/pretrained.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/tokenizer.h"
#include "adapters/qwen2_5_vl/weights.h"

namespace vlreward::qwen {
namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& name, const std::string& suffix) {
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

constexpr const char* kMarker = ".init-model.json";
// Everything a checkpoint directory needs besides config.json and the weights (copied when present).
constexpr const char* kCopiedFiles[] = {"tokenizer.json",         "tokenizer_config.json", "preprocessor_config.json",
                                        "chat_template.jinja",    "chat_template.json",    "special_tokens_map.json",
                                        "added_tokens.json",      "vocab.json",            "merges.txt",
                                        "generation_config.json"};

// The config's special token ids must name the same tokens as the copied tokenizer, or the model would read
// image pads as text.
void check_against_tokenizer(const Qwen2_5_VLConfig& config, const Tokenizer& tokenizer, const std::string& source) {
  if (config.text.vocab_size < tokenizer.vocab_size())
    throw InputError(source, fmt::format("vocab_size {} is smaller than the tokenizer's {}", config.text.vocab_size,
                                         tokenizer.vocab_size()));
  const std::pair<const char*, int64_t> specials[] = {{"<|image_pad|>", config.image_token_id},
                                                      {"<|video_pad|>", config.video_token_id},
                                                      {"<|vision_start|>", config.vision_start_token_id},
                                                      {"<|vision_end|>", config.vision_end_token_id}};
  for (const auto& [token, id] : specials) {
    const auto expected = tokenizer.token_to_id(token);
    if (!expected) throw InputError(source, fmt::format("the tokenizer has no {} token", token));
    if (*expected != id)
      throw InputError(source, fmt::format("the id of {} is {}, but the tokenizer's is {}", token, id, *expected));
  }
}

bool is_weight_file(const std::string& name) {
  return ends_with(name, ".safetensors") || ends_with(name, ".safetensors.index.json") || ends_with(name, ".bin") ||
         ends_with(name, ".bin.index.json");
}

// config.json says the dtype its weights are saved in (both layouts: top level and text_config).
void set_config_dtype(nlohmann::json& config, const std::string& dtype_name) {
  if (config.contains("torch_dtype")) config["torch_dtype"] = dtype_name;
  config["dtype"] = dtype_name;
  if (config.contains("text_config") && config["text_config"].is_object() && config["text_config"].contains("dtype"))
    config["text_config"]["dtype"] = dtype_name;
}

}  // namespace

torch::ScalarType parse_parameter_dtype(const std::string& name, const std::string& source) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  throw InputError(source, "dtype must be \"float32\" or \"bfloat16\", not \"" + name + "\"");
}

torch::Device parse_device(const std::string& name, const std::string& source) {
  std::optional<torch::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
    throw InputError(source, "device must be \"cpu\", \"cuda\" or \"cuda:N\", not \"" + name + "\"");
  }
  if (device->is_cuda() && !torch::cuda::is_available())
    throw InputError(source, fmt::format("\"{}\" requested but CUDA is not available", name));
  return *device;
}

Pretrained load_pretrained(const std::string& dir, torch::ScalarType dtype, const torch::Device& device) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  std::error_code ec;
  if (!fs::is_regular_file(config_path, ec))
    throw InputError(dir, "not a Hugging Face checkpoint directory (no config.json)");
  Pretrained out{Qwen2_5_VLConfig::load(config_path)};
  out.model = Qwen2_5_VLModel(out.config, torch::TensorOptions().dtype(dtype).device(device));
  load_checkpoint(*out.model, dir, out.config.text.tie_word_embeddings);
  out.model->to(device);  // buffers created on the host
  return out;
}

void export_pretrained(const torch::nn::Module& module, const std::string& source_dir, const std::string& dir,
                       const std::string& dtype_name, const std::vector<std::string>& marker_files) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) tensors.emplace_back(p.key(), p.value().detach());
  export_pretrained(tensors, source_dir, dir, dtype_name, marker_files);
}

void export_pretrained(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, const std::string& source_dir,
                       const std::string& dir, const std::string& dtype_name,
                       const std::vector<std::string>& marker_files) {
  fs::create_directories(dir);
  save_checkpoint(tensors, dir);
  for (const auto& entry : fs::directory_iterator(source_dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (is_weight_file(name) || std::find(marker_files.begin(), marker_files.end(), name) != marker_files.end()) continue;
    const std::string target = (fs::path(dir) / name).string();
    if (name == "config.json") {
      auto config = read_json_file(entry.path().string());
      set_config_dtype(config, dtype_name);
      write_file_atomic(target, config.dump(2) + "\n");
    } else {
      copy_file_atomic(entry.path().string(), target);
    }
  }
}

bool init_pretrained(const InitPretrainedOptions& options) {
  const std::string config_text = read_file(options.config_path);
  nlohmann::json config_json = parse_json_text(config_text, options.config_path, "not valid JSON");
  const auto config = Qwen2_5_VLConfig::parse(config_text, options.config_path);
  if (!(options.std > 0)) throw InputError("--std", "must be positive");
  const fs::path files_from(options.files_from);
  if (!fs::exists(files_from / "tokenizer.json"))
    throw InputError(options.files_from, "has no tokenizer.json to copy");
  check_against_tokenizer(config, Tokenizer::from_directory(options.files_from), options.config_path);

  // The weights are saved as float32: say so in config.json, as a trained checkpoint would.
  set_config_dtype(config_json, "float32");

  const nlohmann::json marker = {{"config", config_json}, {"seed", options.seed}, {"std", options.std}};
  const fs::path out(options.out_dir);
  const fs::path marker_path = out / kMarker;
  if (fs::exists(marker_path)) {
    const nlohmann::json previous =
        read_json_file(marker_path.string(), "not valid JSON (remove the directory and initialise again)");
    if (previous == marker) return false;
    throw InputError(options.out_dir, "was initialised with another config, seed or std; use another directory "
                                      "or remove it");
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw InputError(options.out_dir, "cannot create directory: " + ec.message());

  Qwen2_5_VLModel model(config, torch::TensorOptions().dtype(torch::kFloat32));
  model->init_weights(options.seed, options.std);
  save_checkpoint(*model, options.out_dir);
  write_file_atomic((out / "config.json").string(), config_json.dump(2) + "\n");
  for (const char* name : kCopiedFiles) {
    const fs::path from = files_from / name;
    if (fs::exists(from)) copy_file_atomic(from.string(), (out / name).string());
  }
  write_file_atomic(marker_path.string(), marker.dump(2) + "\n");  // last: the directory is complete
  return true;
}

bool is_frozen(const std::string& name, const FreezeRules& rules) {
  if (name.rfind("visual.merger.", 0) == 0) return rules.merger;
  if (name.rfind("visual.", 0) == 0) return rules.vision_tower;
  if (name.rfind("lm_head.", 0) == 0 && !rules.lm_head_in_objective) return true;
  return rules.llm;
}

}  // namespace vlreward::qwen
