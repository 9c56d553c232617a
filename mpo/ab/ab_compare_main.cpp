// ab-compare: compare two policies' responses to the same prompts with a reward backend (and reference answers).
//   ab-compare --policy-a DIR --policy-b DIR --prompts FILE (--reward CONFIG | --model DIR) --output-dir DIR
// Writes DIR/ab_compare.json and DIR/report.html. Exit code: 0 compared (per-item reward errors are reported, not
// fatal), 2 usage/config/input error (the message names the option, file or line), 1 other failure.
#include <cstdint>
#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>

#include "adapters/common/error.h"
#include "mpo/ab/compare.h"
#include "adapters/common/cli.h"
#include "reward/cli_common.h"

namespace po = boost::program_options;

static int ab_compare(int argc, char** argv) {
  po::options_description options(
      "ab-compare: generate from two policies on a prompt set, score with a reward, report win rate and accuracy\n"
      "Usage: ab-compare --policy-a DIR --policy-b DIR --prompts FILE (--reward CONFIG | --model DIR) --output-dir DIR\n"
      "Options");
  options.add_options()
      ("help,h", "show this help")
      ("policy-a", po::value<std::string>()->required(), "policy A: Hugging Face Qwen2.5-VL checkpoint directory")
      ("policy-b", po::value<std::string>()->required(), "policy B: Hugging Face Qwen2.5-VL checkpoint directory")
      ("label-a", po::value<std::string>()->default_value("A"), "name of policy A in the reports")
      ("label-b", po::value<std::string>()->default_value("B"), "name of policy B in the reports")
      ("prompts", po::value<std::string>()->required(),
       "prompt JSONL: {id, images, question, system?, reference?}")
      ("image-root", po::value<std::string>(), "directory for relative image paths (default: the prompt file's)")
      ("output-dir,o", po::value<std::string>()->required(), "where ab_compare.json and report.html are written")
      ("max-new-tokens", po::value<int64_t>()->default_value(256), "response length limit")
      ("temperature", po::value<double>()->default_value(0.0), "0: greedy decoding (default); > 0: sample")
      ("top-p", po::value<double>(), "nucleus sampling (with --temperature > 0)")
      ("top-k", po::value<int64_t>(), "top-k sampling (with --temperature > 0)")
      ("seed", po::value<uint64_t>()->default_value(0), "sampling seed (the same draws for both policies)")
      ("batch-size", po::value<int64_t>()->default_value(8), "prompts per generate() call")
      ("reward-batch-size", po::value<int64_t>()->default_value(8), "responses per reward backend call")
      ("min-pixels", po::value<int64_t>(), "image processor min_pixels (default: each checkpoint's)")
      ("max-pixels", po::value<int64_t>(), "image processor max_pixels (default: each checkpoint's)")
      ("policy-dtype", po::value<std::string>()->default_value("float32"), "policy weights: float32 or bfloat16")
      ("policy-device", po::value<std::string>()->default_value("cpu"), "policy device: cpu, cuda, cuda:N")
      ("tie-epsilon", po::value<double>()->default_value(0.0), "|reward B - reward A| <= this is a tie")
      ("bootstrap", po::value<int64_t>()->default_value(10000), "bootstrap resamples for the confidence intervals")
      ("bootstrap-seed", po::value<uint64_t>()->default_value(0), "bootstrap seed")
      ("report-rows", po::value<int64_t>()->default_value(50), "prompts shown in the HTML table (all are in the JSON)")
      ("no-progress", "no progress bars");
  po::options_description reward_options("Reward (as reward-score; --model/--dtype/--device refer to the reward model)");
  vlreward::add_reward_options(reward_options);
  options.add(reward_options);
  po::variables_map vm;
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;

  vlreward::mpo::AbCompareOptions o;
  o.policy_a = vm["policy-a"].as<std::string>();
  o.policy_b = vm["policy-b"].as<std::string>();
  o.label_a = vm["label-a"].as<std::string>();
  o.label_b = vm["label-b"].as<std::string>();
  o.prompts_path = vm["prompts"].as<std::string>();
  if (vm.count("image-root")) o.image_root = vm["image-root"].as<std::string>();
  auto& s = o.rollout.sampling;
  s.max_new_tokens = vm["max-new-tokens"].as<int64_t>();
  const double temperature = vm["temperature"].as<double>();
  s.greedy = temperature == 0;
  // Which options were given is known only here: top-p/top-k with greedy decoding would be silently ignored.
  if (s.greedy && (vm.count("top-p") || vm.count("top-k")))
    throw po::error("--top-p/--top-k need --temperature > 0 (the default, 0, is greedy decoding)");
  if (!s.greedy) s.temperature = temperature;
  if (vm.count("top-p")) s.top_p = vm["top-p"].as<double>();
  if (vm.count("top-k")) s.top_k = vm["top-k"].as<int64_t>();
  s.seed = vm["seed"].as<uint64_t>();
  o.rollout.batch_size = vm["batch-size"].as<int64_t>();
  o.reward_batch_size = vm["reward-batch-size"].as<int64_t>();
  if (vm.count("min-pixels")) o.processor.min_pixels = vm["min-pixels"].as<int64_t>();
  if (vm.count("max-pixels")) o.processor.max_pixels = vm["max-pixels"].as<int64_t>();
  o.dtype = vm["policy-dtype"].as<std::string>();
  o.device = vm["policy-device"].as<std::string>();
  o.tie_epsilon = vm["tie-epsilon"].as<double>();
  o.bootstrap.resamples = vm["bootstrap"].as<int64_t>();
  o.bootstrap.seed = vm["bootstrap-seed"].as<uint64_t>();
  const int64_t report_rows = vm["report-rows"].as<int64_t>();
  if (report_rows < 0) throw vlreward::InputError("--report-rows", "must be >= 0");
  o.progress = vm.count("no-progress") == 0;
  vlreward::mpo::check_ab_compare_options(o);  // before the reward backend is built
  const std::string output_dir = vm["output-dir"].as<std::string>();

  const auto reward_config = vlreward::reward_config_from(vm);
  const auto result = vlreward::mpo::run_ab_compare(o, reward_config);
  const auto [json_path, html_path] = vlreward::mpo::write_reports(result, output_dir, report_rows);
  std::cout << vlreward::mpo::console_summary(result) << std::flush;  // before the stderr lines below
  if (result.reward_errors > 0)
    std::fprintf(stderr, "ab-compare: %lld prompt(s) left out because the reward failed (errors are in %s)\n",
                 static_cast<long long>(result.reward_errors), json_path.c_str());
  std::fprintf(stderr, "ab-compare: wrote %s and %s\n", json_path.c_str(), html_path.c_str());
  return 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("ab-compare", argc, argv, ab_compare); }
