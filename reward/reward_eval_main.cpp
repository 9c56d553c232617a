// reward-eval: VL-RewardBench accuracy of a reward backend (per category, overall, macro average as cal.py).
// Exit code: 0 every pair scored, 1 some pairs failed (listed in the output), 2 usage/config/input error.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "adapters/common/atomic_file.h"
#include "adapters/common/cli.h"
#include "reward/backends.h"
#include "reward/cli_common.h"
#include "reward/vl_rewardbench.h"

namespace po = boost::program_options;

static int reward_eval(int argc, char** argv) {
  po::options_description options("reward-eval: evaluate a reward backend on VL-RewardBench JSONL\nOptions");
  options.add_options()
      ("help,h", "show this help")
      ("data,d", po::value<std::string>()->required(),
       "pairs JSONL: {id, query, image, response: [a, b], human_ranking: [0,1]|[1,0], query_source?}")
      ("output,o", po::value<std::string>(), "write the results JSON here (atomically)")
      ("batch-size", po::value<int64_t>()->default_value(8), "requests per backend call (2 per pair)")
      ("image-root", po::value<std::string>(), "directory for relative image paths (default: the data file's)")
      ("category-from", po::value<std::string>()->default_value("id"),
       "id (cal.py: the id prefix) or query_source")
      ("no-progress", "no progress bar");
  vlreward::add_reward_options(options);
  po::variables_map vm;
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;

  const auto data = vm["data"].as<std::string>();
  const auto category_from = vm["category-from"].as<std::string>();
  if (category_from != "id" && category_from != "query_source")
    throw po::error("--category-from must be id or query_source, got " + category_from);
  vlreward::VlrbEvalOptions o;
  o.batch_size = vm["batch-size"].as<int64_t>();
  if (o.batch_size <= 0) throw po::error("--batch-size must be positive");
  o.image_root = vm.count("image-root") ? vm["image-root"].as<std::string>()
                                        : std::filesystem::path(data).parent_path().string();
  o.progress = vm.count("no-progress") == 0;

  auto pairs = vlreward::read_vlrb_file(data, category_from == "id" ? vlreward::VlrbCategorySource::kId
                                                                    : vlreward::VlrbCategorySource::kQuerySource);
  const auto config = vlreward::reward_config_from(vm);
  auto backend = vlreward::make_reward_backend(config);
  const auto evaluation = vlreward::evaluate_vlrb(*backend, std::move(pairs), o);

  std::cout << vlreward::format_vlrb_table(evaluation.metrics);
  if (vm.count("output")) {
    auto results = vlreward::vlrb_results_json(evaluation);
    results["data"] = data;
    results["backend"] = backend->name();
    results["reward_config"] = config;
    results["category_from"] = category_from;
    vlreward::write_file_atomic(vm["output"].as<std::string>(), results.dump(1) + "\n");
  }
  if (evaluation.failed() > 0) {
    std::fprintf(stderr, "reward-eval: %lld of %zu pairs could not be scored (see \"pairs\" in the output)\n",
                 static_cast<long long>(evaluation.failed()), evaluation.pairs.size());
    int shown = 0;
    for (size_t i = 0; i < evaluation.pairs.size() && shown < 20; ++i)
      if (!evaluation.scores[i] && ++shown)
        std::fprintf(stderr, "  line %lld (%s): %s\n", static_cast<long long>(evaluation.pairs[i].line),
                     evaluation.pairs[i].id.c_str(), evaluation.errors[i].c_str());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("reward-eval", argc, argv, reward_eval); }
