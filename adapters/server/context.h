#pragma once
// Internal to the server: what sessions share, and the submit-with-deadline step both protocols use.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>

#include "adapters/server/batcher.h"
#include "adapters/server/client_networks.h"
#include "adapters/server/metrics.h"
#include "adapters/server/request_decoding.h"
#include "adapters/server/error.h"
#include "adapters/server/config.h"

namespace vlreward {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

bool constant_time_equal(const std::string& expected, const std::string& given);

class Session : public std::enable_shared_from_this<Session> {
 public:
  virtual ~Session() = default;
  // Called on shutdown: close the connection unless a request is being processed or answered.
  virtual void on_shutdown() = 0;
};

// One listening socket and its accept loop's state.
struct Listener {
  explicit Listener(bool is_binary) : binary(is_binary) {}
  const bool binary;
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> retry_timer;  // waits out a failed accept
  int64_t retry_ms = 0;                           // the current backoff; 0 after a successful accept
};

struct ServerContext {
  ServerContext(ServerConfig c, RewardBackend& backend)
      : config(std::move(c)),
        trusted_networks(ClientNetworks::parse(config.allow_networks, "allow_networks")),
        decoder(config),
        batcher(backend, config.batching, &metrics) {}

  ServerConfig config;
  ClientNetworks trusted_networks;
  RequestDecoder decoder;
  ServerMetrics metrics;
  Batcher batcher;
  asio::io_context ioc;
  Listener http{false};
  Listener binary{true};
  std::optional<asio::signal_set> signals;
  std::vector<std::thread> threads;
  std::atomic<bool> stopping{false};
  std::mutex sessions_mutex;
  std::map<uint64_t, std::weak_ptr<Session>> sessions;
  uint64_t next_session_id = 0;
  std::atomic<int64_t> connections{0};  // admitted and not yet closed, both protocols

  // Takes a slot under limits.max_connections; false (nothing taken) when all are in use.
  bool admit_connection() {
    if (connections.fetch_add(1) < config.limits.max_connections) return true;
    connections.fetch_sub(1);
    return false;
  }
  void release_connection() { connections.fetch_sub(1); }

  // A request is authorized by its client's network (allow_networks) or its token. With neither configured
  // everyone is; with allow_networks alone, only those networks are.
  bool trusted(const tcp::socket& socket) const {
    boost::system::error_code ec;
    const auto endpoint = socket.remote_endpoint(ec);
    return !ec && trusted_networks.contains(endpoint.address());
  }
  bool authorized(bool trusted_client, const std::string& token) const {
    if (trusted_client) return true;
    if (config.auth_token.empty()) return trusted_networks.empty();
    return constant_time_equal(config.auth_token, token);
  }
  uint64_t add_session(const std::shared_ptr<Session>& session);
  void remove_session(uint64_t id);
};

struct DispatchResult {
  std::optional<ServeError> error;  // the whole request failed (overload, shutdown, deadline)
  std::vector<SampleOutcome> outcomes;
};

// Queues `samples` and calls `done` exactly once on `executor` (the session's strand): with the outcomes, or
// with an error when the queue is full, the server is stopping, or the deadline passes first.
void dispatch(ServerContext& context, const asio::any_io_executor& executor, std::vector<DecodedSample> samples,
              int64_t deadline_ms, std::function<void(DispatchResult)> done);

// The first request-level error among the outcomes of kinds that fail a whole request (backend failure,
// deadline), or nullopt.
std::optional<ServeError> request_level_error(const std::vector<SampleOutcome>& outcomes);

// Each takes over an admitted connection (its slot is released when the session ends).
void start_http_session(ServerContext& context, tcp::socket socket);
void start_binary_session(ServerContext& context, tcp::socket socket);
// Answers a connection over limits.max_connections (HTTP: 503 with a JSON error; binary: an OVERLOADED error
// frame), then closes it.
void refuse_connection(ServerContext& context, tcp::socket socket, bool binary);

}  // namespace vlreward
