#include "plugin/config_reader.h"

namespace vlreward {

ConfigReader::ConfigReader(const nlohmann::json& config, std::string where) : config_(config), where_(std::move(where)) {
  if (!config_.is_object())
    throw RewardConfigError(where_ + ": must be an object, got " + std::string(config_.type_name()));
}

const nlohmann::json* ConfigReader::find(const std::string& key) {
  used_.insert(key);
  auto it = config_.find(key);
  return it == config_.end() ? nullptr : &*it;
}

void ConfigReader::fail(const std::string& key, const std::string& problem) const {
  throw RewardConfigError(path(key) + ": " + problem);
}

void ConfigReader::finish() const {
  std::string unknown;
  for (const auto& item : config_.items())
    if (used_.count(item.key()) == 0) unknown += (unknown.empty() ? "" : ", ") + item.key();
  if (!unknown.empty()) throw RewardConfigError(where_ + ": unknown key(s): " + unknown);
}

}  // namespace vlreward
