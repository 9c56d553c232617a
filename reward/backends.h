#pragma once
// Registers the reward backends implemented in reward/ with a registry.
#include <memory>

#include <nlohmann/json.hpp>

#include "plugin/registry.h"

namespace vlreward {

// Adds "skywork_vl" (reward/skywork_vl_backend.h), "exact_match", "regex_match", "format"
// (reward/rule_backends.h) and "composite" (reward/composite_backend.h).
void register_reward_backends(RewardRegistry& registry);

// A backend from its config ({"type": ...}) with every backend of this library registered.
std::unique_ptr<RewardBackend> make_reward_backend(const nlohmann::json& config);

}  // namespace vlreward
