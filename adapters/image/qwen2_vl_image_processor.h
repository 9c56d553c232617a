#pragma once
// Qwen2-VL / Qwen2.5-VL image preprocessing, matching transformers 4.57.6's slow `Qwen2VLImageProcessor`
// (numpy + PIL, the v4 default when use_fast is unset) with Pillow 11.3:
//   RGB uint8 -> smart_resize -> PIL BICUBIC resize -> float64 * rescale_factor -> float32
//   -> (x - mean_f32) / std_f32 in float32 -> repeat to temporal_patch_size frames -> patches [N, 1176].
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/image/decode.h"

namespace vlreward {

struct Qwen2VLImageProcessorConfig {
  bool do_resize = true;
  bool do_rescale = true;
  bool do_normalize = true;
  // We always decode to RGB; with do_convert_rgb=false the reference would keep e.g. 1-channel "L"
  // images, which the 3-channel vision tower cannot take anyway.
  bool do_convert_rgb = true;
  int64_t min_pixels = 56 * 56;
  int64_t max_pixels = 28 * 28 * 1280;
  int64_t patch_size = 14;
  int64_t temporal_patch_size = 2;
  int64_t merge_size = 2;
  double rescale_factor = 1.0 / 255;
  std::array<double, 3> image_mean = {0.48145466, 0.4578275, 0.40821073};  // OPENAI_CLIP_MEAN
  std::array<double, 3> image_std = {0.26862954, 0.26130258, 0.27577711};  // OPENAI_CLIP_STD

  // Parses a preprocessor_config.json object; absent keys keep the class defaults above. Throws
  // InputError naming `source` and the key for wrong types or values.
  static Qwen2VLImageProcessorConfig from_json(const nlohmann::json& json, const std::string& source);
  static Qwen2VLImageProcessorConfig from_file(const std::string& path);

  int64_t factor() const { return patch_size * merge_size; }                              // 28
  int64_t patch_features() const { return 3 * temporal_patch_size * patch_size * patch_size; }  // 1176
};

struct ImageSize {
  int64_t height = 0;
  int64_t width = 0;
};

// transformers 4.57.6 `smart_resize`, in double with Python's round-half-to-even, preceded by our own
// minimum-side check (see the .cpp). Throws InputError naming `source`.
ImageSize qwen2_vl_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                int64_t max_pixels, const std::string& source);

// Patches of one or more images, concatenated in input order.
struct ImageFeatures {
  std::vector<float> pixel_values;                  // [rows, row_size], row-major
  int64_t rows = 0;                                 // sum over images of grid_t * grid_h * grid_w
  int64_t row_size = 0;                             // channels * temporal_patch_size * patch_size^2
  std::vector<std::array<int64_t, 3>> grid_thw;     // per image: (grid_t, grid_h, grid_w)
};

class Qwen2VLImageProcessor {
 public:
  explicit Qwen2VLImageProcessor(Qwen2VLImageProcessorConfig config = {}, DecodeOptions decode_options = {});

  const Qwen2VLImageProcessorConfig& config() const { return config_; }

  // Size the image is resized to (or its own size when do_resize is false, which must then be a multiple of
  // the factor). Throws InputError naming `source` for sides < factor, aspect ratio > 200, etc.
  ImageSize target_size(int64_t height, int64_t width, const std::string& source) const;

  // The uint8 image the patches are cut from (Pillow-exact BICUBIC resize to target_size).
  RgbImage resize(const RgbImage& image, const std::string& source) const;

  // Resizes, normalises and appends one image's patches and grid to `features`.
  void append(const RgbImage& image, const std::string& source, ImageFeatures& features) const;

  // Batch API. `sources` names the images in errors (default "image[i]").
  ImageFeatures preprocess(const std::vector<RgbImage>& images, const std::vector<std::string>& sources = {}) const;
  // Encoded JPEG/PNG bytes: sizes are checked from the header before any image is decoded.
  ImageFeatures preprocess_encoded(const std::vector<std::string_view>& encoded,
                                   const std::vector<std::string>& sources) const;
  ImageFeatures preprocess_files(const std::vector<std::string>& paths) const;

 private:
  Qwen2VLImageProcessorConfig config_;
  DecodeOptions decode_options_;
  std::array<std::array<float, 256>, 3> value_of_;  // normalised float per (channel, uint8 value)
};

}  // namespace vlreward
