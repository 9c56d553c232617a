#include "adapters/qwen2_5_vl/pretrained_config.h"

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

}  // namespace vlreward::qwen
