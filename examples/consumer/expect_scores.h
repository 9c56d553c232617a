#pragma once
// Prints each item's score (or error) and tells whether every score is the expected one.
#include <cmath>
#include <cstdio>
#include <vector>

#include "plugin/reward.h"

inline bool expect_scores(const std::vector<vlreward::RewardRequest>& batch,
                          const std::vector<vlreward::RewardResult>& results, const std::vector<double>& expected) {
  if (results.size() != batch.size() || expected.size() != batch.size()) {
    std::fprintf(stderr, "%zu results for %zu requests\n", results.size(), batch.size());
    return false;
  }
  bool ok = true;
  for (size_t i = 0; i < results.size(); ++i) {
    if (!results[i].ok()) {
      std::fprintf(stderr, "%s: %s\n", batch[i].id.c_str(), results[i].error.c_str());
      ok = false;
      continue;
    }
    std::printf("%s %g\n", batch[i].id.c_str(), *results[i].score);
    if (std::fabs(*results[i].score - expected[i]) > 1e-12) {
      std::fprintf(stderr, "%s: expected %g\n", batch[i].id.c_str(), expected[i]);
      ok = false;
    }
  }
  return ok;
}
