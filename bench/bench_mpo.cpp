// MPO optimizer-step benchmark, C++ side. Driven by bench_mpo.py, which runs TRL 0.28's DPOTrainer on the same
// checkpoint, pairs and config in a separate process and prints the ratios.
//
//   bench_mpo --checkpoint DIR --pairs FILE.jsonl [--steps N] [--threads N]
//
// Tokenizes the pairs once (tokenize_pair; the whole file is one batch), loads the policy and a frozen reference
// copy (float32), then runs N optimizer steps on that batch exactly as tests/test_mpo_step.cpp does:
// policy forward -> completion log-probs -> reference forward (no grad) -> MPO loss (sigmoid 0.8, bco_pair 0.2,
// sft 1.0, beta 0.1) -> backward -> clip_grad_norm_(1.0) -> AdamW (lr 1e-3, weight decay 0.05 except biases and
// norm weights) -> zero_grad. Prints one JSON line: per-step wall and CPU seconds and losses, the resident set
// after loading and the peak resident set of the process (VmHWM), both in MiB.
#include <cstdint>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include <nlohmann/json.hpp>

#include "adapters/common/cli.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/hf/qwen2_5_vl_processor.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/optimizer.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "mpo/logprobs.h"
#include "mpo/losses.h"
#include "mpo/pair_tokenization.h"
#include "mpo/running_moments.h"
#include "reward/preference_data.h"
#include "bench/bench_support.h"
#include "plugin/error.h"

using namespace vlreward;
using namespace vlreward::bench;
using namespace vlreward::mpo;

namespace po = boost::program_options;

namespace {

struct Args {
  std::string checkpoint, pairs;
  int steps = 4;
  int threads = 1;
};

// The options, or nothing when --help was asked.
std::optional<Args> parse_args(int argc, char** argv) {
  Args a;
  po::options_description options("bench_mpo options");
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&a.checkpoint)->required(), "HF checkpoint directory (policy and reference)")
      ("pairs", po::value(&a.pairs)->required(), "preference pairs JSONL")
      ("steps", po::value(&a.steps)->default_value(4), "timed optimizer steps")
      ("threads", po::value(&a.threads)->default_value(1), "intra-op threads");
  po::variables_map vm;
  if (!parse_command_line(argc, argv, options, vm, "")) return std::nullopt;
  if (a.steps < 1 || a.threads < 1) throw InputError("command line", "--steps and --threads must be positive");
  return a;
}

}  // namespace

int bench_mpo(int argc, char** argv) {
  const auto parsed = parse_args(argc, argv);
  if (!parsed) return 0;
  const Args& args = *parsed;
  at::set_num_threads(args.threads);
  try {
    const auto processor = Qwen2_5_VLProcessor::from_directory(args.checkpoint);
    std::vector<PreferencePairTokens> tokens;
    std::vector<float> pixels;
    std::vector<qwen::GridTHW> grids;
    int64_t rows = 0, row_size = 0;
    // Image paths are relative to the pairs file.
    const std::string image_root = std::filesystem::path(args.pairs).parent_path().string();
    for (const auto& e : read_preference_jsonl(args.pairs, image_root)) {
      auto t = tokenize_pair(processor, e, args.pairs + ": " + e.id);
      tokens.push_back(t.tokens);
      pixels.insert(pixels.end(), t.images.pixel_values.begin(), t.images.pixel_values.end());
      grids.insert(grids.end(), t.images.grid_thw.begin(), t.images.grid_thw.end());
      rows += t.images.rows;
      row_size = t.images.row_size;
    }
    const auto pixel_values = torch::from_blob(pixels.data(), {rows, row_size}, torch::kFloat32).clone();
    const auto batch = build_concatenated_batch(tokens, processor.pad_token_id(), pixel_values, grids);

    auto load = [&] { return qwen::load_pretrained(args.checkpoint, torch::kFloat32, torch::kCPU).model; };
    auto policy = load();
    auto reference = load();
    policy->train();
    reference->eval();
    for (auto& p : reference->parameters()) p.set_requires_grad(false);
    const double rss_after_load = current_rss_mib();

    // AdamW lr 1e-3, weight decay 0.05 except biases and norm weights, every parameter trains.
    qwen::NamedParameters trainable;
    for (const auto& item : policy->named_parameters()) trainable.emplace_back(item.key(), item.value());
    auto optimizer = qwen::make_adamw(trainable, {1e-3, 0.9, 0.999, 1e-8, 0.05});
    const auto params = policy->parameters();
    const LossConfig loss_config = LossConfig::mpo();
    RunningMoments running;

    nlohmann::json out;
    out["params"] = 0;
    for (const auto& p : params) out["params"] = out["params"].get<int64_t>() + p.numel();
    out["tokens"] = batch.input.attention_mask.sum().item<int64_t>();
    out["seq_len"] = batch.input.input_ids.size(1);
    out["patches"] = rows;
    for (int step = 0; step < args.steps; ++step) {
      const auto start = Clock::now();
      const double cpu = cpu_seconds();
      const auto logits = policy->forward(batch.input).logits;
      const auto lp = completion_logps(logits, batch.input.input_ids, batch.completion_mask);
      const auto pol = split_pairs(lp.sequence_logps, batch.num_pairs);
      const auto nll = sft_nll(lp, batch.input.input_ids, batch.num_pairs, SftTokens::kTrl028IgnoreIdZero);
      PairLogps ref;
      {
        torch::NoGradGuard no_grad;
        const auto ref_logits = reference->forward(batch.input).logits;
        ref = split_pairs(completion_logps(ref_logits, batch.input.input_ids, batch.completion_mask).sequence_logps,
                          batch.num_pairs);
      }
      auto result = compute_mpo_loss(loss_config, {pol.chosen, pol.rejected, ref.chosen, ref.rejected}, nll, &running);
      result.loss.backward();
      qwen::clip_and_step(*optimizer, trainable, 1.0, 1e-3);
      qwen::clear_gradients(trainable);
      out["step_s"].push_back(std::chrono::duration<double>(Clock::now() - start).count());
      out["step_cpu_s"].push_back(cpu_seconds() - cpu);
      out["losses"].push_back(result.loss.item<double>());
    }
    out["rss_after_load_mib"] = rss_after_load;
    out["peak_rss_mib"] = peak_rss_mib();
    std::cout << out.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cout << nlohmann::json{{"error", e.what()}}.dump() << std::endl;
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) { return run_cli("bench_mpo", argc, argv, bench_mpo); }
