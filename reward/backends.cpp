#include "reward/backends.h"

#include "reward/composite_backend.h"
#include "reward/rule_backends.h"
#include "reward/skywork_vl_backend.h"

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
  registry.add("skywork_vl", [](const nlohmann::json& config, const std::string& where, const RewardRegistry&) {
    return make_skywork_vl_backend(SkyworkVLOptions::from_config(config, where));
  });
}

}  // namespace vlreward
