#pragma once
// Images given in JSON records (reward-score requests, MPO preference pairs): a file path, base64 bytes or a
// data URI, in one string. Shared so every JSONL reader accepts the same forms with the same errors.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "adapters/image/image_decode.h"
#include "plugin/reward.h"

namespace vlreward {

// `value` must be a string: "data:<mime>;base64,..." → the decoded bytes; an existing file (relative paths are
// resolved against image_root when it is set) → its path, once its size is checked against max_file_bytes
// (nothing is read); otherwise strict base64 → the bytes. Throws InputError(where, ...) when it is none of these
// (e.g. a missing image file) or the file is too large.
RewardImage parse_image_reference(const nlohmann::json& value, const std::string& where, const std::string& image_root,
                                  uint64_t max_file_bytes = kDefaultMaxImageFileBytes);

}  // namespace vlreward
