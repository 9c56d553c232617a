#pragma once
// Loads a reward backend compiled separately as a shared library (dlopen by path), through the versioned
// extern "C" ABI of plugin/plugin_abi.h.
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

// config: {"path": "/path/libfoo.so", "config": {...passed to the plugin as JSON text...}}.
// Throws ConfigError naming the library for: dlopen failure, a missing symbol, a different ABI version,
// or the plugin refusing its config.
std::unique_ptr<RewardBackend> make_shared_library_backend(const nlohmann::json& config, const std::string& where);

}  // namespace vlreward
