// reward-score: score JSONL (id, images, question, response[, reference]) with any reward backend.
// Exit code: 0 every input line has a score record; 1 every line has a record and some are errors (this run's or,
// with --resume, earlier ones); 2 usage, configuration or input-file error (nothing written); 3 the run stopped
// before every line had a record (the records written are kept: --resume continues).
#include <cstdint>
#include <cstdio>

#include <fmt/format.h>

#include "adapters/common/cli.h"
#include "reward/backends.h"
#include "reward/cli_common.h"
#include "reward/score_jsonl.h"

namespace po = boost::program_options;

static int reward_score(int argc, char** argv) {
  po::options_description options(
      "reward-score: score JSONL requests with a reward backend\n"
      "Exit code: 0 every input line has a score record; 1 every line has a record, some are errors (with\n"
      "--resume, error records already in the output count too); 2 usage, configuration or input-file error;\n"
      "3 the run stopped before every line had a record (--resume continues it)\nOptions");
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
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;
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
  vlreward::ScoreJsonlSummary summary;
  try {
    summary = vlreward::score_jsonl(*backend, o);
  } catch (const vlreward::ScoreRunIncomplete& e) {
    std::fprintf(stderr, "reward-score: %s\n", e.what());
    return 3;
  }
  std::fprintf(stderr, "reward-score: %lld scored, %lld failed, %lld already done (%lld of them errors) -> %s\n",
               static_cast<long long>(summary.scored), static_cast<long long>(summary.failed),
               static_cast<long long>(summary.skipped), static_cast<long long>(summary.skipped_failed),
               o.output_path.c_str());
  return summary.all_failed() > 0 ? 1 : 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("reward-score", argc, argv, reward_score); }
