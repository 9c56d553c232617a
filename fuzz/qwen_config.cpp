// A model's config.json (Qwen2.5-VL: text and vision sections, rope scaling, token ids).
#include "adapters/hf/qwen2_5_vl_config.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  fuzz::expect_documented_errors_only("config.json", [&] { Qwen2_5_VLConfig::parse(fuzz::bytes_of(data, size), "config.json"); });
  return 0;
}
