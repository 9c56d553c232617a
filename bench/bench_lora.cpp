// LoRA MPO step benchmark, C++ side: the MPO trainer itself (mpo/trainer.h) with LoRA adapters on a checkpoint,
// one preference pair per micro-batch. Driven by bench_lora.py, which runs TRL 0.28 + PEFT on the same checkpoint
// and pair in a separate process and prints the ratios.
//
//   bench_lora --checkpoint DIR --pairs FILE.jsonl [--steps N] [--threads N] [--rank 16] [--gradient-checkpointing]
//              [--device cpu|cuda]
//
// Prints one JSON line: per-step wall and CPU seconds and losses, the resident set before and after loading and
// the peak resident set (VmHWM) in MiB, on CUDA the allocator's peak and after-load bytes, the micro-batch's shape,
// and what `mpo-train --plan` computes for it.
#include <cstdint>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include <boost/program_options.hpp>
#include <c10/cuda/CUDACachingAllocator.h>

#include <nlohmann/json.hpp>

#include "adapters/common/cli.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/memory_plan.h"
#include "bench/bench_support.h"
#include "mpo/pair_tokenization.h"
#include "mpo/train_config.h"
#include "mpo/trainer.h"
#include "plugin/error.h"
#include "reward/preference_data.h"

using namespace vlreward;
using namespace vlreward::bench;
using namespace vlreward::mpo;
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

struct Args {
  std::string checkpoint, pairs;
  int steps = 3, threads = 1;
  int64_t rank = 16;
  bool gradient_checkpointing = false;
  std::string device = "cpu";
};

// Bytes the CUDA caching allocator has handed out: now and at its peak (stat index 0 = all pools).
std::pair<double, double> cuda_allocated_mib(const std::string& device) {
  const auto index = torch::Device(device).index();
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index < 0 ? 0 : index);
  return {static_cast<double>(stats.allocated_bytes[0].current) / (1 << 20),
          static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20)};
}

std::optional<Args> parse_args(int argc, char** argv) {
  Args a;
  po::options_description options("bench_lora options");
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&a.checkpoint)->required(), "HF checkpoint directory (bfloat16 weights)")
      ("pairs", po::value(&a.pairs)->required(), "preference pairs JSONL (the first pair is the micro-batch)")
      ("steps", po::value(&a.steps)->default_value(3), "timed optimizer steps")
      ("threads", po::value(&a.threads)->default_value(1), "intra-op threads")
      ("rank", po::value(&a.rank)->default_value(16), "LoRA rank (alpha = 2 x rank, rsLoRA)")
      ("gradient-checkpointing", po::bool_switch(&a.gradient_checkpointing), "checkpoint every decoder layer")
      ("device", po::value(&a.device)->default_value("cpu"), "cpu or cuda[:N] (bf16 autocast on CUDA)");
  po::variables_map vm;
  if (!parse_command_line(argc, argv, options, vm, "")) return std::nullopt;
  if (a.steps < 1 || a.threads < 1 || a.rank < 1) throw InputError("command line", "--steps, --threads and --rank must be positive");
  return a;
}

}  // namespace

int bench_lora(int argc, char** argv) {
  const auto parsed = parse_args(argc, argv);
  if (!parsed) return 0;
  const Args& args = *parsed;
  at::set_num_threads(args.threads);
  try {
    const fs::path out_dir = fs::temp_directory_path() / ("bench_lora_" + std::to_string(::getpid()));
    const nlohmann::json config_json{
        {"model", {{"path", args.checkpoint}, {"dtype", "bfloat16"}, {"device", args.device}}},
        {"lora", {{"r", args.rank}, {"alpha", 2 * args.rank}, {"use_rslora", true}}},
        {"data", {{"train", args.pairs}, {"shuffle", false}}},
        {"loss", {{"loss_type", {"sigmoid", "bco_pair", "sft"}}, {"loss_weights", {0.8, 0.2, 1.0}}, {"beta", 0.1},
                  {"sft_tokens", "trl_0.28"}}},
        {"train", {{"learning_rate", 1e-4}, {"warmup_ratio", 0.0}, {"batch_size", 1},
                   {"gradient_checkpointing", args.gradient_checkpointing}, {"num_threads", args.threads}}},
        {"output", {{"dir", out_dir.string()}, {"tensorboard", false}, {"progress", false}}}};
    const TrainConfig config = TrainConfig::from_json(config_json, "bench_lora");
    const auto records = read_preference_jsonl(args.pairs);
    nlohmann::json out;
    const double rss_before_load = current_rss_mib();
    MpoTrainer trainer(config);
    const double rss_after_load = current_rss_mib();
    const bool cuda = args.device.rfind("cuda", 0) == 0;
    if (cuda) out["gpu_after_load_mib"] = cuda_allocated_mib(args.device).first;
    trainer.set_total_steps(args.steps);

    const PreferenceRecord& record = records.at(0);
    const auto pair = tokenize_pair(trainer.processor(), record, record.source);
    qwen::MicroBatchShape shape;
    shape.rows = 2;
    shape.completion_tokens = static_cast<int64_t>(std::max(pair.tokens.chosen.size(), pair.tokens.rejected.size()));
    shape.tokens = static_cast<int64_t>(pair.tokens.prompt.size()) + shape.completion_tokens;
    shape.image_patches = pair.images.rows;
    const auto model_config = Qwen2_5_VLConfig::load((fs::path(args.checkpoint) / "config.json").string());
    const auto plan = qwen::plan_training_memory(model_config, config.memory_setup(), shape);
    out["tokens_per_row"] = shape.tokens;
    out["completion_tokens"] = shape.completion_tokens;
    out["image_patches"] = shape.image_patches;
    out["plan_total_mib"] = static_cast<double>(plan.total()) / (1 << 20);
    out["plan_weights_mib"] = static_cast<double>(plan.weights) / (1 << 20);
    out["plan_activations_mib"] = static_cast<double>(plan.activations) / (1 << 20);
    out["trainable"] = plan.parameters.trainable;
    out["params"] = plan.parameters.total;
    for (int step = 0; step < args.steps; ++step) {
      const auto start = Clock::now();
      const double cpu = cpu_seconds();
      const StepMetrics m = trainer.optimizer_step({{&record}});
      if (cuda) torch::cuda::synchronize();
      out["step_s"].push_back(std::chrono::duration<double>(Clock::now() - start).count());
      out["step_cpu_s"].push_back(cpu_seconds() - cpu);
      out["losses"].push_back(m.values.at("loss"));
    }
    out["rss_before_load_mib"] = rss_before_load;
    out["rss_after_load_mib"] = rss_after_load;
    out["peak_rss_mib"] = peak_rss_mib();
    if (cuda) out["gpu_peak_mib"] = cuda_allocated_mib(args.device).second;
    fs::remove_all(out_dir);
    std::cout << out.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cout << nlohmann::json{{"error", e.what()}}.dump() << std::endl;
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) { return run_cli("bench_lora", argc, argv, bench_lora); }
