#pragma once
// The one reading of an image named by a string — in a reward-serve request, a reward-score line, a preference
// record: a data URI, base64 bytes, or a file path. Paths follow one of two rules: a local user's commands take any
// file they name; a server takes only files under its image root (no absolute paths, no "..", no symlink out).
// URLs are never fetched. Every error names `where` and the problem; sizes are checked before anything is read.
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "adapters/image/decode.h"
#include "plugin/reward.h"

namespace vlreward {

struct ImageReferenceRules {
  enum class Paths {
    kLocal,      // an existing file: absolute, or relative to image_root (the working directory when empty)
    kUnderRoot,  // a relative path that stays under image_root (canonical) after symlinks; off when it is empty
  };
  Paths paths = Paths::kLocal;
  std::string image_root;
  uint64_t max_image_bytes = kDefaultMaxImageFileBytes;  // a file's size, or the bytes a base64 string holds
};

// In this order: "data:<mime>;base64,<data>" → its bytes; a URL (http, https, ftp, file, s3, gs) → refused; base64
// that decodes to an image's magic bytes → those bytes; a path by the rules → RewardImage::from_path (the file's
// size checked, nothing read); other valid base64 of at least 8 bytes → those bytes (decoding then names the
// format it is not). Throws InputError(where, ...) for anything else, ImageTooLargeError over the limit.
RewardImage parse_image_reference(const std::string& text, const std::string& where, const ImageReferenceRules& rules);
// The same for a field of a JSON record, which must be a string.
RewardImage parse_image_reference(const nlohmann::json& value, const std::string& where,
                                  const ImageReferenceRules& rules);

// An image given explicitly as a path ({"type": "image", "path": ...}): the path rules alone.
RewardImage resolve_image_path(const std::string& path, const std::string& where, const ImageReferenceRules& rules);

}  // namespace vlreward
