#include "adapters/datasets/model_init.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/hf/tokenizer.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/weights.h"

namespace vlreward::datasets {
namespace fs = std::filesystem;
namespace {

constexpr const char* kMarker = ".init-model.json";
// Everything a checkpoint directory needs besides config.json and the weights (copied when present).
constexpr const char* kCopiedFiles[] = {"tokenizer.json",         "tokenizer_config.json", "preprocessor_config.json",
                                        "chat_template.jinja",    "chat_template.json",    "special_tokens_map.json",
                                        "added_tokens.json",      "vocab.json",            "merges.txt",
                                        "generation_config.json"};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, "cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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

}  // namespace

bool init_model(const InitModelOptions& options) {
  const std::string config_text = read_text(options.config_path);
  nlohmann::json config_json = parse_json_text(config_text, options.config_path, "not valid JSON");
  const auto config = Qwen2_5_VLConfig::parse(config_text, options.config_path);
  if (!(options.std > 0)) throw InputError("--std", "must be positive");
  const fs::path files_from(options.files_from);
  if (!fs::exists(files_from / "tokenizer.json"))
    throw InputError(options.files_from, "has no tokenizer.json to copy");
  check_against_tokenizer(config, Tokenizer::from_directory(options.files_from), options.config_path);

  // The weights are saved as float32: say so in config.json, as a trained checkpoint would.
  config_json["dtype"] = "float32";
  if (config_json.contains("torch_dtype")) config_json["torch_dtype"] = "float32";
  if (config_json.contains("text_config") && config_json["text_config"].is_object() &&
      config_json["text_config"].contains("dtype"))
    config_json["text_config"]["dtype"] = "float32";

  const nlohmann::json marker = {{"config", config_json}, {"seed", options.seed}, {"std", options.std}};
  const fs::path out(options.out_dir);
  const fs::path marker_path = out / kMarker;
  if (fs::exists(marker_path)) {
    nlohmann::json previous;
    try {
      previous = nlohmann::json::parse(read_text(marker_path.string()));
    } catch (const nlohmann::json::exception&) {
      throw InputError(marker_path.string(), "is not valid JSON; remove the directory and initialise again");
    }
    if (previous == marker) return false;
    throw InputError(options.out_dir, "was initialised with another config, seed or std; use another directory "
                                      "or remove it");
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw InputError(options.out_dir, "cannot create directory: " + ec.message());

  qwen::Qwen2_5_VLModel model(config, torch::TensorOptions().dtype(torch::kFloat32));
  model->init_weights(options.seed, options.std);
  qwen::save_checkpoint(*model, options.out_dir);
  write_file_atomic((out / "config.json").string(), config_json.dump(2) + "\n");
  for (const char* name : kCopiedFiles) {
    const fs::path from = files_from / name;
    if (fs::exists(from)) write_file_atomic((out / name).string(), read_text(from.string()));
  }
  write_file_atomic(marker_path.string(), marker.dump(2) + "\n");  // last: the directory is complete
  return true;
}

}  // namespace vlreward::datasets
