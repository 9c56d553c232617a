// A YAML (or JSON) configuration file as the trainers and reward-serve read it: load_config_file's YAML-to-JSON
// conversion, then the strict typed readers of reward-train's config and of the server's config.
#include "adapters/common/config_file.h"
#include "adapters/server/config.h"
#include "fuzz/fuzz_support.h"
#include "reward/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  const std::string path = fuzz::write_scratch_file(fuzz::bytes_of(data, size), "_config.yaml");
  fuzz::expect_documented_errors_only("config", [&] {
    const auto config = load_config_file(path);
    fuzz::expect_documented_errors_only("reward-train config", [&] { RewardTrainConfig::from_json(config, "config"); });
    fuzz::expect_documented_errors_only("server config", [&] { parse_server_config(config, "config"); });
  });
  return 0;
}
