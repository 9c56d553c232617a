// The binary protocol: bytes split into length-prefixed frames as they arrive, each payload parsed as a
// ScoreRequest and decoded into samples. Only ServeError may come out, as on the server's I/O thread.
#include <cstdlib>

#include "adapters/server/frame_codec.h"
#include "adapters/server/request_decoding.h"
#include "adapters/server/error.h"
#include "adapters/server/config.h"
#include "fuzz/fuzz_support.h"
#include "reward_service.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  static const RequestDecoder decoder = [] {
    ServerConfig config;
    config.limits.max_image_pixels = 1 << 20;
    return RequestDecoder(config);
  }();
  try {
    FrameReader reader(1 << 20);
    // Arrival in two pieces, as a socket may deliver them.
    const size_t cut = size / 2;
    reader.append(fuzz::bytes_of(data, cut));
    for (int piece = 0; piece < 2; ++piece) {
      if (piece == 1) reader.append(fuzz::bytes_of(data + cut, size - cut));
      while (auto payload = reader.next()) {
        serve::ScoreRequest request;
        if (!request.ParseFromString(*payload)) continue;  // the server answers BAD_REQUEST and reads on
        decoder.decode_proto(request);
      }
    }
  } catch (const ServeError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "frames: not a ServeError: %s\n", e.what());
    std::abort();
  }
  return 0;
}
