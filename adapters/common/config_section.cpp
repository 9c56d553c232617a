#include "adapters/common/config_section.h"

#include <cmath>
#include <cstdint>

#include "adapters/common/error.h"

namespace vlreward {

using nlohmann::json;

ConfigSection::ConfigSection(const json* value, std::string where, std::string source)
    : where_(std::move(where)), source_(std::move(source)) {
  if (value == nullptr || value->is_null()) return;
  if (!value->is_object())
    throw InputError(source_, (where_.empty() ? "config" : where_) + ": must be a mapping, got " + value->dump());
  value_ = value;
}

const json* ConfigSection::raw(const std::string& key) {
  used_.insert(key);
  if (value_ == nullptr) return nullptr;
  auto it = value_->find(key);
  return it == value_->end() || it->is_null() ? nullptr : &*it;
}

std::optional<std::string> ConfigSection::text(const std::string& key) {
  const json* v = raw(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) fail(key, "must be a string, got " + v->dump());
  return v->get<std::string>();
}

std::string ConfigSection::required_text(const std::string& key) {
  auto value = text(key);
  if (!value) fail(key, "is required");
  if (value->empty()) fail(key, "must not be empty");
  return *value;
}

bool ConfigSection::flag(const std::string& key, bool fallback) {
  const json* v = raw(key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail(key, "must be true or false, got " + v->dump());
  return v->get<bool>();
}

double ConfigSection::number(const std::string& key, double fallback) {
  const json* v = raw(key);
  if (v == nullptr) return fallback;
  if (!v->is_number()) fail(key, "must be a number, got " + v->dump());
  const double d = v->get<double>();
  if (!std::isfinite(d)) fail(key, "must be finite, got " + v->dump());
  return d;
}

std::optional<int64_t> ConfigSection::integer(const std::string& key) {
  const json* v = raw(key);
  if (v == nullptr) return std::nullopt;
  // YAML "1e3" or JSON 2.0 are whole numbers too.
  if (v->is_number_float() && std::isfinite(v->get<double>()) && v->get<double>() == std::floor(v->get<double>()) &&
      std::fabs(v->get<double>()) < 9e15)
    return static_cast<int64_t>(v->get<double>());
  if (!v->is_number_integer()) fail(key, "must be an integer, got " + v->dump());
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) fail(key, "is too large");
  return v->get<int64_t>();
}

ConfigSection ConfigSection::section(const std::string& key) { return ConfigSection(raw(key), path(key), source_); }

void ConfigSection::finish() const {
  if (value_ == nullptr) return;
  std::string unknown;
  for (const auto& item : value_->items())
    if (used_.count(item.key()) == 0) unknown += (unknown.empty() ? "" : ", ") + item.key();
  if (!unknown.empty()) throw InputError(source_, (where_.empty() ? "" : where_ + ": ") + "unknown key(s): " + unknown);
}

void ConfigSection::fail(const std::string& key, const std::string& problem) const {
  throw InputError(source_, path(key) + ": " + problem);
}

}  // namespace vlreward
