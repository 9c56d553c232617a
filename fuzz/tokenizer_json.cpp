// A tokenizer.json (vocabulary, merges, added tokens, pre-tokenizer and normalizer sections), then one encode and
// decode with whatever was loaded.
#include "adapters/hf/tokenizer.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  const std::string path = fuzz::write_scratch_file(fuzz::bytes_of(data, size), "_tokenizer.json");
  fuzz::expect_documented_errors_only("tokenizer.json", [&] {
    const auto tokenizer = Tokenizer::from_files(path);
    tokenizer.decode(tokenizer.encode("Hello, world! <|im_start|>user\n数字 123\n"));
  });
  return 0;
}
