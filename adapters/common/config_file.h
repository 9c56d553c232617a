#pragma once
// Config files (YAML or JSON) read into one JSON tree, so every component validates the same structure.
#include <string>

#include <nlohmann/json.hpp>

namespace vlreward {

// .json → parsed as JSON; .yaml/.yml → YAML converted to JSON (scalars become bool/int/float/null where YAML
// would read them so, else strings). Throws ConfigError naming the file and line on a syntax error.
nlohmann::json load_config_file(const std::string& path);

// Applies "a.b.c=value" overrides (value parsed as YAML scalar / flow sequence). Throws ConfigError naming the
// override when it is malformed.
void apply_override(nlohmann::json& config, const std::string& assignment);

}  // namespace vlreward
