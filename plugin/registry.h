#pragma once
// Creates reward backends by name from a JSON config: {"type": "<backend>", ...backend keys...}.
// YAML configs are converted to JSON before they get here.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

class RewardRegistry;
// `config` is the backend's object without "type"; `where` is its key path for error messages.
using RewardFactory = std::function<std::unique_ptr<RewardBackend>(const nlohmann::json& config,
                                                                   const std::string& where,
                                                                   const RewardRegistry& registry)>;

class RewardRegistry {
 public:
  // A registry that knows the backends of this layer: "plugin" (a shared library loaded by path) and "remote" (a
  // client of reward-serve replicas, plugin/remote/remote_backend.h).
  // reward/ adds the neural, rule and composite backends (register_reward_backends in reward/backends.h).
  RewardRegistry();
  // A registry with no backends (add them). Unlike the default one it does not link the remote backend, nor
  // protobuf with it: the Python extension builds on it.
  struct Empty {};
  explicit RewardRegistry(Empty);

  void add(const std::string& type, RewardFactory factory);  // throws ConfigError on a duplicate type
  bool contains(const std::string& type) const { return factories_.count(type) != 0; }
  std::vector<std::string> types() const;

  // Throws ConfigError naming the config path (`where`) and the problem: missing/unknown "type", or
  // whatever the backend's factory rejects.
  std::unique_ptr<RewardBackend> create(const nlohmann::json& config, const std::string& where = "reward") const;

 private:
  std::map<std::string, RewardFactory> factories_;
};

}  // namespace vlreward
