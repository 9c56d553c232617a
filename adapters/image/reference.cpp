#include "adapters/image/reference.h"

#include <filesystem>
#include <optional>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/json_text.h"
#include "plugin/wire/base64.h"

namespace vlreward {
namespace fs = std::filesystem;
namespace {

// Longer strings are base64 payloads, not paths: the file system is not asked about them.
constexpr size_t kMaxPathLength = 4096;
// Fewer decoded bytes than this cannot be an image: such a string is a mistyped path, not image data.
constexpr size_t kMinImageBytes = 8;

// At most ~60 bytes of client text in a message, as valid UTF-8 (messages travel in proto3 strings).
std::string shorten(const std::string& text) { return message_excerpt(text, 60); }

// JPEG and PNG, and the formats decoding refuses by name (GIF, WebP, BMP, TIFF).
bool looks_like_image_bytes(const std::string& bytes) {
  auto has = [&](std::string_view magic) { return bytes.compare(0, magic.size(), magic.data(), magic.size()) == 0; };
  return has("\xFF\xD8\xFF") || has("\x89PNG") || has("GIF8") || has("RIFF") || has("BM") ||
         has(std::string_view("II*\0", 4)) || has(std::string_view("MM\0*", 4));
}

bool path_within(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p)
    if (p == path.end() || *p != *r) return false;
  return true;
}

// kUnderRoot: the canonical file under the root, its size checked. `not_found_prefix` tells why the string was
// taken for a path ("invalid base64, and ").
std::string file_under_root(const std::string& text, const std::string& where, const ImageReferenceRules& rules,
                            const char* not_found_prefix) {
  if (rules.image_root.empty()) throw InputError(where, "path images are disabled (the server has no image_root)");
  const fs::path given(text);
  if (text.empty() || given.is_absolute()) throw InputError(where, "image paths must be relative to the image root");
  for (const auto& part : given)
    if (part == "..") throw InputError(where, fmt::format("\"..\" is not allowed in image paths ({})", shorten(text)));
  std::error_code ec;
  const fs::path resolved = fs::canonical(fs::path(rules.image_root) / given, ec);
  if (ec) throw InputError(where, fmt::format("{}no such image under the image root: {}", not_found_prefix, shorten(text)));
  // canonical() followed every symlink: what remains must still be inside the root.
  if (!path_within(resolved, fs::path(rules.image_root)))
    throw InputError(where, fmt::format("{} resolves outside the image root (symlink)", shorten(text)));
  if (!fs::is_regular_file(resolved, ec)) throw InputError(where, fmt::format("{} is not a regular file", shorten(text)));
  check_image_file_size(resolved.string(), rules.max_image_bytes, where, shorten(text));
  return resolved.string();
}

// kLocal: the existing file the text names, absolute or relative to the image root (or the working directory).
std::optional<std::string> local_file(const std::string& text, const ImageReferenceRules& rules) {
  if (text.empty() || text.size() >= kMaxPathLength) return std::nullopt;
  fs::path path(text);
  if (path.is_relative() && !rules.image_root.empty()) path = fs::path(rules.image_root) / path;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  return path.string();
}

}  // namespace

RewardImage resolve_image_path(const std::string& path, const std::string& where, const ImageReferenceRules& rules) {
  if (rules.paths == ImageReferenceRules::Paths::kUnderRoot)
    return RewardImage::from_path(file_under_root(path, where, rules, ""));
  const auto file = local_file(path, rules);
  if (!file) throw InputError(where, fmt::format("no such image file: {}", shorten(path)));
  check_image_file_size(*file, rules.max_image_bytes, where, path);
  return RewardImage::from_path(*file);
}

RewardImage parse_image_reference(const std::string& text, const std::string& where, const ImageReferenceRules& rules) {
  if (text.empty()) throw InputError(where, "empty image string");
  const bool under_root = rules.paths == ImageReferenceRules::Paths::kUnderRoot;
  for (const char* scheme : {"http://", "https://", "ftp://", "file://", "s3://", "gs://"})
    if (text.rfind(scheme, 0) == 0)
      throw InputError(where, under_root ? "image URLs are not fetched; send base64, a data URI, or a path under the "
                                           "image root"
                                         : "image URLs are not fetched; give base64, a data URI, or a file path");
  // Base64 is 4/3 the size of the bytes it holds: refuse oversized strings before decoding them.
  if (text.size() / 4 * 3 > rules.max_image_bytes + 3)
    throw ImageTooLargeError(where, fmt::format("image of about {} bytes exceeds the limit of {} bytes",
                                                text.size() / 4 * 3, rules.max_image_bytes));
  if (text.rfind("data:", 0) == 0) {
    auto uri = parse_data_uri(text);
    if (!uri) throw InputError(where, "malformed data URI (expected data:<mime>;base64,<valid base64>)");
    return RewardImage::from_bytes(std::move(uri->bytes), uri->mime_type);
  }
  auto bytes = base64_decode(text);
  if (bytes && looks_like_image_bytes(*bytes)) return RewardImage::from_bytes(std::move(*bytes));
  if (under_root) {
    if (!rules.image_root.empty() && text.size() < kMaxPathLength)
      return RewardImage::from_path(file_under_root(text, where, rules, bytes ? "" : "invalid base64, and "));
    if (!bytes) throw InputError(where, "invalid base64 (and not a data URI; path images need an image_root)");
  } else if (const auto file = local_file(text, rules)) {
    check_image_file_size(*file, rules.max_image_bytes, where, text);
    return RewardImage::from_path(*file);
  } else if (!bytes || bytes->size() < kMinImageBytes) {
    const bool as_given = rules.image_root.empty() || fs::path(text).is_absolute();
    const fs::path shown = as_given ? fs::path(text) : fs::path(rules.image_root) / text;
    throw InputError(where, fmt::format("is neither a readable file ({}) nor base64 image data",
                                        text.size() > 80 ? text.substr(0, 80) + "..." : shown.string()));
  }
  return RewardImage::from_bytes(std::move(*bytes));  // decoding names the format it is not
}

RewardImage parse_image_reference(const nlohmann::json& value, const std::string& where,
                                  const ImageReferenceRules& rules) {
  if (!value.is_string()) throw InputError(where, "must be a string (path, base64 or data URI)");
  return parse_image_reference(value.get_ref<const std::string&>(), where, rules);
}

}  // namespace vlreward
