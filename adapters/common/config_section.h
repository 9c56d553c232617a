#pragma once
// One object of a YAML/JSON config file read strictly (the trainers' configs): typed getters whose errors name
// "<file>: <section>.<key>: problem", and finish() rejecting the keys nobody asked for (a misspelt key is an error,
// never silently ignored). Errors are InputError(source, ...).
#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

namespace vlreward {

class ConfigSection {
 public:
  // `value`: the object (nullptr or null: an empty section); `where`: its key path ("" for the root).
  ConfigSection(const nlohmann::json* value, std::string where, std::string source);
  ConfigSection(const nlohmann::json& value, std::string where, std::string source)
      : ConfigSection(&value, std::move(where), std::move(source)) {}

  // The raw value (marked as used), or nullptr when absent or null.
  const nlohmann::json* raw(const std::string& key);
  std::optional<std::string> text(const std::string& key);
  std::string text(const std::string& key, std::string fallback) { return text(key).value_or(std::move(fallback)); }
  std::string required_text(const std::string& key);  // present and non-empty
  bool flag(const std::string& key, bool fallback);
  double number(const std::string& key, double fallback);  // finite
  std::optional<int64_t> integer(const std::string& key);   // whole numbers written as 1e3 or 2.0 count
  int64_t integer(const std::string& key, int64_t fallback) { return integer(key).value_or(fallback); }
  ConfigSection section(const std::string& key);

  void finish() const;
  std::string path(const std::string& key) const { return where_.empty() ? key : where_ + "." + key; }
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const;
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json* value_ = nullptr;
  std::string where_, source_;
  std::set<std::string> used_;
};

}  // namespace vlreward
