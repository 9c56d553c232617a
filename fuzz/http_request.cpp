// Raw bytes as an HTTP/1.1 client sends them: Boost.Beast's request parser with the server's header and body
// limits, fed in two pieces as a socket may deliver them; a complete POST is then routed to the decoder of its
// path, as reward-serve's session does. Parser errors are answers (400); only ServeError may come out of decoding.
#include <cstdlib>

#include <boost/beast/http.hpp>

#include "adapters/server/request_decoding.h"
#include "adapters/server/error.h"
#include "adapters/server/config.h"
#include "fuzz/fuzz_support.h"

namespace http = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  static const ServerConfig config = [] {
    ServerConfig c;
    c.limits.max_body_bytes = 1 << 20;
    c.limits.max_image_pixels = 1 << 20;
    return c;
  }();
  static const RequestDecoder decoder(config);
  http::request_parser<http::string_body> parser;
  parser.body_limit(config.limits.max_body_bytes);
  parser.header_limit(16 << 10);
  boost::system::error_code ec;
  size_t used = 0;
  const size_t cut = size / 2;
  for (size_t end : {cut, size}) {
    while (used < end && !ec && !parser.is_done()) {
      const size_t n = parser.put(boost::asio::buffer(data + used, end - used), ec);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (n == 0 && !ec) break;
      used += n;
    }
    if (ec) return 0;  // the session answers 400 and closes
  }
  if (!parser.is_done()) return 0;  // incomplete: the session waits for the rest (or its read timeout)
  const auto& request = parser.get();
  std::string target(request.target());
  target = target.substr(0, target.find('?'));
  if (request.method() != http::verb::post) return 0;
  try {
    const auto body = decoder.parse_json_body(request.body());
    if (target == "/v1/score") {
      int64_t deadline_ms = 0;
      decoder.decode_score(body, &deadline_ms);
    } else if (target == "/get_reward") {
      decoder.decode_get_reward(body);
    } else if (target == "/classify" || target == "/v1/classify" || target == "/v1/embeddings") {
      decoder.decode_classify(body);
    }
  } catch (const ServeError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http: not a ServeError: %s\n", e.what());
    std::abort();
  }
  return 0;
}
