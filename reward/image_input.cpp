#include "reward/image_input.h"

#include <cstdint>
#include <filesystem>

#include "adapters/common/base64.h"
#include "adapters/common/error.h"

namespace vlreward {
namespace fs = std::filesystem;

RewardImage parse_image_reference(const nlohmann::json& value, const std::string& where, const std::string& image_root,
                                  uint64_t max_file_bytes) {
  if (!value.is_string()) throw InputError(where, "must be a string (path, base64 or data URI)");
  const std::string text = value.get<std::string>();
  if (text.rfind("data:", 0) == 0) {
    auto uri = parse_data_uri(text);
    if (!uri) throw InputError(where, "malformed data URI (expected data:<mime>;base64,<data>)");
    return RewardImage::from_bytes(std::move(uri->bytes), uri->mime_type);
  }
  fs::path path(text);
  if (path.is_relative() && !image_root.empty()) path = fs::path(image_root) / path;
  std::error_code ec;
  // Long strings are base64 payloads, not paths: don't ask the file system about them.
  if (text.size() < 4096 && fs::is_regular_file(path, ec)) {
    check_image_file_size(path.string(), max_file_bytes, where, text);
    return RewardImage::from_path(path.string());
  }
  if (auto bytes = base64_decode(text); bytes && bytes->size() >= 8) return RewardImage::from_bytes(std::move(*bytes));
  throw InputError(where, fmt::format("is neither a readable file ({}) nor base64 image data",
                                      text.size() > 80 ? text.substr(0, 80) + "..." : path.string()));
}

}  // namespace vlreward
