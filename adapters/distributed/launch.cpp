#include "adapters/distributed/launch.h"

#include <cstdlib>
#include <string>

#include "adapters/common/error.h"

namespace vlreward::dist {
namespace {

const char* variable(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

int integer_variable(const char* name, int min_value) {
  const char* value = variable(name);
  if (value == nullptr) throw_input_error(name, "not set (RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT go together)");
  try {
    size_t used = 0;
    const int parsed = std::stoi(value, &used);
    if (used == std::string(value).size() && parsed >= min_value) return parsed;
  } catch (const std::exception&) {
  }
  throw_input_error(name, "\"{}\" is not an integer >= {}", value, min_value);
}

}  // namespace

LaunchEnvironment read_launch_environment() {
  LaunchEnvironment env;
  if (variable("RANK") == nullptr && variable("WORLD_SIZE") == nullptr) return env;
  env.world_size = integer_variable("WORLD_SIZE", 1);
  env.rank = integer_variable("RANK", 0);
  if (env.rank >= env.world_size) throw_input_error("RANK", "{} is not below WORLD_SIZE {}", env.rank, env.world_size);
  env.local_rank = variable("LOCAL_RANK") != nullptr ? integer_variable("LOCAL_RANK", 0) : env.rank;
  if (!env.distributed()) return env;
  const char* addr = variable("MASTER_ADDR");
  if (addr == nullptr) throw_input_error("MASTER_ADDR", "not set (WORLD_SIZE is {})", env.world_size);
  env.master_addr = addr;
  env.master_port = integer_variable("MASTER_PORT", 1);
  if (env.master_port > 65535) throw_input_error("MASTER_PORT", "{} is not a TCP port", env.master_port);
  const char* agent = variable("TORCHELASTIC_USE_AGENT_STORE");
  env.agent_store = agent != nullptr && (std::string(agent) == "True" || std::string(agent) == "1");
  if (variable("TORCHELASTIC_RESTART_COUNT") != nullptr)
    env.restart_count = integer_variable("TORCHELASTIC_RESTART_COUNT", 0);
  return env;
}

std::string device_for_rank(const std::string& device, const LaunchEnvironment& env) {
  if (env.distributed() && device == "cuda") return "cuda:" + std::to_string(env.local_rank);
  return device;
}

}  // namespace vlreward::dist
