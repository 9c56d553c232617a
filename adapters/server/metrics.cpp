#include "adapters/server/metrics.h"

#include <cstdint>
#include <fmt/format.h>

namespace vlreward {
namespace {

void add_to(std::map<double, int64_t>& buckets, double value, const double* bounds, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (value <= bounds[i]) {
      ++buckets[bounds[i]];
      return;
    }
}

// Prometheus buckets are cumulative; le="+Inf" equals the count.
void render_histogram(std::string& out, const std::string& name, const std::string& labels,
                      const std::map<double, int64_t>& buckets, const double* bounds, size_t n, int64_t count,
                      double sum) {
  int64_t cumulative = 0;
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < n; ++i) {
    auto it = buckets.find(bounds[i]);
    cumulative += it == buckets.end() ? 0 : it->second;
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, bounds[i], cumulative);
  }
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, count);
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, braces, sum, name, braces, count);
}

}  // namespace

void ServerMetrics::count_request(const std::string& route) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[route];
}

void ServerMetrics::count_error(ServeErrorKind kind) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++errors_[metric_label(kind)];
}

void ServerMetrics::count_samples(int64_t scored, int64_t failed) {
  std::lock_guard<std::mutex> lock(mutex_);
  samples_scored_ += scored;
  samples_failed_ += failed;
}

void ServerMetrics::observe_batch(int64_t size, int64_t tokens) {
  static constexpr auto bounds = [] {
    std::array<double, kBatchBuckets.size()> b{};
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<double>(kBatchBuckets[i]);
    return b;
  }();
  std::lock_guard<std::mutex> lock(mutex_);
  add_to(batch_sizes_.buckets, static_cast<double>(size), bounds.data(), bounds.size());
  ++batch_sizes_.count;
  batch_sizes_.sum += static_cast<double>(size);
  ++batches_;
  batch_tokens_ += tokens;
  if (size > largest_batch_) largest_batch_ = size;
}

void ServerMetrics::observe_latency(const std::string& route, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& h = latency_[route];
  add_to(h.buckets, seconds, kLatencyBuckets.data(), kLatencyBuckets.size());
  ++h.count;
  h.sum += seconds;
}

void ServerMetrics::connection_opened() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++open_connections_;
}

void ServerMetrics::connection_closed() {
  std::lock_guard<std::mutex> lock(mutex_);
  --open_connections_;
}

void ServerMetrics::connection_refused() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++refused_connections_;
}

void ServerMetrics::accept_failed() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++accept_errors_;
}

std::string ServerMetrics::render(int64_t queue_depth) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  out += "# HELP vlreward_requests_total Requests received, by route.\n# TYPE vlreward_requests_total counter\n";
  for (const auto& [route, n] : requests_) out += fmt::format("vlreward_requests_total{{route=\"{}\"}} {}\n", route, n);
  out += "# HELP vlreward_errors_total Failed requests, by kind.\n# TYPE vlreward_errors_total counter\n";
  for (const auto& [kind, n] : errors_) out += fmt::format("vlreward_errors_total{{kind=\"{}\"}} {}\n", kind, n);
  out += "# HELP vlreward_samples_total Samples finished, by outcome.\n# TYPE vlreward_samples_total counter\n";
  out += fmt::format("vlreward_samples_total{{outcome=\"scored\"}} {}\n", samples_scored_);
  out += fmt::format("vlreward_samples_total{{outcome=\"failed\"}} {}\n", samples_failed_);
  out += "# HELP vlreward_batch_size Samples per backend call.\n# TYPE vlreward_batch_size histogram\n";
  std::array<double, kBatchBuckets.size()> batch_bounds{};
  for (size_t i = 0; i < batch_bounds.size(); ++i) batch_bounds[i] = static_cast<double>(kBatchBuckets[i]);
  render_histogram(out, "vlreward_batch_size", "", batch_sizes_.buckets, batch_bounds.data(), batch_bounds.size(),
                   batch_sizes_.count, batch_sizes_.sum);
  out += "# HELP vlreward_batch_tokens_total Estimated tokens sent to the backend.\n"
         "# TYPE vlreward_batch_tokens_total counter\n";
  out += fmt::format("vlreward_batch_tokens_total {}\n", batch_tokens_);
  out += "# HELP vlreward_request_latency_seconds Request received to response ready, by route.\n"
         "# TYPE vlreward_request_latency_seconds histogram\n";
  for (const auto& [route, h] : latency_)
    render_histogram(out, "vlreward_request_latency_seconds", fmt::format("route=\"{}\"", route), h.buckets,
                     kLatencyBuckets.data(), kLatencyBuckets.size(), h.count, h.sum);
  out += "# HELP vlreward_queue_depth Samples waiting for a batch.\n# TYPE vlreward_queue_depth gauge\n";
  out += fmt::format("vlreward_queue_depth {}\n", queue_depth);
  out += "# HELP vlreward_open_connections Open client connections.\n# TYPE vlreward_open_connections gauge\n";
  out += fmt::format("vlreward_open_connections {}\n", open_connections_);
  out += "# HELP vlreward_connections_refused_total Connections refused at limits.max_connections.\n"
         "# TYPE vlreward_connections_refused_total counter\n";
  out += fmt::format("vlreward_connections_refused_total {}\n", refused_connections_);
  out += "# HELP vlreward_accept_errors_total Failed accepts (e.g. out of file descriptors), each followed by a "
         "backoff.\n# TYPE vlreward_accept_errors_total counter\n";
  out += fmt::format("vlreward_accept_errors_total {}\n", accept_errors_);
  return out;
}

int64_t ServerMetrics::requests(const std::string& route) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = requests_.find(route);
  return it == requests_.end() ? 0 : it->second;
}

int64_t ServerMetrics::errors(ServeErrorKind kind) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = errors_.find(metric_label(kind));
  return it == errors_.end() ? 0 : it->second;
}

int64_t ServerMetrics::batches() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return batches_;
}

int64_t ServerMetrics::refused_connections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return refused_connections_;
}

int64_t ServerMetrics::accept_errors() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return accept_errors_;
}

int64_t ServerMetrics::open_connections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return open_connections_;
}

int64_t ServerMetrics::largest_batch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return largest_batch_;
}

}  // namespace vlreward
