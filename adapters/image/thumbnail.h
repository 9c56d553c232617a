#pragma once
// A small PNG of an image for embedding in a report: decoded, scaled to fit max_side × max_side (Pillow's bicubic,
// never enlarged), re-encoded as PNG and returned as a data URI, so a report stays one self-contained file whatever
// size the original was.
#include <cstdint>
#include <string>

#include "plugin/reward.h"

namespace vlreward {

// Throws InputError naming `source` when the image cannot be read or decoded.
std::string thumbnail_data_uri(const RewardImage& image, const std::string& source, int64_t max_side = 160);

}  // namespace vlreward
