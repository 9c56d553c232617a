#include "reward/train_config.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <set>

#include <fmt/format.h>

#include "adapters/common/config_file.h"
#include "plugin/config_reader.h"

namespace vlreward {
namespace {

using nlohmann::json;

using Section = ConfigReader;

// `data: FILE` or `data: [FILE, ...]`.
std::vector<std::string> path_list(Section& s, const std::string& key) {
  const json* v = s.raw(key);
  if (v == nullptr) s.fail(key, "is required (a JSONL file or a list of them)");
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) s.fail(key + "[" + std::to_string(i) + "]", "must be a file path, got " + (*v)[i].dump());
      out.push_back((*v)[i].get<std::string>());
    }
  } else {
    s.fail(key, "must be a file path or a list of them, got " + v->dump());
  }
  if (out.empty()) s.fail(key, "must name at least one file");
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].empty()) s.fail(key + "[" + std::to_string(i) + "]", "must not be empty");
  return out;
}

bool is_index(const std::string& s) {
  if (s.empty() || s.size() > 6) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

}  // namespace

RewardTrainConfig RewardTrainConfig::from_json(const json& config, const std::string& source) {
  RewardTrainConfig c;
  Section root(&config, "", source);

  Section model = root.section("model");
  c.model = qwen::read_model_section(model);
  model.finish();

  Section head = root.section("value_head");
  c.value_head.path = head.optional<std::string>("path", "");
  c.value_head.init = head.optional<std::string>("init", c.value_head.init);
  if (c.value_head.init != "normal" && c.value_head.init != "zeros")
    head.fail("init", "must be \"normal\" or \"zeros\", got \"" + c.value_head.init + "\"");
  const int64_t head_seed = head.optional<int64_t>("seed", 0);
  if (head_seed < 0) head.fail("seed", "must be >= 0");
  c.value_head.seed = static_cast<uint64_t>(head_seed);
  head.finish();

  c.lora = qwen::read_optional_lora(root);
  Section freeze = root.section("freeze");
  c.freeze = qwen::read_freeze_section(freeze, c.freeze);

  Section data = root.section("data");
  c.data.image_root = data.optional<std::string>("image_root", "");
  c.data.shuffle = data.optional<bool>("shuffle", c.data.shuffle);
  data.finish();

  Section train = root.section("train");
  auto& t = c.train;
  auto unit = [&](const char* key, double v) {
    if (!(v >= 0 && v < 1)) train.fail(key, "must be in [0, 1), got " + json(v).dump());
    return v;
  };
  t.weight_decay = train.optional<double>("weight_decay", t.weight_decay);
  if (t.weight_decay < 0) train.fail("weight_decay", "must be >= 0");
  t.adam_beta1 = unit("adam_beta1", train.optional<double>("adam_beta1", t.adam_beta1));
  t.adam_beta2 = unit("adam_beta2", train.optional<double>("adam_beta2", t.adam_beta2));
  t.adam_epsilon = train.optional<double>("adam_epsilon", t.adam_epsilon);
  if (!(t.adam_epsilon > 0)) train.fail("adam_epsilon", "must be > 0");
  t.max_grad_norm = train.optional<double>("max_grad_norm", t.max_grad_norm);
  if (t.max_grad_norm < 0) train.fail("max_grad_norm", "must be >= 0 (0 = no clipping)");
  t.gradient_accumulation_steps = train.optional<int64_t>("gradient_accumulation_steps", t.gradient_accumulation_steps);
  if (t.gradient_accumulation_steps < 1) train.fail("gradient_accumulation_steps", "must be >= 1");
  const int64_t seed = train.optional<int64_t>("seed", static_cast<int64_t>(t.seed));
  if (seed < 0) train.fail("seed", "must be >= 0");
  t.seed = static_cast<uint64_t>(seed);
  t.num_threads = train.optional<int64_t>("num_threads", t.num_threads);
  if (t.num_threads < 0) train.fail("num_threads", "must be >= 0 (0 = LibTorch's default)");
  t.gradient_checkpointing = qwen::read_gradient_checkpointing(train);
  t.data_parallel = qwen::read_data_parallel(train);
  train.finish();

  const json* stages = root.raw("stages");
  if (stages == nullptr) throw ConfigError(source, "stages: is required (a list of training stages)");
  if (!stages->is_array() || stages->empty())
    throw ConfigError(source, "stages: must be a non-empty list of stages, got " + stages->dump());
  std::set<std::string> names;
  for (size_t k = 0; k < stages->size(); ++k) {
    const std::string where = "stages[" + std::to_string(k) + "]";
    Section s((*stages)[k], where, source);
    Stage stage;
    stage.name = s.optional<std::string>("name", "stage-" + std::to_string(k + 1));
    if (stage.name.empty()) s.fail("name", "must not be empty");
    if (!names.insert(stage.name).second) s.fail("name", "duplicate stage name \"" + stage.name + "\"");
    stage.data = path_list(s, "data");
    stage.epochs = s.optional<int64_t>("epochs", stage.epochs);
    if (stage.epochs < 1) s.fail("epochs", "must be >= 1");
    stage.learning_rate = s.optional<double>("learning_rate", stage.learning_rate);
    if (!(stage.learning_rate > 0)) s.fail("learning_rate", "must be > 0");
    stage.warmup_ratio = s.optional<double>("warmup_ratio", stage.warmup_ratio);
    if (!(stage.warmup_ratio >= 0 && stage.warmup_ratio <= 1)) s.fail("warmup_ratio", "must be in [0, 1]");
    stage.batch_size = s.optional<int64_t>("batch_size", stage.batch_size);
    if (stage.batch_size < 1) s.fail("batch_size", "must be >= 1");
    s.finish();
    c.stages.push_back(std::move(stage));
  }

  Section eval = root.section("eval");
  c.eval.data = eval.optional<std::string>("data", "");
  c.eval.batch_size = eval.optional<int64_t>("batch_size", c.eval.batch_size);
  if (c.eval.batch_size < 1) eval.fail("batch_size", "must be >= 1");
  eval.finish();

  Section output = root.section("output");
  c.output.dir = output.required_text("dir");
  c.output.jsonl = output.optional<bool>("jsonl", c.output.jsonl);
  c.output.tensorboard = output.optional<bool>("tensorboard", c.output.tensorboard);
  c.output.progress = output.optional<bool>("progress", c.output.progress);
  output.finish();

  // Everything frozen still trains the value head (a linear probe on frozen features): allowed.
  root.finish();
  return c;
}

json RewardTrainConfig::to_json() const {
  json m{{"path", model.path}, {"dtype", model.dtype}, {"device", model.device}};
  if (model.min_pixels) m["min_pixels"] = *model.min_pixels;
  if (model.max_pixels) m["max_pixels"] = *model.max_pixels;
  json s = json::array();
  for (const auto& st : stages)
    s.push_back({{"name", st.name},
                 {"data", st.data},
                 {"epochs", st.epochs},
                 {"learning_rate", st.learning_rate},
                 {"warmup_ratio", st.warmup_ratio},
                 {"batch_size", st.batch_size}});
  json out{
      {"model", m},
      {"value_head", {{"path", value_head.path}, {"init", value_head.init}, {"seed", value_head.seed}}},
      {"freeze", {{"vision_tower", freeze.vision_tower}, {"merger", freeze.merger}, {"llm", freeze.llm}}},
      {"data", {{"image_root", data.image_root}, {"shuffle", data.shuffle}}},
      {"train",
       {{"weight_decay", train.weight_decay},
        {"adam_beta1", train.adam_beta1},
        {"adam_beta2", train.adam_beta2},
        {"adam_epsilon", train.adam_epsilon},
        {"max_grad_norm", train.max_grad_norm},
        {"gradient_accumulation_steps", train.gradient_accumulation_steps},
        {"seed", train.seed},
        {"num_threads", train.num_threads},
        {"gradient_checkpointing", qwen::checkpointing_to_json(train.gradient_checkpointing)}}},
      {"lora", lora ? qwen::lora_to_json(*lora) : json()},
      {"stages", s},
      {"eval", {{"data", eval.data}, {"batch_size", eval.batch_size}}},
      {"output",
       {{"dir", output.dir}, {"jsonl", output.jsonl}, {"tensorboard", output.tensorboard}, {"progress", output.progress}}},
  };
  qwen::data_parallel_to_json(train.data_parallel, out["train"]);
  return out;
}

qwen::TrainingSetup RewardTrainConfig::memory_setup() const {
  qwen::TrainingSetup s = qwen::training_setup(model, lora, freeze, train.gradient_checkpointing);
  s.lm_head_logits = false;
  s.shard_optimizer = train.data_parallel.shard_optimizer;
  return s;
}

RewardTrainConfig load_reward_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  json config = load_config_file(path);
  for (const auto& assignment : overrides) {
    // "stages.N.rest=value": apply "rest=value" inside stage N (apply_override walks objects only).
    const size_t eq = assignment.find('=');
    const std::string key = assignment.substr(0, eq);
    if (eq != std::string::npos && key.rfind("stages.", 0) == 0) {
      const size_t dot = key.find('.', 7);
      const std::string index = key.substr(7, dot == std::string::npos ? std::string::npos : dot - 7);
      if (!is_index(index)) throw ConfigError(assignment, "stages are addressed by index: stages.N.key=value");
      const size_t k = std::stoul(index);
      if (!config.contains("stages") || !config["stages"].is_array() || k >= config["stages"].size())
        throw ConfigError(assignment, fmt::format("there is no stage {} (stages are numbered from 0)", k));
      if (dot == std::string::npos) throw ConfigError(assignment, "give a key inside the stage: stages.N.key=value");
      apply_override(config["stages"][k], assignment.substr(dot + 1));
      continue;
    }
    apply_override(config, assignment);
  }
  return RewardTrainConfig::from_json(config, path);
}

}  // namespace vlreward
