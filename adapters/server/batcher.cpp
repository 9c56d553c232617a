#include "adapters/server/batcher.h"

#include <cstdint>
#include <exception>

#include <fmt/format.h>

#include "adapters/server/metrics.h"

namespace vlreward {

Batcher::Batcher(RewardBackend& backend, BatchingOptions options, ServerMetrics* metrics)
    : backend_(backend), options_(options), metrics_(metrics), worker_([this] { run(); }) {}

Batcher::~Batcher() { stop(); }

SubmitStatus Batcher::submit(std::vector<DecodedSample> samples, Clock::time_point deadline,
                             BatchJob::Callback callback, std::shared_ptr<BatchJob>* job) {
  auto j = std::make_shared<BatchJob>();
  j->outcomes_.resize(samples.size());
  j->remaining_.store(samples.size());
  j->callback_ = std::move(callback);
  const auto now = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return SubmitStatus::kShuttingDown;
    if (static_cast<int64_t>(queue_.size() + samples.size()) > options_.max_queue) return SubmitStatus::kOverloaded;
    for (size_t i = 0; i < samples.size(); ++i) {
      queued_tokens_ += samples[i].tokens;
      queue_.push_back(Item{j, i, std::move(samples[i].request), samples[i].tokens, now, deadline});
    }
  }
  wake_.notify_all();
  *job = std::move(j);
  return SubmitStatus::kAccepted;
}

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
}

int64_t Batcher::queue_depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(queue_.size());
}

void Batcher::finish_item(Item& item, SampleOutcome outcome) {
  BatchJob& job = *item.job;
  job.outcomes_[item.index] = std::move(outcome);
  // The last sample of a request hands all outcomes over (acq_rel makes the other samples' writes visible).
  if (job.remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1 && job.claim()) {
    auto callback = std::move(job.callback_);
    callback(std::move(job.outcomes_));
  }
}

void Batcher::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping, and drained
    // Wait for a full batch, or for the oldest sample's max_wait to run out.
    const auto fill_deadline = queue_.front().enqueued + std::chrono::milliseconds(options_.max_wait_ms);
    wake_.wait_until(lock, fill_deadline, [&] {
      return stopping_ || static_cast<int64_t>(queue_.size()) >= options_.max_batch_size ||
             queued_tokens_ >= options_.max_batch_tokens;
    });
    std::vector<Item> batch;
    std::vector<Item> expired;
    int64_t batch_tokens = 0;
    const auto now = Clock::now();
    while (!queue_.empty() && static_cast<int64_t>(batch.size()) < options_.max_batch_size) {
      Item& next = queue_.front();
      if (next.job->claimed()) {  // its request was abandoned (deadline): drop unscored
        queued_tokens_ -= next.tokens;
        queue_.pop_front();
        continue;
      }
      if (next.deadline <= now) {
        queued_tokens_ -= next.tokens;
        expired.push_back(std::move(next));
        queue_.pop_front();
        continue;
      }
      if (!batch.empty() && batch_tokens + next.tokens > options_.max_batch_tokens) break;
      batch_tokens += next.tokens;
      queued_tokens_ -= next.tokens;
      batch.push_back(std::move(next));
      queue_.pop_front();
    }
    lock.unlock();
    for (auto& item : expired) {
      SampleOutcome outcome;
      outcome.result = RewardResult::failure("deadline exceeded before the sample was scored");
      outcome.error_kind = ServeErrorKind::kDeadline;
      outcome.tokens = item.tokens;
      finish_item(item, std::move(outcome));
    }
    if (!batch.empty()) {
      std::vector<RewardRequest> requests;
      requests.reserve(batch.size());
      for (auto& item : batch) requests.push_back(std::move(item.request));
      const auto started = Clock::now();
      std::vector<RewardResult> results;
      std::string failure;
      try {
        results = backend_.score(requests);
        if (results.size() != requests.size())
          failure = fmt::format("backend returned {} results for {} requests", results.size(), requests.size());
      } catch (const std::exception& e) {
        failure = fmt::format("backend failed: {}", e.what());
      } catch (...) {
        failure = "backend failed with an unknown exception";
      }
      const auto compute_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count();
      if (metrics_) metrics_->observe_batch(static_cast<int64_t>(batch.size()), batch_tokens);
      for (size_t i = 0; i < batch.size(); ++i) {
        SampleOutcome outcome;
        if (failure.empty()) {
          outcome.result = std::move(results[i]);
          if (!outcome.result.ok() && outcome.result.error.empty()) outcome.result.error = "backend gave no score";
        } else {
          outcome.result = RewardResult::failure(failure);
          outcome.error_kind = ServeErrorKind::kInternal;
        }
        outcome.tokens = batch[i].tokens;
        outcome.queue_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(started - batch[i].enqueued).count();
        outcome.compute_ns = compute_ns;
        outcome.batch_size = static_cast<int64_t>(batch.size());
        finish_item(batch[i], std::move(outcome));
      }
    }
    lock.lock();
  }
}

}  // namespace vlreward
