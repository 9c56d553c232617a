// reward-score: score JSONL (id, images, question, response[, reference]) with any reward backend.
// Exit code: 0 every line scored, 1 some lines failed (see their error records), 2 usage/config error.
#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include "reward/cli_common.h"
#include "reward/score_jsonl.h"

namespace po = boost::program_options;

static int reward_score(int argc, char** argv) {
  po::options_description options("reward-score: score JSONL requests with a reward backend\nOptions");
  options.add_options()
      ("help,h", "show this help")
      ("input,i", po::value<std::string>()->required(), "input JSONL: {id, images, question, response, reference?}")
      ("output,o", po::value<std::string>()->required(), "output JSONL: {id, score} or {id, error}")
      ("batch-size", po::value<int64_t>()->default_value(8), "requests per backend call")
      ("image-root", po::value<std::string>(), "directory for relative image paths (default: the input's)")
      ("max-image-bytes", po::value<uint64_t>()->default_value(vlreward::kDefaultMaxImageFileBytes),
       "largest image file; a line naming a larger one gets an error record (its size is checked before reading)")
      ("resume", "continue an interrupted run: keep the output, skip ids already in it")
      ("overwrite", "replace an existing output")
      ("no-progress", "no progress bar");
  vlreward::add_reward_options(options);
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, options), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  vlreward::ScoreJsonlOptions o;
  o.input_path = vm["input"].as<std::string>();
  o.output_path = vm["output"].as<std::string>();
  o.batch_size = vm["batch-size"].as<int64_t>();
  if (o.batch_size <= 0) throw po::error("--batch-size must be positive");
  if (vm.count("image-root")) o.image_root = vm["image-root"].as<std::string>();
  o.max_image_bytes = vm["max-image-bytes"].as<uint64_t>();
  if (o.max_image_bytes == 0 || o.max_image_bytes > vlreward::kMaxImageFileBytes)
    throw po::error(fmt::format("--max-image-bytes must be in [1, {}]", vlreward::kMaxImageFileBytes));
  o.resume = vm.count("resume") > 0;
  o.overwrite = vm.count("overwrite") > 0;
  o.progress = vm.count("no-progress") == 0;
  auto backend = vlreward::make_reward_backend(vlreward::reward_config_from(vm));
  const auto summary = vlreward::score_jsonl(*backend, o);
  std::fprintf(stderr, "reward-score: %lld scored, %lld failed, %lld already done -> %s\n",
               static_cast<long long>(summary.scored), static_cast<long long>(summary.failed),
               static_cast<long long>(summary.skipped), o.output_path.c_str());
  return summary.failed > 0 ? 1 : 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("reward-score", argc, argv, reward_score); }
