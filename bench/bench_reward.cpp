// Reward scoring benchmark, C++ side: creates a reward backend from a JSON config (through the registry, as
// reward-score does) and scores a JSONL file of requests (reward-score's input format) again and again.
// Driven by bench_reward.py, which runs transformers + TRL's value head on the same checkpoint and files.
//
//   bench_reward --config JSON|FILE --input FILE.jsonl [--batch-size N] [--threads N] [--warmup N] [--repeat N]
//                [--serve]
//
// One pass = the whole pipeline for every line of the file: read + parse the JSONL, then backend->score() on
// consecutive groups of --batch-size requests (image decode, preprocessing, tokenization, forward, value head).
// Relative image paths resolve against the JSONL file's directory.
//
// Default: --warmup untimed passes, then --repeat timed ones, one JSON line each
//   {"pass": i, "items": n, "s": seconds, "cpu_s": process CPU seconds, "items_per_s": n / s}
// and a last line {"items", "seconds" (median), "items_per_s" (from the median), "errors", "scores": [...]}.
// --serve: print {"ready": ...}, then answer each stdin line "score" with one pass's JSON line (with "scores"),
// until "quit" or end of input (so a driver can alternate this binary with other runs).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
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

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "adapters/common/cli.h"
#include "adapters/common/mapped_file.h"
#include "plugin/registry.h"
#include "reward/backends.h"
#include "reward/score_jsonl.h"
#include "bench/bench_support.h"
#include "plugin/error.h"

using namespace vlreward;
using namespace vlreward::bench;

namespace po = boost::program_options;

namespace {

struct Args {
  std::string config, input;
  int64_t batch_size = 8;
  int threads = 1;
  int warmup = 1, repeat = 3;
  bool serve = false;
};

// The options, or nothing when --help was asked.
std::optional<Args> parse_args(int argc, char** argv) {
  Args a;
  po::options_description options("bench_reward options");
  options.add_options()
      ("help,h", "show this help")
      ("config", po::value(&a.config)->required(), "backend config: JSON text or a file")
      ("input", po::value(&a.input)->required(), "reward-score JSONL")
      ("batch-size", po::value(&a.batch_size)->default_value(8), "requests per backend call")
      ("threads", po::value(&a.threads)->default_value(1), "intra-op threads")
      ("warmup", po::value(&a.warmup)->default_value(1), "untimed passes")
      ("repeat", po::value(&a.repeat)->default_value(3), "timed passes")
      ("serve", po::bool_switch(&a.serve), "read commands on stdin");
  po::variables_map vm;
  if (!parse_command_line(argc, argv, options, vm, "")) return std::nullopt;
  if (a.batch_size < 1 || a.threads < 1 || a.warmup < 0 || a.repeat < 1)
    throw InputError("command line",
                     "--batch-size, --threads and --repeat must be positive, --warmup non-negative");
  return a;
}

// Inline JSON when it looks like an object, otherwise a file holding it.
nlohmann::json load_config(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  const bool inline_json = first != std::string::npos && text[first] == '{';
  try {
    return nlohmann::json::parse(inline_json ? text : read_file(text));
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error((inline_json ? std::string("--config") : text) + ": invalid JSON: " + e.what());
  }
}

struct Pass {
  double s = 0, cpu_s = 0;
  std::vector<double> scores;  // NaN for failed items
  std::vector<std::string> errors;
};

Pass score_file(RewardBackend& backend, const Args& args) {
  Pass pass;
  const auto start = Clock::now();
  const double cpu_start = cpu_seconds();
  const std::string image_root = std::filesystem::path(args.input).parent_path().string();
  std::ifstream in(args.input);
  if (!in) throw std::runtime_error(args.input + ": cannot open");
  std::vector<RewardRequest> batch;
  auto flush = [&] {
    if (batch.empty()) return;
    for (auto& result : backend.score(batch)) {
      pass.scores.push_back(result.ok() ? *result.score : std::nan(""));
      if (!result.ok()) pass.errors.push_back(result.error);
    }
    batch.clear();
  };
  int64_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    batch.push_back(parse_score_line(line, line_number, image_root));
    if (static_cast<int64_t>(batch.size()) >= args.batch_size) flush();
  }
  flush();
  pass.s = std::chrono::duration<double>(Clock::now() - start).count();
  pass.cpu_s = cpu_seconds() - cpu_start;
  return pass;
}

nlohmann::json pass_json(const Pass& pass) {
  const auto n = static_cast<double>(pass.scores.size());
  return {{"items", pass.scores.size()}, {"s", pass.s}, {"cpu_s", pass.cpu_s}, {"items_per_s", n / pass.s},
          {"errors", pass.errors}};
}

}  // namespace

int bench_reward(int argc, char** argv) {
  const auto parsed = parse_args(argc, argv);
  if (!parsed) return 0;
  const Args& args = *parsed;
  at::set_num_threads(args.threads);
  try {
    RewardRegistry registry;
    register_reward_backends(registry);
    auto backend = registry.create(load_config(args.config));

    if (args.serve) {
      std::cout << nlohmann::json{{"ready", true}, {"backend", backend->name()}, {"threads", at::get_num_threads()}}
                       .dump()
                << std::endl;
      for (std::string line; std::getline(std::cin, line);) {
        if (line == "quit") break;
        nlohmann::json out;
        if (line == "score") {
          const Pass pass = score_file(*backend, args);
          out = pass_json(pass);
          out["scores"] = pass.scores;
        } else {
          out["error"] = "unknown command \"" + line + "\" (score | quit)";
        }
        std::cout << out.dump() << std::endl;
      }
      return 0;
    }

    for (int i = 0; i < args.warmup; ++i) score_file(*backend, args);
    std::vector<double> seconds;
    Pass last;
    for (int i = 0; i < args.repeat; ++i) {
      last = score_file(*backend, args);
      seconds.push_back(last.s);
      auto out = pass_json(last);
      out["pass"] = i + 1;
      out.erase("errors");
      std::cout << out.dump() << std::endl;
    }
    std::sort(seconds.begin(), seconds.end());
    const double median = seconds[seconds.size() / 2];  // odd --repeat gives the true median
    const auto n = static_cast<double>(last.scores.size());
    std::cout << nlohmann::json{{"items", last.scores.size()}, {"seconds", median}, {"items_per_s", n / median},
                                {"errors", last.errors}, {"scores", last.scores}}
                     .dump()
              << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bench_reward: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) { return run_cli("bench_reward", argc, argv, bench_reward); }
