#include "plugin/remote_backend.h"

#include <cstdint>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "plugin/config_reader.h"
#include "plugin/wire/frame_codec.h"
#include "reward_service.pb.h"

namespace vlreward {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

int64_t millis_left(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
}

// ---------------------------------------------------------------------------------------------------------------
// Replica addresses.

struct ReplicaAddress {
  std::string url;     // as configured, for messages
  std::string host;    // without IPv6 brackets
  std::string port;
  std::string target;  // HTTP: the /v1/score path
  std::string host_header;
};

ReplicaAddress parse_replica_url(const std::string& url, RemoteProtocol protocol, const std::string& where) {
  auto bad = [&](const std::string& problem) -> ReplicaAddress {
    throw ConfigError(fmt::format("{}: \"{}\" {}", where, url, problem));
  };
  ReplicaAddress a;
  a.url = url;
  std::string rest = url;
  const auto scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme_end != std::string::npos) rest = url.substr(scheme_end + 3);
  if (protocol == RemoteProtocol::kHttp) {
    if (scheme == "https") return bad("is HTTPS, which the remote backend does not speak (use a local TLS proxy)");
    if (scheme != "http") return bad("must start with http:// (protocol \"http\")");
  } else if (!scheme.empty() && scheme != "tcp") {
    return bad("must be tcp://host:port or host:port (protocol \"binary\")");
  }
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  if (protocol == RemoteProtocol::kBinary && !path.empty() && path != "/") return bad("has a path; binary URLs are host:port");
  if (path.find_first_of("?# ") != std::string::npos) return bad("has a query, fragment or space in its path");
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    const auto close = authority.find(']');
    if (close == std::string::npos) return bad("has an unclosed [IPv6] address");
    a.host = authority.substr(1, close - 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("has junk after the [IPv6] address");
      port = after.substr(1);
    }
  } else {
    const auto colon = authority.find(':');
    if (colon != std::string::npos && authority.find(':', colon + 1) != std::string::npos)
      return bad("has several ':' (write IPv6 addresses in brackets)");
    a.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (a.host.empty()) return bad("has no host");
  if (port.empty()) {
    if (protocol == RemoteProtocol::kBinary) return bad("has no port");
    port = "80";
  }
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535)
    return bad("has an invalid port \"" + port + "\"");
  a.port = port;
  a.host_header = (a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host) + ":" + port;
  while (!path.empty() && path.back() == '/') path.pop_back();
  const std::string route = "/v1/score";
  a.target = path.size() >= route.size() && path.compare(path.size() - route.size(), route.size(), route) == 0
                 ? path
                 : path + route;
  return a;
}

// ---------------------------------------------------------------------------------------------------------------
// One failed attempt: why, and whether trying again can help.

class AttemptFailure : public std::runtime_error {
 public:
  AttemptFailure(bool retryable, const std::string& message, int64_t retry_after_ms = -1, bool replica_unwell = false)
      : std::runtime_error(message), retryable_(retryable), retry_after_ms_(retry_after_ms), replica_unwell_(replica_unwell) {}
  bool retryable() const { return retryable_; }
  int64_t retry_after_ms() const { return retry_after_ms_; }  // -1: none given
  // Unreachable, overloaded or draining: other requests avoid the replica for a while (its Retry-After, else
  // replica_cooldown_ms).
  bool replica_unwell() const { return replica_unwell_; }

 private:
  bool retryable_;
  int64_t retry_after_ms_;
  bool replica_unwell_;
};

// ---------------------------------------------------------------------------------------------------------------
// Reads and writes that give up at a deadline. Asio's synchronous operations wait without a time limit (even with
// SO_RCVTIMEO they poll again), so the socket is non-blocking and the waiting is done here with poll().

bool wait_ready(int fd, short events, Clock::time_point deadline, error_code& ec) {
  for (;;) {
    const int64_t left = millis_left(deadline);
    if (left <= 0) {
      ec = asio::error::timed_out;
      return false;
    }
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) {
      ec = error_code(errno, boost::system::system_category());
      return false;
    }
  }
}

class DeadlineStream {
 public:
  DeadlineStream(tcp::socket& socket, Clock::time_point deadline) : socket_(socket), deadline_(deadline) {}

  template <typename MutableBuffers>
  size_t read_some(const MutableBuffers& buffers, error_code& ec) {
    for (;;) {
      const size_t n = socket_.read_some(buffers, ec);
      if (ec != asio::error::would_block && ec != asio::error::try_again) {
        received_any_ = received_any_ || n > 0;
        return n;
      }
      if (!wait_ready(socket_.native_handle(), POLLIN, deadline_, ec)) return 0;
    }
  }
  template <typename MutableBuffers>
  size_t read_some(const MutableBuffers& buffers) {
    error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <typename ConstBuffers>
  size_t write_some(const ConstBuffers& buffers, error_code& ec) {
    for (;;) {
      const size_t n = socket_.write_some(buffers, ec);
      if (ec != asio::error::would_block && ec != asio::error::try_again) return n;
      if (!wait_ready(socket_.native_handle(), POLLOUT, deadline_, ec)) return 0;
    }
  }
  template <typename ConstBuffers>
  size_t write_some(const ConstBuffers& buffers) {
    error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  bool received_any() const { return received_any_; }

 private:
  tcp::socket& socket_;
  Clock::time_point deadline_;
  bool received_any_ = false;
};

// A kept-alive connection that the server closed while it sat in the pool shows up as EOF / reset before any byte
// of the answer: the request never reached a live connection, so it is resent once on a fresh one, uncounted.
bool is_stale_connection_error(const error_code& ec) {
  return ec == asio::error::eof || ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}

std::string describe_io_error(const error_code& ec, int64_t timeout_ms) {
  if (ec == asio::error::timed_out) return fmt::format("no complete answer within timeout_ms={}", timeout_ms);
  return "connection failed: " + ec.message();
}

// ---------------------------------------------------------------------------------------------------------------
// Connections and replicas.

struct Connection {
  explicit Connection(asio::io_context& io) : socket(io) {}
  tcp::socket socket;
  beast::flat_buffer buffer;
  bool reused = false;
};

// A pooled connection is usable when nothing is readable on it: readable means the server closed it (EOF) or sent
// something unasked.
bool idle_connection_usable(Connection& c) {
  pollfd p{c.socket.native_handle(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

struct Replica {
  explicit Replica(ReplicaAddress a) : address(std::move(a)) {}
  ReplicaAddress address;
  // Pool (guarded by mutex).
  std::mutex mutex;
  std::condition_variable freed;
  std::vector<std::unique_ptr<Connection>> idle;
  int64_t open = 0;
  // Load balancing (guarded by RemoteBackend::Impl::balance_mutex).
  int64_t in_flight = 0;
  Clock::time_point cooldown_until{};
  std::atomic<int64_t> attempts{0};
};

std::string read_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read image \"{}\": {}", path, std::strerror(errno)));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error(fmt::format("cannot read image \"{}\"", path));
  return bytes;
}

std::string base64_encode(const std::string& bytes) {
  static const char* const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint32_t{static_cast<unsigned char>(bytes[i])} << 16) |
                       (uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8) | static_cast<unsigned char>(bytes[i + 2]);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = uint32_t{static_cast<unsigned char>(bytes[i])} << 16;
    if (i + 1 < bytes.size()) v |= uint32_t{static_cast<unsigned char>(bytes[i + 1])} << 8;
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// The bytes of an image as the server should get them (path images are read here).
const std::string& image_bytes(const RewardImage& image, std::string& storage) {
  if (image.path.empty()) return image.bytes;
  storage = read_image_file(image.path);
  return storage;
}

// One request's samples, encoded once and resent unchanged on retries.
struct PreparedRequest {
  std::vector<size_t> positions;  // batch index of each sent sample
  std::vector<std::string> ids;   // the id sent for each
  std::string payload;            // HTTP body or binary frame
  uint64_t request_id = 0;
};

nlohmann::json sample_to_json(const RewardRequest& r) {
  nlohmann::json s = {{"id", r.id}, {"response", r.response}};
  if (r.system_prompt) s["system"] = *r.system_prompt;
  if (r.reference) s["reference"] = *r.reference;
  if (!r.metadata.empty()) s["metadata"] = r.metadata;
  nlohmann::json messages = nlohmann::json::array();
  for (const auto& turn : r.turns) {
    nlohmann::json content = nlohmann::json::array();
    for (const auto& part : turn.content) {
      if (part.kind == RewardContent::Kind::kText) {
        content.push_back({{"type", "text"}, {"text", part.text}});
      } else {
        std::string storage;
        nlohmann::json image = {{"type", "image"}, {"data", base64_encode(image_bytes(part.image, storage))}};
        if (!part.image.mime_type.empty()) image["mime_type"] = part.image.mime_type;
        content.push_back(std::move(image));
      }
    }
    messages.push_back({{"role", turn.role}, {"content", std::move(content)}});
  }
  s["messages"] = std::move(messages);
  return s;
}

void sample_to_proto(const RewardRequest& r, serve::Sample* s) {
  s->set_id(r.id);
  if (r.system_prompt) s->set_system_prompt(*r.system_prompt);
  if (r.reference) s->set_reference(*r.reference);
  for (const auto& [key, value] : r.metadata) (*s->mutable_metadata())[key] = value;
  s->set_response(r.response);
  for (const auto& turn : r.turns) {
    auto* t = s->add_turns();
    t->set_role(turn.role);
    for (const auto& part : turn.content) {
      if (part.kind == RewardContent::Kind::kText) {
        t->add_content()->set_text(part.text);
      } else {
        std::string storage;
        auto* image = t->add_content()->mutable_image();
        image->set_data(image_bytes(part.image, storage));
        if (!part.image.mime_type.empty()) image->set_mime_type(part.image.mime_type);
      }
    }
  }
}

bool retryable_binary_code(int code) {
  switch (code) {
    case serve::OVERLOADED:
    case serve::DEADLINE_EXCEEDED:
    case serve::INTERNAL:
    case serve::SHUTTING_DOWN:
    case serve::TIMEOUT:
      return true;
    default:
      return false;  // BAD_REQUEST, UNAUTHORIZED, TOO_LARGE, UNPROCESSABLE: the same request fails the same way
  }
}

std::string shorten(const std::string& text, size_t limit = 300) {
  return text.size() <= limit ? text : text.substr(0, limit) + "...";
}

thread_local std::mt19937_64 jitter_rng{std::random_device{}()};

double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(jitter_rng); }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

struct RemoteBackend::Impl {
  explicit Impl(RemoteBackendOptions o) : options(std::move(o)) {}

  RemoteBackendOptions options;
  asio::io_context io;  // never run: it only owns the sockets
  std::vector<std::unique_ptr<Replica>> replicas;
  std::mutex balance_mutex;
  uint64_t cursor = 0;
  std::atomic<uint64_t> next_request_id{1};
  std::atomic<int64_t> attempts{0}, retries{0}, failed_requests{0}, connections_opened{0};

  // --- load balancing
  size_t pick_replica(std::optional<size_t> avoid) {
    std::lock_guard<std::mutex> lock(balance_mutex);
    const auto now = Clock::now();
    const size_t n = replicas.size();
    const size_t start = static_cast<size_t>(cursor++ % n);
    auto cooling = [&](size_t i) { return replicas[i]->cooldown_until > now; };
    size_t best = n;
    // Preference: a replica that is up and not the one that just failed; then any replica that is up; then the
    // one whose cool-down ends first (every replica is down: probe one rather than fail without trying).
    for (int pass = 0; pass < 2 && best == n; ++pass) {
      for (size_t k = 0; k < n; ++k) {
        const size_t i = (start + k) % n;
        if (cooling(i) || (pass == 0 && avoid && *avoid == i)) continue;
        if (options.load_balancing == RemoteLoadBalancing::kRoundRobin) {
          best = i;
          break;
        }
        if (best == n || replicas[i]->in_flight < replicas[best]->in_flight) best = i;
      }
    }
    if (best == n) {
      best = start;
      for (size_t i = 0; i < n; ++i)
        if (replicas[i]->cooldown_until < replicas[best]->cooldown_until) best = i;
    }
    ++replicas[best]->in_flight;
    return best;
  }
  void finish_on_replica(size_t i) {
    std::lock_guard<std::mutex> lock(balance_mutex);
    --replicas[i]->in_flight;
  }
  void cool_down(size_t i, int64_t retry_after_ms) {
    std::lock_guard<std::mutex> lock(balance_mutex);
    const int64_t ms = retry_after_ms >= 0 ? std::min(retry_after_ms, options.max_backoff_ms) : options.replica_cooldown_ms;
    replicas[i]->cooldown_until = std::max(replicas[i]->cooldown_until, Clock::now() + std::chrono::milliseconds(ms));
  }

  // --- connection pool
  std::unique_ptr<Connection> acquire(Replica& r, Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(r.mutex);
    for (;;) {
      while (!r.idle.empty()) {
        auto c = std::move(r.idle.back());
        r.idle.pop_back();
        if (idle_connection_usable(*c)) return c;
        --r.open;  // closed by the server while idle
      }
      if (r.open < options.max_connections) {
        ++r.open;
        lock.unlock();
        try {
          return connect(r, deadline);
        } catch (...) {
          lock.lock();
          --r.open;
          r.freed.notify_one();
          throw;
        }
      }
      if (r.freed.wait_until(lock, deadline) == std::cv_status::timeout && r.idle.empty() &&
          r.open >= options.max_connections)
        throw AttemptFailure(true, fmt::format("all max_connections={} connections stayed busy for timeout_ms={}",
                                               options.max_connections, options.timeout_ms));
    }
  }
  void give_back(Replica& r, std::unique_ptr<Connection> c, bool reusable) {
    std::lock_guard<std::mutex> lock(r.mutex);
    if (reusable) {
      c->reused = true;
      r.idle.push_back(std::move(c));
    } else {
      --r.open;
      c.reset();
    }
    r.freed.notify_one();
  }

  std::unique_ptr<Connection> connect(Replica& r, Clock::time_point deadline) {
    const auto connect_deadline =
        std::min(deadline, Clock::now() + std::chrono::milliseconds(options.connect_timeout_ms));
    tcp::resolver resolver(io);
    error_code ec;
    const auto endpoints = resolver.resolve(r.address.host, r.address.port, ec);
    if (ec) throw AttemptFailure(true, fmt::format("cannot resolve \"{}\": {}", r.address.host, ec.message()), -1, true);
    std::string why = "no address";
    for (const auto& entry : endpoints) {
      const tcp::endpoint endpoint = entry.endpoint();
      auto c = std::make_unique<Connection>(io);
      c->socket.open(endpoint.protocol(), ec);
      if (!ec) c->socket.non_blocking(true, ec);
      if (ec) {
        why = ec.message();
        continue;
      }
      const int fd = c->socket.native_handle();
      int err = 0;
      if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0) {
        err = errno;
        if (err == EINPROGRESS || err == EINTR) {
          if (!wait_ready(fd, POLLOUT, connect_deadline, ec)) {
            why = ec == asio::error::timed_out ? fmt::format("no connection within connect_timeout_ms={}",
                                                             options.connect_timeout_ms)
                                               : ec.message();
            continue;
          }
          socklen_t len = sizeof(err);
          if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        }
      }
      if (err != 0) {
        why = std::strerror(err);
        continue;
      }
      c->socket.set_option(tcp::no_delay(true), ec);
      ++connections_opened;
      return c;
    }
    throw AttemptFailure(true, "cannot connect: " + why, -1, true);
  }

  // --- one attempt on one replica; returns the raw answer or throws AttemptFailure
  struct HttpAnswer {
    unsigned status = 0;
    std::string body;
    int64_t retry_after_ms = -1;
  };

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
      auto c = acquire(r, deadline);
      const bool reused = c->reused;
      DeadlineStream stream(c->socket, deadline);
      error_code ec;
      http::response_parser<http::string_body> parser;
      parser.body_limit(options.max_response_bytes);
      http::write(stream, request, ec);
      if (!ec) http::read(stream, c->buffer, parser, ec);
      if (ec) {
        give_back(r, std::move(c), false);
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
      give_back(r, std::move(c), reusable);
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
      auto c = acquire(r, deadline);
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
          give_back(r, std::move(c), false);
          throw AttemptFailure(false, fmt::format("answer frame of {} bytes exceeds max_response_bytes={}", length,
                                                  options.max_response_bytes));
        }
        payload.resize(length);
        asio::read(stream, asio::buffer(payload), ec);
      }
      if (ec) {
        give_back(r, std::move(c), false);
        if (first && reused && !stream.received_any() && is_stale_connection_error(ec)) continue;
        throw AttemptFailure(true, describe_io_error(ec, options.timeout_ms));
      }
      serve::ScoreResponse response;
      const bool parsed = response.ParseFromString(payload);
      // After a whole-request error the server may close the connection: do not keep it.
      give_back(r, std::move(c), parsed && !(response.has_error() && response.error().code() != serve::ERROR_NONE));
      if (!parsed) throw AttemptFailure(false, "answered a frame that is not a valid ScoreResponse");
      return response;
    }
  }

  // --- encoding and decoding
  PreparedRequest prepare(const std::vector<RewardRequest>& batch, const std::vector<size_t>& members,
                          std::vector<RewardResult>& results) {
    PreparedRequest p;
    p.request_id = next_request_id++;
    nlohmann::json samples = nlohmann::json::array();
    serve::ScoreRequest proto;
    for (size_t index : members) {
      const RewardRequest& r = batch[index];
      try {
        if (options.protocol == RemoteProtocol::kHttp) {
          samples.push_back(sample_to_json(r));
        } else {
          serve::Sample s;
          sample_to_proto(r, &s);
          *proto.add_samples() = std::move(s);
        }
      } catch (const std::exception& e) {
        results[index] = RewardResult::failure(std::string("remote reward: ") + e.what());
        continue;
      }
      p.positions.push_back(index);
      p.ids.push_back(r.id);
    }
    if (p.positions.empty()) return p;
    if (options.protocol == RemoteProtocol::kHttp) {
      nlohmann::json body = {{"samples", std::move(samples)}, {"deadline_ms", options.timeout_ms}};
      p.payload = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      proto.set_request_id(p.request_id);
      proto.set_deadline_ms(static_cast<uint32_t>(std::min<int64_t>(options.timeout_ms, UINT32_MAX)));
      if (!options.token.empty()) proto.set_auth_token(options.token);
      p.payload = encode_frame(proto.SerializeAsString());
    }
    return p;
  }

  std::vector<RewardResult> decode_http(const HttpAnswer& answer, const PreparedRequest& p) {
    nlohmann::json body = nlohmann::json::parse(answer.body, nullptr, false);
    if (answer.status != 200) {
      std::string message = shorten(answer.body);
      if (body.is_object() && body.contains("error") && body["error"].is_object() &&
          body["error"].value("message", nlohmann::json()).is_string())
        message = body["error"]["message"].get<std::string>();
      const bool retryable = answer.status >= 500 && answer.status != 501 && answer.status != 505;
      throw AttemptFailure(retryable, fmt::format("HTTP {}: {}", answer.status, message), answer.retry_after_ms,
                           answer.status == 503);
    }
    auto bad = [&](const std::string& problem) -> AttemptFailure {
      return AttemptFailure(false, "answered HTTP 200 with " + problem);
    };
    if (!body.is_object() || !body.contains("results") || !body["results"].is_array())
      throw bad("a body without a \"results\" list: " + shorten(answer.body));
    const auto& list = body["results"];
    if (list.size() != p.positions.size())
      throw bad(fmt::format("{} results for {} samples", list.size(), p.positions.size()));
    std::vector<RewardResult> out;
    for (size_t k = 0; k < list.size(); ++k) {
      const auto& item = list[k];
      if (!item.is_object() || !item.contains("id") || item["id"] != p.ids[k])
        throw bad(fmt::format("results[{}] not for sample id \"{}\"", k, p.ids[k]));
      RewardResult result;
      if (item.contains("score") && item["score"].is_number()) {
        result = RewardResult::success(item["score"].get<double>());
      } else if (item.contains("error") && item["error"].is_string()) {
        result = RewardResult::failure(item["error"].get<std::string>());
      } else {
        throw bad(fmt::format("results[{}] holding neither a score nor an error", k));
      }
      if (item.contains("components") && item["components"].is_object())
        for (const auto& [name, value] : item["components"].items())
          if (value.is_number()) result.components[name] = value.get<double>();
      out.push_back(std::move(result));
    }
    return out;
  }

  std::vector<RewardResult> decode_binary(const serve::ScoreResponse& response, const PreparedRequest& p) {
    if (response.has_error() && response.error().code() != serve::ERROR_NONE) {
      const auto& e = response.error();
      throw AttemptFailure(retryable_binary_code(e.code()),
                           fmt::format("{}: {}", serve::ErrorCode_Name(e.code()), e.message()),
                           e.retry_after_ms() > 0 ? static_cast<int64_t>(e.retry_after_ms()) : -1,
                           e.code() == serve::OVERLOADED || e.code() == serve::SHUTTING_DOWN);
    }
    if (response.request_id() != p.request_id)
      throw AttemptFailure(false, fmt::format("answered request {} to request {}", response.request_id(), p.request_id));
    if (static_cast<size_t>(response.results_size()) != p.positions.size())
      throw AttemptFailure(false, fmt::format("answered {} results for {} samples", response.results_size(),
                                              p.positions.size()));
    std::vector<RewardResult> out;
    for (int k = 0; k < response.results_size(); ++k) {
      const auto& item = response.results(k);
      if (item.id() != p.ids[k])
        throw AttemptFailure(false, fmt::format("answered results[{}] for id \"{}\", not \"{}\"", k,
                                                shorten(item.id(), 60), shorten(p.ids[k], 60)));
      RewardResult result;
      if (item.outcome_case() == serve::SampleResult::kScore) {
        result = RewardResult::success(item.score());
      } else if (item.outcome_case() == serve::SampleResult::kError) {
        result = RewardResult::failure(item.error());
      } else {
        throw AttemptFailure(false, fmt::format("answered results[{}] with neither a score nor an error", k));
      }
      for (const auto& [name, value] : item.components()) result.components[name] = value;
      out.push_back(std::move(result));
    }
    return out;
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
    const PreparedRequest p = prepare(batch, members, results);
    if (p.positions.empty()) return;
    auto fail_all = [&](const std::string& message) {
      ++failed_requests;
      for (size_t index : p.positions) results[index] = RewardResult::failure(message);
    };
    std::optional<size_t> last_failed;
    for (int64_t attempt = 0;; ++attempt) {
      const size_t i = pick_replica(last_failed);
      Replica& replica = *replicas[i];
      ++attempts;
      ++replica.attempts;
      const auto deadline = Clock::now() + std::chrono::milliseconds(options.timeout_ms);
      int64_t retry_after_ms = -1;
      try {
        std::vector<RewardResult> scored =
            options.protocol == RemoteProtocol::kHttp ? decode_http(exchange_http(replica, p.payload, deadline), p)
                                                      : decode_binary(exchange_binary(replica, p.payload, deadline), p);
        finish_on_replica(i);
        for (size_t k = 0; k < scored.size(); ++k) results[p.positions[k]] = std::move(scored[k]);
        return;
      } catch (const AttemptFailure& f) {
        finish_on_replica(i);
        if (f.replica_unwell()) cool_down(i, f.retry_after_ms());
        const std::string why = fmt::format("remote reward {}: {}", replica.address.url, f.what());
        if (!f.retryable()) return fail_all(why);
        if (attempt >= options.max_retries)
          return fail_all(fmt::format("{} (gave up after {} attempts)", why, attempt + 1));
        retry_after_ms = f.retry_after_ms();
        last_failed = i;
      } catch (const std::exception& e) {
        finish_on_replica(i);
        return fail_all(fmt::format("remote reward {}: {}", replica.address.url, e.what()));
      }
      ++retries;
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms(attempt, retry_after_ms)));
    }
  }
};

RemoteBackend::RemoteBackend(RemoteBackendOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  const auto& o = impl_->options;
  if (o.urls.empty()) throw ConfigError("remote reward: no replica URLs");
  for (size_t i = 0; i < o.urls.size(); ++i)
    impl_->replicas.push_back(
        std::make_unique<Replica>(parse_replica_url(o.urls[i], o.protocol, fmt::format("urls[{}]", i))));
}

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
      requests.size(), impl_->replicas.size() * static_cast<size_t>(impl_->options.max_connections));
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
  s.connections_opened = impl_->connections_opened;
  for (const auto& r : impl_->replicas) s.attempts_per_replica.push_back(r->attempts);
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
    parse_replica_url(o.urls[i], o.protocol, urls ? reader.path(fmt::format("urls[{}]", i)) : reader.path("url"));
  return o;
}

std::unique_ptr<RewardBackend> make_remote_backend(const nlohmann::json& config, const std::string& where) {
  return std::make_unique<RemoteBackend>(parse_remote_backend_options(config, where));
}

}  // namespace vlreward
