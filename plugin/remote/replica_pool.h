#pragma once
// The remote backend's replicas: for each, a pool of at most max_connections kept-alive connections, and the load
// balancing between them (round robin or fewest requests in flight, skipping replicas that are cooling down).
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "plugin/remote/connection.h"
#include "plugin/remote/remote_backend.h"

namespace vlreward::remote {

struct Replica {
  explicit Replica(ReplicaAddress a) : address(std::move(a)) {}
  ReplicaAddress address;
  // Pool (guarded by mutex).
  std::mutex mutex;
  std::condition_variable freed;
  std::vector<std::unique_ptr<Connection>> idle;
  int64_t open = 0;
  // Load balancing (guarded by ReplicaPool's balance mutex).
  int64_t in_flight = 0;
  Clock::time_point cooldown_until{};
  std::atomic<int64_t> attempts{0};
};

class ReplicaPool {
 public:
  // One replica per URL of `options` (throws ConfigError for a URL it cannot use).
  explicit ReplicaPool(const RemoteBackendOptions& options);

  size_t size() const { return replicas_.size(); }
  Replica& replica(size_t i) { return *replicas_[i]; }
  int64_t connections_opened() const { return connections_opened_; }

  // The replica for the next request, counted in flight until finish(). Preference: one that is up and not
  // `avoid` (the one that just failed); then any that is up; then the one whose cool-down ends first (every replica
  // is down: probe one rather than fail without trying).
  size_t pick(std::optional<size_t> avoid);
  void finish(size_t i);
  // Other requests avoid replica i for retry_after_ms (capped at max_backoff_ms), or replica_cooldown_ms if < 0.
  void cool_down(size_t i, int64_t retry_after_ms);

  // An idle connection that is still usable, or a new one while fewer than max_connections are open, or the first
  // one given back before `deadline` (else AttemptFailure, retryable).
  std::unique_ptr<Connection> acquire(Replica& r, Clock::time_point deadline);
  // Back to the pool when `reusable` (kept alive, nothing unread), else closed.
  void give_back(Replica& r, std::unique_ptr<Connection> c, bool reusable);

 private:
  RemoteBackendOptions options_;
  asio::io_context io_;  // never run: it only owns the sockets
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::mutex balance_mutex_;
  uint64_t cursor_ = 0;
  std::atomic<int64_t> connections_opened_{0};
};

}  // namespace vlreward::remote
