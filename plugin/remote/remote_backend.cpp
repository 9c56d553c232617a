#include "plugin/remote/remote_backend.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <thread>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "plugin/config_reader.h"
#include "plugin/remote/attempt_failure.h"
#include "plugin/remote/connection.h"
#include "plugin/remote/replica_pool.h"
#include "plugin/remote/request_codec.h"
#include "plugin/wire/frame_codec.h"
#include "reward_service.pb.h"

namespace vlreward {

using namespace remote;
namespace http = beast::http;

namespace {

thread_local std::mt19937_64 jitter_rng{std::random_device{}()};

double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(jitter_rng); }

}  // namespace

// One attempt sends a prepared request to a replica over a pooled connection and reads the answer; score_request
// retries failed attempts with backoff on other replicas.
struct RemoteBackend::Impl {
  explicit Impl(RemoteBackendOptions o) : options(std::move(o)), pool(options) {}

  RemoteBackendOptions options;
  ReplicaPool pool;
  std::atomic<uint64_t> next_request_id{1};
  std::atomic<int64_t> attempts{0}, retries{0}, failed_requests{0};

  // --- one attempt on one replica; returns the raw answer or throws AttemptFailure
  HttpAnswer exchange_http(Replica& r, const std::string& body, Clock::time_point deadline) {
    http::request<http::string_body> request{http::verb::post, r.address.target, 11};
    request.set(http::field::host, r.address.host_header);
    request.set(http::field::user_agent, "vlreward-remote");
    request.set(http::field::content_type, "application/json");
    if (!options.token.empty()) request.set(http::field::authorization, "Bearer " + options.token);
    request.keep_alive(true);
    request.body() = body;
    request.prepare_payload();
    for (bool first = true;; first = false) {
      auto c = pool.acquire(r, deadline);
      const bool reused = c->reused;
      DeadlineStream stream(c->socket, deadline);
      error_code ec;
      http::response_parser<http::string_body> parser;
      parser.body_limit(options.max_response_bytes);
      http::write(stream, request, ec);
      if (!ec) http::read(stream, c->buffer, parser, ec);
      if (ec) {
        pool.give_back(r, std::move(c), false);
        if (first && reused && !stream.received_any() && is_stale_connection_error(ec)) continue;
        if (ec == http::error::body_limit)
          throw AttemptFailure(false, fmt::format("answer exceeds max_response_bytes={}", options.max_response_bytes));
        // A malformed answer is not an HTTP reward server speaking: trying again will not help. A connection
        // dropped mid-answer (end_of_stream, partial_message) or a timeout may.
        const bool malformed = ec.category() == error_code(http::error::bad_version).category() &&
                               ec != http::error::end_of_stream && ec != http::error::partial_message;
        throw AttemptFailure(!malformed, malformed ? "answered malformed HTTP: " + ec.message()
                                                   : describe_io_error(ec, options.timeout_ms));
      }
      auto response = parser.release();
      const bool reusable = response.keep_alive() && c->buffer.size() == 0;
      pool.give_back(r, std::move(c), reusable);
      HttpAnswer answer;
      answer.status = response.result_int();
      answer.body = std::move(response.body());
      if (auto it = response.find(http::field::retry_after); it != response.end()) {
        const std::string value(it->value());
        if (!value.empty() && value.size() < 9 && value.find_first_not_of("0123456789") == std::string::npos)
          answer.retry_after_ms = std::stoll(value) * 1000;
      }
      return answer;
    }
  }

  serve::ScoreResponse exchange_binary(Replica& r, const std::string& frame, Clock::time_point deadline) {
    for (bool first = true;; first = false) {
      auto c = pool.acquire(r, deadline);
      const bool reused = c->reused;
      DeadlineStream stream(c->socket, deadline);
      error_code ec;
      asio::write(stream, asio::buffer(frame), ec);
      unsigned char header[kFrameHeaderBytes];
      if (!ec) asio::read(stream, asio::buffer(header), ec);
      std::string payload;
      if (!ec) {
        const uint32_t length = decode_frame_length(header);
        if (length > options.max_response_bytes) {
          pool.give_back(r, std::move(c), false);
          throw AttemptFailure(false, fmt::format("answer frame of {} bytes exceeds max_response_bytes={}", length,
                                                  options.max_response_bytes));
        }
        payload.resize(length);
        asio::read(stream, asio::buffer(payload), ec);
      }
      if (ec) {
        pool.give_back(r, std::move(c), false);
        if (first && reused && !stream.received_any() && is_stale_connection_error(ec)) continue;
        throw AttemptFailure(true, describe_io_error(ec, options.timeout_ms));
      }
      serve::ScoreResponse response;
      const bool parsed = response.ParseFromString(payload);
      // After a whole-request error the server may close the connection: do not keep it.
      pool.give_back(r, std::move(c), parsed && !is_request_error(response));
      if (!parsed) throw AttemptFailure(false, "answered a frame that is not a valid ScoreResponse");
      return response;
    }
  }

  // --- retries
  int64_t backoff_ms(int64_t retry, int64_t retry_after_ms) const {
    const double step = std::min<double>(static_cast<double>(options.max_backoff_ms),
                                         static_cast<double>(options.backoff_ms) * std::ldexp(1.0, static_cast<int>(std::min<int64_t>(retry, 40))));
    double wait = uniform(step / 2, step);
    if (retry_after_ms > wait) {
      // Spread clients told the same Retry-After so that they do not all come back at once.
      wait = std::min<double>(static_cast<double>(retry_after_ms) * uniform(1.0, 1.1),
                              std::max<double>(static_cast<double>(options.max_backoff_ms), wait));
    }
    return static_cast<int64_t>(wait);
  }

  void score_request(const std::vector<RewardRequest>& batch, const std::vector<size_t>& members,
                     std::vector<RewardResult>& results) {
    const PreparedRequest p = encode_request(batch, members, options, next_request_id++, results);
    if (p.positions.empty()) return;
    auto fail_all = [&](const std::string& message) {
      ++failed_requests;
      for (size_t index : p.positions) results[index] = RewardResult::failure(message);
    };
    std::optional<size_t> last_failed;
    for (int64_t attempt = 0;; ++attempt) {
      const size_t i = pool.pick(last_failed);
      Replica& replica = pool.replica(i);
      ++attempts;
      ++replica.attempts;
      const auto deadline = Clock::now() + std::chrono::milliseconds(options.timeout_ms);
      int64_t retry_after_ms = -1;
      try {
        std::vector<RewardResult> scored =
            options.protocol == RemoteProtocol::kHttp ? decode_http_answer(exchange_http(replica, p.payload, deadline), p)
                                                      : decode_binary_answer(exchange_binary(replica, p.payload, deadline), p);
        pool.finish(i);
        for (size_t k = 0; k < scored.size(); ++k) results[p.positions[k]] = std::move(scored[k]);
        return;
      } catch (const AttemptFailure& f) {
        pool.finish(i);
        if (f.replica_unwell()) pool.cool_down(i, f.retry_after_ms());
        const std::string why = fmt::format("remote reward {}: {}", replica.address.url, f.what());
        if (!f.retryable()) return fail_all(why);
        if (attempt >= options.max_retries)
          return fail_all(fmt::format("{} (gave up after {} attempts)", why, attempt + 1));
        retry_after_ms = f.retry_after_ms();
        last_failed = i;
      } catch (const std::exception& e) {
        pool.finish(i);
        return fail_all(fmt::format("remote reward {}: {}", replica.address.url, e.what()));
      }
      ++retries;
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms(attempt, retry_after_ms)));
    }
  }
};

RemoteBackend::RemoteBackend(RemoteBackendOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

RemoteBackend::~RemoteBackend() = default;

std::string RemoteBackend::name() const { return "remote"; }

std::vector<RewardResult> RemoteBackend::score(const std::vector<RewardRequest>& batch) {
  std::vector<RewardResult> results(batch.size());
  if (batch.empty()) return results;
  const auto per_request = static_cast<size_t>(impl_->options.max_samples_per_request);
  std::vector<std::vector<size_t>> requests;
  for (size_t start = 0; start < batch.size(); start += per_request) {
    std::vector<size_t> members;
    for (size_t i = start; i < std::min(batch.size(), start + per_request); ++i) members.push_back(i);
    requests.push_back(std::move(members));
  }
  // Requests run concurrently, at most as many as there are connections to hold them.
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k; (k = next++) < requests.size();) {
      try {
        impl_->score_request(batch, requests[k], results);
      } catch (const std::exception& e) {
        for (size_t index : requests[k]) results[index] = RewardResult::failure(std::string("remote reward: ") + e.what());
      }
    }
  };
  const size_t workers = std::min<size_t>(
      requests.size(), impl_->pool.size() * static_cast<size_t>(impl_->options.max_connections));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < workers; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  return results;
}

RemoteBackendStats RemoteBackend::stats() const {
  RemoteBackendStats s;
  s.attempts = impl_->attempts;
  s.retries = impl_->retries;
  s.failed_requests = impl_->failed_requests;
  s.connections_opened = impl_->pool.connections_opened();
  for (size_t i = 0; i < impl_->pool.size(); ++i) s.attempts_per_replica.push_back(impl_->pool.replica(i).attempts);
  return s;
}

// ---------------------------------------------------------------------------------------------------------------

RemoteBackendOptions parse_remote_backend_options(const nlohmann::json& config, const std::string& where) {
  ConfigReader reader(config, where);
  RemoteBackendOptions o;
  const auto one_url = reader.maybe<std::string>("url");
  const auto urls = reader.maybe<std::vector<std::string>>("urls");
  if (one_url && urls) reader.fail("url", "give \"url\" or \"urls\", not both");
  if (!one_url && !urls) reader.fail("urls", "is required (a list of replica URLs, or \"url\" for one)");
  o.urls = urls ? *urls : std::vector<std::string>{*one_url};
  if (o.urls.empty()) reader.fail("urls", "must list at least one replica URL");

  const auto protocol = reader.optional<std::string>("protocol", "http");
  if (protocol == "http") {
    o.protocol = RemoteProtocol::kHttp;
  } else if (protocol == "binary") {
    o.protocol = RemoteProtocol::kBinary;
  } else {
    reader.fail("protocol", "must be \"http\" or \"binary\" (got \"" + protocol + "\")");
  }
  const auto balancing = reader.optional<std::string>("load_balancing", "least_in_flight");
  if (balancing == "round_robin") {
    o.load_balancing = RemoteLoadBalancing::kRoundRobin;
  } else if (balancing == "least_in_flight") {
    o.load_balancing = RemoteLoadBalancing::kLeastInFlight;
  } else {
    reader.fail("load_balancing", "must be \"round_robin\" or \"least_in_flight\" (got \"" + balancing + "\")");
  }

  const auto token = reader.maybe<std::string>("token");
  const auto token_env = reader.maybe<std::string>("token_env");
  const auto token_file = reader.maybe<std::string>("token_file");
  if (int(token.has_value()) + int(token_env.has_value()) + int(token_file.has_value()) > 1)
    reader.fail("token", "give at most one of \"token\", \"token_env\", \"token_file\"");
  if (token) o.token = *token;
  if (token_env) {
    const char* value = std::getenv(token_env->c_str());
    if (value == nullptr || *value == '\0') reader.fail("token_env", "environment variable " + *token_env + " is not set");
    o.token = value;
  }
  if (token_file) {
    std::ifstream in(*token_file, std::ios::binary);
    if (!in) reader.fail("token_file", "cannot read \"" + *token_file + "\": " + std::strerror(errno));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto first = text.find_first_not_of(" \t\r\n");
    const auto last = text.find_last_not_of(" \t\r\n");
    if (first == std::string::npos) reader.fail("token_file", "\"" + *token_file + "\" is empty");
    o.token = text.substr(first, last - first + 1);
  }
  if (o.token.find_first_of("\r\n") != std::string::npos) reader.fail("token", "must be one line");

  auto positive = [&](const char* key, int64_t fallback, int64_t minimum) {
    const auto v = reader.optional<int64_t>(key, fallback);
    if (v < minimum) reader.fail(key, fmt::format("must be at least {} (got {})", minimum, v));
    return v;
  };
  o.max_connections = positive("max_connections", o.max_connections, 1);
  o.max_samples_per_request = positive("max_samples_per_request", o.max_samples_per_request, 1);
  o.connect_timeout_ms = positive("connect_timeout_ms", o.connect_timeout_ms, 1);
  o.timeout_ms = positive("timeout_ms", o.timeout_ms, 1);
  o.max_retries = positive("max_retries", o.max_retries, 0);
  o.backoff_ms = positive("backoff_ms", o.backoff_ms, 0);
  o.max_backoff_ms = positive("max_backoff_ms", o.max_backoff_ms, 0);
  o.replica_cooldown_ms = positive("replica_cooldown_ms", o.replica_cooldown_ms, 0);
  o.max_response_bytes = static_cast<uint64_t>(positive("max_response_bytes", static_cast<int64_t>(o.max_response_bytes), 1024));
  if (o.max_connections > 4096) reader.fail("max_connections", "must be at most 4096 per replica");
  if (o.max_retries > 100) reader.fail("max_retries", "must be at most 100 (retry storms help nobody)");
  if (o.max_backoff_ms < o.backoff_ms) reader.fail("max_backoff_ms", "must be at least backoff_ms");
  reader.finish();
  // URLs are checked here too, so that a bad one is a config error naming its key.
  for (size_t i = 0; i < o.urls.size(); ++i)
    remote::parse_replica_url(o.urls[i], o.protocol, urls ? reader.path(fmt::format("urls[{}]", i)) : reader.path("url"));
  return o;
}

std::unique_ptr<RewardBackend> make_remote_backend(const nlohmann::json& config, const std::string& where) {
  return std::make_unique<RemoteBackend>(parse_remote_backend_options(config, where));
}

}  // namespace vlreward
