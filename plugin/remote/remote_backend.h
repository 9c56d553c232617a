#pragma once
// The "remote" reward backend: scores through one or more reward-serve replicas (adapters/server/README.md), so
// mpo-train or any C++ loop uses a remote reward through the same RewardBackend interface as a local one.
//
//   {"type": "remote", "urls": ["http://10.0.0.5:8000", "http://10.0.0.6:8000"], "protocol": "http",
//    "token_env": "VLREWARD_SERVE_TOKEN", "max_connections": 16, "timeout_ms": 60000, "max_retries": 3}
//
// Protocols: "http" (POST <url>/v1/score, JSON, keep-alive) or "binary" (length-prefixed ScoreRequest frames of
// plugin/wire/reward_service.proto; URLs "tcp://host:port" or "host:port"). Images travel as bytes: path images
// are read here, on the client, so the server needs no shared file system.
//
// Behaviour under load and failure (the pain points of RL engines calling reward services):
// * at most max_connections open connections per replica, reused across calls; a call that finds them all busy
//   waits for one (within its timeout) instead of opening more;
// * a score() batch is split into requests of at most max_samples_per_request samples, sent concurrently;
// * each request goes to one replica, chosen round robin or by fewest requests in flight; a replica that refused a
//   connection, or answered 503 / OVERLOADED / SHUTTING_DOWN, is skipped for its Retry-After or else
//   replica_cooldown_ms (a replica is tried while cooling down only when every replica is);
// * connect_timeout_ms bounds connecting, timeout_ms bounds one attempt end to end (and is sent to the server as
//   the request's deadline, so it drops work nobody waits for);
// * failed attempts are retried at most max_retries times, on another replica when there is one, after an
//   exponential backoff with jitter (delay d = min(max_backoff_ms, backoff_ms * 2^k), waited d/2 + U(0, d/2));
//   retried: connection failures, timeouts, HTTP 5xx except 501/505, and the binary OVERLOADED /
//   DEADLINE_EXCEEDED / INTERNAL / SHUTTING_DOWN / TIMEOUT codes. A 503's Retry-After (binary: retry_after_ms)
//   is a lower bound on the wait. Never retried: every 4xx and the binary BAD_REQUEST / UNAUTHORIZED /
//   TOO_LARGE / UNPROCESSABLE codes — the same request would fail the same way;
// * a request that finally fails fails only its own samples (RewardResult errors naming the replica and why);
//   score() itself does not throw for remote failures.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

enum class RemoteProtocol { kHttp, kBinary };
enum class RemoteLoadBalancing { kRoundRobin, kLeastInFlight };

struct RemoteBackendOptions {
  std::vector<std::string> urls;  // one per replica
  RemoteProtocol protocol = RemoteProtocol::kHttp;
  RemoteLoadBalancing load_balancing = RemoteLoadBalancing::kLeastInFlight;
  std::string token;                  // bearer token; empty: none
  int64_t max_connections = 16;       // per replica
  int64_t max_samples_per_request = 64;
  int64_t connect_timeout_ms = 2000;
  int64_t timeout_ms = 60000;         // one attempt: waiting for a connection, connecting, sending, scoring, reading
  int64_t max_retries = 3;            // attempts after the first
  int64_t backoff_ms = 200;
  int64_t max_backoff_ms = 10000;
  int64_t replica_cooldown_ms = 1000;
  uint64_t max_response_bytes = 64ull << 20;
};

// Reads the "remote" config (without "type") strictly. Keys: url | urls, protocol, load_balancing
// ("round_robin" | "least_in_flight"), token | token_env | token_file (at most one), max_connections,
// max_samples_per_request, connect_timeout_ms, timeout_ms, max_retries, backoff_ms, max_backoff_ms,
// replica_cooldown_ms, max_response_bytes. Throws ConfigError naming the key path.
RemoteBackendOptions parse_remote_backend_options(const nlohmann::json& config, const std::string& where);

// Counters, for tests and logs.
struct RemoteBackendStats {
  int64_t attempts = 0;             // requests sent (or tried) to any replica
  int64_t retries = 0;              // attempts after a failed one
  int64_t failed_requests = 0;      // requests that finally failed (their samples got errors)
  int64_t connections_opened = 0;
  std::vector<int64_t> attempts_per_replica;  // in urls order
};

class RemoteBackend : public RewardBackend {
 public:
  // Throws ConfigError for a URL it cannot use.
  explicit RemoteBackend(RemoteBackendOptions options);
  ~RemoteBackend() override;

  std::string name() const override;
  RewardCapabilities capabilities() const override { return {true, false, true}; }
  // Thread-safe: several threads may score at once and share the connection pools.
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override;

  RemoteBackendStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The registry's factory for "remote".
std::unique_ptr<RewardBackend> make_remote_backend(const nlohmann::json& config, const std::string& where);

}  // namespace vlreward
