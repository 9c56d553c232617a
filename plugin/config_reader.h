#pragma once
// Reads a backend's JSON config strictly: typed getters that name the key path in errors, and finish() that
// rejects keys nobody asked for (a misspelt key is an error, never silently ignored).
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <type_traits>

#include <fmt/format.h>
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
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      // The JSON library converts any number to any integer type, and a float outside the type's range (4e53 for
      // an int64) is undefined behaviour there: only whole numbers the type holds are accepted.
      if (v.is_number()) {
        if (!fits<T>(v))
          fail(key, fmt::format("must be an integer in [{}, {}], got {}", std::numeric_limits<T>::min(),
                                std::numeric_limits<T>::max(), v.dump()));
        if (v.is_number_float()) return static_cast<T>(v.get<double>());
        return v.is_number_unsigned() ? static_cast<T>(v.get<uint64_t>()) : static_cast<T>(v.get<int64_t>());
      }
    }
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(key, "has the wrong type (got " + std::string(v.type_name()) + ": " + v.dump() + ")");
    }
  }
  template <typename T>
  static bool fits(const nlohmann::json& v) {
    using Limits = std::numeric_limits<T>;
    if (v.is_number_float()) {
      const double d = v.get<double>();
      // max() as a double rounds up to a power of two the type cannot hold, hence "<".
      return std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(Limits::min()) &&
             d < static_cast<double>(Limits::max());
    }
    if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(Limits::max());
    const int64_t i = v.get<int64_t>();
    if (i < 0) return Limits::is_signed && i >= static_cast<int64_t>(Limits::min());
    return static_cast<uint64_t>(i) <= static_cast<uint64_t>(Limits::max());
  }

  const nlohmann::json& config_;
  std::string where_;
  std::set<std::string> used_;
};

}  // namespace vlreward
