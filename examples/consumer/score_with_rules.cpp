// Scores responses with the library's own backends (vlreward::reward): a composite of an exact-match rule on the
// boxed answer and a format rule. Exits 0 only when the scores are the ones the rules imply.
#include <cstdio>
#include <exception>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/reward.h"
#include "reward/backends.h"

#include "expect_scores.h"

int main() {
  try {
    const auto config = nlohmann::json::parse(R"({
      "type": "composite",
      "components": [
        {"name": "answer", "weight": 1.0, "backend": {"type": "exact_match", "extract": "boxed"}},
        {"name": "format", "weight": 0.5, "backend": {"type": "format", "pattern": "<think>.*</think>.*"}}]})");
    auto backend = vlreward::make_reward_backend(config);
    const std::vector<vlreward::RewardRequest> batch = {
        vlreward::RewardRequest::single_turn("right", {}, "2+2?", "<think>4</think> \\boxed{4}", "4"),
        vlreward::RewardRequest::single_turn("wrong", {}, "2+2?", "\\boxed{5}", "4")};
    return expect_scores(batch, backend->score(batch), {1.5, 0.0}) ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
