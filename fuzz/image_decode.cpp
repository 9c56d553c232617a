// Image bytes (PNG / JPEG, anything else refused by its magic): header probe, decode to RGB, then the Qwen2-VL
// image processor (smart resize, bicubic, normalise, patches). A pixel cap keeps each input fast; the decoded
// buffer and the patches must have exactly the sizes the header and the grid promise.
#include <cstdlib>

#include "adapters/image/decode.h"
#include "adapters/image/qwen2_vl_image_processor.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  DecodeOptions options;
  options.max_pixels = 1 << 20;
  static const Qwen2VLImageProcessor processor = [] {
    Qwen2VLImageProcessorConfig config;
    config.max_pixels = 28 * 28 * 64;  // at most 64 merged tokens: the resize and patching, not their size, are tested
    return Qwen2VLImageProcessor(config);
  }();
  fuzz::expect_documented_errors_only("image", [&] {
    const auto bytes = fuzz::bytes_of(data, size);
    const auto header = probe_image(bytes, "image");
    const auto image = decode_image(bytes, "image", options);
    if (image.width != header.width || image.height != header.height ||
        image.pixels.size() != static_cast<size_t>(image.width * image.height * 3))
      std::abort();
    const auto features = processor.preprocess({image}, {"image"});
    const auto& g = features.grid_thw.at(0);
    if (features.rows != g[0] * g[1] * g[2] || features.pixel_values.size() != static_cast<size_t>(features.rows * features.row_size))
      std::abort();
  });
  return 0;
}
