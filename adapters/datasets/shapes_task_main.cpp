// shapes-task: the bundled end-to-end task's data and models.
//   shapes-task [generate] --out DIR --seed N --train N --heldout N [--image-size 56] [--types colour,count,...]
//   shapes-task init-model --config configs/shapes/policy_model.json --out DIR [--seed N] [--std 0.02]
//   (held-out accuracy of a policy: ab-compare, which reports each policy's exact-match accuracy)
// Rerunning generate or init-model with the same arguments is a no-op once the output is complete.
// Exit code: 0 ok, 2 usage or input error.
#include <cstdint>
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include "adapters/common/atomic_file.h"
#include "adapters/common/cli.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "adapters/datasets/shapes_task.h"

namespace po = boost::program_options;
namespace ds = vlreward::datasets;
namespace qwen = vlreward::qwen;

namespace {

// Relative to the working directory, like the other commands' paths: run from the repository root.
constexpr const char* kTinyModelDir = "tests/fixtures/model/tiny";

int generate(int argc, char** argv) {
  po::options_description options("shapes-task [generate]: images + questions with verifiable answers\nOptions");
  options.add_options()
      ("help,h", "show this help")
      ("out", po::value<std::string>()->required(), "output directory")
      ("seed", po::value<uint64_t>()->default_value(0), "generator seed")
      ("train", po::value<int64_t>()->default_value(2000), "train items")
      ("heldout", po::value<int64_t>()->default_value(200), "held-out items")
      ("image-size", po::value<int>()->default_value(56), "image side in pixels, a multiple of 28 (56: 4 vision tokens)")
      ("types", po::value<std::string>()->default_value("colour,count,position,shape"), "question types, comma-separated")
      ("heldout-percent", po::value<int>()->default_value(20), "share of all scenes reserved for the held-out split");
  po::variables_map vm;
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;
  ds::ShapesTaskOptions o;
  o.seed = vm["seed"].as<uint64_t>();
  o.image_size = vm["image-size"].as<int>();
  o.types = ds::parse_question_types(vm["types"].as<std::string>(), "--types");
  o.heldout_bucket_percent = vm["heldout-percent"].as<int>();
  const std::string out = vm["out"].as<std::string>();
  const bool wrote = ds::write_shapes_task(o, out, vm["train"].as<int64_t>(), vm["heldout"].as<int64_t>());
  std::fprintf(stderr, "shapes-task: %s %s\n", wrote ? "wrote" : "already complete:", out.c_str());
  return 0;
}

int init_model(int argc, char** argv) {
  po::options_description options("shapes-task init-model: a randomly initialised Qwen2.5-VL checkpoint\nOptions");
  options.add_options()
      ("help,h", "show this help")
      ("config", po::value<std::string>()->required(), "Qwen2.5-VL config.json")
      ("out", po::value<std::string>()->required(), "output checkpoint directory")
      ("files-from", po::value<std::string>()->default_value(kTinyModelDir),
       "directory whose tokenizer, chat template and preprocessor files are copied")
      ("seed", po::value<uint64_t>()->default_value(0), "initialisation seed")
      ("std", po::value<double>()->default_value(0.02), "standard deviation of the initial weights");
  po::variables_map vm;
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;
  qwen::InitPretrainedOptions o;
  o.config_path = vm["config"].as<std::string>();
  o.out_dir = vm["out"].as<std::string>();
  o.files_from = vm["files-from"].as<std::string>();
  o.seed = vm["seed"].as<uint64_t>();
  o.std = vm["std"].as<double>();
  const bool wrote = qwen::init_pretrained(o);
  std::fprintf(stderr, "shapes-task init-model: %s %s\n", wrote ? "wrote" : "already complete:", o.out_dir.c_str());
  return 0;
}

int shapes_task(int argc, char** argv) {
  // The first argument may name a subcommand; without one, generate.
  if (argc >= 2) {
    const std::string sub = argv[1];
    if (sub == "init-model") return init_model(argc - 1, argv + 1);
    if (sub == "generate") return generate(argc - 1, argv + 1);
  }
  return generate(argc, argv);
}

}  // namespace

int main(int argc, char** argv) { return vlreward::run_cli("shapes-task", argc, argv, shapes_task); }
