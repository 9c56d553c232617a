#include "plugin/remote/replica_pool.h"

#include <algorithm>

#include <fmt/format.h>

#include "plugin/error.h"
#include "plugin/remote/attempt_failure.h"

namespace vlreward::remote {

ReplicaPool::ReplicaPool(const RemoteBackendOptions& options) : options_(options) {
  if (options_.urls.empty()) throw ConfigError("remote reward: no replica URLs");
  for (size_t i = 0; i < options_.urls.size(); ++i)
    replicas_.push_back(std::make_unique<Replica>(
        parse_replica_url(options_.urls[i], options_.protocol, fmt::format("urls[{}]", i))));
}

size_t ReplicaPool::pick(std::optional<size_t> avoid) {
  std::lock_guard<std::mutex> lock(balance_mutex_);
  const auto now = Clock::now();
  const size_t n = replicas_.size();
  const size_t start = static_cast<size_t>(cursor_++ % n);
  auto cooling = [&](size_t i) { return replicas_[i]->cooldown_until > now; };
  size_t best = n;
  for (int pass = 0; pass < 2 && best == n; ++pass) {
    for (size_t k = 0; k < n; ++k) {
      const size_t i = (start + k) % n;
      if (cooling(i) || (pass == 0 && avoid && *avoid == i)) continue;
      if (options_.load_balancing == RemoteLoadBalancing::kRoundRobin) {
        best = i;
        break;
      }
      if (best == n || replicas_[i]->in_flight < replicas_[best]->in_flight) best = i;
    }
  }
  if (best == n) {
    best = start;
    for (size_t i = 0; i < n; ++i)
      if (replicas_[i]->cooldown_until < replicas_[best]->cooldown_until) best = i;
  }
  ++replicas_[best]->in_flight;
  return best;
}

void ReplicaPool::finish(size_t i) {
  std::lock_guard<std::mutex> lock(balance_mutex_);
  --replicas_[i]->in_flight;
}

void ReplicaPool::cool_down(size_t i, int64_t retry_after_ms) {
  std::lock_guard<std::mutex> lock(balance_mutex_);
  const int64_t ms =
      retry_after_ms >= 0 ? std::min(retry_after_ms, options_.max_backoff_ms) : options_.replica_cooldown_ms;
  replicas_[i]->cooldown_until = std::max(replicas_[i]->cooldown_until, Clock::now() + std::chrono::milliseconds(ms));
}

std::unique_ptr<Connection> ReplicaPool::acquire(Replica& r, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(r.mutex);
  for (;;) {
    while (!r.idle.empty()) {
      auto c = std::move(r.idle.back());
      r.idle.pop_back();
      if (idle_connection_usable(*c)) return c;
      --r.open;  // closed by the server while idle
    }
    if (r.open < options_.max_connections) {
      ++r.open;
      lock.unlock();
      try {
        auto c = open_connection(io_, r.address, deadline, options_.connect_timeout_ms);
        ++connections_opened_;
        return c;
      } catch (...) {
        lock.lock();
        --r.open;
        r.freed.notify_one();
        throw;
      }
    }
    if (r.freed.wait_until(lock, deadline) == std::cv_status::timeout && r.idle.empty() &&
        r.open >= options_.max_connections)
      throw AttemptFailure(true, fmt::format("all max_connections={} connections stayed busy for timeout_ms={}",
                                             options_.max_connections, options_.timeout_ms));
  }
}

void ReplicaPool::give_back(Replica& r, std::unique_ptr<Connection> c, bool reusable) {
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

}  // namespace vlreward::remote
