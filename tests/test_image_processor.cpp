// Image decoding, Pillow BICUBIC resampling and the Qwen2-VL image processor against fixtures produced by
// transformers 4.57.6 (slow Qwen2VLImageProcessor) + Pillow 11.3 (tests/fixtures/gen_images.py).
#include <cstdint>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/safetensors.h"
#include "adapters/image/decode.h"
#include "adapters/image/pillow_resample.h"
#include "adapters/image/qwen2_vl_image_processor.h"

namespace vlreward {
namespace {

const std::string kDir = std::string(VLREWARD_FIXTURES_DIR) + "/images/";

const nlohmann::json& manifest() {
  static const nlohmann::json json = nlohmann::json::parse(read_file(kDir + "manifest.json"));
  return json;
}

const SafetensorsFile& expected() {
  static const SafetensorsFile file = SafetensorsFile::open(kDir + "expected.safetensors");
  return file;
}

std::vector<uint8_t> expected_u8(const std::string& name, int64_t height, int64_t width) {
  const TensorView& t = expected().get(name);
  EXPECT_EQ(t.dtype, DType::U8) << name;
  EXPECT_EQ(t.shape, (std::vector<int64_t>{height, width, 3})) << name;
  return std::vector<uint8_t>(t.data, t.data + t.nbytes);
}

// Index of the first differing byte, or -1.
int64_t first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

Qwen2VLImageProcessor processor_for(const nlohmann::json& image) {
  Qwen2VLImageProcessorConfig config;
  config.min_pixels = image["min_pixels"];
  config.max_pixels = image["max_pixels"];
  return Qwen2VLImageProcessor(config);
}

// Compares features rows [row_begin, row_begin + rows) with a stored float32 [rows, 1176] tensor.
void expect_pixel_values(const ImageFeatures& features, int64_t row_begin, const std::string& name) {
  const TensorView& t = expected().get(name);
  ASSERT_EQ(t.dtype, DType::F32) << name;
  ASSERT_EQ(t.shape.size(), 2u) << name;
  ASSERT_EQ(t.shape[1], features.row_size) << name;
  ASSERT_LE(row_begin + t.shape[0], features.rows) << name;
  std::vector<float> want(static_cast<size_t>(t.numel()));
  std::memcpy(want.data(), t.data, t.nbytes);
  const float* got = features.pixel_values.data() + row_begin * features.row_size;
  double max_diff = 0;
  for (size_t i = 0; i < want.size(); ++i) max_diff = std::max(max_diff, std::fabs(double(got[i]) - want[i]));
  EXPECT_LE(max_diff, 1e-6) << name;
}

std::array<int64_t, 3> expected_grid(const std::string& name) {
  const TensorView& t = expected().get(name);
  EXPECT_EQ(t.dtype, DType::I64);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{1, 3}));
  std::array<int64_t, 3> grid{};
  std::memcpy(grid.data(), t.data, sizeof(grid));
  return grid;
}

// Runs `f`, expecting an InputError whose message contains every fragment.
template <typename F>
void expect_input_error(F&& f, const std::vector<std::string>& fragments, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << ": no error";
  } catch (const InputError& e) {
    const std::string message = e.what();
    for (const auto& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos) << what << ": '" << message << "' lacks '" << fragment << "'";
    }
  }
}

TEST(ImageFixtures, CoverWhatTheyShould) {
  EXPECT_GE(manifest()["images"].size(), 10u);
  EXPECT_EQ(manifest()["reference"]["transformers"], "4.57.6");
  EXPECT_EQ(manifest()["reference"]["pillow"], "11.3.0");
}

TEST(ImageDecode, MatchesPillowConvertRgb) {
  int compared = 0;
  for (const auto& image : manifest()["images"]) {
    const std::string name = image["name"];
    const RgbImage decoded = decode_image_file(kDir + image["file"].get<std::string>());
    EXPECT_EQ(decoded.width, image["width"]) << name;
    EXPECT_EQ(decoded.height, image["height"]) << name;
    if (!image["has_decoded"]) continue;
    const auto want = expected_u8(name + ".decoded", image["height"], image["width"]);
    EXPECT_EQ(first_difference(decoded.pixels, want), -1) << name << " (" << image["what"] << ")";
    ++compared;
  }
  EXPECT_GE(compared, 15);
}

TEST(ImageDecode, ProbeReadsHeaderSize) {
  for (const auto& image : manifest()["images"]) {
    const std::string bytes = read_file(kDir + image["file"].get<std::string>());
    const ImageHeader header = probe_image(bytes, image["name"]);
    EXPECT_EQ(header.width, image["width"]) << image["name"];
    EXPECT_EQ(header.height, image["height"]) << image["name"];
    EXPECT_EQ(header.format, image["file"].get<std::string>().find(".jpg") != std::string::npos ? ImageFormat::kJpeg
                                                                                                 : ImageFormat::kPng);
  }
  const ImageHeader png = probe_image(read_file(kDir + "errors/huge_header.png"), "huge");
  EXPECT_EQ(png.width, 100000);
  EXPECT_EQ(png.height, 100000);
  const ImageHeader jpeg = probe_image(read_file(kDir + "errors/huge_header.jpg"), "huge");
  EXPECT_EQ(jpeg.width, 60000);
  EXPECT_EQ(jpeg.height, 60000);
}

TEST(ImageDecode, PngMissingIendIsAcceptedLikePillow) {
  const RgbImage image = decode_image_file(kDir + "errors/missing_iend.png");
  EXPECT_EQ(first_difference(image.pixels, expected_u8("rgb_28x28.decoded", 28, 28)), -1);
}

TEST(ImageDecode, PixelLimitIsConfigurable) {
  DecodeOptions options;
  options.max_pixels = 56 * 84 - 1;
  const std::string path = kDir + "inputs/gray16_56x84.png";
  expect_input_error([&] { decode_image_file(path, options); }, {path, "84x56", "4704 pixels", "limit of 4703"},
                     "lowered limit");
  options.max_pixels = 56 * 84;
  EXPECT_EQ(decode_image_file(path, options).width, 84);
}

struct ErrorCase {
  std::string file;
  std::vector<std::string> fragments;
};

TEST(ImageDecode, MalformedInputsGiveSpecificErrors) {
  const std::vector<ErrorCase> cases = {
      {"truncated.jpg", {"truncated JPEG data", "Premature end of JPEG file"}},
      {"truncated_progressive.jpg", {"truncated JPEG data"}},
      {"truncated_header.jpg", {"truncated JPEG data"}},
      {"truncated.png", {"truncated PNG data", "more bytes needed"}},
      {"corrupt_middle.jpg", {"corrupt JPEG data"}},
      {"corrupt_crc.png", {"corrupt PNG data", "IHDR: CRC error"}},
      {"corrupt_idat.png", {"corrupt PNG data", "IDAT: invalid"}},
      {"corrupt_zlib.png", {"corrupt PNG data", "IDAT"}},
      {"empty.png", {"empty image data (0 bytes)"}},
      {"not_an_image.txt", {"unsupported image format", "not a JPEG or PNG", "3c 68 74 6d"}},
      {"animation.gif", {"unsupported image format GIF"}},
      {"huge_header.png", {"100000x100000", "10000000000 pixels", "exceeds the pixel limit of 89478485"}},
      {"huge_header.jpg", {"60000x60000", "exceeds the pixel limit"}},
      {"bad_bit_depth.png", {"corrupt PNG data", "Invalid bit depth in IHDR"}},
  };
  for (const auto& c : cases) {
    const std::string path = kDir + "errors/" + c.file;
    auto fragments = c.fragments;
    fragments.push_back(path);  // every error names its input
    expect_input_error([&] { decode_image_file(path); }, fragments, c.file);
    // The processor's file API reports the same problem (from the header probe or the decoder).
    expect_input_error([&] { Qwen2VLImageProcessor().preprocess_files({path}); }, fragments, c.file + " (processor)");
  }
  expect_input_error([&] { decode_image_file(kDir + "errors/does_not_exist.png"); }, {"does_not_exist.png"},
                     "missing file");
}

TEST(ImageProcessor, RejectsBadSizesBeforeDecoding) {
  const std::string small = kDir + "errors/small_side_20x500.png";
  expect_input_error([&] { Qwen2VLImageProcessor().preprocess_files({small}); },
                     {small, "20x500", "at least 28 pixels"}, "small side");
  const std::string wide = kDir + "errors/aspect_28x5628.png";
  expect_input_error([&] { Qwen2VLImageProcessor().preprocess_files({wide}); },
                     {wide, "absolute aspect ratio must be smaller than 200", "201"}, "aspect ratio");
  // Same checks on an already decoded image.
  const RgbImage decoded = decode_image_file(small);
  expect_input_error([&] { Qwen2VLImageProcessor().preprocess({decoded}, {"upload 3"}); },
                     {"upload 3", "at least 28 pixels"}, "decoded small side");
}

TEST(ImageProcessor, SmartResizeMatchesTransformers) {
  const auto table = nlohmann::json::parse(read_file(kDir + "smart_resize.json"));
  ASSERT_GT(table.size(), 500u);
  for (const auto& row : table) {
    const ImageSize size = qwen2_vl_smart_resize(row[0], row[1], 28, row[2], row[3], "table");
    EXPECT_EQ(size.height, row[4]) << row.dump();
    EXPECT_EQ(size.width, row[5]) << row.dump();
  }
}

TEST(ImageProcessor, ResizedImageIsBitIdenticalToPillow) {
  for (const auto& image : manifest()["images"]) {
    const std::string name = image["name"];
    const RgbImage decoded = decode_image_file(kDir + image["file"].get<std::string>());
    const RgbImage resized = processor_for(image).resize(decoded, name);
    const int64_t height = image["resized"][0], width = image["resized"][1];
    ASSERT_EQ(resized.height, height) << name;
    ASSERT_EQ(resized.width, width) << name;
    EXPECT_EQ(first_difference(resized.pixels, expected_u8(name + ".resized", height, width)), -1) << name;
  }
}

TEST(ImageProcessor, PixelValuesAndGridMatchTransformers) {
  for (const auto& image : manifest()["images"]) {
    const std::string name = image["name"];
    const ImageFeatures features = processor_for(image).preprocess_files({kDir + image["file"].get<std::string>()});
    ASSERT_EQ(features.grid_thw.size(), 1u);
    EXPECT_EQ(features.grid_thw[0], expected_grid(name + ".grid_thw")) << name;
    EXPECT_EQ(features.row_size, 1176);
    EXPECT_EQ(features.rows, expected().get(name + ".pixel_values").shape[0]) << name;
    EXPECT_EQ(features.pixel_values.size(), static_cast<size_t>(features.rows * features.row_size));
    expect_pixel_values(features, 0, name + ".pixel_values");
  }
}

TEST(ImageProcessor, BatchConcatenatesImagesInOrder) {
  const auto& batch = manifest()["batch"];
  std::vector<std::string> paths;
  for (const auto& name : batch["names"]) {
    for (const auto& image : manifest()["images"]) {
      if (image["name"] == name) paths.push_back(kDir + image["file"].get<std::string>());
    }
  }
  ASSERT_EQ(paths.size(), batch["names"].size());
  const ImageFeatures features = Qwen2VLImageProcessor().preprocess_files(paths);
  ASSERT_EQ(features.rows, batch["rows"]);
  ASSERT_EQ(features.grid_thw.size(), batch["names"].size());
  int64_t row = 0;
  for (size_t i = 0; i < features.grid_thw.size(); ++i) {
    const std::array<int64_t, 3> want = {batch["grid_thw"][i][0], batch["grid_thw"][i][1], batch["grid_thw"][i][2]};
    EXPECT_EQ(features.grid_thw[i], want);
    expect_pixel_values(features, row, batch["names"][i].get<std::string>() + ".pixel_values");
    row += want[0] * want[1] * want[2];
  }
}

TEST(ImageProcessor, CustomConfigFlagsAndScalarMeanStd) {
  const auto config = Qwen2VLImageProcessorConfig::from_file(kDir + "configs/custom.json");
  const Qwen2VLImageProcessor processor(config);
  const RgbImage decoded = decode_image_file(kDir + "inputs/rgb_28x28.png");
  const RgbImage resized = processor.resize(decoded, "rgb_28x28");
  const auto& shape = expected().get("custom_config.rgb_28x28.resized").shape;
  EXPECT_EQ(first_difference(resized.pixels, expected_u8("custom_config.rgb_28x28.resized", shape[0], shape[1])), -1);
  const ImageFeatures features = processor.preprocess({decoded});
  EXPECT_EQ(features.grid_thw[0], expected_grid("custom_config.rgb_28x28.grid_thw"));
  expect_pixel_values(features, 0, "custom_config.rgb_28x28.pixel_values");
}

TEST(ImageProcessorConfig, LoadsTheValuesTransformersLoads) {
  for (const auto& entry : manifest()["configs"]) {
    const std::string file = entry["file"];
    const auto config = Qwen2VLImageProcessorConfig::from_file(kDir + file);
    const auto& want = entry["loaded"];
    EXPECT_EQ(config.min_pixels, want["min_pixels"]) << file;
    EXPECT_EQ(config.max_pixels, want["max_pixels"]) << file;
    EXPECT_EQ(config.patch_size, want["patch_size"]) << file;
    EXPECT_EQ(config.temporal_patch_size, want["temporal_patch_size"]) << file;
    EXPECT_EQ(config.merge_size, want["merge_size"]) << file;
    EXPECT_EQ(config.rescale_factor, want["rescale_factor"].get<double>()) << file;
    EXPECT_EQ(config.do_resize, want["do_resize"]) << file;
    EXPECT_EQ(config.do_rescale, want["do_rescale"]) << file;
    EXPECT_EQ(config.do_normalize, want["do_normalize"]) << file;
    EXPECT_EQ(config.do_convert_rgb, want["do_convert_rgb"]) << file;
    for (size_t c = 0; c < 3; ++c) {
      EXPECT_EQ(config.image_mean[c], want["image_mean"][c].get<double>()) << file;
      EXPECT_EQ(config.image_std[c], want["image_std"][c].get<double>()) << file;
    }
  }
}

TEST(ImageProcessorConfig, BadValuesNameTheKey) {
  const std::vector<ErrorCase> cases = {
      {"bad_size_keys.json", {"key 'size'", "'shortest_edge' and 'longest_edge'"}},
      {"bad_min_pixels.json", {"key 'min_pixels'", "positive integer", "\"3136\""}},
      {"bad_image_mean.json", {"key 'image_mean'", "list of 3 numbers"}},
      {"bad_resample.json", {"key 'resample'", "BICUBIC"}},
      {"bad_do_resize.json", {"key 'do_resize'", "true or false"}},
      {"bad_json.json", {"invalid JSON"}},
  };
  ASSERT_EQ(cases.size(), manifest()["bad_configs"].size());
  for (const auto& c : cases) {
    const std::string path = kDir + "configs/" + c.file;
    auto fragments = c.fragments;
    fragments.push_back(path);
    expect_input_error([&] { Qwen2VLImageProcessorConfig::from_file(path); }, fragments, c.file);
  }
  // A number beyond a double: well-formed JSON the parser cannot hold, still an error naming the file and key.
  const std::string huge = (std::filesystem::temp_directory_path() / "vlreward_preprocessor_1e400.json").string();
  std::ofstream(huge) << "{\"min_pixels\": 1e400}";
  expect_input_error([&] { Qwen2VLImageProcessorConfig::from_file(huge); }, {huge, "min_pixels: number out of range"},
                     "1e400");
  std::filesystem::remove(huge);
}

TEST(PillowResample, SameSizeIsACopyAndBadSizesThrow) {
  const RgbImage decoded = decode_image_file(kDir + "inputs/gray16_56x84.png");
  const RgbImage same = resize_bicubic_pillow(decoded, decoded.width, decoded.height);
  EXPECT_EQ(first_difference(same.pixels, decoded.pixels), -1);
  expect_input_error([&] { resize_bicubic_pillow(decoded, 0, 10); }, {"resize", "to 0x10"}, "zero width");
  expect_input_error([&] { resize_bicubic_pillow(RgbImage{}, 10, 10); }, {"resize"}, "empty input");
}

TEST(ImageProcessor, DoResizeFalseNeedsMultipleOfFactor) {
  Qwen2VLImageProcessorConfig config;
  config.do_resize = false;
  const Qwen2VLImageProcessor processor(config);
  const RgbImage decoded = decode_image_file(kDir + "inputs/gray16_56x84.png");  // 56x84: multiples of 28
  const ImageFeatures features = processor.preprocess({decoded});
  EXPECT_EQ(features.grid_thw[0], expected_grid("gray16_56x84.grid_thw"));
  expect_pixel_values(features, 0, "gray16_56x84.pixel_values");
  expect_input_error([&] { processor.preprocess({decode_image_file(kDir + "inputs/l_56x90.png")}, {"l"}); },
                     {"l: ", "do_resize is false", "56x90", "multiple of 28"}, "not a multiple");
}

}  // namespace
}  // namespace vlreward
