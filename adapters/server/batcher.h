#pragma once
// Dynamic batching across concurrent requests: every request's samples join a bounded queue (max_queue samples,
// max_queue_bytes held); a worker thread takes batches of up to max_batch_size samples and max_batch_tokens
// estimated tokens, waiting at most max_wait_ms for the oldest sample to get company, runs the backend, and routes
// each result back to its request by position. One worker: backends need not be thread-safe, and one accelerator
// is busy anyway.
//
// Fairness: batches are filled round-robin over the queued requests, one sample from each in turn (oldest request
// first), so a large request is split across batches and a small request that arrives behind it waits for at
// most one batch, not for all of the large one.
//
// A request's results are delivered once, through its callback, after all its samples are scored — unless the
// request was claimed first by someone else (its deadline timer): then its queued samples are dropped unscored.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "adapters/server/request_decoding.h"
#include "adapters/server/error.h"
#include "adapters/server/config.h"
#include "plugin/reward.h"

namespace vlreward {

class ServerMetrics;

struct SampleOutcome {
  RewardResult result;
  ServeErrorKind error_kind = ServeErrorKind::kUnprocessable;  // when !result.ok(): item error, backend failure, deadline
  int64_t tokens = 0;
  int64_t queue_ns = 0;
  int64_t compute_ns = 0;
  int64_t batch_size = 0;
};

class BatchJob {
 public:
  using Callback = std::function<void(std::vector<SampleOutcome>)>;
  // True for exactly one caller: whoever completes or abandons the request.
  bool claim() { return !claimed_.exchange(true, std::memory_order_acq_rel); }
  bool claimed() const { return claimed_.load(std::memory_order_acquire); }

 private:
  friend class Batcher;
  std::atomic<bool> claimed_{false};
  std::atomic<size_t> remaining_{0};
  std::vector<SampleOutcome> outcomes_;
  Callback callback_;
};

enum class SubmitStatus { kAccepted, kOverloaded, kShuttingDown };

class Batcher {
 public:
  using Clock = std::chrono::steady_clock;

  Batcher(RewardBackend& backend, BatchingOptions options, ServerMetrics* metrics = nullptr);
  ~Batcher();  // stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // All samples are queued, or none (kOverloaded when they do not fit the queue). On kAccepted, *job is the
  // request's handle and `callback` later runs on the worker thread with one outcome per sample, in order.
  SubmitStatus submit(std::vector<DecodedSample> samples, Clock::time_point deadline, BatchJob::Callback callback,
                      std::shared_ptr<BatchJob>* job);

  // Refuses new work, scores everything already queued, joins the worker. Idempotent.
  void stop();

  int64_t queue_depth() const;

 private:
  struct Item {
    std::shared_ptr<BatchJob> job;
    size_t index;
    RewardRequest request;
    SampleCost cost;
    Clock::time_point enqueued;
  };
  // One request's samples still queued, in order; all share the request's arrival time and deadline.
  struct Pending {
    std::shared_ptr<BatchJob> job;
    std::deque<Item> items;
    Clock::time_point enqueued;
    Clock::time_point deadline;
  };

  void run();
  void finish_item(Item& item, SampleOutcome outcome);
  Item pop_front_item(Pending& pending);  // keeps the queue's totals; needs mutex_

  RewardBackend& backend_;
  BatchingOptions options_;
  ServerMetrics* metrics_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Pending> pending_;  // round-robin order: the front request gives the next sample
  int64_t queued_samples_ = 0;
  int64_t queued_tokens_ = 0;
  uint64_t queued_bytes_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace vlreward
