#pragma once
// What the command lines that call a reward backend share: its config from --reward FILE / --model DIR and
// --set overrides (the backend itself: make_reward_backend, reward/backends.h; the rest of the command-line
// plumbing: adapters/common/cli.h).
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

namespace vlreward {

// Adds --reward, --model, --value-head, --dtype, --device, --set to `options`.
void add_reward_options(boost::program_options::options_description& options);

// The backend config from the parsed options: --reward FILE (YAML/JSON {"type": ...}), or --model DIR as a
// shortcut for {"type": "skywork_vl", "model": DIR, ...}; then each --set key.path=value (unless `apply_sets` is
// false: reward-serve routes them between its own config and the backend's).
nlohmann::json reward_config_from(const boost::program_options::variables_map& vm, bool apply_sets = true);

}  // namespace vlreward
