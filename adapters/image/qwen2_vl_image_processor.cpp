#include "adapters/image/qwen2_vl_image_processor.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/image/pillow_resample.h"

namespace vlreward {
namespace {

std::string key_source(const std::string& source, const std::string& key) { return source + ": key '" + key + "'"; }

int64_t read_positive_int(const nlohmann::json& value, const std::string& source, const std::string& key) {
  // Python accepts any number here (an integral float behaves like the int); anything else is an error.
  if (value.is_number_integer() || value.is_number_unsigned()) {
    const auto v = value.get<int64_t>();
    if (v > 0) return v;
  } else if (value.is_number_float()) {
    const double v = value.get<double>();
    if (v > 0 && v < 9.0e15 && std::floor(v) == v) return static_cast<int64_t>(v);
  }
  throw InputError(key_source(source, key), "expected a positive integer, got " + value.dump());
}

bool read_bool(const nlohmann::json& value, const std::string& source, const std::string& key) {
  if (!value.is_boolean()) throw InputError(key_source(source, key), "expected true or false, got " + value.dump());
  return value.get<bool>();
}

double read_number(const nlohmann::json& value, const std::string& source, const std::string& key) {
  if (!value.is_number()) throw InputError(key_source(source, key), "expected a number, got " + value.dump());
  return value.get<double>();
}

// A float or a list of 3 floats (transformers repeats a scalar for every channel).
std::array<double, 3> read_per_channel(const nlohmann::json& value, const std::string& source,
                                       const std::string& key) {
  if (value.is_number()) {
    const double v = value.get<double>();
    return {v, v, v};
  }
  if (!value.is_array() || value.size() != 3) {
    throw InputError(key_source(source, key), "expected a number or a list of 3 numbers (one per RGB channel), got " +
                                                  value.dump());
  }
  std::array<double, 3> out{};
  for (size_t c = 0; c < 3; ++c) out[c] = read_number(value[c], source, key + "[" + std::to_string(c) + "]");
  return out;
}

}  // namespace

Qwen2VLImageProcessorConfig Qwen2VLImageProcessorConfig::from_json(const nlohmann::json& json,
                                                                   const std::string& source) {
  if (!json.is_object()) throw_input_error(source, "expected a JSON object, got {}", json.type_name());
  Qwen2VLImageProcessorConfig config;
  auto has = [&](const char* key) { return json.contains(key) && !json.at(key).is_null(); };

  // transformers 4.57.6 __init__: a "size" dict must have both "shortest_edge" and "longest_edge", but its
  // values are then discarded (the else-branch resets size to the class defaults); only the top-level
  // min_pixels / max_pixels override them. Reproduced as-is, because that is what the reference computes.
  if (has("size")) {
    const auto& size = json.at("size");
    if (!size.is_object() || !size.contains("shortest_edge") || !size.contains("longest_edge")) {
      throw InputError(key_source(source, "size"), "size must contain 'shortest_edge' and 'longest_edge' keys, got " +
                                                       size.dump());
    }
  }
  if (has("min_pixels")) config.min_pixels = read_positive_int(json.at("min_pixels"), source, "min_pixels");
  if (has("max_pixels")) config.max_pixels = read_positive_int(json.at("max_pixels"), source, "max_pixels");
  if (has("patch_size")) config.patch_size = read_positive_int(json.at("patch_size"), source, "patch_size");
  if (has("temporal_patch_size")) {
    config.temporal_patch_size = read_positive_int(json.at("temporal_patch_size"), source, "temporal_patch_size");
  }
  if (has("merge_size")) config.merge_size = read_positive_int(json.at("merge_size"), source, "merge_size");
  if (has("rescale_factor")) config.rescale_factor = read_number(json.at("rescale_factor"), source, "rescale_factor");
  if (has("image_mean")) config.image_mean = read_per_channel(json.at("image_mean"), source, "image_mean");
  if (has("image_std")) config.image_std = read_per_channel(json.at("image_std"), source, "image_std");
  if (json.contains("do_resize")) config.do_resize = read_bool(json.at("do_resize"), source, "do_resize");
  if (json.contains("do_rescale")) config.do_rescale = read_bool(json.at("do_rescale"), source, "do_rescale");
  if (json.contains("do_normalize")) config.do_normalize = read_bool(json.at("do_normalize"), source, "do_normalize");
  if (json.contains("do_convert_rgb")) {
    config.do_convert_rgb = read_bool(json.at("do_convert_rgb"), source, "do_convert_rgb");
  }
  if (has("resample")) {
    const auto& resample = json.at("resample");
    if (!resample.is_number_integer() || resample.get<int64_t>() != 3) {
      throw InputError(key_source(source, "resample"),
                       "only PIL BICUBIC (3) is supported, got " + resample.dump());
    }
  }

  if (config.patch_size > 4096 || config.merge_size > 64 || config.temporal_patch_size > 64) {
    throw_input_error(source, "patch_size {} / merge_size {} / temporal_patch_size {} are out of range",
                      config.patch_size, config.merge_size, config.temporal_patch_size);
  }
  for (size_t c = 0; c < 3; ++c) {
    if (!(config.image_std[c] != 0.0) || !std::isfinite(config.image_std[c])) {
      throw InputError(key_source(source, "image_std"),
                       fmt::format("channel {} must be a finite non-zero number, got {}", c, config.image_std[c]));
    }
  }
  return config;
}

Qwen2VLImageProcessorConfig Qwen2VLImageProcessorConfig::from_file(const std::string& path) {
  return from_json(read_json_file(path), path);
}

ImageSize qwen2_vl_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                int64_t max_pixels, const std::string& source) {
  // Not in transformers 4.57.6 (its smart_resize would scale a 20x500 image up to the factor); our
  // requirement is to refuse images with a side below the factor (28 px), which hold less than one
  // merged patch row and are almost always icons or broken uploads.
  if (height < factor || width < factor) {
    throw_input_error(source, "image is {}x{} (height x width); both sides must be at least {} pixels", height,
                      width, factor);
  }
  const double ratio = static_cast<double>(std::max(height, width)) / static_cast<double>(std::min(height, width));
  if (ratio > 200) {
    throw_input_error(source, "absolute aspect ratio must be smaller than 200, got {} ({}x{})", ratio, height, width);
  }
  const double f = static_cast<double>(factor);
  // Python round() is round-half-to-even: nearbyint in the default rounding mode, not std::round.
  int64_t h_bar = static_cast<int64_t>(std::nearbyint(height / f)) * factor;
  int64_t w_bar = static_cast<int64_t>(std::nearbyint(width / f)) * factor;
  const double area = static_cast<double>(height * width);  // exact: Python divides the exact int product
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(area / static_cast<double>(max_pixels));
    h_bar = std::max(factor, static_cast<int64_t>(std::floor(height / beta / f)) * factor);
    w_bar = std::max(factor, static_cast<int64_t>(std::floor(width / beta / f)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / area);
    h_bar = static_cast<int64_t>(std::ceil(height * beta / f)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(width * beta / f)) * factor;
  }
  return {h_bar, w_bar};
}

Qwen2VLImageProcessor::Qwen2VLImageProcessor(Qwen2VLImageProcessorConfig config, DecodeOptions decode_options)
    : config_(config), decode_options_(decode_options) {
  // Every output value depends only on (channel, uint8 value), so the whole float pipeline is a table.
  // Rescale: float64(x) * scale, cast to float32 (transformers `rescale`); normalize: float32 arithmetic
  // with mean/std cast to float32 (transformers `normalize`).
  for (int c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(config_.image_mean[c]);
    const float std_dev = static_cast<float>(config_.image_std[c]);
    for (int v = 0; v < 256; ++v) {
      float x = config_.do_rescale ? static_cast<float>(static_cast<double>(v) * config_.rescale_factor)
                                   : static_cast<float>(v);
      if (config_.do_normalize) x = (x - mean) / std_dev;
      value_of_[c][v] = x;
    }
  }
}

ImageSize Qwen2VLImageProcessor::target_size(int64_t height, int64_t width, const std::string& source) const {
  const int64_t factor = config_.factor();
  if (config_.do_resize) {
    return qwen2_vl_smart_resize(height, width, factor, config_.min_pixels, config_.max_pixels, source);
  }
  if (height % factor != 0 || width % factor != 0) {
    throw_input_error(source, "do_resize is false, so the image size {}x{} must be a multiple of {}", height, width,
                      factor);
  }
  return {height, width};
}

RgbImage Qwen2VLImageProcessor::resize(const RgbImage& image, const std::string& source) const {
  const ImageSize size = target_size(image.height, image.width, source);
  return resize_bicubic_pillow(image, size.width, size.height);
}

void Qwen2VLImageProcessor::append(const RgbImage& image, const std::string& source, ImageFeatures& features) const {
  const RgbImage resized = resize(image, source);
  const int64_t patch = config_.patch_size, merge = config_.merge_size, frames = config_.temporal_patch_size;
  const int64_t grid_h = resized.height / patch, grid_w = resized.width / patch;
  const int64_t row_size = config_.patch_features();
  if (features.row_size != 0 && features.row_size != row_size) {
    throw_input_error(source, "patch row size {} differs from the batch's {}", row_size, features.row_size);
  }
  features.row_size = row_size;
  const int64_t new_rows = grid_h * grid_w;  // grid_t = 1: one image padded to temporal_patch_size frames
  float* out = nullptr;
  {
    const size_t old_size = features.pixel_values.size();
    features.pixel_values.resize(old_size + static_cast<size_t>(new_rows * row_size));
    out = features.pixel_values.data() + old_size;
  }
  const uint8_t* pixels = resized.pixels.data();
  const int64_t stride = resized.width * 3;
  // Rows in (t, block_y, block_x, in_y, in_x) order; each row is (channel, frame, py, px), matching
  // transformers' reshape + transpose(0, 3, 6, 4, 7, 2, 1, 5, 8). All frames are copies of the image.
  for (int64_t block_y = 0; block_y < grid_h / merge; ++block_y) {
    for (int64_t block_x = 0; block_x < grid_w / merge; ++block_x) {
      for (int64_t in_y = 0; in_y < merge; ++in_y) {
        for (int64_t in_x = 0; in_x < merge; ++in_x) {
          const int64_t y0 = (block_y * merge + in_y) * patch;
          const int64_t x0 = (block_x * merge + in_x) * patch;
          for (int c = 0; c < 3; ++c) {
            const float* table = value_of_[c].data();
            float* first_frame = out;
            for (int64_t py = 0; py < patch; ++py) {
              const uint8_t* src = pixels + (y0 + py) * stride + x0 * 3 + c;
              for (int64_t px = 0; px < patch; ++px) *out++ = table[src[3 * px]];
            }
            for (int64_t t = 1; t < frames; ++t) {
              out = std::copy(first_frame, first_frame + patch * patch, out);
            }
          }
        }
      }
    }
  }
  features.rows += new_rows;
  features.grid_thw.push_back({1, grid_h, grid_w});
}

namespace {
std::string name_of(const std::vector<std::string>& sources, size_t i) {
  return i < sources.size() ? sources[i] : "image[" + std::to_string(i) + "]";
}
}  // namespace

ImageFeatures Qwen2VLImageProcessor::preprocess(const std::vector<RgbImage>& images,
                                                const std::vector<std::string>& sources) const {
  ImageFeatures features;
  features.row_size = config_.patch_features();
  for (size_t i = 0; i < images.size(); ++i) append(images[i], name_of(sources, i), features);
  return features;
}

ImageFeatures Qwen2VLImageProcessor::preprocess_encoded(const std::vector<std::string_view>& encoded,
                                                        const std::vector<std::string>& sources) const {
  // Reject bad sizes of any image from its header before spending time decoding the others.
  for (size_t i = 0; i < encoded.size(); ++i) {
    const ImageHeader header = probe_image(encoded[i], name_of(sources, i));
    check_image_pixel_limit(header, decode_options_, name_of(sources, i));
    target_size(header.height, header.width, name_of(sources, i));
  }
  ImageFeatures features;
  features.row_size = config_.patch_features();
  for (size_t i = 0; i < encoded.size(); ++i) {
    append(decode_image(encoded[i], name_of(sources, i), decode_options_), name_of(sources, i), features);
  }
  return features;
}

ImageFeatures Qwen2VLImageProcessor::preprocess_files(const std::vector<std::string>& paths) const {
  std::vector<std::string> contents;
  contents.reserve(paths.size());
  for (const auto& path : paths) contents.push_back(read_file(path));
  std::vector<std::string_view> views(contents.begin(), contents.end());
  return preprocess_encoded(views, paths);
}

}  // namespace vlreward
