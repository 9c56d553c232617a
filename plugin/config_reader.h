#pragma once
// Reads a backend's JSON config strictly: typed getters that name the key path in errors, and finish() that
// rejects keys nobody asked for (a misspelt key is an error, never silently ignored).
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

class ConfigReader {
 public:
  // `where` is the key path of this object, e.g. "reward.components[1].backend".
  ConfigReader(const nlohmann::json& config, std::string where);

  template <typename T>
  T required(const std::string& key) {
    const auto* v = find(key);
    if (v == nullptr) fail(key, "is required");
    return convert<T>(*v, key);
  }
  template <typename T>
  T optional(const std::string& key, T fallback) {
    const auto* v = find(key);
    return v == nullptr || v->is_null() ? fallback : convert<T>(*v, key);
  }
  template <typename T>
  std::optional<T> maybe(const std::string& key) {
    const auto* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    return convert<T>(*v, key);
  }
  // The raw sub-object/array (marked as used), or nullptr when absent.
  const nlohmann::json* child(const std::string& key) { return find(key); }

  std::string path(const std::string& key) const { return where_ + "." + key; }
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const;
  void finish() const;  // throws RewardConfigError listing unknown keys

 private:
  const nlohmann::json* find(const std::string& key);
  template <typename T>
  T convert(const nlohmann::json& v, const std::string& key) const {
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(key, "has the wrong type (got " + std::string(v.type_name()) + ": " + v.dump() + ")");
    }
  }

  const nlohmann::json& config_;
  std::string where_;
  std::set<std::string> used_;
};

}  // namespace vlreward
