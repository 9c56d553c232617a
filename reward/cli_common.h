#pragma once
// What every reward command line shares: building the reward backend from --reward FILE / --model DIR and
// --set overrides, and turning errors into exit codes.
#include <memory>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "plugin/reward.h"

namespace vlreward {

// Adds --reward, --model, --value-head, --dtype, --device, --set to `options`.
void add_reward_options(boost::program_options::options_description& options);

// The backend config from the parsed options: --reward FILE (YAML/JSON {"type": ...}), or --model DIR as a
// shortcut for {"type": "skywork_vl", "model": DIR, ...}; then each --set key.path=value.
nlohmann::json reward_config_from(const boost::program_options::variables_map& vm);
std::unique_ptr<RewardBackend> make_reward_backend(const nlohmann::json& config);

// Runs `body`, mapping usage/config/input errors to a message on stderr and exit code 2, any other exception to
// its message and exit code 1.
int run_cli(const char* program, int argc, char** argv, int (*body)(int, char**));

}  // namespace vlreward
