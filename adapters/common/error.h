#pragma once
// throw_input_error: an InputError (plugin/error.h) with a fmt-formatted problem.
#include <string>
#include <utility>

#include <fmt/format.h>

#include "plugin/error.h"

namespace vlreward {

template <typename... Args>
[[noreturn]] inline void throw_input_error(const std::string& source, fmt::format_string<Args...> f,
                                           Args&&... args) {
  throw InputError(source, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace vlreward
