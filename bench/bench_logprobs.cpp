// Completion log-probs at a 7B vocabulary, C++ side: the whole batch's logits (completion_logps) or chunks of
// positions through lm_head (chunked_completion_logps), forward and backward. Driven by bench_logprobs.py, which
// runs TRL 0.28's way (the model's full logits, then trl's selective_log_softmax) in another process.
//
//   bench_logprobs --mode whole|chunked [--positions 4096] [--hidden 3584] [--vocab 152064] [--chunk 256]
//                  [--completion 1.0] [--threads N]
//
// hidden [1, positions, hidden] (requires grad) and lm_head [vocab, hidden] in bf16, as a LoRA run's frozen head;
// the last `completion` fraction of the positions are completion tokens. Prints one JSON line: the seconds of
// forward + backward, the resident set before the computation and its peak (VmHWM, reset once the inputs exist), in
// MiB.
#include <cstdint>

#include <chrono>
#include <iostream>
#include <optional>
#include <string>

#include <boost/program_options.hpp>

#include <nlohmann/json.hpp>

#include "adapters/common/cli.h"
#include "bench/bench_support.h"
#include "mpo/logprobs.h"
#include "plugin/error.h"

using namespace vlreward;
using namespace vlreward::bench;
namespace po = boost::program_options;

int bench_logprobs(int argc, char** argv) {
  std::string mode;
  int64_t positions = 4096, hidden_size = 3584, vocab = 152064, chunk = 256;
  double completion = 1.0;
  int threads = 1;
  po::options_description options("bench_logprobs options");
  options.add_options()
      ("help,h", "show this help")
      ("mode", po::value(&mode)->required(), "whole (the batch's logits) or chunked")
      ("positions", po::value(&positions)->default_value(4096), "sequence positions")
      ("hidden", po::value(&hidden_size)->default_value(3584), "hidden size")
      ("vocab", po::value(&vocab)->default_value(152064), "vocabulary")
      ("chunk", po::value(&chunk)->default_value(256), "positions per chunk (chunked)")
      ("completion", po::value(&completion)->default_value(1.0), "fraction of positions that are completion tokens")
      ("threads", po::value(&threads)->default_value(1), "intra-op threads");
  po::variables_map vm;
  if (!parse_command_line(argc, argv, options, vm, "")) return 0;
  if (mode != "whole" && mode != "chunked") throw InputError("--mode", "must be whole or chunked");
  at::set_num_threads(threads);
  torch::manual_seed(0);
  const auto weight = torch::randn({vocab, hidden_size}, torch::kBFloat16).mul_(0.02);
  const auto hidden = torch::randn({1, positions, hidden_size}, torch::kBFloat16).requires_grad_();
  const auto ids = torch::randint(0, vocab, {1, positions}, torch::kInt64);
  auto mask = torch::zeros({1, positions}, torch::kInt64);
  mask.slice(1, positions - static_cast<int64_t>(completion * static_cast<double>(positions))).fill_(1);
  reset_peak_rss();  // the peak of the computation, not of making its inputs
  const double rss_before = current_rss_mib();
  const auto start = Clock::now();
  const auto lp = mode == "whole" ? mpo::completion_logps(at::linear(hidden, weight), ids, mask)
                                  : mpo::chunked_completion_logps(hidden, weight, ids, mask, chunk);
  lp.sequence_logps.sum().backward();
  const double seconds = seconds_since(start);
  std::cout << nlohmann::json{{"mode", mode}, {"seconds", seconds}, {"rss_before_mib", rss_before},
                              {"peak_rss_mib", peak_rss_mib()}, {"logp", lp.sequence_logps.item<double>()}}
                   .dump()
            << std::endl;
  return 0;
}

int main(int argc, char** argv) { return run_cli("bench_logprobs", argc, argv, bench_logprobs); }
