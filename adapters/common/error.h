#pragma once
// Errors for bad input. Every message names the input (file, request field, config key) and the problem,
// so a user can fix it without reading our source.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace vlreward {

// Malformed or unsupported input: corrupt files, bad JSON, bad config values, impossible shapes.
class InputError : public std::runtime_error {
 public:
  InputError(const std::string& source, const std::string& problem)
      : std::runtime_error(source.empty() ? problem : source + ": " + problem), source_(source) {}
  const std::string& source() const noexcept { return source_; }

 private:
  std::string source_;
};

template <typename... Args>
[[noreturn]] inline void throw_input_error(const std::string& source, fmt::format_string<Args...> f,
                                           Args&&... args) {
  throw InputError(source, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace vlreward
