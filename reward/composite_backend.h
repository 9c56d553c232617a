#pragma once
// A weighted sum of other backends — e.g. Skywork R1V2's hybrid reward r = r_rule + r_θ + r_format:
//   {"type": "composite", "components": [
//      {"name": "rule",   "weight": 1.0, "backend": {"type": "exact_match", "extract": "boxed"}},
//      {"name": "model",  "weight": 1.0, "backend": {"type": "skywork_vl", ...}},
//      {"name": "format", "weight": 1.0, "backend": {"type": "format", "pattern": "<think>.*</think>.+"}}]}
// score = Σ weight_i · score_i. Each result's `components` holds every part's unweighted score by name (and a
// nested composite's parts as "<name>.<part>"). An item fails, naming the component, if any component fails it.
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "plugin/registry.h"

namespace vlreward {

// Children are created through `registry`, with key paths like "<where>.components[1].backend".
std::unique_ptr<RewardBackend> make_composite_backend(const nlohmann::json& config, const std::string& where,
                                                      const RewardRegistry& registry);

}  // namespace vlreward
