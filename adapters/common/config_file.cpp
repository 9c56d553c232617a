#include "adapters/common/config_file.h"

#include <algorithm>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/byte_level.h"
#include "plugin/error.h"

namespace vlreward {
namespace {

// yaml-cpp can still produce ill-formed bytes from well-formed text (escapes, NUL handling): every string that
// reaches the JSON tree is checked, so the tree always holds valid UTF-8.
const std::string& checked_utf8(const std::string& text, const std::string& source) {
  const size_t bad = find_invalid_utf8(text);
  if (bad != text.size()) throw ConfigError(source, fmt::format("invalid YAML: a key or value holds ill-formed UTF-8 (byte {} of it)", bad));
  return text;
}

nlohmann::json scalar_to_json(const YAML::Node& node, const std::string& source) {
  const std::string& text = checked_utf8(node.Scalar(), source);
  if (node.Tag() == "!") return text;  // quoted in the file: always a string
  if (text == "null" || text == "~" || text.empty()) return nullptr;
  if (text == "true" || text == "True") return true;
  if (text == "false" || text == "False") return false;
  try {
    size_t used = 0;
    long long i = std::stoll(text, &used);
    if (used == text.size()) return i;
  } catch (...) {
  }
  try {
    size_t used = 0;
    double d = std::stod(text, &used);
    if (used == text.size()) return d;
  } catch (...) {
  }
  return text;
}

nlohmann::json yaml_to_json(const YAML::Node& node, const std::string& source) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& item : node) out[checked_utf8(item.first.as<std::string>(), source)] = yaml_to_json(item.second, source);
      return out;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) out.push_back(yaml_to_json(item, source));
      return out;
    }
    case YAML::NodeType::Scalar: return scalar_to_json(node, source);
    default: return nullptr;
  }
}

// YAML text is Unicode (as PyYAML reads it); yaml-cpp passes ill-formed bytes through into strings, where they would
// surface later as a JSON type error far from the file. Refuse them up front, naming the line.
void require_utf8(const std::string& text, const std::string& source) {
  const size_t bad = find_invalid_utf8(text);
  if (bad == text.size()) return;
  const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n');
  throw ConfigError(source, fmt::format("invalid YAML: ill-formed UTF-8 at byte {} (line {})", bad, line));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

nlohmann::json load_config_file(const std::string& path) {
  const std::string text = read_file(path);
  if (ends_with(path, ".json")) {
    return parse_json_text(text, path, "invalid JSON");
  }
  require_utf8(text, path);
  try {
    return yaml_to_json(YAML::Load(text), path);
  } catch (const YAML::Exception& e) {
    throw ConfigError(path, fmt::format("invalid YAML at line {}, column {}: {}", e.mark.line + 1, e.mark.column + 1, e.msg));
  }
}

void apply_override(nlohmann::json& config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw ConfigError(assignment, "override must look like key.path=value");
  const std::string key = assignment.substr(0, eq);
  nlohmann::json value;
  require_utf8(assignment, "override");
  try {
    value = yaml_to_json(YAML::Load(assignment.substr(eq + 1)), "override");
  } catch (const YAML::Exception& e) {
    throw ConfigError(assignment, fmt::format("cannot parse the value: {}", e.msg));
  }
  nlohmann::json* node = &config;
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw ConfigError(assignment, "empty key segment");
    if (!node->is_object()) throw ConfigError(assignment, fmt::format("\"{}\" is not inside an object", part));
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    node = &(*node)[part];
    if (node->is_null()) *node = nlohmann::json::object();
    start = dot + 1;
  }
}

}  // namespace vlreward
