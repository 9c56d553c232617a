// RewardRegistry's default backends. Apart from the rest of the registry (registry.cpp) so that code using only
// RewardRegistry(Empty) does not link the remote backend and, with it, protobuf: a shared object such as the Python
// extension cannot take this build's static, non-PIC protobuf.
#include "plugin/registry.h"

#include "plugin/remote/remote_backend.h"
#include "plugin/shared_library_backend.h"

namespace vlreward {

RewardRegistry::RewardRegistry() {
  add("plugin", [](const nlohmann::json& config, const std::string& where, const RewardRegistry&) {
    return make_shared_library_backend(config, where);
  });
  add("remote", [](const nlohmann::json& config, const std::string& where, const RewardRegistry&) {
    return make_remote_backend(config, where);
  });
}

}  // namespace vlreward
