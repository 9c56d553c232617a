#pragma once
// Counters for GET /metrics, in Prometheus text exposition format 0.0.4. Thread-safe.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "adapters/server/error.h"

namespace vlreward {

class ServerMetrics {
 public:
  void count_request(const std::string& route);  // route: "/v1/score", "binary", ...
  void count_error(ServeErrorKind kind);
  void count_samples(int64_t scored, int64_t failed);
  void observe_batch(int64_t size, int64_t tokens);
  void observe_latency(const std::string& route, double seconds);
  void connection_opened();
  void connection_closed();
  void connection_refused();  // over limits.max_connections
  void accept_failed();       // accept() itself failed (e.g. out of file descriptors)

  // The exposition text; queue depth is sampled by the caller.
  std::string render(int64_t queue_depth) const;

  // For tests.
  int64_t requests(const std::string& route) const;
  int64_t errors(ServeErrorKind kind) const;
  int64_t batches() const;
  int64_t largest_batch() const;
  int64_t refused_connections() const;
  int64_t accept_errors() const;
  int64_t open_connections() const;

 private:
  static constexpr std::array<double, 12> kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                           0.1,   0.25,   0.5,   1.0,  2.5,   10.0};
  static constexpr std::array<int64_t, 9> kBatchBuckets{1, 2, 4, 8, 16, 32, 64, 128, 256};
  struct Histogram {
    std::map<double, int64_t> buckets;  // upper bound → cumulative-at-render count (stored per bucket)
    int64_t count = 0;
    double sum = 0;
  };

  mutable std::mutex mutex_;
  std::map<std::string, int64_t> requests_;
  std::map<std::string, int64_t> errors_;
  std::map<std::string, Histogram> latency_;
  Histogram batch_sizes_;
  int64_t batches_ = 0;
  int64_t largest_batch_ = 0;
  int64_t batch_tokens_ = 0;
  int64_t samples_scored_ = 0;
  int64_t samples_failed_ = 0;
  int64_t open_connections_ = 0;
  int64_t refused_connections_ = 0;
  int64_t accept_errors_ = 0;
};

}  // namespace vlreward
