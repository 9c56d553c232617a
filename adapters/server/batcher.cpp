#include "adapters/server/batcher.h"

#include <algorithm>
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
  Pending pending{j, {}, now, deadline};
  int64_t tokens = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    tokens += samples[i].cost.tokens;
    bytes += samples[i].cost.bytes;
    pending.items.push_back(Item{j, i, std::move(samples[i].request), samples[i].cost, now});
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return SubmitStatus::kShuttingDown;
    if (queued_samples_ + static_cast<int64_t>(pending.items.size()) > options_.max_queue) return SubmitStatus::kOverloaded;
    // By bytes too; a request alone in the queue is always taken, so one larger than the whole budget still runs.
    if (queued_samples_ > 0 && queued_bytes_ + bytes > options_.max_queue_bytes) return SubmitStatus::kOverloaded;
    queued_samples_ += static_cast<int64_t>(pending.items.size());
    queued_tokens_ += tokens;
    queued_bytes_ += bytes;
    if (!pending.items.empty()) pending_.push_back(std::move(pending));
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
  return queued_samples_;
}

Batcher::Item Batcher::pop_front_item(Pending& pending) {
  Item item = std::move(pending.items.front());
  pending.items.pop_front();
  queued_samples_ -= 1;
  queued_tokens_ -= item.cost.tokens;
  queued_bytes_ -= item.cost.bytes;
  return item;
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
    wake_.wait(lock, [&] { return stopping_ || queued_samples_ > 0; });
    if (queued_samples_ == 0) break;  // stopping, and drained
    // Wait for a full batch, or for the oldest sample's max_wait to run out.
    Clock::time_point oldest = pending_.front().enqueued;
    for (const auto& p : pending_) oldest = std::min(oldest, p.enqueued);
    const auto fill_deadline = oldest + std::chrono::milliseconds(options_.max_wait_ms);
    wake_.wait_until(lock, fill_deadline, [&] {
      return stopping_ || queued_samples_ >= options_.max_batch_size || queued_tokens_ >= options_.max_batch_tokens;
    });
    std::vector<Item> batch;
    std::vector<Item> expired;
    int64_t batch_tokens = 0;
    const auto now = Clock::now();
    // Round-robin: one sample from the front request, which then goes to the back of the round.
    while (!pending_.empty() && static_cast<int64_t>(batch.size()) < options_.max_batch_size) {
      Pending& front = pending_.front();
      if (front.job->claimed() || front.deadline <= now) {
        // Abandoned (its deadline timer answered the client): drop unscored. Past its deadline: fail each sample.
        const bool abandoned = front.job->claimed();
        while (!front.items.empty()) {
          Item item = pop_front_item(front);
          if (!abandoned) expired.push_back(std::move(item));
        }
        pending_.pop_front();
        continue;
      }
      if (!batch.empty() && batch_tokens + front.items.front().cost.tokens > options_.max_batch_tokens) break;
      batch_tokens += front.items.front().cost.tokens;
      batch.push_back(pop_front_item(front));
      Pending rest = std::move(front);
      pending_.pop_front();
      if (!rest.items.empty()) pending_.push_back(std::move(rest));
    }
    lock.unlock();
    for (auto& item : expired) {
      SampleOutcome outcome;
      outcome.result = RewardResult::failure("deadline exceeded before the sample was scored");
      outcome.error_kind = ServeErrorKind::kDeadline;
      outcome.tokens = item.cost.tokens;
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
        outcome.tokens = batch[i].cost.tokens;
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
