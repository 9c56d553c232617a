#pragma once
// What the reward-serve suites share: real PNG bytes (and PNG headers declaring any size), loopback HTTP and binary
// clients, a server on ephemeral ports with the deterministic in-test backend, and the hardened server the hostile
// cases run against.
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
#include "tests/test_support.h"
#include "plugin/wire/base64.h"
#include "adapters/common/error.h"
#include "adapters/hf/byte_level.h"
#include "adapters/server/batcher.h"
#include "adapters/server/chatml.h"
#include "adapters/server/client_networks.h"
#include "adapters/server/prompt_images.h"
#include "adapters/server/frame_codec.h"
#include "adapters/server/request_decoding.h"
#include "adapters/server/reward_server.h"
#include "adapters/server/error.h"
#include "adapters/server/config.h"
#include "plugin/reward.h"
#include "reward_service.pb.h"

namespace vlreward::server_test {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The fake backend (tests/fake_reward_backend.h): score = a hash of the response text.
using vlreward::test_support::FakeBackend;
using vlreward::test_support::fake_score;
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---------------------------------------------------------------------------------------------------------------
// Images: a real 1x1 PNG, and PNG headers declaring any size (valid CRCs, so only the size is wrong).

inline uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}
inline std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
inline std::string png_chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}
inline std::string png_with_size(uint32_t width, uint32_t height, bool with_data = true) {
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
inline const std::string& tiny_png() {
  static const std::string png = png_with_size(1, 1);
  return png;
}

// ---------------------------------------------------------------------------------------------------------------
// Clients: blocking sockets with a receive timeout, so a broken server fails a test instead of hanging it.

inline tcp::socket connect_to(asio::io_context& io, uint16_t port) {
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
inline HttpReply read_http_reply(tcp::socket& socket, std::string& pending) {
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

inline std::string http_request(const std::string& method, const std::string& target, const std::string& body,
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

inline serve::Sample proto_sample(const std::string& id, const std::string& question, const std::string& response,
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

inline json score_sample(const std::string& id, const std::string& response, const std::vector<std::string>& images = {}) {
  json s = {{"id", id}, {"question", "What is in the picture?"}, {"response", response}};
  if (!images.empty()) s["images"] = images;
  return s;
}

inline std::string frame_of_request(const serve::ScoreRequest& r) { return encode_frame(r.SerializeAsString()); }

// ---------------------------------------------------------------------------------------------------------------
// A server on ephemeral loopback ports, stopped when the fixture ends.

inline ServerConfig test_config() {
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
inline void wait_until(const std::function<bool()>& condition) {
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  while (!condition() && Clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(condition());
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
    c.limits.max_request_pixels = 256ull << 20;  // 16 images at the per-image limit
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

}  // namespace vlreward::server_test
