#pragma once
// Pillow's 8-bit BICUBIC resampler (src/libImaging/Resample.c, Pillow 11.3), reproduced bit-exactly:
// the reference Qwen2-VL processor resizes with PIL.Image.resize(..., BICUBIC), and pixel_values must match.
#include <cstdint>

#include "adapters/image/decode.h"

namespace vlreward {

// Equivalent of PIL `image.resize((out_width, out_height), Image.BICUBIC)` for an RGB image (full-image box,
// no reducing_gap). Returns a copy when the size is unchanged, as Pillow does.
// Throws InputError (source = "resize") for non-positive sizes or an empty input.
RgbImage resize_bicubic_pillow(const RgbImage& image, int64_t out_width, int64_t out_height);

}  // namespace vlreward
