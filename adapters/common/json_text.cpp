#include "adapters/common/json_text.h"

#include <vector>

#include <fmt/format.h>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/byte_level.h"

namespace vlreward {
namespace {

constexpr size_t kMaxDetailBytes = 240;
constexpr size_t kMaxKeyBytes = 60;

// Re-parses `text` (only after a failure, so the common path pays nothing) with a callback that tracks the
// position in the document, and returns the path of the value being read when the parser stopped.
std::string failure_path(std::string_view text) {
  struct Frame {
    bool array = false;
    size_t index = 0;       // arrays: the element being read
    std::string key;        // objects: the member being read
    bool in_member = false;
  };
  std::vector<Frame> stack;
  auto completed_child = [&] {
    if (stack.empty()) return;
    if (stack.back().array) ++stack.back().index;
    else stack.back().in_member = false;
  };
  using Event = nlohmann::json::parse_event_t;
  nlohmann::json::parser_callback_t callback = [&](int, Event event, nlohmann::json& parsed) {
    switch (event) {
      case Event::object_start: stack.push_back({false, 0, {}, false}); break;
      case Event::array_start: stack.push_back({true, 0, {}, false}); break;
      case Event::key:
        if (!stack.empty()) {
          stack.back().key = parsed.is_string() ? parsed.get<std::string>() : std::string();
          stack.back().in_member = true;
        }
        break;
      case Event::value: completed_child(); break;
      case Event::object_end:
      case Event::array_end:
        if (!stack.empty()) stack.pop_back();
        completed_child();
        break;
    }
    return true;
  };
  [[maybe_unused]] const auto discarded =
      nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  std::string path;
  for (const auto& frame : stack) {
    if (frame.array) {
      path += fmt::format("[{}]", frame.index);
    } else if (frame.in_member) {
      if (!path.empty()) path += '.';
      path += message_excerpt(frame.key, kMaxKeyBytes);
    }
  }
  return path;
}

}  // namespace

std::string message_excerpt(std::string_view text, size_t limit) {
  std::string out = utf8_decode_lossy(text.substr(0, limit + 4));
  if (out.size() <= limit) return out;
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
  return out.substr(0, cut) + "...";
}

std::string describe_json_failure(std::string_view text, const nlohmann::json::exception& e, std::string_view syntax,
                                  std::string* path_out) {
  const std::string path = failure_path(text);
  if (path_out != nullptr) *path_out = path;
  std::string detail = e.what();
  if (dynamic_cast<const nlohmann::json::out_of_range*>(&e) != nullptr) {
    // "[json.exception.out_of_range.406] number overflow parsing '1e400'": the bracketed id says nothing more.
    const auto close = detail.find("] ");
    if (detail.rfind("[json.exception.", 0) == 0 && close != std::string::npos) detail.erase(0, close + 2);
    const std::string problem = fmt::format("number out of range ({})", message_excerpt(detail, kMaxDetailBytes));
    return path.empty() ? problem : path + ": " + problem;
  }
  return fmt::format("{}{}: {}", syntax, path.empty() ? "" : " at " + path, message_excerpt(detail, kMaxDetailBytes));
}

nlohmann::json parse_json_text(std::string_view text, const std::string& source, std::string_view syntax) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(source, describe_json_failure(text, e, syntax));
  }
}

nlohmann::json read_json_file(const std::string& path, std::string_view syntax) {
  return parse_json_text(read_file(path), path, syntax);
}

}  // namespace vlreward
