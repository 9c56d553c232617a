#pragma once
// Registers the reward backends implemented in reward/ with a registry.
#include "plugin/registry.h"

namespace vlreward {

// Adds "skywork_vl" (reward/skywork_vl_backend.h), "exact_match", "regex_match", "format"
// (reward/rule_backends.h) and "composite" (reward/composite_backend.h).
void register_reward_backends(RewardRegistry& registry);

}  // namespace vlreward
