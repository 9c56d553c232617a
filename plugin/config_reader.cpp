#include "plugin/config_reader.h"

namespace vlreward {

ConfigReader::ConfigReader(const nlohmann::json* config, std::string where, std::string source)
    : where_(std::move(where)), source_(std::move(source)) {
  if (config == nullptr || config->is_null()) return;
  if (!config->is_object())
    throw ConfigError(source_, (where_.empty() ? "config" : where_) + ": must be an object, got " + describe(*config));
  config_ = config;
}

const nlohmann::json* ConfigReader::raw(const std::string& key) {
  used_.insert(key);
  if (config_ == nullptr) return nullptr;
  auto it = config_->find(key);
  return it == config_->end() || it->is_null() ? nullptr : &*it;
}

bool ConfigReader::has(const std::string& key) const {
  if (config_ == nullptr) return false;
  auto it = config_->find(key);
  return it != config_->end() && !it->is_null();
}

std::string ConfigReader::required_text(const std::string& key) {
  auto value = required<std::string>(key);
  if (value.empty()) fail(key, "must not be empty");
  return value;
}

ConfigReader ConfigReader::section(const std::string& key) {
  ConfigReader child(raw(key), path(key), source_);
  child.exact_integers_ = exact_integers_;
  return child;
}

ConfigReader ConfigReader::required_section(const std::string& key) {
  if (!has(key)) fail(key, "is required");
  return section(key);
}

void ConfigReader::fail(const std::string& key, const std::string& problem) const {
  throw ConfigError(source_, path(key) + ": " + problem);
}

void ConfigReader::finish() const {
  if (config_ == nullptr) return;
  std::string unknown;
  for (const auto& item : config_->items())
    if (used_.count(item.key()) == 0) unknown += (unknown.empty() ? "" : ", ") + item.key();
  if (!unknown.empty()) throw ConfigError(source_, (where_.empty() ? "" : where_ + ": ") + "unknown key(s): " + unknown);
}

std::string ConfigReader::describe(const nlohmann::json& v) {
  if (v.is_number_float()) return v.dump();  // 3584.0: the type alone would read "number"
  if (v.is_number()) return "number " + v.dump();
  if (v.is_boolean()) return "boolean " + v.dump();
  if (v.is_string()) {
    // Quoted with its escapes; a long one cut (a 4 MB value would otherwise become the message).
    std::string quoted = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (quoted.size() > 80) quoted = quoted.substr(0, 76) + "...\"";
    return "string " + quoted;
  }
  return v.type_name();
}

}  // namespace vlreward
