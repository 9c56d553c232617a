#include "reward/backends.h"

#include "reward/composite_backend.h"
#include "reward/rule_backends.h"

namespace vlreward {

void register_reward_backends(RewardRegistry& registry) {
  registry.add("exact_match", [](const nlohmann::json& config, const std::string& where, const RewardRegistry&) {
    return make_exact_match_backend(config, where);
  });
  registry.add("regex_match", [](const nlohmann::json& config, const std::string& where, const RewardRegistry&) {
    return make_regex_match_backend(config, where);
  });
  registry.add("format", [](const nlohmann::json& config, const std::string& where, const RewardRegistry&) {
    return make_format_backend(config, where);
  });
  registry.add("composite", make_composite_backend);

  // ---- "skywork_vl" (the Skywork-VL Reward model, reward/skywork_vl_backend.h) is registered here by the lead.
  // ---- Not implemented in this file yet.
}

}  // namespace vlreward
