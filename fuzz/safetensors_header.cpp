// A safetensors file: the length prefix, the JSON header (dtypes, shapes, offsets, metadata), the data; every
// tensor view the parser hands out must lie inside the file.
#include <cstdlib>

#include "adapters/hf/safetensors.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  const std::string path = fuzz::write_scratch_file(fuzz::bytes_of(data, size), ".safetensors");
  fuzz::expect_documented_errors_only("safetensors", [&] {
    auto file = SafetensorsFile::open(path);
    for (const auto& name : file.names()) {
      const auto& view = file.get(name);
      if (view.nbytes != static_cast<size_t>(view.numel()) * dtype_size(view.dtype) || view.nbytes > size) std::abort();
      volatile uint8_t sink = 0;  // touch the first and last byte of every view (ASan checks the bounds)
      if (view.nbytes > 0) sink = view.data[0] ^ view.data[view.nbytes - 1];
      (void)sink;
    }
  });
  return 0;
}
