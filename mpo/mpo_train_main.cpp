// mpo-train: MPO fine-tuning of a Qwen2.5-VL policy on offline preference pairs (JSONL), SFT on answers
// (loss_type [sft]), or online rounds of sample → reward → pairs → MPO (an `online:` section, mpo/online.h).
//   mpo-train --config configs/mpo_tiny.yaml [key.path=value ...] [--output-dir DIR] [--resume DIR|auto]
//   torchrun --nproc-per-node N --no-python mpo-train --config ...   (data parallel over N ranks)
// Exit code: 0 trained, 2 usage/config/input error (message names the file, key or line), 1 other failure.
#include <cstdint>
#include <cstdio>
#include <filesystem>

#include <boost/program_options.hpp>

#include "adapters/common/error.h"
#include "adapters/distributed/process_group.h"
#include "adapters/qwen2_5_vl/memory_plan.h"
#include "mpo/checkpoint.h"
#include "mpo/online.h"
#include "mpo/data_fingerprint.h"
#include "reward/preference_data.h"
#include "mpo/train_config.h"
#include "mpo/trainer.h"
#include "adapters/common/cli.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

static int mpo_train(int argc, char** argv) {
  po::options_description options(
      "mpo-train: MPO (DPO sigmoid + BCO-pair + SFT) on JSONL preference pairs, SFT, or online MPO rounds\n"
      "Usage: mpo-train --config FILE [key.path=value ...]\nOptions");
  options.add_options()
      ("help,h", "show this help")
      ("config,c", po::value<std::string>()->required(), "YAML/JSON training config (see configs/mpo_tiny.yaml)")
      ("output-dir,o", po::value<std::string>(), "run directory (overrides output.dir)")
      ("resume", po::value<std::string>(), "continue from a checkpoint directory, or 'auto': the newest in the run directory");
  vlreward::qwen::add_memory_plan_options(options);
  po::variables_map vm;
  if (!vlreward::parse_command_line_with_overrides(
          argc, argv, options, vm,
          "Positional key.path=value arguments override config keys, e.g. train.learning_rate=1e-5"))
    return 0;
  auto config = vlreward::mpo::load_train_config(vm["config"].as<std::string>(), vlreward::config_overrides(vm));
  if (vm.count("plan")) {
    std::printf("mpo-train --plan: %s", vlreward::qwen::memory_plan_for_options(vm, config.model.path, config.memory_setup(),
                                                                                config.train.batch_size, config.sft_only() ? 1 : 2)
                                               .c_str());
    return 0;
  }

  // Under torchrun: this rank's place in the run (a single process otherwise).
  auto group = vlreward::dist::join_launch_group(config.model.device, config.train.data_parallel.timeout_s);
  if (config.online) {
    std::optional<std::string> resume;
    if (vm.count("resume")) resume = vm["resume"].as<std::string>();
    vlreward::mpo::run_online(config, resume, nullptr, {}, group);
    return 0;
  }

  std::optional<std::string> resume_dir;
  if (vm.count("resume")) {
    resume_dir = vlreward::mpo::resolve_resume(vm["resume"].as<std::string>(), config.output.dir);
    if (!resume_dir) std::fprintf(stderr, "mpo-train: no checkpoint in %s yet; starting from step 0\n", config.output.dir.c_str());
  } else if (!vlreward::mpo::list_checkpoints(config.output.dir).empty()) {
    throw vlreward::InputError(config.output.dir,
                               "already holds checkpoints: pass --resume auto to continue that run, or choose another "
                               "--output-dir");
  }

  auto data = vlreward::read_preference_jsonl(config.data.train, config.data.image_root, !config.sft_only());
  const auto fingerprint = vlreward::mpo::fingerprint_file(config.data.train, static_cast<int64_t>(data.size()));
  vlreward::mpo::MpoTrainer trainer(config, group);
  if (resume_dir) {
    trainer.resume(*resume_dir, fingerprint);
    std::fprintf(stderr, "mpo-train: resumed from %s (step %lld)\n", resume_dir->c_str(),
                 static_cast<long long>(trainer.state().global_step));
  }
  const std::string final_dir = trainer.train(data, fingerprint);
  std::fprintf(stderr, "mpo-train: %lld steps; final policy in %s\n", static_cast<long long>(trainer.state().global_step),
               final_dir.c_str());
  return 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("mpo-train", argc, argv, mpo_train); }
