#pragma once
// Reads one object of a configuration strictly — a reward backend's JSON config, a server config, a trainer's YAML
// config, a model's config.json: typed getters whose errors name the key path (and the file, when there is one),
// and finish() that rejects keys nobody asked for (a misspelt key is an error, never silently ignored). Every error
// is a ConfigError. A null value counts as absent (YAML's `key:` with nothing after it).
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "plugin/error.h"

namespace vlreward {

class ConfigReader {
 public:
  // `config`: the object (nullptr or null: an empty one, every key absent); `where`: its key path ("" at a file's
  // root); `source`: the file it came from ("" when it did not come from a file).
  ConfigReader(const nlohmann::json* config, std::string where, std::string source = "");
  ConfigReader(const nlohmann::json& config, std::string where, std::string source = "")
      : ConfigReader(&config, std::move(where), std::move(source)) {}

  // Integer keys take whole numbers their type holds, also written as 1e3 or 2.0 (YAML writes large numbers so);
  // after exact_integers() only integer literals (config.json, where 18944.0 means a broken file). Sections inherit it.
  ConfigReader& exact_integers() {
    exact_integers_ = true;
    return *this;
  }

  template <typename T>
  T required(const std::string& key) {
    const auto* v = raw(key);
    if (v == nullptr) fail(key, "is required");
    return convert<T>(*v, key);
  }
  template <typename T>
  T optional(const std::string& key, T fallback) {
    const auto* v = raw(key);
    return v == nullptr ? fallback : convert<T>(*v, key);
  }
  template <typename T>
  std::optional<T> maybe(const std::string& key) {
    const auto* v = raw(key);
    if (v == nullptr) return std::nullopt;
    return convert<T>(*v, key);
  }
  std::string required_text(const std::string& key);  // a string, present and not empty

  // The raw value (marked as used), or nullptr when absent or null.
  const nlohmann::json* raw(const std::string& key);
  // Whether the key is present and not null; does not mark it used.
  bool has(const std::string& key) const;
  // A sub-object (an absent one reads as empty), or `key` must be present.
  ConfigReader section(const std::string& key);
  ConfigReader required_section(const std::string& key);
  // One element of a list, read with the same rules; `key` names it in errors ("stages[2]").
  template <typename T>
  T element(const nlohmann::json& value, const std::string& key) const {
    return convert<T>(value, key);
  }

  std::string path(const std::string& key) const { return where_.empty() ? key : where_ + "." + key; }
  const std::string& where() const { return where_; }
  const std::string& source() const { return source_; }
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const;
  void finish() const;  // a ConfigError listing the unknown keys

  // A value as an error message shows it: numbers with their digits, strings quoted, else the type.
  static std::string describe(const nlohmann::json& v);

 private:
  template <typename T>
  struct is_vector : std::false_type {};
  template <typename E>
  struct is_vector<std::vector<E>> : std::true_type {};

  template <typename T>
  T convert(const nlohmann::json& v, const std::string& key) const {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) fail(key, "must be true or false, got " + describe(v));
      return v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number() || (exact_integers_ && v.is_number_float()))
        fail(key, "must be an integer, got " + describe(v));
      // The JSON library converts any number to any integer type, and a float outside the type's range (4e53 for
      // an int64) is undefined behaviour there: only whole numbers the type holds are accepted.
      if (!fits<T>(v))
        fail(key, fmt::format("must be an integer in [{}, {}], got {}", std::numeric_limits<T>::min(),
                              std::numeric_limits<T>::max(), v.dump()));
      if (v.is_number_float()) return static_cast<T>(v.get<double>());
      return v.is_number_unsigned() ? static_cast<T>(v.get<uint64_t>()) : static_cast<T>(v.get<int64_t>());
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) fail(key, "must be a number, got " + describe(v));
      const double d = v.get<double>();
      if (!std::isfinite(d)) fail(key, "must be finite, got " + v.dump());
      return static_cast<T>(d);
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) fail(key, "must be a string, got " + describe(v));
      return v.get<std::string>();
    } else if constexpr (is_vector<T>::value) {
      if (!v.is_array()) fail(key, "must be a list, got " + describe(v));
      T out;
      for (size_t i = 0; i < v.size(); ++i)
        out.push_back(convert<typename T::value_type>(v[i], key + "[" + std::to_string(i) + "]"));
      return out;
    } else {
      try {
        return v.get<T>();
      } catch (const nlohmann::json::exception&) {
        fail(key, "has the wrong type (got " + describe(v) + ")");
      }
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

  const nlohmann::json* config_ = nullptr;  // nullptr: empty
  std::string where_, source_;
  bool exact_integers_ = false;
  std::set<std::string> used_;
};

}  // namespace vlreward
