#pragma once
// Errors for bad input. Every message names the input (file, request field, config key) and the problem, so a user
// can fix it without reading our source. Torch-free: plugins and the public interface use them too.
#include <stdexcept>
#include <string>

namespace vlreward {

// Malformed or unsupported input: corrupt files, bad JSON, impossible shapes.
class InputError : public std::runtime_error {
 public:
  InputError(const std::string& source, const std::string& problem)
      : std::runtime_error(source.empty() ? problem : source + ": " + problem), source_(source) {}
  const std::string& source() const noexcept { return source_; }

 private:
  std::string source_;
};

// A configuration that cannot be used: a reward backend's config (unknown backend, bad keys, unloadable plugin), a
// training config, a server config, a model's config.json. Thrown by ConfigReader (plugin/config_reader.h); an
// InputError, so whatever reports bad input reports it the same way. Per-item problems of scoring are RewardResult
// errors, not exceptions.
class ConfigError : public InputError {
 public:
  explicit ConfigError(const std::string& problem) : InputError("", problem) {}
  ConfigError(const std::string& source, const std::string& problem) : InputError(source, problem) {}
};

}  // namespace vlreward
