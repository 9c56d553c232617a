// reward-train: Bradley-Terry training of a Skywork-VL style reward model (Qwen2.5-VL + value head) on JSONL
// preference pairs, in stages (reward/trainer.h).
//   reward-train --config configs/reward_train_tiny.yaml [key.path=value ...] [--output-dir DIR]
//   torchrun --nproc-per-node N --no-python reward-train --config ...   (data parallel over N ranks)
// Rerunning the same command skips the stages already finished (their stage-<k>/DONE) and continues.
// Exit code: 0 trained, 2 usage/config/input error (message names the file, key or line), 1 other failure.
#include <algorithm>
#include <cstdint>
#include <cstdio>

#include <boost/program_options.hpp>

#include "adapters/distributed/process_group.h"
#include "adapters/qwen2_5_vl/memory_plan.h"
#include "adapters/common/error.h"
#include "adapters/common/cli.h"
#include "reward/train_config.h"
#include "reward/trainer.h"

namespace po = boost::program_options;

static int reward_train(int argc, char** argv) {
  po::options_description options(
      "reward-train: Bradley-Terry reward-model training (Skywork-VL Reward) on JSONL preference pairs\n"
      "Usage: reward-train --config FILE [key.path=value ...]\nOptions");
  options.add_options()
      ("help,h", "show this help")
      ("config,c", po::value<std::string>()->required(), "YAML/JSON training config (see configs/reward_train_tiny.yaml)")
      ("output-dir,o", po::value<std::string>(), "run directory (overrides output.dir)");
  vlreward::qwen::add_memory_plan_options(options);
  po::variables_map vm;
  if (!vlreward::parse_command_line_with_overrides(argc, argv, options, vm,
                                                   "Positional key.path=value arguments override config keys, e.g. "
                                                   "train.seed=7 or stages.1.learning_rate=1e-6 (stages by 0-based "
                                                   "index)"))
    return 0;
  auto config = vlreward::load_reward_train_config(vm["config"].as<std::string>(), vlreward::config_overrides(vm));
  if (vm.count("plan")) {
    int64_t batch = 1;
    for (const auto& stage : config.stages) batch = std::max(batch, stage.batch_size);
    std::printf("reward-train --plan: %s",
                vlreward::qwen::memory_plan_for_options(vm, config.model.path, config.memory_setup(), batch, 2).c_str());
    return 0;
  }

  // Under torchrun: this rank's place in the run (a single process otherwise).
  auto group = vlreward::dist::join_launch_group(config.model.device, config.train.data_parallel.timeout_s);
  vlreward::RewardTrainer trainer(config, group);
  vlreward::RewardTrainCallbacks callbacks;
  bool trained = false;
  callbacks.on_stage_done = [&](int64_t stage, const std::string& dir) {
    std::fprintf(stderr, "reward-train: stage %lld done -> %s\n", static_cast<long long>(stage), dir.c_str());
  };
  callbacks.on_step = [&](int64_t, const vlreward::RewardStepMetrics&) { trained = true; };
  callbacks.on_eval = [](int64_t stage, const vlreward::PairEvaluation& e) {
    std::fprintf(stderr, "reward-train: stage %lld eval: %lld pairs, accuracy %.4f, margin %+.4f, loss %.4f\n",
                 static_cast<long long>(stage), static_cast<long long>(e.pairs), e.accuracy, e.margin, e.loss);
  };
  const std::string final_dir = trainer.train(callbacks);
  std::fprintf(stderr, "reward-train: %s; reward model in %s\n",
               trained ? "trained" : "every stage was already done", final_dir.c_str());
  return 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("reward-train", argc, argv, reward_train); }
