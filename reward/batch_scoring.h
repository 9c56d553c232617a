#pragma once
// Calling a reward backend on many requests: the one failure policy every caller shares (pair building, A/B
// comparison, reward-score, reward-eval).
//   - an item the backend fails, or scores with a non-finite number, is an error of that item alone;
//   - an exception out of score() is an error of every item in that batch (the message says so): one bad batch
//     costs its items, never the run;
//   - a backend that returns a different number of results than it was given requests breaks the plugin contract:
//     std::runtime_error naming the backend.
// Every result that comes back is either a finite score or a failure with a non-empty message.
#include <cstddef>
#include <functional>
#include <vector>

#include "plugin/reward.h"

namespace vlreward {

// One call of backend.score(batch) under the policy above.
std::vector<RewardResult> score_batch(RewardBackend& backend, const std::vector<RewardRequest>& batch);

// Requests 0..count-1, made by `make_request(i)` a batch at a time (only one batch of requests lives at once),
// scored in consecutive batches of `batch_size` with score_batch; `after_batch(results of the batch)` runs after
// each (progress). Throws std::invalid_argument for batch_size <= 0.
std::vector<RewardResult> score_in_batches(
    RewardBackend& backend, size_t count, int64_t batch_size, const std::function<RewardRequest(size_t)>& make_request,
    const std::function<void(const std::vector<RewardResult>& batch_results)>& after_batch = {});

}  // namespace vlreward
