#include "adapters/qwen2_5_vl/pretrained_config.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "plugin/config_reader.h"

namespace vlreward::qwen {

ModelSource read_model_section(ConfigReader& model) {
  ModelSource m;
  m.path = model.required_text("path");
  m.dtype = model.optional<std::string>("dtype", m.dtype);
  if (m.dtype != "float32" && m.dtype != "bfloat16")
    model.fail("dtype", "must be \"float32\" or \"bfloat16\", got \"" + m.dtype + "\"");
  m.device = model.optional<std::string>("device", m.device);
  if (m.device != "cpu" && m.device.rfind("cuda", 0) != 0)
    model.fail("device", "must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + m.device + "\"");
  for (const char* key : {"min_pixels", "max_pixels"}) {
    auto v = model.maybe<int64_t>(key);
    if (v && *v <= 0) model.fail(key, "must be > 0");
    (std::string(key) == "min_pixels" ? m.min_pixels : m.max_pixels) = v;
  }
  return m;
}

FreezeRules read_freeze_section(ConfigReader& freeze, FreezeRules defaults) {
  FreezeRules f = defaults;
  f.vision_tower = freeze.optional<bool>("vision_tower", f.vision_tower);
  f.merger = freeze.optional<bool>("merger", f.merger);
  f.llm = freeze.optional<bool>("llm", f.llm);
  freeze.finish();
  return f;
}

double LoraSettings::scaling() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

LoraSettings read_lora_section(ConfigReader& lora) {
  LoraSettings s;
  s.init_from = lora.optional<std::string>("init_from", "");
  if (!s.init_from.empty()) {
    for (const char* key : {"r", "alpha", "dropout", "use_rslora", "target_modules", "vision_target_modules"})
      if (lora.has(key))
        lora.fail(key, "is taken from init_from's adapter_config.json; remove it");
    lora.finish();
    return s;
  }
  s.r = lora.optional<int64_t>("r", s.r);
  if (s.r <= 0) lora.fail("r", "must be > 0");
  s.alpha = lora.optional<double>("alpha", s.alpha);
  if (!(s.alpha > 0)) lora.fail("alpha", "must be > 0");
  s.dropout = lora.optional<double>("dropout", s.dropout);
  if (!(s.dropout >= 0 && s.dropout < 1)) lora.fail("dropout", "must be in [0, 1)");
  s.use_rslora = lora.optional<bool>("use_rslora", s.use_rslora);
  auto names = [&](const char* key, std::vector<std::string> fallback, const std::vector<std::string>& allowed) {
    auto list = lora.optional<std::vector<std::string>>(key, std::move(fallback));
    for (const auto& name : list)
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        std::string known;
        for (const auto& a : allowed) known += (known.empty() ? "" : ", ") + a;
        lora.fail(key, "unknown module \"" + name + "\" (known: " + known + ")");
      }
    return list;
  };
  s.target_modules = names("target_modules", s.target_modules,
                           {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  s.vision_target_modules =
      names("vision_target_modules", s.vision_target_modules, {"qkv", "proj", "gate_proj", "up_proj", "down_proj", "merger"});
  if (s.target_modules.empty() && s.vision_target_modules.empty())
    lora.fail("target_modules", "no module targeted (and no vision_target_modules): nothing would train");
  lora.finish();
  return s;
}

LoraSettings parse_peft_lora_config(std::string_view json_text, const std::string& source) {
  const nlohmann::json config = parse_json_text(json_text, source, "not valid JSON");
  if (!config.is_object()) throw InputError(source, "not a JSON object");
  auto field = [&](const char* key) -> const nlohmann::json* {
    auto it = config.find(key);
    return it == config.end() || it->is_null() ? nullptr : &*it;
  };
  if (const auto* type = field("peft_type"); type == nullptr || *type != "LORA")
    throw InputError(source, "peft_type: expected \"LORA\"");
  auto given = [&](const char* key) {
    const auto* v = field(key);
    return v != nullptr && !(v->is_object() && v->empty()) && !(v->is_array() && v->empty()) && *v != false;
  };
  for (const char* key : {"use_dora", "lora_bias", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save",
                          "target_parameters", "layer_replication"})
    if (given(key))
      throw InputError(source, fmt::format("{}: {} is not supported by vlreward's LoRA", key,
                                           message_excerpt(field(key)->dump(), 80)));
  if (const auto* bias = field("bias"); bias != nullptr && *bias != "none")
    throw InputError(source, fmt::format("bias: {} is not supported by vlreward's LoRA", message_excerpt(bias->dump(), 80)));
  LoraSettings s;
  s.target_modules.clear();
  auto number = [&](const char* key, double fallback) {
    const auto* v = field(key);
    if (v == nullptr) return fallback;
    if (!v->is_number()) throw InputError(source, fmt::format("{}: must be a number", key));
    return v->get<double>();
  };
  const auto* r = field("r");
  if (r == nullptr || !r->is_number_integer() || r->get<int64_t>() <= 0)
    throw InputError(source, "r: must be a positive integer");
  s.r = r->get<int64_t>();
  s.alpha = number("lora_alpha", 8.0);
  s.dropout = number("lora_dropout", 0.0);
  if (const auto* rs = field("use_rslora")) {
    if (!rs->is_boolean()) throw InputError(source, "use_rslora: must be true or false");
    s.use_rslora = rs->get<bool>();
  }
  if (!(s.alpha > 0) || !std::isfinite(s.alpha)) throw InputError(source, "lora_alpha: must be > 0");
  if (!(s.dropout >= 0 && s.dropout < 1)) throw InputError(source, "lora_dropout: must be in [0, 1)");
  return s;
}

std::optional<LoraSettings> read_optional_lora(ConfigReader& root) {
  if (root.raw("lora") == nullptr) return std::nullopt;
  ConfigReader lora = root.section("lora");
  LoraSettings settings = read_lora_section(lora);
  if (root.raw("freeze") != nullptr)
    root.fail("freeze", "does not apply with lora (the base model is frozen whole; choose the adapted layers with "
                        "lora.target_modules and lora.vision_target_modules)");
  return settings;
}

nlohmann::json lora_to_json(const LoraSettings& s) {
  return {{"r", s.r},           {"alpha", s.alpha},
          {"dropout", s.dropout}, {"use_rslora", s.use_rslora},
          {"target_modules", s.target_modules}, {"vision_target_modules", s.vision_target_modules},
          {"init_from", s.init_from}};
}

nlohmann::json checkpointing_to_json(const CheckpointingRules& rules) {
  return {{"decoder", rules.decoder_layers}, {"vision", rules.vision_blocks}};
}

CheckpointingRules read_gradient_checkpointing(ConfigReader& train) {
  CheckpointingRules rules;
  const nlohmann::json* value = train.raw("gradient_checkpointing");
  if (value == nullptr) return rules;
  if (value->is_boolean()) {
    rules.decoder_layers = rules.vision_blocks = value->get<bool>();
    return rules;
  }
  if (!value->is_object()) train.fail("gradient_checkpointing", "must be true, false or {decoder: bool, vision: bool}");
  ConfigReader section(*value, train.path("gradient_checkpointing"), train.source());
  rules.decoder_layers = section.optional<bool>("decoder", false);
  rules.vision_blocks = section.optional<bool>("vision", false);
  section.finish();
  return rules;
}

DataParallelRules read_data_parallel(ConfigReader& train) {
  DataParallelRules rules;
  rules.shard_optimizer = train.optional<bool>("shard_optimizer", rules.shard_optimizer);
  rules.bucket_mb = train.optional<double>("allreduce_bucket_mb", rules.bucket_mb);
  if (!(rules.bucket_mb > 0)) train.fail("allreduce_bucket_mb", "must be > 0");
  rules.timeout_s = train.optional<double>("collective_timeout_s", rules.timeout_s);
  if (!(rules.timeout_s > 0)) train.fail("collective_timeout_s", "must be > 0 seconds");
  return rules;
}

void data_parallel_to_json(const DataParallelRules& rules, nlohmann::json& train) {
  train["shard_optimizer"] = rules.shard_optimizer;
  train["allreduce_bucket_mb"] = rules.bucket_mb;
  train["collective_timeout_s"] = rules.timeout_s;
}

}  // namespace vlreward::qwen
