// Every JSON request shape reward-serve accepts: the first byte picks the route (/v1/score, /get_reward,
// /classify), the rest is the body. Only ServeError may come out (the decoder's contract: one bad request can
// never escape into the I/O thread).
#include <cstdlib>

#include "adapters/server/request_decoding.h"
#include "adapters/server/error.h"
#include "adapters/server/config.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  if (size == 0) return 0;
  static const RequestDecoder decoder = [] {
    ServerConfig config;
    config.limits.max_image_pixels = 1 << 20;
    return RequestDecoder(config);
  }();
  const auto body = fuzz::bytes_of(data + 1, size - 1);
  try {
    const auto json = decoder.parse_json_body(std::string(body));
    switch (data[0] % 3) {
      case 0: {
        int64_t deadline_ms = 0;
        decoder.decode_score(json, &deadline_ms);
        break;
      }
      case 1:
        decoder.decode_get_reward(json);
        break;
      default:
        decoder.decode_classify(json);
    }
  } catch (const ServeError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "request: not a ServeError: %s\n", e.what());
    std::abort();
  }
  return 0;
}
