// MPO trainer and mpo-train: exact resume after SIGKILL, checkpoint corruption detection, config / data errors,
// TensorBoard record framing, the exported HF checkpoint, freeze switches. CPU, tiny model
// (tests/fixtures/model/tiny), a handful of generated pairs with images from tests/fixtures/reward/images.
#include <cstdint>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tests/test_support.h"
#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/hf/qwen2_5_vl_processor.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/weights.h"
#include "mpo/checkpoint.h"
#include "adapters/common/crc32c.h"
#include "mpo/data_fingerprint.h"
#include "reward/preference_data.h"
#include "mpo/train_config.h"
#include "adapters/common/train_log.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "mpo/trainer.h"

namespace fs = std::filesystem;
using namespace vlreward;
using namespace vlreward::mpo;

namespace {

const std::string kFixtures = VLREWARD_FIXTURES_DIR;
const std::string kTinyModel = kFixtures + "/model/tiny";
const std::string kImages = kFixtures + "/reward/images";

using test_support::TempDir;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

// Six pairs: images by absolute path (one, two or none), different completions.
std::string write_pairs(const TempDir& dir) {
  const std::vector<std::string> images{"small.png", "square.jpg", "wide.png"};
  std::string text;
  for (int i = 0; i < 6; ++i) {
    nlohmann::json pair{{"id", "p" + std::to_string(i)},
                        {"question", "What is shown in picture " + std::to_string(i) + "?"},
                        {"chosen", "A small red shape, number " + std::to_string(i) + "."},
                        {"rejected", i % 2 == 0 ? "I cannot tell." : "A large blue dog sitting on a sofa."}};
    if (i % 3 != 2) pair["images"] = {kImages + "/" + images[static_cast<size_t>(i) % images.size()]};
    if (i == 4) pair["images"].push_back(kImages + "/small.png");
    text += pair.dump() + "\n";
  }
  const std::string path = dir / "pairs.jsonl";
  write_text(path, text);
  return path;
}

// A tiny config: small images, lr high enough that every step visibly changes the weights.
std::string write_config(const TempDir& dir, const std::string& run_dir, const std::string& extra_train = "",
                         const std::string& extra = "") {
  const std::string yaml = "model:\n  path: " + kTinyModel +
                           "\n  max_pixels: 12544\n"
                           "data:\n  train: " + (dir / "pairs.jsonl") +
                           "\n"
                           "loss:\n  loss_type: [sigmoid, bco_pair, sft]\n  loss_weights: [0.8, 0.2, 1.0]\n"
                           "train:\n  learning_rate: 1.0e-3\n  warmup_ratio: 0.2\n  num_threads: 1\n  seed: 7\n" +
                           extra_train + "output:\n  dir: " + run_dir + "\n  save_steps: 2\n  progress: false\n" + extra;
  const std::string path = dir / "config.yaml";
  write_text(path, yaml);
  return path;
}

struct ProcessResult {
  int status = 0;
  std::string stderr_text;
};

// fork/exec mpo-train with its stderr in a file. With kill_when, polls every millisecond and sends SIGKILL as
// soon as that path exists.
ProcessResult run_mpo_train(const std::vector<std::string>& args, const std::string& stderr_path,
                            const std::string& kill_when = {}) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 2);
      ::dup2(fd, 1);
    }
    std::vector<char*> argv{const_cast<char*>(MPO_TRAIN_BIN)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(MPO_TRAIN_BIN, argv.data());
    ::_exit(127);
  }
  ProcessResult result;
  if (!kill_when.empty()) {
    for (;;) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {  // ended before the kill point: the test will fail on it
        result.status = status;
        result.stderr_text = read_file(stderr_path);
        return result;
      }
      if (fs::exists(kill_when)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ::kill(pid, SIGKILL);
  }
  ::waitpid(pid, &result.status, 0);
  result.stderr_text = read_file(stderr_path);
  return result;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Runs the in-process trainer to the end and returns it (for export / freeze checks).
std::unique_ptr<MpoTrainer> train_in_process(const TrainConfig& config) {
  auto data = read_preference_jsonl(config.data.train);
  auto fingerprint = fingerprint_file(config.data.train, static_cast<int64_t>(data.size()));
  auto trainer = std::make_unique<MpoTrainer>(config);
  trainer->train(data, fingerprint);
  return trainer;
}

std::map<std::string, torch::Tensor> parameters_of(const torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : module.named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

qwen::Qwen2_5_VLModel load_tiny(const std::string& dir) {
  return qwen::load_pretrained(dir, torch::kFloat32, torch::kCPU).model;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// ---- (1) SIGKILL mid-epoch, resume: the loss curve continues exactly -------------------------------------------

TEST(MpoTrainerResume, SigkillMidEpochThenResumeEqualsUninterruptedRun) {
  TempDir dir;
  write_pairs(dir);
  // 6 pairs, batch 1 x accumulation 2 -> 3 steps per epoch, 3 epochs -> 9 steps; a checkpoint every 2 steps.
  const std::string train_extra = "  batch_size: 1\n  gradient_accumulation_steps: 2\n  epochs: 3\n";
  const std::string config = write_config(dir, dir / "unused", train_extra);

  auto full = run_mpo_train({"--config", config, "--output-dir", dir / "full"}, dir / "full.log");
  ASSERT_TRUE(WIFEXITED(full.status) && WEXITSTATUS(full.status) == 0) << full.stderr_text;

  // checkpoint-2 holds step 2 = epoch 0, pair 4 of 6: the kill lands mid-epoch, after that checkpoint.
  auto killed = run_mpo_train({"--config", config, "--output-dir", dir / "killed"}, dir / "killed.log",
                              dir / "killed/checkpoint-2");
  ASSERT_TRUE(WIFSIGNALED(killed.status) && WTERMSIG(killed.status) == SIGKILL)
      << "the run ended before the kill: " << killed.stderr_text;
  EXPECT_FALSE(fs::exists(dir / "killed/final_model"));
  auto resumed = run_mpo_train({"--config", config, "--output-dir", dir / "killed", "--resume", "auto"}, dir / "resumed.log");
  ASSERT_TRUE(WIFEXITED(resumed.status) && WEXITSTATUS(resumed.status) == 0) << resumed.stderr_text;
  EXPECT_NE(resumed.stderr_text.find("resumed from"), std::string::npos) << resumed.stderr_text;

  const auto expected = read_jsonl(dir / "full/metrics.jsonl");
  const auto actual = read_jsonl(dir / "killed/metrics.jsonl");
  ASSERT_EQ(expected.size(), 9u);
  ASSERT_EQ(actual.size(), expected.size());  // the killed run's lines after checkpoint-2 were replaced
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(actual[i]["step"], static_cast<int64_t>(i + 1));
    for (const char* key : {"loss", "loss/sigmoid", "loss/bco_pair", "loss/sft", "delta", "lr", "grad_norm",
                            "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
                            "epoch"})
      EXPECT_EQ(actual[i].at(key).get<double>(), expected[i].at(key).get<double>()) << "step " << i + 1 << " " << key;
  }
  // The loss really moves (the comparison is not between constants).
  EXPECT_NE(expected.front()["loss"], expected.back()["loss"]);
  // The final policies are bit-identical.
  EXPECT_EQ(read_file(dir / "full/final_model/model.safetensors"), read_file(dir / "killed/final_model/model.safetensors"));
  // Only the newest save_total_limit (2) checkpoints remain.
  auto checkpoints = list_checkpoints(dir / "killed");
  ASSERT_EQ(checkpoints.size(), 2u);
  EXPECT_EQ(checkpoints[0].first, 8);
  EXPECT_EQ(checkpoints[1].first, 9);
}

// ---- (2) truncated / corrupted checkpoints are named, never loaded --------------------------------------------

class MpoCheckpointCorruption : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    write_pairs(*dir_);
    auto config = load_train_config(write_config(*dir_, *dir_ / "run", "  batch_size: 3\n  max_steps: 1\n"));
    train_in_process(config);
    checkpoint_ = *dir_ / "run/checkpoint-1";
  }
  static void TearDownTestSuite() { delete dir_; }

  // A fresh copy of the good checkpoint to damage.
  std::string copy() {
    const std::string target = *dir_ / ("damaged" + std::to_string(counter_++));
    fs::copy(checkpoint_, target, fs::copy_options::recursive);
    return target;
  }
  static void flip_byte(const std::string& path, size_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(&c, 1);
  }

  static TempDir* dir_;
  static std::string checkpoint_;
  static inline int counter_ = 0;
};
TempDir* MpoCheckpointCorruption::dir_ = nullptr;
std::string MpoCheckpointCorruption::checkpoint_;

TEST_F(MpoCheckpointCorruption, IntactCheckpointVerifies) {
  EXPECT_NO_THROW(verify_manifest(checkpoint_));
  for (const char* file : {"model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json",
                           "optimizer.safetensors", "rng_state.safetensors", "running_moments.json",
                           "trainer_state.json", "manifest.json"})
    EXPECT_TRUE(fs::exists(checkpoint_ + "/" + file)) << file;
  auto state = nlohmann::json::parse(read_file(checkpoint_ + "/trainer_state.json"));
  EXPECT_EQ(state["global_step"], 1);
  EXPECT_EQ(state["epoch"], 0);
  EXPECT_EQ(state["index_in_epoch"], 3);
}

TEST_F(MpoCheckpointCorruption, TruncatedFilesAreNamed) {
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "tokenizer.json"}) {
    const std::string dir = copy();
    const std::string path = dir + "/" + file;
    fs::resize_file(path, fs::file_size(path) / 2);
    const std::string error = error_of([&] { verify_manifest(dir); });
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_NE(error.find("truncated"), std::string::npos) << error;
  }
}

TEST_F(MpoCheckpointCorruption, BitFlipsAreNamed) {
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "rng_state.safetensors", "running_moments.json",
                           "config.json"}) {
    const std::string dir = copy();
    const std::string path = dir + "/" + file;
    flip_byte(path, fs::file_size(path) - 3);
    const std::string error = error_of([&] { verify_manifest(dir); });
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_NE(error.find("corrupted"), std::string::npos) << error;
  }
}

TEST_F(MpoCheckpointCorruption, MissingOrAlteredManifestIsNamed) {
  {
    const std::string dir = copy();
    fs::remove(dir + "/manifest.json");
    const std::string error = error_of([&] { verify_manifest(dir); });
    EXPECT_NE(error.find(dir + "/manifest.json: missing"), std::string::npos) << error;
  }
  {  // a size in the manifest edited: the manifest's own checksum catches it
    const std::string dir = copy();
    auto manifest = nlohmann::json::parse(read_file(dir + "/manifest.json"));
    manifest["files"]["model.safetensors"]["size"] = 1;
    write_text(dir + "/manifest.json", manifest.dump());
    const std::string error = error_of([&] { verify_manifest(dir); });
    EXPECT_NE(error.find("manifest.json: corrupted"), std::string::npos) << error;
  }
  {
    const std::string dir = copy();
    fs::remove(dir + "/optimizer.safetensors");
    const std::string error = error_of([&] { verify_manifest(dir); });
    EXPECT_NE(error.find(dir + "/optimizer.safetensors: missing"), std::string::npos) << error;
  }
}

TEST_F(MpoCheckpointCorruption, TrainerRefusesToResumeFromDamagedCheckpoint) {
  const std::string dir = copy();
  flip_byte(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  auto config = load_train_config(*dir_ / "config.yaml", {"output.dir=" + (*dir_ / "other")});
  MpoTrainer trainer(config);
  const auto before = parameters_of(*trainer.policy());
  auto data = read_preference_jsonl(config.data.train);
  const std::string error =
      error_of([&] { trainer.resume(dir, fingerprint_file(config.data.train, static_cast<int64_t>(data.size()))); });
  EXPECT_NE(error.find(dir + "/model.safetensors: corrupted"), std::string::npos) << error;
  // Nothing was loaded.
  EXPECT_EQ(trainer.state().global_step, 0);
  for (const auto& item : trainer.policy()->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), before.at(item.key())));
}

TEST_F(MpoCheckpointCorruption, CommandLineNamesTheDamagedFile) {
  const std::string run = *dir_ / "cli_run";
  fs::create_directories(run);
  fs::copy(checkpoint_, run + "/checkpoint-1", fs::copy_options::recursive);
  fs::resize_file(run + "/checkpoint-1/optimizer.safetensors", 100);
  auto result = run_mpo_train({"--config", *dir_ / "config.yaml", "--output-dir", run, "--resume", "auto"}, *dir_ / "cli.log");
  ASSERT_TRUE(WIFEXITED(result.status));
  EXPECT_EQ(WEXITSTATUS(result.status), 2) << result.stderr_text;
  EXPECT_NE(result.stderr_text.find(run + "/checkpoint-1/optimizer.safetensors: truncated"), std::string::npos)
      << result.stderr_text;
}

TEST_F(MpoCheckpointCorruption, ResumeWithOtherDataOrConfigIsRefused) {
  auto config = load_train_config(*dir_ / "config.yaml", {"output.dir=" + (*dir_ / "other2")});
  auto data = read_preference_jsonl(config.data.train);
  auto fingerprint = fingerprint_file(config.data.train, static_cast<int64_t>(data.size()));
  {
    MpoTrainer trainer(config);
    auto other = fingerprint;
    other.crc32c ^= 1;
    const std::string error = error_of([&] { trainer.resume(checkpoint_, other); });
    EXPECT_NE(error.find("differs from the data the checkpoint"), std::string::npos) << error;
  }
  {
    auto changed = load_train_config(*dir_ / "config.yaml", {"output.dir=" + (*dir_ / "other2"), "loss.beta=0.2"});
    MpoTrainer trainer(changed);
    const std::string error = error_of([&] { trainer.resume(checkpoint_, fingerprint); });
    EXPECT_NE(error.find("loss.beta (checkpoint 0.1, now 0.2)"), std::string::npos) << error;
  }
}

// ---- (3) config and data errors name the key / line -----------------------------------------------------------

class MpoTrainConfigErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    write_pairs(dir_);
    config_ = write_config(dir_, dir_ / "run");
  }
  std::string error_with(const std::vector<std::string>& overrides) {
    return error_of([&] { load_train_config(config_, overrides); });
  }
  TempDir dir_;
  std::string config_;
};

TEST_F(MpoTrainConfigErrors, DefaultsAndOverrides) {
  auto c = load_train_config(config_, {"train.learning_rate=2e-5", "freeze.vision_tower=true"});
  EXPECT_EQ(c.train.learning_rate, 2e-5);
  EXPECT_TRUE(c.freeze.vision_tower);
  EXPECT_EQ(c.train.adam_beta1, 0.9);
  EXPECT_EQ(c.train.adam_beta2, 0.999);
  EXPECT_EQ(c.train.adam_epsilon, 1e-8);
  EXPECT_EQ(c.train.weight_decay, 0.05);
  EXPECT_EQ(c.train.max_grad_norm, 1.0);
  EXPECT_EQ(c.loss.weights, (std::vector<double>{0.8, 0.2, 1.0}));
  EXPECT_EQ(c.model.max_pixels, 12544);
  // to_json round-trips.
  auto again = TrainConfig::from_json(c.to_json(), "round trip");
  EXPECT_EQ(again.to_json(), c.to_json());
}

TEST_F(MpoTrainConfigErrors, UnknownKeysAreNamed) {
  EXPECT_NE(error_with({"train.learning_rat=1e-5"}).find("train: unknown key(s): learning_rat"), std::string::npos);
  EXPECT_NE(error_with({"trainn.seed=1"}).find("unknown key(s): trainn"), std::string::npos);
  EXPECT_NE(error_with({"freeze.vision=true"}).find("freeze: unknown key(s): vision"), std::string::npos);
}

TEST_F(MpoTrainConfigErrors, BadValuesAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"train.learning_rate=-1", "train.learning_rate: must be > 0"},
      {"train.learning_rate=fast", "train.learning_rate: must be a number"},
      {"train.batch_size=1.5", "train.batch_size: must be an integer"},
      {"train.batch_size=0", "train.batch_size: must be > 0"},
      {"train.adam_beta2=1", "train.adam_beta2: must be in [0, 1)"},
      {"train.warmup_ratio=2", "train.warmup_ratio: must be in [0, 1]"},
      {"model.dtype=float16", "model.dtype: must be \"float32\" or \"bfloat16\""},
      {"freeze.llm=yes please", "freeze.llm: must be true or false"},
      {"loss.loss_type=[sigmoid, dpo]", "loss.loss_type[1]"},
      {"loss.loss_weights=[1.0]", "loss_weights: 1 weights for 3 loss terms"},
      {"reference.source=cached", "reference.source: must be \"model\" or \"precomputed\""},
      {"output.save_total_limit=0", "output.save_total_limit: must be >= 1"},
  };
  for (const auto& [override_text, expected] : cases) {
    const std::string error = error_with({override_text});
    EXPECT_NE(error.find(expected), std::string::npos) << override_text << " -> " << error;
    EXPECT_NE(error.find(config_), std::string::npos) << "names the file: " << error;
  }
  const std::string missing = error_of([&] {
    TrainConfig::from_json(nlohmann::json{{"data", {{"train", "x"}}}, {"output", {{"dir", "y"}}}}, "c.yaml");
  });
  EXPECT_NE(missing.find("c.yaml: model.path: is required"), std::string::npos) << missing;
}

TEST_F(MpoTrainConfigErrors, DataErrorsNameTheLineAndField) {
  const std::string path = dir_ / "bad.jsonl";
  auto first_error = [&](const std::string& text) {
    write_text(path, text);
    return error_of([&] { read_preference_jsonl(path); });
  };
  const std::string good = R"({"question": "q", "chosen": "a", "rejected": "b"})";
  EXPECT_NE(first_error(good + "\n{\"question\": \"q\", \"chosen\": \n").find(path + ":2: malformed JSON"), std::string::npos);
  EXPECT_NE(first_error(good + "\n\n" + R"({"question": "q", "chosen": "a", "rejected": "b", "images": ["nope.png"]})")
                .find(path + ":3: images[0]: is neither a readable file (" + dir_.path() + "/nope.png)"),
            std::string::npos);
  EXPECT_NE(first_error(R"({"question": "q", "rejected": "b"})").find(path + ":1: chosen: missing"), std::string::npos);
  EXPECT_NE(first_error(R"({"question": "q", "chosen": "", "rejected": "b"})").find(path + ":1: chosen: must not be empty"),
            std::string::npos);
  EXPECT_NE(first_error(R"({"question": "q", "chosen": "a", "rejected": 3})").find(path + ":1: rejected: must be a string"),
            std::string::npos);
  EXPECT_NE(first_error(R"({"question": "q", "chosen": "a", "rejected": "b", "ref_chosen_logp": -3})")
                .find(path + ":1: ref_rejected_logp: missing"),
            std::string::npos);
  EXPECT_NE(first_error(R"({"id": 1, "question": "q", "chosen": "a", "rejected": "b"})" "\n" +
                        std::string(R"({"id": 1, "question": "q", "chosen": "a", "rejected": "c"})"))
                .find(path + ":2: id: duplicate \"1\""),
            std::string::npos);
  EXPECT_NE(first_error("").find(path + ": no preference pairs"), std::string::npos);
  EXPECT_NE(error_of([&] { read_preference_jsonl(dir_ / "absent.jsonl"); }).find("absent.jsonl: no such file"),
            std::string::npos);
  // Valid: relative image path against the file's directory, data URI, precomputed reference log-probs.
  fs::copy_file(kImages + "/small.png", dir_ / "local.png");
  auto records = [&] {
    write_text(path, R"({"id": "x", "question": "q", "chosen": "a", "rejected": "b", "images": ["local.png"], )"
                     R"("ref_chosen_logp": -1.5, "ref_rejected_logp": -2.5, "extra": {"ignored": true}})");
    return read_preference_jsonl(path);
  }();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].images.at(0).path, dir_ / "local.png");
  EXPECT_EQ(records[0].ref_chosen_logp, -1.5);
  EXPECT_EQ(records[0].source, path + ":1");
}

TEST_F(MpoTrainConfigErrors, CommandLineReportsConfigAndDataErrors) {
  auto bad_key = run_mpo_train({"--config", config_, "train.sed=3"}, dir_ / "a.log");
  ASSERT_TRUE(WIFEXITED(bad_key.status));
  EXPECT_EQ(WEXITSTATUS(bad_key.status), 2);
  EXPECT_NE(bad_key.stderr_text.find("train: unknown key(s): sed"), std::string::npos) << bad_key.stderr_text;

  write_text(dir_ / "pairs.jsonl", read_file(dir_ / "pairs.jsonl") + R"({"question": "q", "chosen": "a", "rejected": "b", "images": ["gone.jpg"]})" "\n");
  auto missing_image = run_mpo_train({"--config", config_}, dir_ / "b.log");
  ASSERT_TRUE(WIFEXITED(missing_image.status));
  EXPECT_EQ(WEXITSTATUS(missing_image.status), 2);
  EXPECT_NE(missing_image.stderr_text.find("pairs.jsonl:7: images[0]: is neither a readable file"), std::string::npos)
      << missing_image.stderr_text;
  EXPECT_NE(missing_image.stderr_text.find("gone.jpg"), std::string::npos);
}

// ---- (4) TensorBoard: TFRecord framing and Event bytes ---------------------------------------------------------

TEST(MpoTensorBoard, Crc32cKnownVectors) {
  // The CRC-32C check value and RFC 3720 B.4 vectors.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  // Chunked == whole, across the 8-byte fast path's boundaries.
  const std::string text = "The quick brown fox jumps over the lazy dog, twice over.";
  for (size_t split = 0; split <= text.size(); ++split)
    EXPECT_EQ(crc32c_extend(crc32c(text.substr(0, split)), text.data() + split, text.size() - split), crc32c(text));
  // TensorFlow's mask: rotate right 15, add 0xa282ead8.
  EXPECT_EQ(masked_crc32c(0xE3069283u), ((0xE3069283u >> 15) | (0xE3069283u << 17)) + 0xa282ead8u);
}

TEST(MpoTensorBoard, EventAndRecordBytes) {
  // Event{wall_time: 1.5, file_version: "brain.Event:2"}: field 1 fixed64, field 3 length-delimited.
  const std::string event = tensorboard_file_version_event(1.5);
  EXPECT_EQ(hex(event), "09000000000000f83f1a0d627261696e2e4576656e743a32");
  // Record: length 24 (u64 LE), masked crc32c of those 8 bytes, data, masked crc32c of the data. The expected
  // bytes were computed with an independent bit-by-bit CRC-32C (Python) from the TFRecord spec.
  EXPECT_EQ(hex(tf_record(event)),
            "1800000000000000a37f4b22"
            "09000000000000f83f1a0d627261696e2e4576656e743a32"
            "2a28646c");
  // Event{wall_time: 2, step: 7, summary{value{tag: "loss", simple_value: 0.5}}}.
  EXPECT_EQ(hex(tensorboard_scalars_event(2.0, 7, {{"loss", 0.5}})),
            "09000000000000004010072a0d0a0b0a046c6f7373150000003f");
}

TEST(MpoTensorBoard, WriterFileStartsWithFileVersionAndFramesEveryRecord) {
  TempDir dir;
  std::string path;
  {
    TensorBoardWriter writer(dir / "tb");
    writer.add_scalars(1, {{"loss", 0.75}, {"lr", 1e-5}});
    writer.add_scalars(2, {{"loss", 0.5}});
    path = writer.path();
  }
  EXPECT_NE(fs::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
  const std::string bytes = read_file(path);
  size_t offset = 0;
  int records = 0;
  while (offset < bytes.size()) {
    ASSERT_LE(offset + 12, bytes.size());
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
    auto u32 = [&](size_t at) {
      uint32_t v = 0;
      for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
      return v;
    };
    EXPECT_EQ(u32(offset + 8), masked_crc32c(crc32c(bytes.substr(offset, 8))));
    ASSERT_LE(offset + 12 + length + 4, bytes.size());
    const std::string data = bytes.substr(offset + 12, length);
    EXPECT_EQ(u32(offset + 12 + length), masked_crc32c(crc32c(data)));
    if (records == 0) {
      EXPECT_NE(data.find("brain.Event:2"), std::string::npos);
    }
    if (records == 2) {  // all but the wall time (field 1: tag + 8 bytes)
      EXPECT_EQ(data.substr(9), tensorboard_scalars_event(1.0, 2, {{"loss", 0.5}}).substr(9));
    }
    offset += 12 + length + 4;
    ++records;
  }
  EXPECT_EQ(records, 3);
}

TEST(MpoTrainLog, MetricsJsonlDropsStepsAfterTheResumePointAndTornLines) {
  TempDir dir;
  const std::string path = dir / "metrics.jsonl";
  write_text(path, "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\n{\"step\":3,\"loss\":0.3}\n{\"step\":4,\"lo");
  {
    MetricsJsonl jsonl(path, 2);
    jsonl.append(3, {{"loss", 0.25}});
  }
  EXPECT_EQ(read_file(path), "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\n{\"loss\":0.25,\"step\":3}\n");
}

// ---- (5) the exported HF checkpoint loads back and equals the trained parameters -------------------------------

TEST(MpoTrainerExport, FinalModelLoadsBackBitIdentical) {
  TempDir dir;
  write_pairs(dir);
  auto config = load_train_config(write_config(dir, dir / "run", "  batch_size: 2\n  max_steps: 2\n"),
                                  {"output.tensorboard=true"});
  auto trainer = train_in_process(config);
  const std::string final_dir = dir / "run/final_model";
  auto loaded = load_tiny(final_dir);
  auto initial = load_tiny(kTinyModel);
  const auto trained = parameters_of(*trainer->policy());
  const auto initial_params = parameters_of(*initial);
  size_t changed = 0;
  for (const auto& item : loaded->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), trained.at(item.key()))) << item.key();
    changed += torch::equal(item.value(), initial_params.at(item.key())) ? 0 : 1;
  }
  EXPECT_EQ(changed, trained.size());  // nothing frozen: every parameter moved
  // The rest of an HF dir: config (dtype updated to what was saved), tokenizer, processor.
  auto hf_config = nlohmann::json::parse(read_file(final_dir + "/config.json"));
  EXPECT_EQ(hf_config["dtype"], "float32");
  EXPECT_NO_THROW(Qwen2_5_VLConfig::load(final_dir + "/config.json"));
  EXPECT_NO_THROW(Qwen2_5_VLProcessor::from_directory(final_dir));
  EXPECT_EQ(read_file(final_dir + "/tokenizer.json"), read_file(kTinyModel + "/tokenizer.json"));
  EXPECT_EQ(read_file(final_dir + "/preprocessor_config.json"), read_file(kTinyModel + "/preprocessor_config.json"));
  // Metrics: every step has every per-step key, and TensorBoard events were written.
  const auto metrics = read_jsonl(dir / "run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  for (const char* key : {"loss", "loss/sigmoid", "loss/bco_pair", "loss/sft", "nll_loss", "rewards/chosen",
                          "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
                          "delta", "lr", "grad_norm", "tokens_per_second", "epoch"})
    EXPECT_TRUE(metrics[1].contains(key)) << key;
  // Warmup: W = ceil(0.2 * 2) = 1, so step 1 runs at lr 0 and step 2 at the cosine start (the full lr).
  EXPECT_EQ(metrics[0]["lr"].get<double>(), 0.0);
  EXPECT_EQ(metrics[1]["lr"].get<double>(), 1e-3);
  EXPECT_GT(metrics[1]["tokens_per_second"].get<double>(), 0.0);
  EXPECT_EQ(trainer->state().warmup_steps, 1);
  // Step 1: the reference is a frozen copy of the initial policy, so every reward β·(logπθ − logπref) is 0,
  // and so is δ (their running mean).
  EXPECT_EQ(metrics[0]["rewards/chosen"].get<double>(), 0.0);
  EXPECT_EQ(metrics[0]["rewards/rejected"].get<double>(), 0.0);
  EXPECT_EQ(metrics[0]["delta"].get<double>(), 0.0);
  EXPECT_NEAR(metrics[0]["loss/sigmoid"].get<double>(), std::log(2.0), 1e-6);
  bool have_events = false;
  for (const auto& entry : fs::directory_iterator(dir / "run/tensorboard"))
    have_events |= entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(have_events);
}

TEST(MpoTrainerReference, PrecomputedReferenceLogpsFromTheData) {
  TempDir dir;
  write_pairs(dir);
  const std::string config_path = write_config(dir, dir / "run", "  batch_size: 6\n  max_steps: 1\n");
  auto config = load_train_config(config_path, {"reference.source=precomputed"});
  auto data = read_preference_jsonl(config.data.train);
  {  // a pair without them is named
    MpoTrainer trainer(config);
    const std::string error = error_of([&] { trainer.train(data, fingerprint_file(config.data.train, 6)); });
    EXPECT_NE(error.find(config.data.train + ":1: ref_chosen_logp/ref_rejected_logp: missing"), std::string::npos) << error;
  }
  // With every stored reference log-prob at -10, the rewards are β·(mean policy log-prob + 10): the stored values
  // are what the loss uses (a model reference would give 0 at the first step).
  for (auto& r : data) {
    r.ref_chosen_logp = -10.0;
    r.ref_rejected_logp = -10.0;
  }
  MpoTrainer trainer(config);
  std::vector<const PreferenceRecord*> batch;
  for (const auto& r : data) batch.push_back(&r);
  trainer.set_total_steps(1);
  const auto metrics = trainer.optimizer_step({batch}).values;
  EXPECT_NEAR(metrics.at("rewards/chosen"), 0.1 * (metrics.at("logps/chosen") + 10.0), 1e-5);
  EXPECT_NEAR(metrics.at("rewards/rejected"), 0.1 * (metrics.at("logps/rejected") + 10.0), 1e-5);
  EXPECT_NE(metrics.at("rewards/chosen"), 0.0);
}

// ---- models given to the trainer instead of loaded by it --------------------------------------------------------

// A policy and reference made in memory: the trainer needs no weight files. With the reference equal to the policy,
// the first step's implicit rewards are exactly zero — the given reference is the one the loss uses.
TEST(MpoTrainerInjection, TrainsModelsMadeInMemory) {
  TempDir dir;
  write_pairs(dir);
  // No warmup: the one step has the full learning rate.
  const auto config =
      load_train_config(write_config(dir, dir / "run", "  batch_size: 6\n  max_steps: 1\n"), {"train.warmup_ratio=0"});
  const auto model_config = Qwen2_5_VLConfig::load(kTinyModel + "/config.json");
  MpoModels models;
  models.processor = std::make_unique<Qwen2_5_VLProcessor>(
      Qwen2_5_VLProcessor::from_directory(kTinyModel, {config.model.min_pixels, config.model.max_pixels}));
  models.policy = qwen::Qwen2_5_VLModel(model_config, torch::TensorOptions().dtype(torch::kFloat32));
  models.policy->init_weights(11);
  models.reference = qwen::Qwen2_5_VLModel(model_config, torch::TensorOptions().dtype(torch::kFloat32));
  models.reference->init_weights(11);
  const auto initial = parameters_of(*models.policy);
  MpoTrainer trainer(config, std::move(models));
  const auto data = read_preference_jsonl(config.data.train);
  std::vector<const PreferenceRecord*> batch;
  for (const auto& r : data) batch.push_back(&r);
  trainer.set_total_steps(1);
  const auto metrics = trainer.optimizer_step({batch}).values;
  EXPECT_EQ(metrics.at("rewards/chosen"), 0.0);
  EXPECT_EQ(metrics.at("rewards/rejected"), 0.0);
  EXPECT_TRUE(std::isfinite(metrics.at("loss")));
  size_t moved = 0;
  for (const auto& item : trainer.policy()->named_parameters())
    moved += torch::equal(item.value(), initial.at(item.key())) ? 0 : 1;
  EXPECT_GT(moved, 0u);
}

// The same weights given or loaded train identically; a reference is given exactly when the config uses one.
TEST(MpoTrainerInjection, GivenModelsEqualLoadedOnesAndAreChecked) {
  TempDir dir;
  write_pairs(dir);
  const auto config = load_train_config(write_config(dir, dir / "run", "  batch_size: 3\n  max_steps: 1\n"));
  const auto data = read_preference_jsonl(config.data.train);
  std::vector<const PreferenceRecord*> batch;
  for (size_t i = 0; i < 3; ++i) batch.push_back(&data[i]);
  auto step = [&](MpoTrainer& trainer) {
    trainer.set_total_steps(1);
    return trainer.optimizer_step({batch}).values;
  };
  MpoTrainer loaded(config);
  const auto expected = step(loaded);
  auto given_models = [&] {
    MpoModels models;
    models.processor = std::make_unique<Qwen2_5_VLProcessor>(
        Qwen2_5_VLProcessor::from_directory(kTinyModel, {config.model.min_pixels, config.model.max_pixels}));
    models.policy = load_tiny(kTinyModel);
    models.reference = load_tiny(kTinyModel);
    return models;
  };
  MpoTrainer given(config, given_models());
  const auto got = step(given);
  EXPECT_EQ(got.at("loss"), expected.at("loss"));
  EXPECT_EQ(got.at("grad_norm"), expected.at("grad_norm"));
  for (const auto& item : given.policy()->named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), loaded.policy()->named_parameters()[item.key()])) << item.key();

  auto without_reference = given_models();
  without_reference.reference = qwen::Qwen2_5_VLModel(nullptr);
  EXPECT_NE(error_of([&] { MpoTrainer(config, std::move(without_reference)); })
                .find("reference.source: is \"model\" but no reference model was given"),
            std::string::npos);
  auto sft = config;
  sft.loss.terms = {LossTerm::kSft};
  sft.loss.weights = {1.0};
  EXPECT_NE(error_of([&] { MpoTrainer(sft, given_models()); }).find("uses no reference model, but one was given"),
            std::string::npos);
}

// ---- (6) freeze switches ---------------------------------------------------------------------------------------

TEST(MpoTrainerFreeze, FrozenGroupsStayBitIdentical) {
  TempDir dir;
  write_pairs(dir);
  const std::string config_path = write_config(dir, dir / "run", "  batch_size: 3\n  max_steps: 2\n  warmup_ratio: 0\n");
  const auto initial = parameters_of(*load_tiny(kTinyModel));
  struct Case {
    std::vector<std::string> overrides;
    std::function<bool(const std::string&)> frozen;
  };
  const std::vector<Case> cases{
      {{"freeze.vision_tower=true", "freeze.merger=true"}, [](const std::string& n) { return n.rfind("visual.", 0) == 0; }},
      {{"freeze.llm=true"}, [](const std::string& n) { return n.rfind("visual.", 0) != 0; }},
      {{"freeze.vision_tower=true"},
       [](const std::string& n) { return n.rfind("visual.", 0) == 0 && n.rfind("visual.merger.", 0) != 0; }},
  };
  int index = 0;
  for (const auto& c : cases) {
    auto overrides = c.overrides;
    overrides.push_back("output.dir=" + (dir / ("run" + std::to_string(index++))));
    auto trainer = train_in_process(load_train_config(config_path, overrides));
    size_t frozen = 0, moved = 0;
    for (const auto& item : trainer->policy()->named_parameters()) {
      const bool same = torch::equal(item.value(), initial.at(item.key()));
      if (c.frozen(item.key())) {
        EXPECT_TRUE(same) << item.key() << " is frozen but changed";
        EXPECT_FALSE(item.value().requires_grad());
        ++frozen;
      } else {
        moved += same ? 0 : 1;
      }
    }
    EXPECT_GT(frozen, 0u);
    EXPECT_GT(moved, 0u);
    EXPECT_EQ(frozen + trainer->trainable_parameters().size(), initial.size());
  }
}

// ---- schedule, data order, weight-decay groups ----------------------------------------------------------------

TEST(MpoTrainerSchedule, CosineWithWarmupAsTransformers) {
  // transformers get_cosine_schedule_with_warmup (num_cycles 0.5), W = 2, T = 10.
  EXPECT_EQ(cosine_schedule_factor(0, 2, 10), 0.0);
  EXPECT_EQ(cosine_schedule_factor(1, 2, 10), 0.5);
  EXPECT_EQ(cosine_schedule_factor(2, 2, 10), 1.0);
  EXPECT_NEAR(cosine_schedule_factor(6, 2, 10), 0.5, 1e-15);
  EXPECT_NEAR(cosine_schedule_factor(4, 2, 10), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_EQ(cosine_schedule_factor(10, 2, 10), 0.0);
  EXPECT_EQ(cosine_schedule_factor(0, 0, 10), 1.0);
}

TEST(MpoTrainerSchedule, EpochOrderIsASeededPermutation) {
  std::string state_a, state_b;
  auto a = epoch_order(50, 42, 0, true, &state_a);
  auto b = epoch_order(50, 42, 0, true, &state_b);
  EXPECT_EQ(a, b);
  EXPECT_EQ(state_a, state_b);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_NE(a, epoch_order(50, 42, 1, true));
  EXPECT_NE(a, epoch_order(50, 43, 0, true));
  EXPECT_EQ(epoch_order(4, 42, 3, false), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(MpoTrainerSchedule, WeightDecayGroupsFollowTransformersNamePatterns) {
  EXPECT_TRUE(uses_weight_decay("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(uses_weight_decay("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_FALSE(uses_weight_decay("model.layers.0.input_layernorm.weight"));
  EXPECT_FALSE(uses_weight_decay("model.layers.0.post_attention_layernorm.weight"));
  EXPECT_FALSE(uses_weight_decay("model.norm.weight"));
  // The vision blocks' norm1/norm2 and the merger's ln_q are RMSNorm modules whose names match no pattern, so
  // transformers decays them (they are not nn.LayerNorm).
  EXPECT_TRUE(uses_weight_decay("visual.blocks.0.norm1.weight"));
  EXPECT_TRUE(uses_weight_decay("visual.merger.ln_q.weight"));
  EXPECT_TRUE(uses_weight_decay("lm_head.weight"));
}
