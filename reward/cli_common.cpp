#include "reward/cli_common.h"

#include "adapters/common/config_file.h"
#include "adapters/common/error.h"

namespace po = boost::program_options;

namespace vlreward {

void add_reward_options(po::options_description& options) {
  options.add_options()
      ("reward", po::value<std::string>(), "reward backend config file (YAML or JSON, {\"type\": ...})")
      ("model", po::value<std::string>(), "shortcut: Skywork-VL reward checkpoint directory")
      ("value-head", po::value<std::string>(), "value_head.safetensors (default: inside --model)")
      ("dtype", po::value<std::string>(), "float32 or bfloat16 (with --model)")
      ("device", po::value<std::string>(), "cpu, cuda, cuda:N (with --model)")
      ("set", po::value<std::vector<std::string>>()->composing(), "override a config key: --set key.path=value");
}

nlohmann::json reward_config_from(const po::variables_map& vm, bool apply_sets) {
  nlohmann::json config;
  if (vm.count("reward") && vm.count("model")) throw InputError("--reward/--model", "give one of them, not both");
  if (vm.count("reward")) {
    config = load_config_file(vm["reward"].as<std::string>());
  } else if (vm.count("model")) {
    config = {{"type", "skywork_vl"}, {"model", vm["model"].as<std::string>()}};
    if (vm.count("value-head")) config["value_head"] = vm["value-head"].as<std::string>();
    if (vm.count("dtype")) config["dtype"] = vm["dtype"].as<std::string>();
    if (vm.count("device")) config["device"] = vm["device"].as<std::string>();
  } else {
    throw InputError("options", "a reward backend is required: --reward CONFIG or --model DIR");
  }
  if (apply_sets && vm.count("set"))
    for (const auto& assignment : vm["set"].as<std::vector<std::string>>()) apply_override(config, assignment);
  return config;
}

}  // namespace vlreward
