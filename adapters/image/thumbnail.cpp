#include "adapters/image/thumbnail.h"

#include <png.h>

#include <algorithm>
#include <cmath>

#include "adapters/image/decode.h"
#include "adapters/image/pillow_resample.h"
#include "plugin/error.h"
#include "plugin/wire/base64.h"

namespace vlreward {

std::string thumbnail_data_uri(const RewardImage& image, const std::string& source, int64_t max_side) {
  const RgbImage full = image.bytes.empty() ? decode_image_file(image.path) : decode_image(image.bytes, source);
  const double scale = std::min(1.0, static_cast<double>(max_side) / static_cast<double>(std::max(full.width, full.height)));
  const int64_t width = std::max<int64_t>(1, std::lround(static_cast<double>(full.width) * scale));
  const int64_t height = std::max<int64_t>(1, std::lround(static_cast<double>(full.height) * scale));
  const RgbImage small = scale < 1.0 ? resize_bicubic_pillow(full, width, height) : full;

  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(small.width);
  png.height = static_cast<png_uint_32>(small.height);
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  const auto stride = static_cast<png_int_32>(small.width * 3);
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, small.pixels.data(), stride, nullptr))
    throw InputError(source, std::string("cannot encode a thumbnail: ") + png.message);
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&png, bytes.data(), &size, 0, small.pixels.data(), stride, nullptr))
    throw InputError(source, std::string("cannot encode a thumbnail: ") + png.message);
  bytes.resize(size);
  return "data:image/png;base64," + base64_encode(bytes);
}

}  // namespace vlreward
