// Qwen2.5-VL model benchmark, C++ side. Driven by bench_model.py, which builds the same model in transformers,
// writes the checkpoint and the inputs, and compares timings and greedy tokens.
//
//   bench_model --checkpoint DIR --inputs FILE --case NAME [--threads N] [--new-tokens N] [--warmup N] [--repeat N]
//
// FILE is a safetensors file with NAME.input_ids [B,S] int64, NAME.pixel_values [P, C*T*p*p] float32 and
// NAME.image_grid_thw [n_images, 3] int64. Prints one JSON object on stdout:
//   prefill_s: seconds per repeat of forward over the prompt (images included) filling the KV cache, plus the
//              last position's logits (what generation needs);
//   generate_s: seconds per repeat of generate() (prefill + new_tokens - 1 cached decode steps, greedy);
//   tokens: the greedy tokens of the last generate() run, one list per row.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/hf/safetensors.h"
#include "adapters/hf/safetensors_torch.h"
#include "adapters/qwen2_5_vl/generate.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/weights.h"

using namespace vlreward;
using namespace vlreward::qwen;

namespace {

struct Args {
  std::string checkpoint, inputs, case_name;
  int threads = 1;
  int64_t new_tokens = 64;
  int warmup = 1, repeat = 3;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "bench_model: " << problem << "\n"
            << "usage: bench_model --checkpoint DIR --inputs FILE --case NAME [--threads N] [--new-tokens N]"
               " [--warmup N] [--repeat N]\n";
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--checkpoint") a.checkpoint = value;
    else if (flag == "--inputs") a.inputs = value;
    else if (flag == "--case") a.case_name = value;
    else if (flag == "--threads") a.threads = std::stoi(value);
    else if (flag == "--new-tokens") a.new_tokens = std::stoll(value);
    else if (flag == "--warmup") a.warmup = std::stoi(value);
    else if (flag == "--repeat") a.repeat = std::stoi(value);
    else usage("unknown flag " + flag);
  }
  if (a.checkpoint.empty() || a.inputs.empty() || a.case_name.empty())
    usage("--checkpoint, --inputs and --case are required");
  if (a.threads < 1 || a.new_tokens < 1 || a.warmup < 0 || a.repeat < 1) usage("counts must be positive");
  return a;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

ModelInput read_inputs(const std::string& path, const std::string& name) {
  auto file = SafetensorsFile::open(path);
  auto get = [&](const std::string& key) { return to_tensor(file.get(name + "." + key)).clone(); };
  ModelInput in;
  in.input_ids = get("input_ids");
  in.attention_mask = torch::ones_like(in.input_ids);
  in.pixel_values = get("pixel_values");
  auto grid = get("image_grid_thw").to(torch::kInt64).contiguous();
  for (int64_t i = 0; i < grid.size(0); ++i) {
    const int64_t* row = grid.data_ptr<int64_t>() + 3 * i;
    in.image_grids.push_back({row[0], row[1], row[2]});
  }
  return in;
}

// What generation's first step does: fill the cache over the whole prompt, logits at the last position only.
torch::Tensor prefill(Qwen2_5_VLModel& model, const ModelInput& in, int64_t capacity) {
  torch::InferenceMode inference;
  KVCache cache = model->model->make_cache(in.input_ids.size(0), capacity);
  ForwardOptions options;
  options.logits = false;
  auto out = model->forward(in, options, &cache);
  const int64_t S = in.input_ids.size(1);
  return model->lm_logits(out.last_hidden_state.narrow(1, S - 1, 1));
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  at::set_num_threads(args.threads);
  try {
    auto config = Qwen2_5_VLConfig::load(args.checkpoint + "/config.json");
    Qwen2_5_VLModel model(config, torch::TensorOptions().dtype(torch::kFloat32));
    load_checkpoint(*model, args.checkpoint, config.text.tie_word_embeddings);
    model->eval();
    const ModelInput in = read_inputs(args.inputs, args.case_name);
    const int64_t S = in.input_ids.size(1);

    SamplingParams greedy;
    greedy.max_new_tokens = args.new_tokens;
    const int64_t pad = config.text.pad_token_id.value_or(0);
    std::vector<GenerationResult> results;

    for (int i = 0; i < args.warmup; ++i) {
      prefill(model, in, S + args.new_tokens);
      results = generate(model, in, {greedy}, /*stop_ids=*/{}, pad);
    }
    std::vector<double> prefill_s, generate_s;
    for (int i = 0; i < args.repeat; ++i) {
      auto start = std::chrono::steady_clock::now();
      prefill(model, in, S + args.new_tokens);
      prefill_s.push_back(seconds_since(start));
    }
    for (int i = 0; i < args.repeat; ++i) {
      auto start = std::chrono::steady_clock::now();
      results = generate(model, in, {greedy}, /*stop_ids=*/{}, pad);
      generate_s.push_back(seconds_since(start));
    }

    nlohmann::json out;
    out["threads"] = at::get_num_threads();
    out["batch"] = in.input_ids.size(0);
    out["prompt_tokens"] = S;
    out["prefill_s"] = prefill_s;
    out["generate_s"] = generate_s;
    out["tokens"] = nlohmann::json::array();
    for (const auto& r : results) out["tokens"].push_back(r.tokens);
    std::cout << out.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bench_model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
