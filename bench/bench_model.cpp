// Qwen2.5-VL model benchmark, C++ side. Driven by bench_model.py, which builds the same model in transformers,
// writes the checkpoint and the inputs, and alternates runs of both sides (so background load hits both alike).
//
//   bench_model --checkpoint DIR --inputs FILE [--threads N] [--new-tokens N]
//
// FILE is a safetensors file with <case>.input_ids [B,S] int64, <case>.pixel_values [P, C*T*p*p] float32 and
// <case>.image_grid_thw [n_images, 3] int64 for each case. After loading, the binary prints {"ready": ...} and
// then serves one command per stdin line, answering each with one JSON line on stdout:
//   prefill <case>   forward over the prompt (images included) filling a fresh KV cache, then the last
//                    position's logits (what generation needs)            -> {"s": seconds, "cpu_s": ...}
//   decode <case>    untimed prefill, then new_tokens - 1 timed cached decode steps, greedy (argmax)
//                                                                         -> {"s": seconds, "tokens": [[...]]}
//   generate <case>  generate(): prefill + new_tokens - 1 decode steps with the greedy sampler, no stop ids
//                                                                         -> {"s": seconds, "tokens": [[...]]}
//   quit
// "s" is wall-clock time, "cpu_s" the process CPU time over the same span.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include <nlohmann/json.hpp>

#include "adapters/common/cli.h"
#include "adapters/hf/safetensors.h"
#include "adapters/hf/safetensors_torch.h"
#include "adapters/qwen2_5_vl/generate.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "bench/bench_support.h"
#include "plugin/error.h"

using namespace vlreward;
using namespace vlreward::bench;
using namespace vlreward::qwen;

namespace po = boost::program_options;

namespace {

struct Args {
  std::string checkpoint, inputs;
  int threads = 1;
  int64_t new_tokens = 64;
};

// The options, or nothing when --help was asked.
std::optional<Args> parse_args(int argc, char** argv) {
  Args a;
  po::options_description options("bench_model options");
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&a.checkpoint)->required(), "HF checkpoint directory")
      ("inputs", po::value(&a.inputs)->required(), "inputs file written by bench_model.py")
      ("threads", po::value(&a.threads)->default_value(1), "intra-op threads")
      ("new-tokens", po::value(&a.new_tokens)->default_value(64), "tokens to decode");
  po::variables_map vm;
  if (!parse_command_line(argc, argv, options, vm, "Then commands on stdin: prefill|decode|generate <case>, quit."))
    return std::nullopt;
  if (a.threads < 1 || a.new_tokens < 1)
    throw InputError("command line", "--threads and --new-tokens must be positive");
  return a;
}

// Every case in the inputs file, keyed by the prefix before ".input_ids".
std::map<std::string, ModelInput> read_inputs(const std::string& path) {
  auto file = SafetensorsFile::open(path);
  std::map<std::string, ModelInput> cases;
  const std::string suffix = ".input_ids";
  for (const auto& name : file.names()) {
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string key = name.substr(0, name.size() - suffix.size());
    auto get = [&](const std::string& what) { return to_tensor(file.get(key + "." + what)).clone(); };
    ModelInput in;
    in.input_ids = get("input_ids");
    in.attention_mask = torch::ones_like(in.input_ids);
    in.pixel_values = get("pixel_values");
    auto grid = get("image_grid_thw").to(torch::kInt64).contiguous();
    for (int64_t i = 0; i < grid.size(0); ++i) {
      const int64_t* row = grid.data_ptr<int64_t>() + 3 * i;
      in.image_grids.push_back({row[0], row[1], row[2]});
    }
    cases.emplace(key, std::move(in));
  }
  return cases;
}

// What generation's first step does: fill the cache over the whole prompt, logits at the last position only.
torch::Tensor prefill(Qwen2_5_VLModel& model, const ModelInput& in, KVCache& cache) {
  ForwardOptions options;
  options.logits = false;
  auto out = model->forward(in, options, &cache);
  const int64_t S = in.input_ids.size(1);
  return model->lm_logits(out.last_hidden_state.narrow(1, S - 1, 1));
}

std::vector<std::vector<int64_t>> rows_of(const std::vector<torch::Tensor>& steps) {
  auto all = torch::cat(steps, 1).contiguous();  // [B, steps]
  std::vector<std::vector<int64_t>> rows;
  for (int64_t b = 0; b < all.size(0); ++b)
    rows.emplace_back(all[b].data_ptr<int64_t>(), all[b].data_ptr<int64_t>() + all.size(1));
  return rows;
}

nlohmann::json run(Qwen2_5_VLModel& model, const std::string& what, const ModelInput& in, int64_t new_tokens,
                   int64_t pad_id) {
  torch::InferenceMode inference;
  const int64_t B = in.input_ids.size(0), S = in.input_ids.size(1);
  nlohmann::json out;
  if (what == "prefill") {
    const auto start = Clock::now();
    const double cpu_start = cpu_seconds();
    KVCache cache = model->model->make_cache(B, S + new_tokens);
    prefill(model, in, cache);
    out["s"] = seconds_since(start);
    out["cpu_s"] = cpu_seconds() - cpu_start;
  } else if (what == "decode") {
    KVCache cache = model->model->make_cache(B, S + new_tokens);
    std::vector<torch::Tensor> tokens{prefill(model, in, cache).argmax(-1)};  // [B, 1]
    const auto start = Clock::now();
    const double cpu_start = cpu_seconds();
    for (int64_t step = 1; step < new_tokens; ++step) tokens.push_back(model->decode(tokens.back(), cache).argmax(-1));
    out["s"] = seconds_since(start);
    out["cpu_s"] = cpu_seconds() - cpu_start;
    out["tokens"] = rows_of(tokens);
  } else if (what == "generate") {
    SamplingParams greedy;
    greedy.max_new_tokens = new_tokens;
    const auto start = Clock::now();
    const double cpu_start = cpu_seconds();
    auto results = generate(model, in, {greedy}, /*stop_ids=*/{}, pad_id);
    out["s"] = seconds_since(start);
    out["cpu_s"] = cpu_seconds() - cpu_start;
    out["tokens"] = nlohmann::json::array();
    for (const auto& r : results) out["tokens"].push_back(r.tokens);
  } else {
    out["error"] = "unknown command " + what;
  }
  return out;
}

}  // namespace

int bench_model(int argc, char** argv) {
  const auto parsed = parse_args(argc, argv);
  if (!parsed) return 0;
  const Args& args = *parsed;
  at::set_num_threads(args.threads);
  try {
    auto pretrained = load_pretrained(args.checkpoint, torch::kFloat32, torch::kCPU);
    const auto& config = pretrained.config;
    auto model = pretrained.model;
    model->eval();
    const auto cases = read_inputs(args.inputs);
    const int64_t pad = config.text.pad_token_id.value_or(0);
    nlohmann::json ready;
    ready["ready"] = true;
    ready["threads"] = at::get_num_threads();
    ready["cases"] = nlohmann::json::array();
    for (const auto& c : cases) ready["cases"].push_back(c.first);
    std::cout << ready.dump() << std::endl;

    std::string line;
    while (std::getline(std::cin, line)) {
      std::istringstream words(line);
      std::string what, name;
      words >> what >> name;
      if (what == "quit") break;
      nlohmann::json out;
      auto it = cases.find(name);
      if (it == cases.end()) out["error"] = "no case '" + name + "' in " + args.inputs;
      else out = run(model, what, it->second, args.new_tokens, pad);
      std::cout << out.dump() << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) { return run_cli("bench_model", argc, argv, bench_model); }
