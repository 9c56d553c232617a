// Any text through the Qwen tokenizer (the tiny fixture's: the Qwen2.5 pre-tokenizer regex, NFC, byte-level BPE,
// added tokens): ids stay inside the vocabulary and decode back without error.
#include <cstdlib>

#include "adapters/hf/tokenizer.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  static const Tokenizer tokenizer = Tokenizer::from_directory(VLREWARD_FIXTURES_DIR "/model/tiny");
  fuzz::expect_documented_errors_only("text", [&] {
    const auto ids = tokenizer.encode(fuzz::bytes_of(data, size));
    for (int32_t id : ids)
      if (id < 0 || id >= tokenizer.vocab_size()) std::abort();
    tokenizer.decode(ids);
    tokenizer.decode(ids, /*skip_special_tokens=*/true);
  });
  return 0;
}
