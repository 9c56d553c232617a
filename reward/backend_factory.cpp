// make_reward_backend: the default registry (plugin, remote) plus this library's backends. Apart from
// register_reward_backends (backends.cpp) so that code registering into RewardRegistry(Empty) links no remote backend.
#include "reward/backends.h"

namespace vlreward {

std::unique_ptr<RewardBackend> make_reward_backend(const nlohmann::json& config) {
  RewardRegistry registry;
  register_reward_backends(registry);
  return registry.create(config);
}

}  // namespace vlreward
