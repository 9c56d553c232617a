// Scores two responses with a reward plugin loaded through the registry: the torch-free way to embed vlreward.
// Usage: score_with_plugin PATH_TO_PLUGIN.so   (the installed lib/vlreward/plugins/libkeyword_reward.so)
// Prints one score per line; exits 0 only when the plugin gives the scores its keyword weights imply.
#include <cstdio>
#include <exception>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/registry.h"
#include "plugin/reward.h"

#include "expect_scores.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s PLUGIN.so\n", argv[0]);
    return 2;
  }
  try {
    const nlohmann::json config = {
        {"type", "plugin"}, {"path", argv[1]}, {"config", {{"keywords", {{"cat", 1.0}, {"dog", 0.5}}}}}};
    auto backend = vlreward::RewardRegistry().create(config);
    const std::vector<vlreward::RewardRequest> batch = {
        vlreward::RewardRequest::single_turn("a", {}, "What animals are there?", "A cat and a dog."),
        vlreward::RewardRequest::single_turn("b", {}, "What animals are there?", "Only a dog.")};
    return expect_scores(batch, backend->score(batch), {1.5, 0.5}) ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
