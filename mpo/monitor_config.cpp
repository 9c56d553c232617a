#include "mpo/monitor_config.h"

#include <algorithm>

#include <fmt/format.h>

#include "plugin/config_reader.h"

namespace vlreward::mpo {
namespace {

bool is_format_metric(const std::string& name) { return name.find("format_violations") != std::string::npos; }
bool is_heldout_metric(const std::string& name) { return name.rfind("heldout_", 0) == 0 || name == "kl"; }

}  // namespace

const std::vector<std::string>& monitor_metric_names() {
  static const std::vector<std::string> names{
      "sample_format_violations", "sample_accuracy",           "reward_correctness_agreement", "sample_tokens",
      "heldout_accuracy",         "heldout_format_violations", "heldout_tokens",               "kl"};
  return names;
}

std::string MonitorAlarm::describe() const {
  std::string out = metric;
  if (above) out += fmt::format(" above {}", *above);
  if (below) out += fmt::format("{} below {}", above ? " or" : "", *below);
  return out + (stop ? " (stop)" : " (warn)");
}

nlohmann::json MonitorSettings::to_json() const {
  nlohmann::json alarm_list = nlohmann::json::array();
  for (const auto& a : alarms) {
    nlohmann::json j{{"metric", a.metric}, {"action", a.stop ? "stop" : "warn"}};
    if (a.above) j["above"] = *a.above;
    if (a.below) j["below"] = *a.below;
    alarm_list.push_back(j);
  }
  return {{"prompts", prompts}, {"max_prompts", max_prompts}, {"format", format},
          {"correct", correct}, {"seed", seed},               {"alarms", alarm_list}};
}

MonitorSettings read_monitor_settings(ConfigReader& monitor) {
  MonitorSettings s;
  s.prompts = monitor.optional<std::string>("prompts", "");
  s.max_prompts = monitor.optional<int64_t>("max_prompts", 0);
  if (s.max_prompts < 0) monitor.fail("max_prompts", "must be >= 0 (0: all)");
  for (const char* key : {"format", "correct"}) {
    const nlohmann::json* backend = monitor.raw(key);
    if (backend == nullptr) continue;
    if (!backend->is_object() || !backend->contains("type"))
      monitor.fail(key, "must be a reward backend config with a \"type\", got " + ConfigReader::describe(*backend));
    (std::string(key) == "format" ? s.format : s.correct) = *backend;
  }
  s.seed = monitor.optional<uint64_t>("seed", 0);
  if (const nlohmann::json* alarms = monitor.raw("alarms")) {
    if (!alarms->is_array()) monitor.fail("alarms", "must be a list of {metric, above | below, action}");
    const auto& names = monitor_metric_names();
    for (size_t k = 0; k < alarms->size(); ++k) {
      ConfigReader a(&(*alarms)[k], monitor.path(fmt::format("alarms[{}]", k)), monitor.source());
      MonitorAlarm alarm;
      alarm.metric = a.required_text("metric");
      if (alarm.metric.rfind("monitor/", 0) == 0) alarm.metric = alarm.metric.substr(8);
      if (std::find(names.begin(), names.end(), alarm.metric) == names.end())
        a.fail("metric", fmt::format("unknown monitor metric \"{}\" (one of: {})", alarm.metric, fmt::join(names, ", ")));
      if (is_format_metric(alarm.metric) && s.format.is_null())
        a.fail("metric", fmt::format("{} needs online.monitor.format (the format check)", alarm.metric));
      if (is_heldout_metric(alarm.metric) && s.prompts.empty())
        a.fail("metric", fmt::format("{} needs online.monitor.prompts (held-out prompts)", alarm.metric));
      alarm.above = a.maybe<double>("above");
      alarm.below = a.maybe<double>("below");
      if (!alarm.above && !alarm.below) a.fail("above", "an alarm needs a threshold: above, below or both");
      const std::string action = a.optional<std::string>("action", "warn");
      if (action != "warn" && action != "stop") a.fail("action", "must be \"warn\" or \"stop\", got \"" + action + "\"");
      alarm.stop = action == "stop";
      a.finish();
      s.alarms.push_back(alarm);
    }
  }
  monitor.finish();
  return s;
}

}  // namespace vlreward::mpo
