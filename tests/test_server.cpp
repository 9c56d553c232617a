// reward-serve over real loopback sockets, with a deterministic in-test backend (no LibTorch): every route and
// both protocols, concurrency with every result matched to its request, batch invariance, overload, deadlines,
// graceful shutdown, and a suite of malformed / hostile inputs each followed by a normal request.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/fake_reward_backend.h"
#include "plugin/wire/base64.h"
#include "adapters/common/error.h"
#include "adapters/hf/byte_level.h"
#include "adapters/server/batcher.h"
#include "adapters/server/chatml.h"
#include "adapters/server/frame_codec.h"
#include "adapters/server/request_decoding.h"
#include "adapters/server/reward_server.h"
#include "adapters/server/serve_error.h"
#include "adapters/server/server_config.h"
#include "plugin/reward.h"
#include "reward_service.pb.h"

namespace vlreward {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The fake backend (tests/fake_reward_backend.h): score = a hash of the response text.
using vlreward::test_support::FakeBackend;
using vlreward::test_support::fake_score;
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---------------------------------------------------------------------------------------------------------------
// Images: a real 1x1 PNG, and PNG headers declaring any size (valid CRCs, so only the size is wrong).

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}
std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
std::string png_chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}
std::string png_with_size(uint32_t width, uint32_t height, bool with_data = true) {
  std::string ihdr = be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB
  std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr);
  if (with_data) {
    // zlib stream with one stored block holding the 1x1 row: filter byte 0 + RGB.
    const std::string raw("\x00\x10\x20\x30", 4);
    uint32_t a = 1, b = 0;
    for (unsigned char c : raw) {
      a = (a + c) % 65521;
      b = (b + a) % 65521;
    }
    std::string z = std::string("\x78\x01\x01\x04\x00\xfb\xff", 7) + raw + be32((b << 16) | a);
    png += png_chunk("IDAT", z);
  }
  return png + png_chunk("IEND", "");
}
const std::string& tiny_png() {
  static const std::string png = png_with_size(1, 1);
  return png;
}

// ---------------------------------------------------------------------------------------------------------------
// Clients: blocking sockets with a receive timeout, so a broken server fails a test instead of hanging it.

tcp::socket connect_to(asio::io_context& io, uint16_t port) {
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  timeval tv{5, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  socket.set_option(tcp::no_delay(true));
  return socket;
}

struct HttpReply {
  int status = 0;  // 0: connection closed without a reply
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  json body_json() const { return json::parse(body); }
  std::string error_type() const {
    try {
      return body_json()["error"]["type"].get<std::string>();
    } catch (...) {
      return "<none>";
    }
  }
  std::string error_message() const {
    try {
      return body_json()["error"]["message"].get<std::string>();
    } catch (...) {
      return "<none>";
    }
  }
};

// Reads one HTTP response (Content-Length bodies, as the server sends).
HttpReply read_http_reply(tcp::socket& socket, std::string& pending) {
  HttpReply reply;
  auto fill = [&]() {
    char buf[8192];
    boost::system::error_code ec;
    size_t n = socket.read_some(asio::buffer(buf), ec);
    if (ec) return false;
    pending.append(buf, n);
    return true;
  };
  size_t header_end;
  while ((header_end = pending.find("\r\n\r\n")) == std::string::npos)
    if (!fill()) return reply;
  const std::string head = pending.substr(0, header_end);
  pending.erase(0, header_end + 4);
  std::istringstream lines(head);
  std::string line;
  std::getline(lines, line);
  reply.status = std::stoi(line.substr(9, 3));
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    reply.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
  }
  const size_t length = reply.headers.count("content-length") ? std::stoul(reply.headers["content-length"]) : 0;
  while (pending.size() < length)
    if (!fill()) return reply;
  reply.body = pending.substr(0, length);
  pending.erase(0, length);
  return reply;
}

std::string http_request(const std::string& method, const std::string& target, const std::string& body,
                         const std::string& token, const std::string& extra_headers = "") {
  std::string r = fmt::format("{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, target);
  if (!token.empty()) r += "Authorization: Bearer " + token + "\r\n";
  if (method == "POST") r += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", body.size());
  r += extra_headers + "\r\n" + body;
  return r;
}

// A keep-alive HTTP connection.
class HttpClient {
 public:
  HttpClient(uint16_t port, std::string token = "") : socket_(connect_to(io_, port)), token_(std::move(token)) {}
  HttpReply send_raw(const std::string& bytes) {
    boost::system::error_code ec;
    asio::write(socket_, asio::buffer(bytes), ec);
    return read_http_reply(socket_, pending_);
  }
  HttpReply post(const std::string& target, const std::string& body) { return send_raw(http_request("POST", target, body, token_)); }
  HttpReply post(const std::string& target, const json& body) { return post(target, body.dump()); }
  HttpReply get(const std::string& target) { return send_raw(http_request("GET", target, "", token_)); }
  // True when the server closed the connection (EOF or reset within the receive timeout).
  bool closed_by_server() {
    char c;
    boost::system::error_code ec;
    socket_.read_some(asio::buffer(&c, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
  tcp::socket& socket() { return socket_; }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  std::string token_;
  std::string pending_;
};

// A binary-protocol connection.
class BinaryClient {
 public:
  explicit BinaryClient(uint16_t port) : socket_(connect_to(io_, port)) {}
  void send_bytes(const std::string& bytes) {
    boost::system::error_code ec;
    asio::write(socket_, asio::buffer(bytes), ec);
  }
  // nullopt when the server closed the connection instead of answering.
  std::optional<serve::ScoreResponse> read_response() {
    unsigned char header[4];
    boost::system::error_code ec;
    asio::read(socket_, asio::buffer(header), ec);
    if (ec) return std::nullopt;
    std::string payload(decode_frame_length(header), '\0');
    asio::read(socket_, asio::buffer(payload), ec);
    if (ec) return std::nullopt;
    serve::ScoreResponse response;
    if (!response.ParseFromString(payload)) return std::nullopt;
    return response;
  }
  std::optional<serve::ScoreResponse> call(const serve::ScoreRequest& request) {
    send_bytes(encode_frame(request.SerializeAsString()));
    return read_response();
  }
  bool closed_by_server() {
    char c;
    boost::system::error_code ec;
    socket_.read_some(asio::buffer(&c, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
};

serve::Sample proto_sample(const std::string& id, const std::string& question, const std::string& response,
                           const std::vector<std::string>& images = {}) {
  serve::Sample s;
  s.set_id(id);
  auto* turn = s.add_turns();
  turn->set_role("user");
  for (const auto& image : images) {
    auto* part = turn->add_content()->mutable_image();
    part->set_data(image);
    part->set_mime_type("image/png");
  }
  turn->add_content()->set_text(question);
  s.set_response(response);
  return s;
}

json score_sample(const std::string& id, const std::string& response, const std::vector<std::string>& images = {}) {
  json s = {{"id", id}, {"question", "What is in the picture?"}, {"response", response}};
  if (!images.empty()) s["images"] = images;
  return s;
}

std::string frame_of_request(const serve::ScoreRequest& r) { return encode_frame(r.SerializeAsString()); }

// ---------------------------------------------------------------------------------------------------------------
// A server on ephemeral loopback ports, stopped when the fixture ends.

ServerConfig test_config() {
  ServerConfig c;
  c.http_port = 0;
  c.binary_port = 0;
  c.io_threads = 2;
  c.read_timeout_ms = 300;
  c.write_timeout_ms = 2000;
  c.request_deadline_ms = 5000;
  c.batching.max_wait_ms = 2;
  c.batching.max_batch_size = 8;
  return c;
}

struct RunningServer {
  explicit RunningServer(ServerConfig config) : server(std::move(config), backend) { server.start(); }
  ~RunningServer() {
    server.stop();
    server.wait();
  }
  uint16_t http() const { return server.http_port(); }
  uint16_t binary() const { return server.binary_port(); }
  FakeBackend backend;  // declared first: the server uses it until it is destroyed
  RewardServer server;
};

// Waits (up to 5 s) for a condition another thread makes true, instead of guessing with sleeps.
void wait_until(const std::function<bool()>& condition) {
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  while (!condition() && Clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(condition());
}

// ---------------------------------------------------------------------------------------------------------------
// Units: frames, config, chat-template recognition.

TEST(FrameCodec, RoundTripsAndRefusesOversizedHeadersBeforeBuffering) {
  const std::string frame = encode_frame("hello");
  ASSERT_EQ(frame.size(), 9u);
  EXPECT_EQ(frame.substr(0, 4), std::string("\0\0\0\5", 4));
  FrameReader reader(16);
  reader.append(frame.substr(0, 6));
  EXPECT_FALSE(reader.next().has_value());
  reader.append(frame.substr(6) + encode_frame(""));
  EXPECT_EQ(reader.next().value(), "hello");
  EXPECT_EQ(reader.next().value(), "");
  EXPECT_EQ(reader.buffered(), 0u);
  FrameReader strict(16);
  strict.append(std::string("\xff\xff\xff\xff", 4));  // only the header: the payload never arrives
  try {
    strict.next();
    FAIL() << "expected a too-large error";
  } catch (const ServeError& e) {
    EXPECT_EQ(e.kind(), ServeErrorKind::kTooLarge);
    EXPECT_NE(std::string(e.what()).find("4294967295"), std::string::npos) << e.what();
  }
}

TEST(ServerConfigTest, ReadsStrictlyAndValidates) {
  auto c = parse_server_config(json::parse(R"({"host": "0.0.0.0", "http_port": 9000, "binary_port": 9001,
      "limits": {"max_samples_per_request": 4}, "batching": {"max_batch_size": 2, "max_wait_ms": 0}})"));
  EXPECT_EQ(c.host, "0.0.0.0");
  EXPECT_EQ(c.http_port, 9000);
  EXPECT_EQ(c.binary_port, 9001);
  EXPECT_EQ(c.limits.max_samples_per_request, 4);
  EXPECT_EQ(c.batching.max_batch_size, 2);
  EXPECT_EQ(c.batching.max_wait_ms, 0);
  EXPECT_EQ(ServerConfig().host, "127.0.0.1");  // loopback unless told otherwise
  auto expect_error = [](const char* text, const char* needle) {
    try {
      parse_server_config(json::parse(text));
      ADD_FAILURE() << "accepted " << text;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"hots": "x"})", "hots");
  expect_error(R"({"limits": {"max_body": 1}})", "max_body");
  expect_error(R"({"batching": {"max_batch_size": 0}})", "batching.max_batch_size");
  expect_error(R"({"http_port": 70000})", "http_port");
  expect_error(R"({"http_port": "80"})", "http_port");
  auto budgets = parse_server_config(json::parse(R"({"limits": {"max_request_pixels": 1000, "max_request_tokens": 20},
      "batching": {"max_queue_bytes": 4096}})"));
  EXPECT_EQ(budgets.limits.max_request_pixels, 1000u);
  EXPECT_EQ(budgets.limits.max_request_tokens, 20u);
  EXPECT_EQ(budgets.batching.max_queue_bytes, 4096u);
  expect_error(R"({"limits": {"max_request_pixels": 0}})", "limits.max_request_pixels");
  expect_error(R"({"batching": {"max_queue_bytes": 0}})", "batching.max_queue_bytes");
}

TEST(PolicyText, QwenChatMlBecomesTurnsAndResponse) {
  const std::string text =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>"
      "<|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n<|endoftext|><|endoftext|>";
  auto parsed = request_from_policy_text(text, std::nullopt, {RewardImage::from_bytes("IMG")}, "q");
  ASSERT_TRUE(parsed.recognised_chatml);
  const auto& r = parsed.request;
  EXPECT_EQ(r.system_prompt.value(), "Be brief.");
  ASSERT_EQ(r.turns.size(), 1u);
  EXPECT_EQ(r.turns[0].role, "user");
  ASSERT_EQ(r.turns[0].content.size(), 2u);
  EXPECT_EQ(r.turns[0].content[0].kind, RewardContent::Kind::kImage);
  EXPECT_EQ(r.turns[0].content[0].image.bytes, "IMG");
  EXPECT_EQ(r.turns[0].content[1].text, "What is this?");
  EXPECT_EQ(r.response, "A cat.");
}

TEST(PolicyText, MultiTurnTruncatedResponseAndLeftPadding) {
  const std::string text =
      "<|endoftext|><|endoftext|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
      "<|im_start|>user\nDescribe it.<|im_end|>\n<|im_start|>assistant\nIt is a long";
  auto parsed = request_from_policy_text(text, std::nullopt, {}, "q");
  ASSERT_TRUE(parsed.recognised_chatml);
  const auto& r = parsed.request;
  EXPECT_FALSE(r.system_prompt.has_value());
  ASSERT_EQ(r.turns.size(), 3u);
  EXPECT_EQ(r.turns[1].role, "assistant");
  EXPECT_EQ(r.turns[1].content[0].text, "Hello!");
  EXPECT_EQ(r.turns[2].content[0].text, "Describe it.");
  EXPECT_EQ(r.response, "It is a long");
}

TEST(PolicyText, ImagesWithoutPlaceholdersGoFirstAndMismatchesAreErrors) {
  auto parsed = request_from_policy_text("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>",
                                         std::nullopt, {RewardImage::from_bytes("1"), RewardImage::from_bytes("2")}, "q");
  ASSERT_EQ(parsed.request.turns[0].content.size(), 3u);
  EXPECT_EQ(parsed.request.turns[0].content[1].image.bytes, "2");
  EXPECT_EQ(parsed.request.turns[0].content[2].text, "Q");
  const std::string with_pad =
      "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\nA";
  for (size_t n : {0u, 2u}) {
    try {
      request_from_policy_text(with_pad, std::nullopt, std::vector<RewardImage>(n, RewardImage::from_bytes("x")), "query[0]");
      ADD_FAILURE() << n;
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kBadRequest);
      EXPECT_NE(std::string(e.what()).find(fmt::format("1 image placeholder(s) but {} image(s)", n)), std::string::npos)
          << e.what();
    }
  }
}

TEST(PolicyText, UnrecognisedTextIsScoredAsGiven) {
  auto with_prompt = request_from_policy_text("Question? Answer.", std::string_view("Question? "), {}, "q");
  EXPECT_FALSE(with_prompt.recognised_chatml);
  EXPECT_EQ(with_prompt.request.turns[0].content[0].text, "Question? ");
  EXPECT_EQ(with_prompt.request.response, "Answer.");
  auto plain = request_from_policy_text("just text", std::nullopt, {}, "q");
  EXPECT_EQ(plain.request.turns[0].content[0].text, "");
  EXPECT_EQ(plain.request.response, "just text");
  // Broken ChatML (unknown role, or no final assistant turn) is not guessed at.
  EXPECT_FALSE(request_from_policy_text("<|im_start|>tool\nx<|im_end|><|im_start|>assistant\ny", std::nullopt, {}, "q")
                   .recognised_chatml);
  EXPECT_FALSE(request_from_policy_text("<|im_start|>user\nx<|im_end|>", std::nullopt, {}, "q").recognised_chatml);
}

TEST(RequestDecoding, EveryParserFailureIsABadRequestNamingWhere) {
  RequestDecoder decoder(test_config());
  auto expect_bad = [&](const std::string& body, const std::string& needle) {
    try {
      decoder.parse_json_body(body);
      ADD_FAILURE() << "accepted " << body;
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kBadRequest) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(find_invalid_utf8(e.what()), std::string(e.what()).size()) << "messages travel as UTF-8";
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a ServeError for " << body << ": " << e.what();
    }
  };
  expect_bad("{\"samples\": [1e400]}", "samples[0]: number out of range (number overflow parsing '1e400')");
  expect_bad("[0, 1, -1e309]", "[2]: number out of range");
  expect_bad("{\"a\": {\"b\": [[], [1, 2, 9e9999]]}}", "a.b[1][2]: number out of range");
  expect_bad("{\"a\": 1, \"b\": }", "invalid JSON at b:");
  expect_bad("{\"a\": \"\xff\xfe\"}", "invalid JSON at a:");
  expect_bad("[1, 2", "invalid JSON at [2]:");
  // Whatever a decoding step throws becomes a ServeError naming the field.
  for (const auto& thrower : std::vector<std::function<void()>>{
           [] { throw std::out_of_range("vector::at"); }, [] { json(1).get<std::string>(); },
           [] { throw InputError("samples[3].image", "corrupt PNG"); }, [] { throw 42; }}) {
    try {
      decoding("samples[3]", [&] { thrower(); });
      ADD_FAILURE() << "nothing thrown";
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kBadRequest);
      EXPECT_EQ(std::string(e.what()).rfind("samples[3]", 0), 0u) << e.what();
    }
  }
}

TEST(RequestDecoding, RequestBudgetsBoundTheWorkOfOneRequestBeforeItIsQueued) {
  auto config = test_config();
  config.limits.max_request_pixels = 3 * 64 * 64;
  config.limits.max_request_tokens = 1000;
  RequestDecoder decoder(config);
  const std::string image = base64_encode(png_with_size(64, 64));
  auto body_of = [](std::vector<json> samples) { return json{{"samples", samples}}; };
  int64_t deadline = 0;
  // At the budgets: accepted, with each sample's cost.
  auto ok = decoder.decode_score(body_of({score_sample("a", "r", {image, image}), score_sample("b", "r", {image})}), &deadline);
  ASSERT_EQ(ok.size(), 2u);
  EXPECT_EQ(ok[0].cost.pixels, 2u * 64 * 64);
  EXPECT_EQ(ok[1].cost.pixels, 64u * 64);
  EXPECT_EQ(ok[0].cost.tokens, 2 * 16 + 2 * 9 + 6);  // two turns' overhead, two images of 3x3 merged patches, 24 text bytes
  EXPECT_GT(ok[0].cost.bytes, 2 * base64_decode(image)->size());
  auto expect_too_large = [&](const json& body, const std::string& needle) {
    try {
      decoder.decode_score(body, &deadline);
      ADD_FAILURE() << "accepted";
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kTooLarge) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_too_large(body_of({score_sample("a", "r", {image, image}), score_sample("b", "r", {image, image})}),
                   "16384 pixels in all, over the budget of 12288 pixels per request (limits.max_request_pixels)");
  expect_too_large(body_of({score_sample("a", std::string(2000, 'x')), score_sample("b", std::string(2000, 'y'))}),
                   "over the budget of 1000 tokens per request (limits.max_request_tokens)");
  // The same budgets hold for the OpenRLHF shape.
  try {
    decoder.decode_get_reward(json{{"query", {std::string(4000, 'q'), "short"}}});
    ADD_FAILURE() << "accepted";
  } catch (const ServeError& e) {
    EXPECT_NE(std::string(e.what()).find("query: about"), std::string::npos) << e.what();
  }
}

TEST(ConstantTime, ComparesWholeTokens) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
  EXPECT_FALSE(constant_time_equal("abc", ""));
}

// ---------------------------------------------------------------------------------------------------------------
// Round trips on every route and both protocols.

TEST(ServerRoutes, HealthzAndMetrics) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  auto health = client.get("/healthz");
  ASSERT_EQ(health.status, 200);
  EXPECT_EQ(health.body_json()["status"], "ok");
  ASSERT_EQ(client.post("/v1/score", json{{"samples", {score_sample("a", "x")}}}).status, 200);
  auto metrics = client.get("/metrics");  // same keep-alive connection
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.headers["content-type"].find("text/plain"), std::string::npos);
  for (const char* needle : {"vlreward_requests_total{route=\"/v1/score\"} 1", "vlreward_batch_size_bucket{le=\"1\"} 1",
                             "vlreward_request_latency_seconds_count{route=\"/v1/score\"} 1", "vlreward_queue_depth 0",
                             "vlreward_samples_total{outcome=\"scored\"} 1", "# TYPE vlreward_errors_total counter"})
    EXPECT_NE(metrics.body.find(needle), std::string::npos) << needle << "\n" << metrics.body;
}

TEST(ServerRoutes, ScoreReturnsEachSampleByIdWithTiming) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  json body = {{"samples",
                {score_sample("first", "A red square.", {base64_encode(tiny_png())}),
                 {{"id", 7},
                  {"messages",
                   {{{"role", "system"}, {"content", "Judge."}},
                    {{"role", "user"},
                     {"content", {{{"type", "image"}, {"data", base64_encode(tiny_png())}, {"mime_type", "image/png"}},
                                  {{"type", "image"}, {"image", "data:image/png;base64," + base64_encode(tiny_png())}},
                                  {{"type", "text"}, {"text", "Compare."}}}}},
                    {{"role", "assistant"}, {"content", "Earlier answer."}},
                    {{"role", "user"}, {"content", "And now?"}}}},
                  {"response", "Same."}},
                 score_sample("third", "FAIL")}}};
  auto reply = client.post("/v1/score", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  auto results = reply.body_json()["results"];
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0]["id"], "first");
  EXPECT_DOUBLE_EQ(results[0]["score"].get<double>(), fake_score("A red square."));
  EXPECT_EQ(results[0]["components"]["images"], 1.0);
  EXPECT_EQ(results[1]["id"], "7");
  EXPECT_DOUBLE_EQ(results[1]["score"].get<double>(), fake_score("Same."));
  EXPECT_EQ(results[1]["components"]["turns"], 3.0);
  EXPECT_EQ(results[1]["components"]["images"], 2.0);
  EXPECT_EQ(results[2]["id"], "third");
  EXPECT_EQ(results[2]["error"], "fake backend refuses FAIL");
  for (const auto& r : results) {
    EXPECT_GT(r["timing"]["tokens"].get<int64_t>(), 0);
    EXPECT_GE(r["timing"]["queue_ms"].get<double>(), 0.0);
    EXPECT_GE(r["timing"]["batch_size"].get<int64_t>(), 1);
  }
  // The second sample reached the backend as the conversation it was.
  std::lock_guard<std::mutex> lock(s.backend.mutex);
  const RewardRequest* second = nullptr;
  for (const auto& r : s.backend.seen)
    if (r.id == "7") second = &r;
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->system_prompt.value(), "Judge.");
  EXPECT_EQ(second->turns[0].content[0].image.bytes, tiny_png());
  EXPECT_EQ(second->turns[0].content[0].image.mime_type, "image/png");
  EXPECT_EQ(second->turns[0].content[1].image.mime_type, "image/png");
}

TEST(ServerRoutes, GetRewardInOpenRlhfShapeReRendersChatMl) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  const std::string prompt =
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
      "<|vision_end|>How many apples?<|im_end|>\n<|im_start|>assistant\n";
  json body = {{"query", {prompt + "Three apples.<|im_end|>", "Plain prompt. Plain answer."}},
               {"prompts", {prompt, "Plain prompt. "}},
               {"labels", {"3", "x"}},
               {"images", {{base64_encode(tiny_png())}, json::array()}}};
  auto reply = client.post("/get_reward", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  auto j = reply.body_json();
  ASSERT_EQ(j["rewards"].size(), 2u);
  EXPECT_DOUBLE_EQ(j["rewards"][0].get<double>(), fake_score("Three apples."));
  EXPECT_DOUBLE_EQ(j["rewards"][1].get<double>(), fake_score("Plain answer."));
  EXPECT_DOUBLE_EQ(j["scores"][0].get<double>(), sigmoid(fake_score("Three apples.")));
  EXPECT_EQ(j["extra_logs"]["images"], json({1.0, 0.0}));
  std::lock_guard<std::mutex> lock(s.backend.mutex);
  ASSERT_EQ(s.backend.seen.size(), 2u);
  const auto& first = s.backend.seen[0].id == "0" ? s.backend.seen[0] : s.backend.seen[1];
  EXPECT_EQ(first.system_prompt.value(), "You are a helpful assistant.");
  EXPECT_EQ(first.turns[0].content[0].image.bytes, tiny_png());
  EXPECT_EQ(first.turns[0].content[1].text, "How many apples?");
  EXPECT_EQ(first.reference.value(), "3");
}

TEST(ServerRoutes, ClassifyInVllmShapeAsVerlReadsIt) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  const std::string input = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nGood answer<|im_end|>\n";
  auto reply = client.post("/classify", json{{"model", "rm"}, {"input", input}, {"activation", false}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  auto output = reply.body_json();
  // verl: output["data"][-1]["probs"][-1]
  EXPECT_DOUBLE_EQ(output["data"].back()["probs"].back().get<double>(), fake_score("Good answer"));
  EXPECT_EQ(output["object"], "list");
  EXPECT_EQ(output["model"], "rm");
  EXPECT_EQ(output["data"][0]["num_classes"], 1);
  EXPECT_GT(output["usage"]["prompt_tokens"].get<int64_t>(), 0);
  auto activated = client.post("/v1/classify", json{{"input", {input, input}}, {"activation", true}});
  ASSERT_EQ(activated.status, 200) << activated.body;
  ASSERT_EQ(activated.body_json()["data"].size(), 2u);
  EXPECT_DOUBLE_EQ(activated.body_json()["data"][1]["probs"][0].get<double>(), sigmoid(fake_score("Good answer")));
  // SGLang's shape: output["data"][-1]["embedding"][-1].
  auto embedded = client.post("/v1/embeddings", json{{"model", "rm"}, {"input", input}});
  ASSERT_EQ(embedded.status, 200) << embedded.body;
  EXPECT_DOUBLE_EQ(embedded.body_json()["data"].back()["embedding"].back().get<double>(), fake_score("Good answer"));
}

TEST(ServerRoutes, BinaryProtocolRoundTrip) {
  RunningServer s(test_config());
  BinaryClient client(s.binary());
  serve::ScoreRequest request;
  request.set_request_id(42);
  *request.add_samples() = proto_sample("p", "Q?", "binary answer", {tiny_png()});
  *request.add_samples() = proto_sample("f", "Q?", "FAIL");
  auto response = client.call(request);
  ASSERT_TRUE(response);
  EXPECT_EQ(response->request_id(), 42u);
  EXPECT_FALSE(response->has_error());
  ASSERT_EQ(response->results_size(), 2);
  EXPECT_EQ(response->results(0).id(), "p");
  EXPECT_DOUBLE_EQ(response->results(0).score(), fake_score("binary answer"));
  EXPECT_EQ(response->results(0).components().at("images"), 1.0);
  EXPECT_GT(response->results(0).timing().tokens(), 0u);
  EXPECT_GT(response->results(0).timing().compute_time_ns(), 0u);
  EXPECT_GE(response->results(0).timing().batch_size(), 1u);
  EXPECT_GT(response->total_time_ns(), 0u);
  EXPECT_EQ(response->results(1).error(), "fake backend refuses FAIL");
  // A second request on the same connection.
  request.set_request_id(43);
  auto again = client.call(request);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->request_id(), 43u);
}

TEST(ServerRoutes, ExpectContinueIsAnswered) {
  // curl sends "Expect: 100-continue" for larger bodies and waits for the interim response.
  RunningServer s(test_config());
  HttpClient client(s.http());
  const std::string body = json{{"samples", {score_sample("c", "continued")}}}.dump();
  auto interim = client.send_raw(fmt::format(
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.size()));
  EXPECT_EQ(interim.status, 100);
  auto reply = client.send_raw(body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_DOUBLE_EQ(reply.body_json()["results"][0]["score"].get<double>(), fake_score("continued"));
}

TEST(ServerRoutes, BackendExceptionIs500AndServerKeepsServing) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  auto reply = client.post("/v1/score", json{{"samples", {score_sample("t", "THROW")}}});
  EXPECT_EQ(reply.status, 500);
  EXPECT_NE(reply.error_message().find("fake backend exploded"), std::string::npos) << reply.body;
  auto get_reward = client.post("/get_reward", json{{"query", {"FAIL"}}});
  EXPECT_EQ(get_reward.status, 422);
  EXPECT_NE(get_reward.error_message().find("query[0]: fake backend refuses FAIL"), std::string::npos) << get_reward.body;
  EXPECT_EQ(client.post("/v1/score", json{{"samples", {score_sample("ok", "fine")}}}).status, 200);
}

// ---------------------------------------------------------------------------------------------------------------
// Concurrency and batching.

TEST(ServerConcurrency, SixteenClientsEachGetTheirOwnResults) {
  auto config = test_config();
  config.batching.max_wait_ms = 3;
  config.batching.max_batch_size = 16;
  RunningServer s(config);
  constexpr int kThreads = 16, kRequests = 50;
  std::atomic<int> mismatched{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      if (t % 4 == 3) {  // a quarter of the clients speak the binary protocol
        BinaryClient client(s.binary());
        for (int i = 0; i < kRequests; ++i) {
          serve::ScoreRequest request;
          request.set_request_id(static_cast<uint64_t>(t * 1000 + i));
          const std::string response = fmt::format("binary {} {}", t, i);
          *request.add_samples() = proto_sample(fmt::format("{}-{}", t, i), "Q", response);
          auto reply = client.call(request);
          if (!reply || reply->results_size() != 1) {
            ++failed;
            continue;
          }
          if (reply->request_id() != request.request_id() || reply->results(0).id() != fmt::format("{}-{}", t, i) ||
              reply->results(0).score() != fake_score(response))
            ++mismatched;
        }
        return;
      }
      HttpClient client(s.http());
      for (int i = 0; i < kRequests; ++i) {
        const std::string response = fmt::format("answer {} {}", t, i);
        const std::string id = fmt::format("{}-{}", t, i);
        auto reply = client.post("/v1/score", json{{"samples", {score_sample(id, response), score_sample(id + "b", response + "b")}}});
        if (reply.status != 200) {
          ++failed;
          continue;
        }
        auto results = reply.body_json()["results"];
        if (results.size() != 2 || results[0]["id"] != id || results[0]["score"].get<double>() != fake_score(response) ||
            results[1]["id"] != id + "b" || results[1]["score"].get<double>() != fake_score(response + "b"))
          ++mismatched;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(mismatched.load(), 0);
  EXPECT_GT(s.server.metrics().largest_batch(), 1) << "concurrent requests should share batches";
  EXPECT_EQ(s.server.metrics().requests("/v1/score") + s.server.metrics().requests("binary"), kThreads * kRequests);
}

TEST(ServerBatching, SameSampleScoresTheSameAloneAndInAnyBatch) {
  auto config = test_config();
  config.batching.max_wait_ms = 20;
  config.batching.max_batch_size = 32;
  RunningServer s(config);
  const json probe = score_sample("probe", "the probe response", {base64_encode(tiny_png())});
  HttpClient alone_client(s.http());
  auto alone = alone_client.post("/v1/score", json{{"samples", {probe}}});
  ASSERT_EQ(alone.status, 200);
  const double alone_score = alone.body_json()["results"][0]["score"].get<double>();
  EXPECT_EQ(alone.body_json()["results"][0]["timing"]["batch_size"], 1);
  // The probe inside requests of different sizes, at different positions, sent concurrently.
  std::vector<std::thread> threads;
  std::mutex m;
  std::vector<std::pair<double, int64_t>> seen;  // score, batch size
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      json samples = json::array();
      for (int k = 0; k < t * 3; ++k) samples.push_back(score_sample(fmt::format("f{}-{}", t, k), fmt::format("filler {} {}", t, k)));
      samples.insert(samples.begin() + (t % 2 ? 0 : static_cast<long>(samples.size())), probe);
      HttpClient client(s.http());
      auto reply = client.post("/v1/score", json{{"samples", samples}});
      ASSERT_EQ(reply.status, 200);
      const json parsed = reply.body_json();
      for (const auto& r : parsed["results"])
        if (r["id"] == "probe") {
          std::lock_guard<std::mutex> lock(m);
          seen.emplace_back(r["score"].get<double>(), r["timing"]["batch_size"].get<int64_t>());
        }
    });
  for (auto& t : threads) t.join();
  ASSERT_EQ(seen.size(), 6u);
  int64_t biggest = 0;
  for (const auto& [score, batch] : seen) {
    EXPECT_EQ(score, alone_score);
    biggest = std::max(biggest, batch);
  }
  EXPECT_GT(biggest, 1) << "the probe never shared a batch";
}

TEST(ServerBatching, RespectsMaxBatchSizeAndTokens) {
  auto config = test_config();
  config.batching.max_batch_size = 3;
  config.batching.max_wait_ms = 50;
  RunningServer s(config);
  HttpClient client(s.http());
  json samples = json::array();
  for (int i = 0; i < 10; ++i) samples.push_back(score_sample(std::to_string(i), "r" + std::to_string(i)));
  ASSERT_EQ(client.post("/v1/score", json{{"samples", samples}}).status, 200);
  {
    std::lock_guard<std::mutex> lock(s.backend.mutex);
    EXPECT_EQ(s.backend.batch_sizes, (std::vector<size_t>{3, 3, 3, 1}));
  }
  // A token budget smaller than two samples makes every batch a single sample.
  auto small = test_config();
  small.batching.max_batch_tokens = 40;
  small.batching.max_batch_size = 8;
  RunningServer t(small);
  HttpClient client2(t.http());
  ASSERT_EQ(client2.post("/v1/score", json{{"samples", {samples[0], samples[1], samples[2]}}}).status, 200);
  std::lock_guard<std::mutex> lock(t.backend.mutex);
  EXPECT_EQ(t.backend.batch_sizes, (std::vector<size_t>{1, 1, 1}));
}

TEST(ServerBatching, ASmallRequestBehindALargeOneWaitsForOneBatchNotAll) {
  FakeBackend backend;
  backend.delay_ms = 20;
  BatchingOptions options;
  options.max_batch_size = 2;
  options.max_wait_ms = 0;
  std::mutex mutex;
  std::condition_variable done_cv;
  int done = 0;
  {
    Batcher batcher(backend, options);
    auto submit = [&](const std::string& prefix, int n) {
      std::vector<DecodedSample> samples(n);
      for (int i = 0; i < n; ++i) {
        samples[i].request = RewardRequest::single_turn(prefix + std::to_string(i), {}, "Q?", prefix + std::to_string(i));
        samples[i].cost.tokens = 10;
      }
      std::shared_ptr<BatchJob> job;
      ASSERT_EQ(batcher.submit(std::move(samples), Batcher::Clock::now() + std::chrono::seconds(30),
                               [&](std::vector<SampleOutcome>) {
                                 std::lock_guard<std::mutex> lock(mutex);
                                 ++done;
                                 done_cv.notify_all();
                               },
                               &job),
                SubmitStatus::kAccepted);
    };
    submit("large", 12);
    submit("small", 1);
    std::unique_lock<std::mutex> lock(mutex);
    ASSERT_TRUE(done_cv.wait_for(lock, std::chrono::seconds(10), [&] { return done == 2; }));
  }
  std::lock_guard<std::mutex> lock(backend.mutex);
  ASSERT_EQ(backend.seen.size(), 13u);
  size_t small_at = 0;
  while (small_at < backend.seen.size() && backend.seen[small_at].response != "small0") ++small_at;
  // FIFO would score it 13th; round-robin takes it in the first batch it can join (the second at the latest).
  EXPECT_LT(small_at, 4u) << "the small request waited behind the large one";
  EXPECT_EQ(backend.seen.back().response, "large11");
}

TEST(ServerBatching, QueuedBytesAreBoundedToo) {
  FakeBackend backend;
  backend.delay_ms = 200;
  BatchingOptions options;
  options.max_batch_size = 1;
  options.max_wait_ms = 0;
  options.max_queue_bytes = 1000;
  Batcher batcher(backend, options);
  auto request = [](const std::string& id, uint64_t bytes) {
    std::vector<DecodedSample> samples(1);
    samples[0].request = RewardRequest::single_turn(id, {}, "Q?", id);
    samples[0].cost = {10, 0, bytes};
    return samples;
  };
  const auto deadline = Batcher::Clock::now() + std::chrono::seconds(30);
  std::shared_ptr<BatchJob> job;
  // A request larger than the whole budget still runs when the queue is empty (it could never fit otherwise).
  EXPECT_EQ(batcher.submit(request("huge", 5000), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kAccepted);
  wait_until([&] { return batcher.queue_depth() == 0; });  // taken by the worker, which now sleeps in the backend
  EXPECT_EQ(batcher.submit(request("a", 600), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kAccepted);
  EXPECT_EQ(batcher.submit(request("b", 600), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kOverloaded);
  EXPECT_EQ(batcher.submit(request("c", 300), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kAccepted);
}

TEST(ServerBatching, FullQueueAnswers503WithRetryAfter) {
  auto config = test_config();
  config.batching.max_queue = 2;
  config.batching.max_batch_size = 1;
  config.retry_after_s = 3;
  RunningServer s(config);
  s.backend.delay_ms = 200;
  std::atomic<int> ok{0}, overloaded{0}, other{0};
  std::atomic<bool> retry_after_ok{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      HttpClient client(s.http());
      auto reply = client.post("/v1/score", json{{"samples", {score_sample(std::to_string(t), "slow")}}});
      if (reply.status == 200) ++ok;
      else if (reply.status == 503) {
        ++overloaded;
        if (reply.headers["retry-after"] != "3" || reply.error_type() != "overloaded") retry_after_ok = false;
      } else ++other;
    });
  for (auto& t : threads) t.join();
  EXPECT_GE(ok.load(), 2);
  EXPECT_GE(overloaded.load(), 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_TRUE(retry_after_ok.load());
  EXPECT_EQ(s.server.metrics().errors(ServeErrorKind::kOverloaded), overloaded.load());
  // Binary protocol: the same overload as an error code with retry_after_ms.
  s.backend.delay_ms = 300;
  std::thread filler([&] {
    HttpClient c(s.http());
    c.post("/v1/score", json{{"samples", {score_sample("a", "a"), score_sample("b", "b")}}});
  });
  const int before = s.backend.calls.load();
  wait_until([&] { return s.backend.calls.load() > before; });  // one sample computing, one queued
  BinaryClient binary(s.binary());
  serve::ScoreRequest request;
  *request.add_samples() = proto_sample("x", "q", "r");
  *request.add_samples() = proto_sample("y", "q", "r");
  auto reply = binary.call(request);
  filler.join();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error().code(), serve::OVERLOADED);
  EXPECT_EQ(reply->error().retry_after_ms(), 3000u);
}

TEST(ServerBatching, DeadlineExceededIs504AndAbandonedSamplesAreDropped) {
  RunningServer s(test_config());
  s.backend.delay_ms = 600;
  std::thread blocker([&] {
    HttpClient c(s.http());
    c.post("/v1/score", json{{"samples", {score_sample("block", "block")}}});
  });
  wait_until([&] { return s.backend.calls.load() == 1; });
  HttpClient client(s.http());
  const auto started = Clock::now();
  auto reply = client.post("/v1/score", json{{"samples", {score_sample("late", "late")}}, {"deadline_ms", 100}});
  const auto elapsed = Clock::now() - started;
  EXPECT_EQ(reply.status, 504);
  EXPECT_EQ(reply.error_type(), "deadline_exceeded");
  EXPECT_LT(elapsed, std::chrono::milliseconds(450)) << "the deadline must not wait for the backend";
  blocker.join();
  s.backend.delay_ms = 0;
  HttpClient next(s.http());  // the first connection sat idle past the read timeout meanwhile
  EXPECT_EQ(next.post("/v1/score", json{{"samples", {score_sample("next", "next")}}}).status, 200);
  std::lock_guard<std::mutex> lock(s.backend.mutex);
  for (const auto& r : s.backend.seen) EXPECT_NE(r.response, "late") << "an abandoned sample was still scored";
}

TEST(ServerShutdown, StopDrainsInFlightRequestsThenRefusesConnections) {
  auto config = test_config();
  config.batching.max_batch_size = 2;
  RunningServer s(config);
  s.backend.delay_ms = 150;
  const uint16_t port = s.http();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      HttpClient client(port);
      auto reply = client.post("/v1/score", json{{"samples", {score_sample(std::to_string(t), "drain me")}}});
      if (reply.status == 200 && reply.body_json()["results"][0]["score"].get<double>() == fake_score("drain me")) ++ok;
    });
  HttpClient idle(port);  // an idle keep-alive connection must not hold the shutdown up
  wait_until([&] { return s.server.metrics().requests("/v1/score") == 6; });  // all received, most still queued
  const auto started = Clock::now();
  s.server.stop();
  s.server.wait();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6) << "every request received before stop() is answered";
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(3));
  EXPECT_TRUE(idle.closed_by_server());
  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  EXPECT_TRUE(ec) << "still accepting after shutdown";
}

TEST(ServerShutdown, RealSigtermDrainsAndStops) {
  // The signal is delivered to this process; the server's signal_set turns it into stop().
  RunningServer s(test_config());
  s.server.stop_on_signals();
  s.backend.delay_ms = 100;
  std::atomic<int> status{0};
  std::thread client([&] {
    HttpClient c(s.http());
    status = c.post("/v1/score", json{{"samples", {score_sample("sig", "sig")}}}).status;
  });
  wait_until([&] { return s.backend.calls.load() == 1; });
  ::kill(::getpid(), SIGTERM);
  s.server.wait();
  client.join();
  EXPECT_EQ(status.load(), 200);
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile inputs: each case on a fresh connection gets its specific status and message, and a normal request
// right after it succeeds.

constexpr const char* kToken = "s3cret-token-0123456789";

struct HostileServer {
  HostileServer() : root(fs::temp_directory_path() / fmt::format("vlreward_serve_{}", ::getpid())) {
    fs::remove_all(root);
    fs::create_directories(root / "images");
    std::ofstream(root / "images" / "ok.png", std::ios::binary) << tiny_png();
    std::ofstream(root / "secret.png", std::ios::binary) << tiny_png();
    std::ofstream(root / "images" / "not_image.txt") << "hello";
    fs::create_symlink(root / "secret.png", root / "images" / "escape.png");
    fs::create_directories(root / "images" / "dir.png");
    auto c = test_config();
    c.auth_token = kToken;
    c.image_root = (root / "images").string();
    c.limits.max_body_bytes = 2 << 20;
    c.limits.max_frame_bytes = 2 << 20;
    c.limits.max_samples_per_request = 16;
    c.limits.max_images_per_sample = 4;
    c.limits.max_image_pixels = 4096 * 4096;
    c.limits.max_image_bytes = 1 << 20;
    c.limits.max_text_bytes = 64 << 10;
    server.emplace(c);
  }
  ~HostileServer() {
    server.reset();
    fs::remove_all(root);
  }
  void expect_normal_http_works(const std::string& after) {
    HttpClient client(server->http(), kToken);
    auto reply = client.post("/v1/score", json{{"samples", {score_sample("n", "normal")}}});
    ASSERT_EQ(reply.status, 200) << "normal request after " << after << ": " << reply.body;
    EXPECT_DOUBLE_EQ(reply.body_json()["results"][0]["score"].get<double>(), fake_score("normal")) << "after " << after;
  }
  void expect_normal_binary_works(const std::string& after) {
    BinaryClient client(server->binary());
    serve::ScoreRequest request;
    request.set_auth_token(kToken);
    *request.add_samples() = proto_sample("n", "q", "normal");
    auto reply = client.call(request);
    ASSERT_TRUE(reply) << "after " << after;
    EXPECT_FALSE(reply->has_error()) << "after " << after << ": " << reply->error().message();
    ASSERT_EQ(reply->results_size(), 1);
    EXPECT_DOUBLE_EQ(reply->results(0).score(), fake_score("normal"));
  }
  fs::path root;
  std::optional<RunningServer> server;
};

struct HttpCase {
  std::string name;
  std::string raw;      // the bytes sent
  int status;           // expected status
  std::string type;     // expected error type
  std::string message;  // expected substring of the error message
};

std::string post(const std::string& target, const std::string& body, const std::string& token = kToken) {
  return http_request("POST", target, body, token);
}
std::string score_with_sample(const json& sample) { return post("/v1/score", json{{"samples", {sample}}}.dump()); }
json sample_with_image(const std::string& image) { return score_sample("i", "r", {image}); }

std::vector<HttpCase> hostile_http_cases() {
  std::vector<HttpCase> cases;
  auto add = [&](std::string name, std::string raw, int status, std::string type, std::string message) {
    cases.push_back({std::move(name), std::move(raw), status, std::move(type), std::move(message)});
  };
  // Invalid JSON.
  const std::vector<std::string> invalid_json = {"", "{", "}", "[", "{\"samples\":", "nul", "tru", "{'samples': []}",
                                                 "{\"samples\": [}", "\xff\xfe\x00", "{\"samples\": [1,]}", "123abc",
                                                 "\"unterminated", "{\"a\" 1}", "{\"samples\": NaN}",
                                                 "{\"samples\": [{\"response\": \"\\ud800\"}]}", "{\"a\":1}}",
                                                 std::string("{\"samples\"\0:[]}", 15)};
  for (size_t i = 0; i < invalid_json.size(); ++i)
    add(fmt::format("invalid JSON #{}", i), post("/v1/score", invalid_json[i]), 400, "bad_request", "invalid JSON");
  // Numbers beyond the range of a double are well-formed JSON the parser cannot hold: still the client's error.
  const std::vector<std::tuple<std::string, std::string, std::string>> out_of_range = {
      {"/v1/score", "{\"samples\": [1e400]}", "samples[0]: number out of range"},
      {"/v1/score", "{\"samples\": [{\"question\": \"q\", \"response\": \"r\"}], \"deadline_ms\": -1e309}",
       "deadline_ms: number out of range"},
      {"/v1/score", "{\"samples\": [{\"id\": \"a\", \"metadata\": {\"k\": 2e308}}]}",
       "samples[0].metadata.k: number out of range"},
      {"/v1/score", "1e999", "body: number out of range"},
      {"/get_reward", "{\"query\": [\"q\"], \"labels\": [1e400]}", "labels[0]: number out of range"},
      {"/classify", "{\"input\": \"x\", \"activation\": -1e400}", "activation: number out of range"},
      {"/v1/embeddings", "{\"input\": [\"x\", 1E+5000]}", "input[1]: number out of range"},
  };
  for (const auto& [target, body, message] : out_of_range)
    add(fmt::format("number out of range on {}: {}", target, body.substr(0, 40)), post(target, body), 400, "bad_request",
        message);
  add("invalid UTF-8 names the path", post("/v1/score", "{\"samples\": [{\"response\": \"\xff\"}]}"), 400, "bad_request",
      "invalid JSON at samples[0].response");
  add("JSON nesting bomb", post("/v1/score", std::string(5000, '[') + std::string(5000, ']')), 400, "bad_request",
      "nested deeper than 64");
  // Wrong shapes for /v1/score.
  const std::vector<std::pair<json, std::string>> bad_scores = {
      {json::array(), "must be a JSON object"},
      {json::object(), "body.samples: required"},
      {{{"samples", "x"}}, "body.samples: required"},
      {{{"samples", json::array()}}, "no samples"},
      {{{"samples", {1}}}, "samples[0]: must be an object"},
      {{{"samples", {{{"question", "q"}}}}}, "samples[0]: missing \"response\""},
      {{{"samples", {{{"question", "q"}, {"response", 5}}}}}, "samples[0].response: must be a string"},
      {{{"samples", {score_sample("a", "b")}}, {"extra", 1}}, "unknown key \"extra\""},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"respones", "r"}}}}}, "unknown key \"respones\""},
      {{{"samples", {{{"response", "r"}, {"messages", "hi"}}}}}, "messages: must be a list"},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"content", "hi"}}}}}}}}, "missing \"role\""},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", 3}}}}}}}}, "must be a string or a list"},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "video"}}}}}}}}}}},
       "must be \"text\" or \"image\""},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image"}}}}}}}}}}},
       "needs \"image\", \"data\" or \"path\""},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", "q"}}, {{"role", "system"}, {"content", "s"}}}}}}}},
       "system message may only come first"},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "tool"}, {"content", "q"}}}}}}}}, "must be \"user\" or \"assistant\""},
      {{{"samples", {{{"response", "r"}, {"messages", json::array()}}}}}, "no turns"},
      {{{"samples", {{{"id", 1.5}, {"question", "q"}, {"response", "r"}}}}}, "id: must be a string or an integer"},
      {{{"samples", {score_sample("a", "b")}}, {"deadline_ms", -5}}, "deadline_ms: must be a positive integer"},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"metadata", {{"k", 1}}}}}}}, "metadata.k: must be a string"},
      {{{"samples", {{{"response", "r"}}}}}, "missing \"question\""},
      {{{"samples", {{{"response", "r"}, {"question", "q"}, {"messages", json::array()}}}}}, "not both"},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"images", "x"}}}}}, "must be a list of images"},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"images", {1}}}}}}, "must be a string (base64"},
  };
  for (size_t i = 0; i < bad_scores.size(); ++i)
    add(fmt::format("bad /v1/score #{}", i), post("/v1/score", bad_scores[i].first.dump()), 400, "bad_request",
        bad_scores[i].second);
  // Images.
  add("invalid base64", score_with_sample(sample_with_image("!!!not base64!!!")), 400, "bad_request",
      "invalid base64, and no such image under the image root");
  add("bad base64 data part",
      score_with_sample({{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image"}, {"data", "@@@"}}}}}}}}),
      400, "bad_request", "data: invalid base64");
  add("malformed data URI", score_with_sample(sample_with_image("data:image/png;base64,@@@@")), 400, "bad_request", "malformed data URI");
  add("data URI without base64", score_with_sample(sample_with_image("data:image/png,abc")), 400, "bad_request", "malformed data URI");
  for (const char* url : {"http://example.com/a.png", "https://example.com/a.png", "file:///etc/passwd", "s3://b/k.png"})
    add(fmt::format("URL image {}", url), score_with_sample(sample_with_image(url)), 400, "bad_request", "URLs are not fetched");
  add("base64 of text", score_with_sample(sample_with_image("data:image/png;base64," + base64_encode("hello, not an image"))), 400,
      "bad_request", "");
  add("GIF image", score_with_sample(sample_with_image("data:image/gif;base64," + base64_encode("GIF89a\x01\x00\x01\x00"))), 400,
      "bad_request", "GIF");
  std::string bad_crc = tiny_png();
  bad_crc[29] ^= 0x55;  // inside IHDR's CRC
  add("PNG with a bad header CRC", score_with_sample(sample_with_image(base64_encode(bad_crc))), 400, "bad_request", "");
  add("PNG signature only", score_with_sample(sample_with_image("data:image/png;base64," + base64_encode(tiny_png().substr(0, 8)))),
      400, "bad_request", "");
  add("PNG declaring 100000x100000", score_with_sample(sample_with_image(base64_encode(png_with_size(100000, 100000)))), 413,
      "too_large", "100000x100000 = 10000000000 pixels exceeds the limit of 16777216");
  add("PNG declaring 4097x4096", score_with_sample(sample_with_image(base64_encode(png_with_size(4097, 4096)))), 413,
      "too_large", "exceeds the limit of 16777216 pixels");
  add("PNG declaring 0x5", score_with_sample(sample_with_image(base64_encode(png_with_size(0, 5, false)))), 400, "bad_request", "");
  add("too many images", score_with_sample(score_sample("i", "r", std::vector<std::string>(5, base64_encode(tiny_png())))), 413,
      "too_large", "5 images exceed the limit of 4");
  add("image bytes over the limit", score_with_sample(sample_with_image(base64_encode(tiny_png() + std::string(1100000, 'x')))),
      413, "too_large", "exceeds the limit of 1048576 bytes");
  {  // Within every per-sample limit, but 16 samples x 4 images at the pixel limit: over the per-request budget.
    json samples = json::array();
    const std::string big = base64_encode(png_with_size(4096, 4096));
    for (int i = 0; i < 16; ++i) samples.push_back(score_sample(std::to_string(i), "r", std::vector<std::string>(4, big)));
    add("image pixels over the request budget", post("/v1/score", json{{"samples", samples}}.dump()), 413, "too_large",
        "body.samples: the images decode to 1073741824 pixels in all, over the budget of 268435456 pixels per request "
        "(limits.max_request_pixels)");
  }
  // Paths under the image root.
  add("path traversal ..", score_with_sample(sample_with_image("../secret.png")), 400, "bad_request", "\"..\" is not allowed");
  add("path traversal nested", score_with_sample(sample_with_image("a/../../secret.png")), 400, "bad_request", "\"..\" is not allowed");
  add("absolute path", score_with_sample(sample_with_image("/etc/passwd")), 400, "bad_request", "must be relative");
  add("symlink escaping the root", score_with_sample(sample_with_image("escape.png")), 400, "bad_request", "outside the image root");
  add("missing file", score_with_sample(sample_with_image("missing.png")), 400, "bad_request", "no such image");
  add("directory as image", score_with_sample(sample_with_image("dir.png")), 400, "bad_request", "not a regular file");
  add("text file as image", score_with_sample(sample_with_image("not_image.txt")), 400, "bad_request", "");
  add("explicit path part traversal",
      score_with_sample({{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image"}, {"path", "../../etc/passwd"}}}}}}}}),
      400, "bad_request", "\"..\" is not allowed");
  // Limits.
  json many = json::array();
  for (int i = 0; i < 17; ++i) many.push_back(score_sample(std::to_string(i), "r"));
  add("too many samples", post("/v1/score", json{{"samples", many}}.dump()), 413, "too_large", "17 samples exceed the limit of 16");
  add("huge text", score_with_sample(score_sample("h", std::string(70000, 'a'))), 413, "too_large", "exceed the limit of 65536 bytes");
  add("body over the limit (declared)",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nContent-Length: 3000000\r\n\r\n{\"samples\":",
      413, "too_large", "request body exceeds the limit of 2097152 bytes");
  add("body over the limit (chunked)",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nTransfer-Encoding: chunked\r\n\r\n300000\r\n" + std::string(0x300000, ' ') + "\r\n0\r\n\r\n",
      413, "too_large", "request body exceeds the limit");
  add("headers over the limit", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n", 413,
      "too_large", "request headers exceed");
  // /get_reward shapes.
  const std::vector<std::tuple<json, int, std::string, std::string>> bad_get_reward = {
      {json::object(), 400, "bad_request", "missing \"query\""},
      {{{"query", 5}}, 400, "bad_request", "query: must be a list of strings"},
      {{{"query", {"a", 1}}}, 400, "bad_request", "query[1]: must be a string"},
      {{{"query", json::array()}}, 400, "bad_request", "no samples"},
      {{{"query", {"a", "b"}}, {"prompts", {"a"}}}, 400, "bad_request", "1 prompts for 2 queries"},
      {{{"query", {"a"}}, {"labels", {"a", "b"}}}, 400, "bad_request", "2 labels for 1 queries"},
      {{{"query", {"a"}}, {"images", {{}, {}}}}, 400, "bad_request", "2 image lists for 1 queries"},
      {{{"query", {"a"}}, {"images", "x"}}, 400, "bad_request", "images: must be a list"},
      {{{"query", {"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\nA"}}},
       400, "bad_request", "1 image placeholder(s) but 0 image(s) were sent"},
      {{{"query", {"<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\nA"}}},
       400, "bad_request", "video placeholders are not supported"},
      {{{"query", {"<|im_start|>user\n<|vision_start|>Q<|im_end|>\n<|im_start|>assistant\nA"}}}, 400, "bad_request",
       "without a matching"},
      {{{"query", {std::string(70000, 'q')}}}, 413, "too_large", "query[0]: 70000 bytes of text exceed"},
      {{{"query", std::vector<std::string>(17, "q")}}, 413, "too_large", "17 samples exceed the limit of 16"},
      {{{"query", {"q"}}, {"images", {{"../secret.png"}}}}, 400, "bad_request", "images[0][0]: \"..\" is not allowed"},
  };
  for (size_t i = 0; i < bad_get_reward.size(); ++i) {
    const auto& [body, status, type, message] = bad_get_reward[i];
    add(fmt::format("bad /get_reward #{}", i), post("/get_reward", body.dump()), status, type, message);
  }
  // /classify shapes.
  const std::vector<std::tuple<json, int, std::string, std::string>> bad_classify = {
      {{{"model", "m"}}, 400, "bad_request", "missing \"input\""},
      {{{"input", 3}}, 400, "bad_request", "input: must be a list of strings"},
      {{{"input", "x"}, {"activation", "yes"}}, 400, "bad_request", "activation: must be true or false"},
      {{{"input", {"a", "b"}}, {"images", {{}}}}, 400, "bad_request", "1 image lists for 2 inputs"},
      {{{"input", std::vector<std::string>(17, "q")}}, 413, "too_large", "17 samples exceed"},
  };
  for (size_t i = 0; i < bad_classify.size(); ++i) {
    const auto& [body, status, type, message] = bad_classify[i];
    add(fmt::format("bad /classify #{}", i), post("/classify", body.dump()), status, type, message);
  }
  // HTTP itself.
  add("unknown route", post("/v2/nothing", "{}"), 404, "not_found", "no route /v2/nothing");
  add("GET on a POST route", http_request("GET", "/v1/score", "", kToken), 405, "method_not_allowed", "use POST");
  add("POST on /metrics", post("/metrics", "{}"), 405, "method_not_allowed", "use GET");
  add("garbage request line", "GARBAGE\r\n\r\n", 400, "bad_request", "malformed HTTP request");
  add("bad header line", "POST /v1/score HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request", "malformed HTTP request");
  add("HTTP/2 preface", std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 400, "bad_request", "malformed HTTP request");
  add("bad Content-Length", "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "bad_request",
      "malformed HTTP request");
  add("bad chunk size", "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request",
      "malformed HTTP request");
  // Header floods: one huge header, or thousands of small ones, stop at the header limit.
  add("one 20 kB header", http_request("POST", "/v1/score", "{}", kToken, "X-Pad: " + std::string(20000, 'a') + "\r\n"),
      413, "too_large", "request headers exceed the limit of 16384 bytes");
  std::string many_headers;
  for (int i = 0; i < 3000; ++i) many_headers += fmt::format("X-H{}: v\r\n", i);
  add("3000 small headers", http_request("POST", "/v1/score", "{}", kToken, many_headers), 413, "too_large",
      "request headers exceed the limit of 16384 bytes");
  add("a 20 kB request target", http_request("POST", "/v1/score?" + std::string(20000, 'q'), "{}", kToken), 413,
      "too_large", "request headers exceed the limit");
  // Content-Length lies and framing conflicts (the ways requests get smuggled past a proxy).
  const std::string good = json{{"samples", {score_sample("a", "b")}}}.dump();
  add("Content-Length shorter than the body",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + good,
      400, "bad_request", "invalid JSON");
  add("two different Content-Lengths",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", 400,
      "bad_request", "malformed HTTP request");
  add("Content-Length and chunked together",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      400, "bad_request", "malformed HTTP request");
  add("negative Content-Length", "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
      "bad_request", "malformed HTTP request");
  add("Content-Length beyond 64 bits",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400, "bad_request",
      "malformed HTTP request");
  add("chunk size beyond 64 bits",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400,
      "bad_request", "malformed HTTP request");
  add("chunks adding up past the body limit",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n300000\r\n", 413, "too_large",
      "request body exceeds the limit of 2097152 bytes");
  add("unknown transfer coding", "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
      "bad_request", "malformed HTTP request");
  // Authentication.
  const std::string body = good;
  add("missing token", http_request("POST", "/v1/score", body, ""), 401, "unauthorized", "missing bearer token");
  add("wrong token", http_request("POST", "/v1/score", body, "wrong"), 401, "unauthorized", "invalid bearer token");
  add("token prefix", http_request("POST", "/v1/score", body, std::string(kToken).substr(0, 10)), 401, "unauthorized",
      "invalid bearer token");
  add("token plus suffix", http_request("POST", "/v1/score", body, std::string(kToken) + "x"), 401, "unauthorized",
      "invalid bearer token");
  add("Basic scheme",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + std::string(kToken) + "\r\nContent-Length: 2\r\n\r\n{}",
      401, "unauthorized", "invalid bearer token");
  add("metrics without token", http_request("GET", "/metrics", "", ""), 401, "unauthorized", "missing bearer token");
  add("get_reward without token", http_request("POST", "/get_reward", "{\"query\":[\"a\"]}", ""), 401, "unauthorized",
      "missing bearer token");
  add("classify with wrong token", http_request("POST", "/classify", "{\"input\":\"a\"}", "nope"), 401, "unauthorized",
      "invalid bearer token");
  add("unknown route without token", http_request("GET", "/admin", "", ""), 401, "unauthorized", "missing bearer token");
  return cases;
}

TEST(ServerHostile, HttpInputsGetSpecificErrorsAndTheServerKeepsServing) {
  HostileServer h;
  const auto cases = hostile_http_cases();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    HttpClient client(h.server->http());
    auto reply = client.send_raw(c.raw);
    EXPECT_EQ(reply.status, c.status) << reply.body;
    EXPECT_EQ(reply.error_type(), c.type) << reply.body;
    EXPECT_NE(reply.error_message().find(c.message), std::string::npos) << reply.body;
    if (c.status == 401) {
      EXPECT_EQ(reply.headers["www-authenticate"], "Bearer");
    }
    if (c.status == 405) {
      EXPECT_FALSE(reply.headers["allow"].empty());
    }
    h.expect_normal_http_works(c.name);
  }
  RecordProperty("http_hostile_cases", static_cast<int>(cases.size()));
  EXPECT_GE(cases.size(), 100u);
  // /healthz needs no token.
  HttpClient client(h.server->http());
  EXPECT_EQ(client.get("/healthz").status, 200);
}

// Framing the server accepts: a chunked body with chunk extensions and trailers scores like the same body sent with
// a Content-Length; a body that ends early (the client half-closes) gets the connection closed, nothing else.
TEST(ServerHostile, ChunkedBodiesAndTruncatedBodies) {
  HostileServer h;
  const std::string body = json{{"samples", {score_sample("c", "chunked")}}}.dump();
  std::string chunked = "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
                        "\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < body.size(); at += 7) {
    const auto piece = body.substr(at, 7);
    chunked += fmt::format("{:x};ext=\"{}\"\r\n{}\r\n", piece.size(), at, piece);
  }
  chunked += "0\r\nX-Trailer: t\r\n\r\n";
  HttpClient client(h.server->http());
  auto reply = client.send_raw(chunked);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_DOUBLE_EQ(reply.body_json()["results"][0]["score"].get<double>(), fake_score("chunked"));
  {
    HttpClient truncated(h.server->http());
    boost::system::error_code ec;
    asio::write(truncated.socket(),
                asio::buffer("POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
                             "\r\nContent-Length: 100\r\n\r\n{\"samples\""),
                ec);
    truncated.socket().shutdown(tcp::socket::shutdown_send, ec);
    EXPECT_TRUE(truncated.closed_by_server());
  }
  h.expect_normal_http_works("a truncated body");
}

TEST(ServerHostile, KeepAliveSurvivesRequestLevelErrors) {
  HostileServer h;
  HttpClient client(h.server->http(), kToken);
  EXPECT_EQ(client.post("/v1/score", std::string("{")).status, 400);
  EXPECT_EQ(client.post("/v1/score", json{{"samples", json::array()}}).status, 400);
  EXPECT_EQ(client.send_raw(http_request("POST", "/v1/score", "{}", "wrong")).status, 401);
  EXPECT_EQ(client.post("/v1/score", json{{"samples", {score_sample("k", "kept alive")}}}).status, 200);
}

TEST(ServerHostile, SlowClientsTimeOut) {
  HostileServer h;
  const auto started = Clock::now();
  {  // Headers never finish: 408.
    HttpClient client(h.server->http());
    auto reply = client.send_raw("POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Len");
    EXPECT_EQ(reply.status, 408);
    EXPECT_EQ(reply.error_type(), "read_timeout");
    EXPECT_TRUE(client.closed_by_server());
  }
  {  // Body never finishes: 408.
    HttpClient client(h.server->http());
    auto reply = client.send_raw("POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
                                 "\r\nContent-Length: 100\r\n\r\n{\"samples\"");
    EXPECT_EQ(reply.status, 408);
    EXPECT_NE(reply.error_message().find("read timeout of 300 ms"), std::string::npos) << reply.body;
  }
  {  // Connects and says nothing: closed.
    HttpClient client(h.server->http());
    EXPECT_TRUE(client.closed_by_server());
  }
  {  // Binary: half a header, then silence.
    BinaryClient client(h.server->binary());
    client.send_bytes(std::string("\0\0", 2));
    auto reply = client.read_response();
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->error().code(), serve::TIMEOUT);
    EXPECT_TRUE(client.closed_by_server());
  }
  {  // Binary: a frame whose payload never completes.
    BinaryClient client(h.server->binary());
    client.send_bytes(std::string("\0\0\0\x40", 4) + "abc");
    auto reply = client.read_response();
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->error().code(), serve::TIMEOUT);
  }
  {  // Binary: idle connection is closed.
    BinaryClient client(h.server->binary());
    EXPECT_TRUE(client.closed_by_server());
  }
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(5));
  h.expect_normal_http_works("slow clients");
  h.expect_normal_binary_works("slow clients");
}

struct BinaryCase {
  std::string name;
  std::string bytes;        // sent as they are
  serve::ErrorCode code;    // expected error; ERROR_NONE: the server closes without answering
  std::string message;
  bool closes = false;      // the server closes the connection after answering
};

std::string frame_of(const serve::ScoreRequest& r) { return encode_frame(r.SerializeAsString()); }
serve::ScoreRequest authed() {
  serve::ScoreRequest r;
  r.set_auth_token(kToken);
  return r;
}

std::vector<BinaryCase> hostile_binary_cases() {
  std::vector<BinaryCase> cases;
  auto add = [&](std::string name, std::string bytes, serve::ErrorCode code, std::string message, bool closes = false) {
    cases.push_back({std::move(name), std::move(bytes), code, std::move(message), closes});
  };
  add("length 0xffffffff", std::string("\xff\xff\xff\xff", 4), serve::TOO_LARGE, "declared length 4294967295", true);
  add("length limit + 1", be32((2u << 20) + 1) + "xx", serve::TOO_LARGE, "exceeds the limit of 2097152 bytes", true);
  add("truncated frame then close", be32(100) + std::string(10, 'x'), serve::ERROR_NONE, "");
  add("header only then close", be32(8), serve::ERROR_NONE, "");
  add("two header bytes then close", std::string("\0\0", 2), serve::ERROR_NONE, "");
  // Invalid protobuf payloads.
  const std::vector<std::string> invalid = {
      std::string("\xff\xff\xff\xff", 4),
      std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12),  // varint longer than 10 bytes
      std::string("\x12\x7f\x0a", 3),                                       // sample length beyond the payload
      std::string("\x0f", 1),                                               // field 1 with wire type 7
      std::string("\x12\x02\x1a\x05", 4),                                   // nested turn truncated
      std::string("\x00", 1),                                               // field number 0
      std::string("\x22\x05\xff\xfe\xfd\xfc\xfb", 7),                       // auth_token: invalid UTF-8
      std::string("\x12\x03\x0a\x01\xc3", 5),                               // sample id: invalid UTF-8
  };
  for (size_t i = 0; i < invalid.size(); ++i)
    add(fmt::format("invalid protobuf #{}", i), encode_frame(invalid[i]), serve::BAD_REQUEST, "not a valid ScoreRequest");
  std::mt19937 rng(1234);
  for (int i = 0; i < 12; ++i) {
    std::string noise(static_cast<size_t>(16 + i * 7), '\0');
    for (auto& c : noise) c = static_cast<char>(rng() & 0xff);
    noise[0] = '\x07';  // wire type 7 does not exist: never a valid message
    add(fmt::format("random bytes #{}", i), encode_frame(noise), serve::BAD_REQUEST, "not a valid ScoreRequest");
  }
  // Authentication.
  {
    serve::ScoreRequest r;
    *r.add_samples() = proto_sample("a", "q", "r");
    add("missing auth_token", frame_of(r), serve::UNAUTHORIZED, "missing auth_token");
    r.set_auth_token("wrong");
    add("wrong auth_token", frame_of(r), serve::UNAUTHORIZED, "invalid auth_token");
    r.set_auth_token(std::string(kToken) + "!");
    add("auth_token with suffix", frame_of(r), serve::UNAUTHORIZED, "invalid auth_token");
  }
  // Well-formed protobuf, bad content.
  add("empty frame", encode_frame(""), serve::UNAUTHORIZED, "missing auth_token");
  add("no samples", frame_of(authed()), serve::BAD_REQUEST, "samples: no samples");
  auto with_sample = [&](const std::string& name, const std::function<void(serve::Sample&)>& edit, serve::ErrorCode code,
                         const std::string& message) {
    auto r = authed();
    auto* s = r.add_samples();
    *s = proto_sample("s", "q", "r");
    edit(*s);
    add(name, frame_of(r), code, message);
  };
  with_sample("empty image", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image(); }, serve::BAD_REQUEST,
              "an image needs data or a path");
  with_sample("image with data and path",
              [](serve::Sample& s) {
                auto* i = s.mutable_turns(0)->add_content()->mutable_image();
                i->set_data(tiny_png());
                i->set_path("ok.png");
              },
              serve::BAD_REQUEST, "not both");
  with_sample("empty content part", [](serve::Sample& s) { s.mutable_turns(0)->add_content(); }, serve::BAD_REQUEST,
              "neither text nor image");
  with_sample("corrupt image", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_data("\x89PNG garbage"); },
              serve::BAD_REQUEST, "");
  with_sample("huge PNG header",
              [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_data(png_with_size(100000, 100000)); },
              serve::TOO_LARGE, "100000x100000");
  with_sample("path traversal", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_path("../secret.png"); },
              serve::BAD_REQUEST, "\"..\" is not allowed");
  with_sample("symlink escape", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_path("escape.png"); },
              serve::BAD_REQUEST, "outside the image root");
  with_sample("absolute path", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_path("/etc/hostname"); },
              serve::BAD_REQUEST, "must be relative");
  with_sample("too many images",
              [](serve::Sample& s) {
                for (int i = 0; i < 5; ++i) s.mutable_turns(0)->add_content()->mutable_image()->set_data(tiny_png());
              },
              serve::TOO_LARGE, "more than 4 images");
  with_sample("huge text", [](serve::Sample& s) { s.set_response(std::string(70000, 'x')); }, serve::TOO_LARGE,
              "exceed the limit of 65536 bytes");
  with_sample("bad role", [](serve::Sample& s) { s.mutable_turns(0)->set_role("tool"); }, serve::BAD_REQUEST,
              "must be \"user\" or \"assistant\"");
  with_sample("no turns", [](serve::Sample& s) { s.clear_turns(); }, serve::BAD_REQUEST, "no turns");
  {
    auto r = authed();
    for (int i = 0; i < 17; ++i) *r.add_samples() = proto_sample(std::to_string(i), "q", "r");
    add("too many samples", frame_of(r), serve::TOO_LARGE, "17 samples exceed the limit of 16");
  }
  {  // A lying prefix shorter than the message: the first frame is a fragment of protobuf.
    auto r = authed();
    *r.add_samples() = proto_sample("a", "q", "r");
    const std::string payload = r.SerializeAsString();
    add("length prefix shorter than the message", be32(5) + payload, serve::BAD_REQUEST, "not a valid ScoreRequest");
  }
  return cases;
}

TEST(ServerHostile, BinaryInputsGetSpecificErrorsAndTheServerKeepsServing) {
  HostileServer h;
  const auto cases = hostile_binary_cases();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    BinaryClient client(h.server->binary());
    client.send_bytes(c.bytes);
    if (c.code != serve::ERROR_NONE) {  // otherwise the client just goes away mid-frame
      auto reply = client.read_response();
      ASSERT_TRUE(reply) << "no answer";
      EXPECT_EQ(reply->error().code(), c.code) << reply->error().message();
      EXPECT_NE(reply->error().message().find(c.message), std::string::npos) << reply->error().message();
      EXPECT_EQ(reply->results_size(), 0);
      if (c.closes) {
        EXPECT_TRUE(client.closed_by_server());
      }
    }
    h.expect_normal_binary_works(c.name);
  }
  EXPECT_GE(cases.size(), 40u);
  h.expect_normal_http_works("binary hostile inputs");
}

TEST(ServerHostile, BinaryConnectionContinuesAfterARequestLevelError) {
  HostileServer h;
  BinaryClient client(h.server->binary());
  client.send_bytes(encode_frame("\xff\xff"));
  auto bad = client.read_response();
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->error().code(), serve::BAD_REQUEST);
  auto request = authed();
  request.set_request_id(9);
  *request.add_samples() = proto_sample("ok", "q", "same connection");
  auto good = client.call(request);
  ASSERT_TRUE(good);
  EXPECT_EQ(good->request_id(), 9u);
  EXPECT_DOUBLE_EQ(good->results(0).score(), fake_score("same connection"));
}

// Resident memory of this process (the server runs in it).
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

TEST(ServerHostile, AnnouncedFramesCostOnlyTheBytesReceived) {
  auto c = test_config();
  c.read_timeout_ms = 10000;
  c.limits.max_frame_bytes = 64u << 20;
  RunningServer s(c);
  const int64_t before = resident_bytes();
  // Each connection announces a 64 MiB frame and sends a few bytes of it (no token has been seen yet).
  std::vector<std::unique_ptr<BinaryClient>> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(std::make_unique<BinaryClient>(s.binary()));
    clients.back()->send_bytes(be32((64u << 20) - 1) + "only this much");
  }
  wait_until([&] { return s.server.metrics().open_connections() == 16; });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the server read what was sent
  const int64_t grown = resident_bytes() - before;
  EXPECT_LT(grown, 64 << 20) << "16 announced 64 MiB frames made the server hold " << (grown >> 20) << " MiB";
  clients.clear();

  // A frame arriving in pieces, and two frames in one write, are still read exactly.
  BinaryClient client(s.binary());
  serve::ScoreRequest request;
  request.set_request_id(1);
  *request.add_samples() = proto_sample("p", "q", std::string(200000, 'p'));
  const std::string frame = frame_of_request(request);
  for (size_t at = 0; at < frame.size(); at += 70001) {
    client.send_bytes(frame.substr(at, 70001));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto reply = client.read_response();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->request_id(), 1u);
  EXPECT_DOUBLE_EQ(reply->results(0).score(), fake_score(std::string(200000, 'p')));
  serve::ScoreRequest second;
  second.set_request_id(2);
  *second.add_samples() = proto_sample("s", "q", "second");
  client.send_bytes(frame_of_request(request) + frame_of_request(second));
  auto first_reply = client.read_response(), second_reply = client.read_response();
  ASSERT_TRUE(first_reply && second_reply);
  EXPECT_EQ(first_reply->request_id(), 1u);
  EXPECT_EQ(second_reply->request_id(), 2u);
  EXPECT_DOUBLE_EQ(second_reply->results(0).score(), fake_score("second"));
}

TEST(ServerHostile, ConnectionsOverTheCapAreRefusedAndCounted) {
  auto c = test_config();
  c.read_timeout_ms = 10000;
  c.limits.max_connections = 3;
  RunningServer s(c);
  std::vector<std::unique_ptr<HttpClient>> held;
  for (int i = 0; i < 3; ++i) held.push_back(std::make_unique<HttpClient>(s.http()));
  wait_until([&] { return s.server.metrics().open_connections() == 3; });

  HttpClient extra(s.http());
  auto refused = extra.send_raw("");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(refused.error_type(), "overloaded");
  EXPECT_NE(refused.error_message().find("3 connections are open"), std::string::npos) << refused.body;
  EXPECT_NE(refused.error_message().find("limits.max_connections"), std::string::npos) << refused.body;
  EXPECT_EQ(refused.headers["retry-after"], "1");
  EXPECT_TRUE(extra.closed_by_server());
  BinaryClient extra_binary(s.binary());
  auto frame = extra_binary.read_response();
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->error().code(), serve::OVERLOADED);
  EXPECT_EQ(frame->error().retry_after_ms(), 1000u);
  EXPECT_TRUE(extra_binary.closed_by_server());
  EXPECT_EQ(s.server.metrics().refused_connections(), 2);

  // The held connections still work, /metrics shows the refusals, and a freed slot admits the next client.
  auto metrics = held[0]->get("/metrics");
  EXPECT_NE(metrics.body.find("vlreward_connections_refused_total 2"), std::string::npos) << metrics.body;
  held.pop_back();
  wait_until([&] { return s.server.metrics().open_connections() == 2; });
  HttpClient next(s.http());
  EXPECT_EQ(next.post("/v1/score", json{{"samples", {score_sample("n", "next")}}}).status, 200);

  auto expect_config_error = [](const char* text) {
    EXPECT_THROW(parse_server_config(json::parse(text)), ConfigError) << text;
  };
  expect_config_error(R"({"limits": {"max_connections": 0}})");
  EXPECT_EQ(parse_server_config(json::parse(R"({"limits": {"max_connections": 7}})")).limits.max_connections, 7);
}

TEST(ServerHostile, OutOfFileDescriptorsBacksOffAndRecovers) {
#ifdef __SANITIZE_ADDRESS__
  // The sanitizer runtime checks memory through a pipe of its own (UBSan's vptr check, ASan's reports): in a
  // process with no descriptor left it reports every object as unreadable, so this state cannot be checked there.
  GTEST_SKIP() << "needs free file descriptors under the sanitizers; runs in the normal build";
#endif
  auto c = test_config();
  c.read_timeout_ms = 10000;
  RunningServer s(c);
  asio::io_context io;
  tcp::socket pending(io);
  pending.open(tcp::v4());  // the client's descriptor exists before the limit drops
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  const int lowest_free = ::dup(0);  // new descriptors take the lowest free number: forbid it and all above
  ASSERT_GE(lowest_free, 0);
  ::close(lowest_free);
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  const int64_t before = s.server.metrics().accept_errors();
  pending.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), s.http()));  // queued; accept() gets EMFILE
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int64_t failures = s.server.metrics().accept_errors() - before;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_GE(failures, 1);
  EXPECT_LE(failures, 15) << "accept() retried " << failures << " times in 500 ms instead of backing off";

  // Once descriptors are free again the waiting connection is accepted and served.
  timeval tv{5, 0};
  ::setsockopt(pending.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  asio::write(pending, asio::buffer(http_request("POST", "/v1/score",
                                                 json{{"samples", {score_sample("f", "fds")}}}.dump(), "")));
  std::string buffered;
  auto reply = read_http_reply(pending, buffered);
  EXPECT_EQ(reply.status, 200) << reply.body;
}

TEST(ServerHostile, PathImagesInsideTheRootAreServed) {
  HostileServer h;
  HttpClient client(h.server->http(), kToken);
  auto reply = client.post("/v1/score", json{{"samples", {score_sample("p", "from path", {"ok.png"})}}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.body_json()["results"][0]["components"]["images"], 1.0);
  std::lock_guard<std::mutex> lock(h.server->backend.mutex);
  EXPECT_EQ(h.server->backend.seen.back().turns[0].content[0].image.bytes, tiny_png()) << "the server reads the file";
}

}  // namespace
}  // namespace vlreward
