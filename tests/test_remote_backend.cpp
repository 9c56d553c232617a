// The "remote" reward backend against real loopback servers: two reward-serve replicas with an in-test backend
// (scores must equal a local call, over both protocols; load is spread; a dead replica is skipped; connections are
// capped and reused) and scripted servers that answer exactly what a test needs (4xx not retried, 503 retried after
// Retry-After with backoff, timeouts bounded).
#include <cstdint>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/fake_reward_backend.h"
#include "adapters/server/reward_server.h"
#include "adapters/server/error.h"
#include "adapters/server/config.h"
#include "plugin/registry.h"
#include "plugin/remote/remote_backend.h"
#include "plugin/wire/frame_codec.h"
#include "reward_service.pb.h"

namespace vlreward {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int64_t elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

const std::string kImagePath = std::string(VLREWARD_FIXTURES_DIR) + "/reward/images/small.png";

// The in-test backend (tests/fake_reward_backend.h): score = a hash of the response; its "digest" component shows
// that the remote call carried everything (turns, images, system prompt, reference, metadata).
using vlreward::test_support::FakeBackend;
using vlreward::test_support::fake_score;
using vlreward::test_support::read_bytes;

ServerConfig replica_config() {
  ServerConfig c;
  c.http_port = 0;
  c.binary_port = 0;
  c.io_threads = 2;
  c.read_timeout_ms = 2000;
  c.request_deadline_ms = 5000;
  c.batching.max_wait_ms = 1;
  return c;
}

struct Replica {
  explicit Replica(ServerConfig config = replica_config()) : server(std::move(config), backend) { server.start(); }
  ~Replica() {
    server.stop();
    server.wait();
  }
  std::string http_url() const { return fmt::format("http://127.0.0.1:{}", server.http_port()); }
  std::string binary_url() const { return fmt::format("tcp://127.0.0.1:{}", server.binary_port()); }
  FakeBackend backend;  // declared first: the server uses it until it is destroyed
  RewardServer server;
};

std::unique_ptr<RemoteBackend> remote(const json& config) {
  return std::make_unique<RemoteBackend>(parse_remote_backend_options(config, "reward"));
}

// A batch covering every field a request can carry.
std::vector<RewardRequest> varied_batch(size_t n) {
  std::vector<RewardRequest> batch;
  for (size_t i = 0; i < n; ++i) {
    const std::string id = fmt::format("s{}", i);
    RewardRequest r;
    switch (i % 5) {
      case 0:
        r = RewardRequest::single_turn(id, {RewardImage::from_path(kImagePath)}, "What is in the picture?",
                                       fmt::format("A small picture, number {}.", i));
        break;
      case 1:
        r = RewardRequest::single_turn(id, {RewardImage::from_bytes(read_bytes(kImagePath), "image/png")},
                                       "Dominant colour?", fmt::format("Mostly blue ({}).", i), "blue");
        r.system_prompt = "Answer briefly.";
        break;
      case 2:
        r.id = id;
        r.turns.push_back({"user", {RewardContent::text_part("Hi")}});
        r.turns.push_back({"assistant", {RewardContent::text_part("Hello!")}});
        r.turns.push_back({"user", {RewardContent::image_part(RewardImage::from_path(kImagePath)),
                                    RewardContent::text_part("And this one?")}});
        r.response = fmt::format("Multi-turn answer {} with unicode: \xc3\xa9\xe2\x82\xac", i);
        r.metadata = {{"source", "test"}, {"n", std::to_string(i)}};
        break;
      case 3:
        r = RewardRequest::single_turn(id, {}, "Text only?", fmt::format("Text only {}.", i));
        break;
      default:
        r = RewardRequest::single_turn(id, {}, "Refused?", "FAIL");
        break;
    }
    batch.push_back(std::move(r));
  }
  return batch;
}

void expect_same_results(const std::vector<RewardResult>& got, const std::vector<RewardResult>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(fmt::format("sample {}", i));
    ASSERT_EQ(got[i].ok(), want[i].ok()) << got[i].error;
    if (want[i].ok()) {
      EXPECT_EQ(got[i].score.value(), want[i].score.value());  // exact: doubles survive JSON and protobuf
      EXPECT_EQ(got[i].components, want[i].components);
    } else {
      EXPECT_EQ(got[i].error, want[i].error);
    }
  }
}

// A port nobody listens on: bound, then released.
uint16_t dead_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// ---------------------------------------------------------------------------------------------------------------
// A scripted server: answers the n-th request (counted over all connections) with answer(n, request body), or not
// at all when the answer is empty. Plain POSIX sockets polled with a stop flag, so it never hangs a test.

class ScriptedServer {
 public:
  enum class Kind { kHttp, kBinary };
  using Answer = std::function<std::string(int hit, const std::string& body)>;

  ScriptedServer(Kind kind, Answer answer) : kind_(kind), answer_(std::move(answer)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listener_, 64), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    acceptor_.join();
    for (auto& t : connections_) t.join();
    ::close(listener_);
  }
  std::string url() const {
    return kind_ == Kind::kHttp ? fmt::format("http://127.0.0.1:{}", port_) : fmt::format("127.0.0.1:{}", port_);
  }
  int hits() const { return hits_; }
  std::vector<int64_t> hit_times_ms() {
    std::lock_guard<std::mutex> lock(mutex_);
    return hit_times_;
  }

 private:
  bool wait_readable(int fd) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }
  void accept_loop() {
    while (wait_readable(listener_)) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd >= 0) connections_.emplace_back([this, fd] { serve(fd); });
    }
  }
  // Reads until `want` bytes are buffered; false on EOF or stop.
  bool fill(int fd, std::string& buffer, size_t want) {
    while (buffer.size() < want) {
      if (!wait_readable(fd)) return false;
      char chunk[65536];
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) return false;
      buffer.append(chunk, static_cast<size_t>(n));
    }
    return true;
  }
  bool read_request(int fd, std::string& buffer, std::string& body) {
    if (kind_ == Kind::kBinary) {
      if (!fill(fd, buffer, 4)) return false;
      const uint32_t length = decode_frame_length(reinterpret_cast<const unsigned char*>(buffer.data()));
      if (!fill(fd, buffer, 4 + length)) return false;
      body = buffer.substr(4, length);
      buffer.erase(0, 4 + length);
      return true;
    }
    size_t end;
    while ((end = buffer.find("\r\n\r\n")) == std::string::npos)
      if (!fill(fd, buffer, buffer.size() + 1)) return false;
    const std::string head = buffer.substr(0, end);
    const auto at = head.find("Content-Length: ");
    const size_t length = at == std::string::npos ? 0 : std::stoul(head.substr(at + 16));
    if (!fill(fd, buffer, end + 4 + length)) return false;
    body = buffer.substr(end + 4, length);
    buffer.erase(0, end + 4 + length);
    return true;
  }
  void serve(int fd) {
    std::string buffer, body;
    while (read_request(fd, buffer, body)) {
      const int hit = hits_++;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        hit_times_.push_back(elapsed_ms(start_));
      }
      const std::string reply = answer_(hit, body);
      if (reply.empty()) {  // never answer: hold the connection until the client gives up
        while (wait_readable(fd)) {
          char c;
          if (::recv(fd, &c, 1, 0) <= 0) break;
        }
        break;
      }
      ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
    }
    ::close(fd);
  }

  Kind kind_;
  Answer answer_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> hits_{0};
  std::mutex mutex_;
  std::vector<int64_t> hit_times_;
  Clock::time_point start_ = Clock::now();
  std::thread acceptor_;
  std::vector<std::thread> connections_;  // only the acceptor thread adds; joined after it
};

std::string http_reply(int status, const std::string& reason, const std::string& body, const std::string& headers = "") {
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{}", status,
                     reason, body.size(), headers, body);
}

// A correct /v1/score answer for whatever was asked.
std::string http_scores(const std::string& request_body) {
  json results = json::array();
  const json request = json::parse(request_body);
  for (const auto& s : request["samples"])
    results.push_back({{"id", s["id"]}, {"score", fake_score(s["response"].get<std::string>())}});
  return http_reply(200, "OK", json{{"model", "scripted"}, {"results", results}}.dump());
}

std::string binary_reply(const serve::ScoreResponse& response) { return encode_frame(response.SerializeAsString()); }

std::string binary_scores(const std::string& request_frame) {
  serve::ScoreRequest request;
  EXPECT_TRUE(request.ParseFromString(request_frame));
  serve::ScoreResponse response;
  response.set_request_id(request.request_id());
  for (const auto& s : request.samples()) {
    auto* r = response.add_results();
    r->set_id(s.id());
    r->set_score(fake_score(s.response()));
  }
  return binary_reply(response);
}

std::string binary_error(serve::ErrorCode code, const std::string& message, uint32_t retry_after_ms = 0) {
  serve::ScoreResponse response;
  response.mutable_error()->set_code(code);
  response.mutable_error()->set_message(message);
  response.mutable_error()->set_retry_after_ms(retry_after_ms);
  return binary_reply(response);
}

std::vector<RewardRequest> one_sample(const std::string& response = "An answer.") {
  return {RewardRequest::single_turn("only", {}, "Q?", response)};
}

// ---------------------------------------------------------------------------------------------------------------

TEST(RemoteConfig, ReadsStrictlyAndNamesTheKey) {
  const auto o = parse_remote_backend_options(
      json::parse(R"({"urls": ["http://a:1", "http://[::1]:2/prefix/"], "max_connections": 4, "timeout_ms": 100,
                      "load_balancing": "round_robin", "token": "t"})"),
      "reward");
  EXPECT_EQ(o.urls.size(), 2u);
  EXPECT_EQ(o.max_connections, 4);
  EXPECT_EQ(o.load_balancing, RemoteLoadBalancing::kRoundRobin);
  EXPECT_EQ(o.token, "t");
  EXPECT_EQ(parse_remote_backend_options(json::parse(R"({"url": "h:9", "protocol": "binary"})"), "r").protocol,
            RemoteProtocol::kBinary);

  ::setenv("VLREWARD_TEST_REMOTE_TOKEN", "from-env", 1);
  EXPECT_EQ(parse_remote_backend_options(json::parse(R"({"url": "http://h", "token_env": "VLREWARD_TEST_REMOTE_TOKEN"})"),
                                         "r").token,
            "from-env");

  auto expect_error = [](const char* text, const char* needle) {
    try {
      parse_remote_backend_options(json::parse(text), "reward");
      ADD_FAILURE() << "accepted " << text;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"url": "http://h", "max_conections": 3})", "max_conections");
  expect_error(R"({})", "reward.urls: is required");
  expect_error(R"({"url": "http://h", "urls": ["http://h"]})", "not both");
  expect_error(R"({"urls": []})", "at least one");
  expect_error(R"({"url": "https://h"})", "HTTPS");
  expect_error(R"({"url": "h:80"})", "must start with http://");
  expect_error(R"({"url": "http://h:99999"})", "reward.url: \"http://h:99999\" has an invalid port");
  expect_error(R"({"urls": ["http://ok", "tcp://h:1"]})", "reward.urls[1]");
  expect_error(R"({"url": "tcp://h:1/x", "protocol": "binary"})", "has a path");
  expect_error(R"({"url": "h", "protocol": "binary"})", "has no port");
  expect_error(R"({"url": "http://h", "protocol": "grpc"})", "reward.protocol");
  expect_error(R"({"url": "http://h", "load_balancing": "random"})", "reward.load_balancing");
  expect_error(R"({"url": "http://h", "token_env": "VLREWARD_TEST_UNSET_VARIABLE"})", "VLREWARD_TEST_UNSET_VARIABLE is not set");
  expect_error(R"({"url": "http://h", "token": "a", "token_env": "B"})", "at most one");
  expect_error(R"({"url": "http://h", "max_connections": 0})", "reward.max_connections: must be at least 1");
  expect_error(R"({"url": "http://h", "max_retries": -1})", "reward.max_retries");
  expect_error(R"({"url": "http://h", "timeout_ms": "5"})", "reward.timeout_ms: must be an integer, got string \"5\"");
}

TEST(RemoteConfig, TheRegistryKnowsRemote) {
  RewardRegistry registry;
  EXPECT_TRUE(registry.contains("remote"));
  auto backend = registry.create(json{{"type", "remote"}, {"url", "http://127.0.0.1:1"}});
  EXPECT_EQ(backend->name(), "remote");
  EXPECT_TRUE(backend->capabilities().images);
  try {
    registry.create(json{{"type", "remote"}, {"url", "http://127.0.0.1:1"}, {"colour", 1}}, "mpo.reward");
    FAIL() << "accepted an unknown key";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("mpo.reward: unknown key(s): colour"), std::string::npos) << e.what();
  }
}

TEST(RemoteScoring, BothProtocolsGiveExactlyTheLocalScores) {
  Replica a, b;
  const auto batch = varied_batch(23);
  FakeBackend local;
  const auto want = local.score(batch);
  for (const char* protocol : {"http", "binary"}) {
    SCOPED_TRACE(protocol);
    const bool http = std::string(protocol) == "http";
    auto client = remote({{"urls", {http ? a.http_url() : a.binary_url(), http ? b.http_url() : b.binary_url()}},
                          {"protocol", protocol},
                          {"max_samples_per_request", 4}});
    expect_same_results(client->score(batch), want);
    // One at a time too (the common call from a training loop), and an empty batch.
    for (size_t i = 0; i < 5; ++i) expect_same_results(client->score({batch[i]}), {want[i]});
    EXPECT_TRUE(client->score({}).empty());
    const auto stats = client->stats();
    EXPECT_EQ(stats.retries, 0);
    EXPECT_EQ(stats.failed_requests, 0);
  }
}

TEST(RemoteScoring, AnUnreadableImagePathFailsOnlyItsSample) {
  Replica a;
  auto client = remote({{"url", a.http_url()}});
  auto batch = one_sample("fine");
  batch.push_back(RewardRequest::single_turn("broken", {RewardImage::from_path("/nonexistent/x.png")}, "Q?", "A"));
  const auto results = client->score(batch);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].score.value(), fake_score("fine"));
  ASSERT_FALSE(results[1].ok());
  EXPECT_NE(results[1].error.find("cannot read image \"/nonexistent/x.png\""), std::string::npos) << results[1].error;
}

TEST(RemoteBalancing, RoundRobinAlternatesAndLeastInFlightSpreadsConcurrentLoad) {
  Replica a, b;
  {
    auto client = remote({{"urls", {a.http_url(), b.http_url()}}, {"load_balancing", "round_robin"}});
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->score(one_sample())[0].ok());
    EXPECT_EQ(client->stats().attempts_per_replica, (std::vector<int64_t>{10, 10}));
    EXPECT_EQ(a.backend.calls + b.backend.calls, 20);
  }
  // Concurrent callers with a slow backend: picking the replica with fewer requests in flight splits them.
  a.backend.delay_ms = 20;
  b.backend.delay_ms = 20;
  auto client = remote({{"urls", {a.binary_url(), b.binary_url()}}, {"protocol", "binary"}});
  std::vector<std::thread> callers;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t)
    callers.emplace_back([&] {
      for (int i = 0; i < 5; ++i) ok += client->score(one_sample())[0].ok() ? 1 : 0;
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(ok, 40);
  const auto per_replica = client->stats().attempts_per_replica;
  EXPECT_GE(per_replica[0], 12) << per_replica[0] << " / " << per_replica[1];
  EXPECT_GE(per_replica[1], 12) << per_replica[0] << " / " << per_replica[1];
}

TEST(RemoteBalancing, ADownReplicaIsSkipped) {
  Replica live;
  for (const char* protocol : {"http", "binary"}) {
    SCOPED_TRACE(protocol);
    const bool http = std::string(protocol) == "http";
    const std::string dead = fmt::format("{}127.0.0.1:{}", http ? "http://" : "", dead_port());
    auto client = remote({{"urls", {dead, http ? live.http_url() : live.binary_url()}},
                          {"protocol", protocol},
                          {"load_balancing", "round_robin"},
                          {"replica_cooldown_ms", 60000},
                          {"backoff_ms", 1}});
    const auto start = Clock::now();
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(client->score(one_sample())[0].ok());
    EXPECT_LT(elapsed_ms(start), 2000);
    const auto stats = client->stats();
    EXPECT_LE(stats.attempts_per_replica[0], 1);  // refused once, then cooled down
    EXPECT_EQ(stats.attempts_per_replica[1], 10);
  }
  // With every replica down, each request fails after its bounded retries, naming the replica.
  auto client = remote({{"url", fmt::format("http://127.0.0.1:{}", dead_port())}, {"max_retries", 2}, {"backoff_ms", 1}});
  const auto results = client->score(one_sample());
  ASSERT_FALSE(results[0].ok());
  EXPECT_NE(results[0].error.find("cannot connect"), std::string::npos) << results[0].error;
  EXPECT_NE(results[0].error.find("gave up after 3 attempts"), std::string::npos) << results[0].error;
}

TEST(RemoteConnections, PoolIsCappedAndReusedAcrossCalls) {
  auto config = replica_config();
  config.read_timeout_ms = 300;  // the server closes idle keep-alive connections after this
  Replica a(config);
  a.backend.delay_ms = 10;
  auto client = remote({{"url", a.http_url()}, {"max_connections", 2}});
  std::vector<std::thread> callers;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t)
    callers.emplace_back([&] {
      for (int i = 0; i < 4; ++i) ok += client->score(one_sample())[0].ok() ? 1 : 0;
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(ok, 32);
  EXPECT_LE(client->stats().connections_opened, 2);
  EXPECT_EQ(a.server.metrics().requests("/v1/score"), 32);
  // After the server closed the idle connections, the next call still succeeds without counting a retry.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(client->score(one_sample())[0].ok());
  EXPECT_EQ(client->stats().retries, 0);
  EXPECT_EQ(client->stats().attempts, 33);
}

TEST(RemoteRetries, ClientErrorsAreNeverRetried) {
  auto config = replica_config();
  config.auth_token = "right-token";
  Replica a(config);
  for (const char* protocol : {"http", "binary"}) {
    SCOPED_TRACE(protocol);
    const bool http = std::string(protocol) == "http";
    const int64_t before = a.server.metrics().errors(ServeErrorKind::kUnauthorized);
    auto wrong = remote({{"url", http ? a.http_url() : a.binary_url()}, {"protocol", protocol}, {"token", "wrong"},
                         {"max_retries", 5}});
    const auto results = wrong->score(one_sample());
    ASSERT_FALSE(results[0].ok());
    EXPECT_NE(results[0].error.find(http ? "HTTP 401" : "UNAUTHORIZED"), std::string::npos) << results[0].error;
    EXPECT_EQ(a.server.metrics().errors(ServeErrorKind::kUnauthorized) - before, 1);  // one hit, no retry
    EXPECT_EQ(wrong->stats().attempts, 1);
    auto right = remote({{"url", http ? a.http_url() : a.binary_url()}, {"protocol", protocol}, {"token", "right-token"}});
    EXPECT_EQ(right->score(one_sample("ok"))[0].score.value(), fake_score("ok"));
  }
  // A scripted 400 / 422 / BAD_REQUEST: still one hit each.
  for (int status : {400, 413, 422}) {
    ScriptedServer s(ScriptedServer::Kind::kHttp, [&](int, const std::string&) {
      return http_reply(status, "No", R"({"error": {"type": "x", "message": "samples[0].question: required"}})");
    });
    auto client = remote({{"url", s.url()}, {"max_retries", 5}, {"backoff_ms", 1}});
    const auto results = client->score(one_sample());
    EXPECT_NE(results[0].error.find(fmt::format("HTTP {}: samples[0].question: required", status)), std::string::npos)
        << results[0].error;
    EXPECT_EQ(s.hits(), 1);
  }
  ScriptedServer s(ScriptedServer::Kind::kBinary,
                   [](int, const std::string&) { return binary_error(serve::BAD_REQUEST, "not a valid ScoreRequest"); });
  auto client = remote({{"url", s.url()}, {"protocol", "binary"}, {"max_retries", 5}, {"backoff_ms", 1}});
  EXPECT_NE(client->score(one_sample())[0].error.find("BAD_REQUEST: not a valid ScoreRequest"), std::string::npos);
  EXPECT_EQ(s.hits(), 1);
}

TEST(RemoteRetries, OverloadIsRetriedNoSoonerThanRetryAfter) {
  {
    ScriptedServer s(ScriptedServer::Kind::kHttp, [](int hit, const std::string& body) {
      return hit == 0 ? http_reply(503, "Service Unavailable", R"({"error": {"type": "overloaded", "message": "queue full"}})",
                                   "Retry-After: 1\r\n")
                      : http_scores(body);
    });
    auto client = remote({{"url", s.url()}, {"backoff_ms", 1}});
    const auto start = Clock::now();
    const auto results = client->score(one_sample("after a wait"));
    const auto took = elapsed_ms(start);
    ASSERT_TRUE(results[0].ok()) << results[0].error;
    EXPECT_EQ(results[0].score.value(), fake_score("after a wait"));
    EXPECT_EQ(s.hits(), 2);
    const auto times = s.hit_times_ms();
    EXPECT_GE(times[1] - times[0], 1000);  // Retry-After: 1 (second) honoured
    EXPECT_LT(took, 1800);                 // plus at most 10% jitter
  }
  {
    ScriptedServer s(ScriptedServer::Kind::kBinary, [](int hit, const std::string& body) {
      return hit < 2 ? binary_error(serve::OVERLOADED, "queue full", 150) : binary_scores(body);
    });
    auto client = remote({{"url", s.url()}, {"protocol", "binary"}, {"backoff_ms", 1}});
    ASSERT_TRUE(client->score(one_sample())[0].ok());
    const auto times = s.hit_times_ms();
    ASSERT_EQ(times.size(), 3u);
    EXPECT_GE(times[1] - times[0], 150);
    EXPECT_GE(times[2] - times[1], 150);
    EXPECT_EQ(client->stats().retries, 2);
  }
}

TEST(RemoteRetries, BackoffGrowsAndRetriesStopAtTheCap) {
  ScriptedServer s(ScriptedServer::Kind::kHttp, [](int, const std::string&) {
    return http_reply(503, "Service Unavailable", R"({"error": {"type": "overloaded", "message": "queue full"}})");
  });
  auto client = remote({{"url", s.url()}, {"max_retries", 3}, {"backoff_ms", 40}, {"max_backoff_ms", 100}});
  const auto results = client->score(one_sample());
  ASSERT_FALSE(results[0].ok());
  EXPECT_NE(results[0].error.find("HTTP 503: queue full (gave up after 4 attempts)"), std::string::npos) << results[0].error;
  EXPECT_EQ(s.hits(), 4);
  const auto t = s.hit_times_ms();
  ASSERT_EQ(t.size(), 4u);
  // Waits d/2 + U(0, d/2) with d = 40, 80, min(160, 100): in [20, 40], [40, 80], [50, 100] (+ scheduling slack).
  EXPECT_GE(t[1] - t[0], 20);
  EXPECT_GE(t[2] - t[1], 40);
  EXPECT_GE(t[3] - t[2], 50);
  EXPECT_LT(t[3] - t[2], 100 + 60);

  // A backend that throws is a 500: retried, then reported.
  Replica a;
  auto to_replica = remote({{"url", a.http_url()}, {"max_retries", 2}, {"backoff_ms", 1}});
  const auto thrown = to_replica->score(one_sample("THROW"));
  EXPECT_NE(thrown[0].error.find("HTTP 500"), std::string::npos) << thrown[0].error;
  EXPECT_EQ(a.backend.calls, 3);
}

TEST(RemoteRetries, TimeoutsAreBounded) {
  for (auto kind : {ScriptedServer::Kind::kHttp, ScriptedServer::Kind::kBinary}) {
    ScriptedServer silent(kind, [](int, const std::string&) { return std::string(); });
    const bool http = kind == ScriptedServer::Kind::kHttp;
    auto client = remote({{"url", silent.url()}, {"protocol", http ? "http" : "binary"}, {"timeout_ms", 200},
                          {"max_retries", 1}, {"backoff_ms", 10}});
    const auto start = Clock::now();
    const auto results = client->score(one_sample());
    const auto took = elapsed_ms(start);
    ASSERT_FALSE(results[0].ok());
    EXPECT_NE(results[0].error.find("no complete answer within timeout_ms=200 (gave up after 2 attempts)"),
              std::string::npos)
        << results[0].error;
    EXPECT_EQ(silent.hits(), 2);
    EXPECT_GE(took, 400);
    EXPECT_LT(took, 1000);
  }
}

TEST(RemoteRetries, AFailingReplicaIsRetriedOnTheOther) {
  ScriptedServer failing(ScriptedServer::Kind::kHttp, [](int, const std::string&) {
    return http_reply(503, "Service Unavailable", R"({"error": {"type": "shutting_down", "message": "draining"}})");
  });
  Replica good;
  auto client = remote({{"urls", {failing.url(), good.http_url()}}, {"load_balancing", "round_robin"}, {"backoff_ms", 1}});
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(client->score(one_sample())[0].ok());
  // The first request meets the 503, is retried on the good replica, and the draining one is left alone for
  // replica_cooldown_ms (1 s by default) even though round robin would pick it every other time.
  EXPECT_EQ(failing.hits(), 1);
  EXPECT_EQ(good.backend.calls, 6);
  EXPECT_EQ(client->stats().retries, 1);
}

TEST(RemoteRetries, MalformedAnswersAreReportedNotRetried) {
  ScriptedServer s(ScriptedServer::Kind::kHttp, [](int, const std::string&) {
    return http_reply(200, "OK", R"({"results": [{"id": "someone else", "score": 1}]})");
  });
  auto client = remote({{"url", s.url()}, {"max_retries", 3}, {"backoff_ms", 1}});
  const auto results = client->score(one_sample());
  EXPECT_NE(results[0].error.find("results[0] not for sample id \"only\""), std::string::npos) << results[0].error;
  EXPECT_EQ(s.hits(), 1);
}

TEST(RemoteRetries, AnswersOutOfRangeOrOfTheWrongTypeFailTheirSamples) {
  const std::vector<std::pair<int, std::string>> answers = {
      {200, R"({"results": [{"id": "only", "score": 1e400}]})"},
      {200, R"({"results": [{"id": "only", "score": "1.5"}]})"},
      {200, R"({"results": [{"id": "only", "error": 7}]})"},
      {200, R"({"results": [{"id": "only", "score": 1, "components": {"c": -1e309}}]})"},
      {200, R"({"results": {"id": "only"}})"},
      {200, R"({"results": [["only", 1]]})"},
      {200, "\"\xff\""},
      {400, R"({"error": {"message": 1e400}})"},
      {400, R"({"error": {"message": ["not", "a", "string"]}})"},
  };
  for (const auto& [status, body] : answers) {
    SCOPED_TRACE(body);
    ScriptedServer s(ScriptedServer::Kind::kHttp, [status = status, body = body](int, const std::string&) {
      return http_reply(status, status == 200 ? "OK" : "Bad Request", body);
    });
    auto client = remote({{"url", s.url()}, {"max_retries", 0}, {"backoff_ms", 1}});
    const auto results = client->score(one_sample());
    ASSERT_EQ(results.size(), 1u);
    EXPECT_FALSE(results[0].ok());
    EXPECT_NE(results[0].error.find("remote reward"), std::string::npos) << results[0].error;
  }
}

}  // namespace
}  // namespace vlreward
