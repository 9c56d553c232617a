#include "reward/batch_scoring.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace vlreward {

std::vector<RewardResult> score_batch(RewardBackend& backend, const std::vector<RewardRequest>& batch) {
  if (batch.empty()) return {};
  std::vector<RewardResult> results;
  try {
    results = backend.score(batch);
  } catch (const std::exception& e) {
    return std::vector<RewardResult>(
        batch.size(), RewardResult::failure(fmt::format("reward backend \"{}\" failed on this batch of {}: {}",
                                                        backend.name(), batch.size(), e.what())));
  }
  if (results.size() != batch.size())
    throw std::runtime_error(fmt::format("reward backend \"{}\" returned {} results for {} requests", backend.name(),
                                         results.size(), batch.size()));
  for (auto& r : results) {
    if (r.ok() && !std::isfinite(*r.score))
      r = RewardResult::failure(fmt::format("reward backend \"{}\" returned a non-finite score ({})", backend.name(), *r.score));
    else if (!r.ok() && r.error.empty())
      r.error = fmt::format("reward backend \"{}\" failed without saying why", backend.name());
  }
  return results;
}

std::vector<RewardResult> score_in_batches(
    RewardBackend& backend, size_t count, int64_t batch_size, const std::function<RewardRequest(size_t)>& make_request,
    const std::function<void(const std::vector<RewardResult>& batch_results)>& after_batch) {
  if (batch_size <= 0) throw std::invalid_argument(fmt::format("batch size must be positive, not {}", batch_size));
  std::vector<RewardResult> results;
  results.reserve(count);
  for (size_t start = 0; start < count; start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(count, start + static_cast<size_t>(batch_size));
    std::vector<RewardRequest> batch;
    batch.reserve(end - start);
    for (size_t i = start; i < end; ++i) batch.push_back(make_request(i));
    const auto batch_results = score_batch(backend, batch);
    if (after_batch) after_batch(batch_results);
    results.insert(results.end(), batch_results.begin(), batch_results.end());
  }
  return results;
}

}  // namespace vlreward
