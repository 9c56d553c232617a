#include "plugin/registry.h"

namespace vlreward {

RewardRegistry::RewardRegistry(Empty) {}

void RewardRegistry::add(const std::string& type, RewardFactory factory) {
  if (!factories_.emplace(type, std::move(factory)).second)
    throw ConfigError("reward backend type \"" + type + "\" is registered twice");
}

std::vector<std::string> RewardRegistry::types() const {
  std::vector<std::string> out;
  for (const auto& [name, factory] : factories_) out.push_back(name);
  return out;
}

std::unique_ptr<RewardBackend> RewardRegistry::create(const nlohmann::json& config, const std::string& where) const {
  if (!config.is_object()) throw ConfigError(where + ": must be an object with a \"type\"");
  auto type = config.find("type");
  if (type == config.end() || !type->is_string()) throw ConfigError(where + ".type: is required (a string)");
  auto it = factories_.find(type->get<std::string>());
  if (it == factories_.end()) {
    std::string known;
    for (const auto& t : types()) known += (known.empty() ? "" : ", ") + t;
    throw ConfigError(where + ".type: unknown reward backend \"" + type->get<std::string>() +
                            "\" (known: " + known + ")");
  }
  nlohmann::json rest = config;
  rest.erase("type");
  return it->second(rest, where, *this);
}

}  // namespace vlreward
