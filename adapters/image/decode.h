#pragma once
// JPEG / PNG decoding to 8-bit RGB, matching what Pillow 11.3 gives for Image.open(f).convert("RGB").
// That is the image the reference Qwen2-VL processor receives, so every mode conversion here follows
// Pillow, not "what looks best" (e.g. 16-bit grayscale PNG clips to 255 but 16-bit RGB keeps the high byte).
//
// EXIF orientation is deliberately NOT applied: the reference opens images with PIL.Image.open, which
// does not transpose them either.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/error.h"

namespace vlreward {

// 8-bit RGB, row-major HWC, no padding: pixel (y, x) channel c is pixels[(y * width + x) * 3 + c].
struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> pixels;
};

enum class ImageFormat { kJpeg, kPng };

struct ImageHeader {
  ImageFormat format;
  int64_t width = 0;
  int64_t height = 0;
};

// Pillow's Image.MAX_IMAGE_PIXELS (it warns above it and refuses above twice it). We refuse above it:
// the reward model never needs more, and decoding bigger files only costs memory.
constexpr uint64_t kDefaultMaxImagePixels = 89'478'485;

// Image files read from disk: the default limit where a command reads image paths from its input (the same as
// reward-serve's limits.max_image_bytes), and the most decode_image_file ever reads. A file's size is checked
// before any of it is read, so a huge (or sparse) file costs nothing.
constexpr uint64_t kDefaultMaxImageFileBytes = 32ull << 20;
constexpr uint64_t kMaxImageFileBytes = 256ull << 20;

struct DecodeOptions {
  // Images whose header declares more pixels than this are rejected before any pixel data is decoded.
  uint64_t max_pixels = kDefaultMaxImagePixels;
  // decode_image_file: larger files are rejected from their size, before reading.
  uint64_t max_file_bytes = kMaxImageFileBytes;
};

// Identifies the format by magic bytes; throws InputError naming `source` for empty input and for
// anything that is not JPEG or PNG (naming GIF/WebP/BMP/TIFF when it recognises them).
ImageFormat sniff_image_format(std::string_view bytes, const std::string& source);

// Reads only the header: format and declared size. Throws InputError for unknown/corrupt headers.
ImageHeader probe_image(std::string_view bytes, const std::string& source);

// Throws InputError naming `source` when the header's size is empty or above options.max_pixels.
void check_image_pixel_limit(const ImageHeader& header, const DecodeOptions& options, const std::string& source);

// Full decode. Throws InputError naming `source` when the data is truncated or corrupt (a half-decoded
// image is never returned), when the declared size exceeds options.max_pixels, or when the variant is
// unsupported.
RgbImage decode_image(std::string_view bytes, const std::string& source, const DecodeOptions& options = {});

// Same, reading the file at `path` (named in errors).
RgbImage decode_image_file(const std::string& path, const DecodeOptions& options = {});

// An image over a size limit (bytes or pixels): a server answers it with 413, not 400.
class ImageTooLargeError : public InputError {
 public:
  using InputError::InputError;
};

// The size of the image file at `path`, checked before anything is read: throws InputError(source, ...) when it
// is not a regular file, ImageTooLargeError when it holds more than `max_bytes` ("image photo.jpg is 1073741824 bytes, over the
// 33554432-byte limit"; `name` is how the file is called there, default the path).
uint64_t check_image_file_size(const std::string& path, uint64_t max_bytes, const std::string& source,
                               const std::string& name = "");

// Reads the image file at `path` after check_image_file_size, and never more than `max_bytes` even if the file
// grows meanwhile.
std::string read_image_file(const std::string& path, uint64_t max_bytes, const std::string& source);

}  // namespace vlreward
