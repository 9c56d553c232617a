#pragma once
// Shared pieces of the fuzz targets. A target feeds one input to one parser and returns; bad input must end in
// one of the project's documented errors (InputError, ConfigError, ServeError: each names the input and the
// problem). Any other exception is a finding: the target aborts so libFuzzer (or the corpus replay) reports it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>

#include "adapters/common/error.h"
#include "plugin/reward.h"

namespace vlreward::fuzz {

inline std::string_view bytes_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

template <typename F>
void expect_documented_errors_only(const char* what, F&& parse) {
  try {
    parse();
  } catch (const InputError&) {  // ConfigError included
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: undocumented exception: %s\n", what, e.what());
    std::abort();
  }
}

// Parsers that take a path get the input through one file per process (overwritten by every input).
inline std::string write_scratch_file(std::string_view bytes, const char* suffix) {
  const std::string path = "/tmp/vlreward_fuzz_" + std::to_string(::getpid()) + suffix;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

}  // namespace vlreward::fuzz
