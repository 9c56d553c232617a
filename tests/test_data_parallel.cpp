// Data parallelism on CPU ranks over loopback (the store backend behind c10d): the command lines run as 2 ranks
// (launch variables set as torchrun sets them) against one process doing the same global batch, for mpo-train and
// reward-train, whole and sharded optimizer state; resume across world sizes; a rank killed mid-run.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/hf/safetensors.h"
#include "adapters/hf/safetensors_torch.h"
#include "test_support.h"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using vlreward::test_support::TempDir;

const std::string kFixtures = VLREWARD_FIXTURES_DIR;
const std::string kRepoRoot = fs::path(kFixtures).parent_path().parent_path().string();

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Starts `binary args` in the repository root with `env` added, output to `log`.
pid_t spawn(const std::string& binary, const std::vector<std::string>& args, const std::vector<std::string>& env,
            const std::string& log) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (::chdir(kRepoRoot.c_str()) != 0) ::_exit(127);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ::dup2(fd, 1);
  ::dup2(fd, 2);
  for (const auto& item : env) ::putenv(const_cast<char*>(item.c_str()));
  std::vector<char*> argv{const_cast<char*>(binary.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(binary.c_str(), argv.data());
  ::_exit(127);
}

int exit_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> rank_env(int rank, int world, int port) {
  return {"RANK=" + std::to_string(rank), "LOCAL_RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world),
          "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
}

// Runs `binary` as `world` ranks (1: a plain process); returns each rank's exit code. Logs: <log>.rank<r>.
std::vector<int> run_ranks(const std::string& binary, int world, std::vector<std::string> args, const std::string& log) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r)
    pids.push_back(spawn(binary, args, world > 1 ? rank_env(r, world, port) : std::vector<std::string>{},
                         log + ".rank" + std::to_string(r)));
  std::vector<int> codes;
  for (pid_t pid : pids) codes.push_back(exit_code(pid));
  return codes;
}

std::vector<json> metric_lines(const std::string& path) {
  std::vector<json> out;
  std::istringstream lines(read_text(path));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

double rel(double a, double b) { return a == b ? 0.0 : std::abs(a - b) / std::max(std::abs(a), 1e-12); }

// Largest relative difference over the numeric metrics of every line (tokens_per_second aside).
double metrics_difference(const std::string& a, const std::string& b) {
  const auto x = metric_lines(a), y = metric_lines(b);
  EXPECT_EQ(x.size(), y.size()) << a << " vs " << b;
  double worst = 0;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i)
    for (const auto& [key, value] : x[i].items()) {
      if (!value.is_number_float() || key == "tokens_per_second") continue;
      EXPECT_TRUE(y[i].contains(key)) << key << " missing from line " << i << " of " << b;
      if (y[i].contains(key)) worst = std::max(worst, rel(value.get<double>(), y[i].at(key).get<double>()));
    }
  return worst;
}

// Largest relative difference (max |a − b| / max |a|) over every tensor of two HF checkpoint directories.
double weights_difference(const std::string& a, const std::string& b) {
  const auto x = vlreward::SafetensorsCheckpoint::open(a), y = vlreward::SafetensorsCheckpoint::open(b);
  EXPECT_EQ(x.names(), y.names());
  double worst = 0;
  for (const auto& name : x.names()) {
    if (!y.contains(name)) continue;
    const auto p = vlreward::to_tensor(x.get(name)).to(torch::kFloat64);
    const auto q = vlreward::to_tensor(y.get(name)).to(torch::kFloat64);
    const double scale = std::max(p.abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (p - q).abs().max().item<double>() / scale);
  }
  return worst;
}

const std::vector<std::string> kMpoArgs{"--config", "configs/mpo_tiny.yaml", "output.progress=false",
                                        "output.tensorboard=false", "train.num_threads=1", "train.max_steps=3",
                                        "output.save_steps=1", "output.save_total_limit=3"};

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

struct MpoCase {
  bool sharded;
};

class MpoDataParallel : public ::testing::TestWithParam<MpoCase> {};

TEST_P(MpoDataParallel, TwoRanksEqualOneProcessWithTwiceTheAccumulation) {
  TempDir dir("vlreward_dp");
  const std::string shard = GetParam().sharded ? "true" : "false";
  // One process: micro-batches of 1 pair, 2 per step.
  const auto one = run_ranks(MPO_TRAIN_BIN, 1,
                             with(kMpoArgs, {"train.batch_size=1", "train.gradient_accumulation_steps=2",
                                             "--output-dir", dir / "one"}),
                             dir / "one.log");
  ASSERT_EQ(one, std::vector<int>({0})) << read_text(dir / "one.log.rank0");
  // Two ranks: 1 pair each, accumulation 1; a small bucket so parameters are cut across buckets and shards.
  const auto two = run_ranks(MPO_TRAIN_BIN, 2,
                             with(kMpoArgs, {"train.batch_size=1", "train.shard_optimizer=" + shard,
                                             "train.allreduce_bucket_mb=0.05", "--output-dir", dir / "two"}),
                             dir / "two.log");
  ASSERT_EQ(two, std::vector<int>({0, 0})) << read_text(dir / "two.log.rank0") << read_text(dir / "two.log.rank1");
  const double metrics = metrics_difference(dir / "one/metrics.jsonl", dir / "two/metrics.jsonl");
  const double weights = weights_difference(dir / "one/final_model", dir / "two/final_model");
  std::printf("[data parallel] mpo-train %s: metrics max rel %.2e, weights max rel %.2e\n",
              GetParam().sharded ? "sharded" : "whole", metrics, weights);
  EXPECT_LE(metrics, 1e-6);
  EXPECT_LE(weights, 1e-6);
  // Every checkpoint of the sharded run holds one optimizer shard per rank.
  if (GetParam().sharded) {
    EXPECT_TRUE(fs::exists(dir / "two/checkpoint-2/optimizer-shard-0-of-2.safetensors"));
    EXPECT_TRUE(fs::exists(dir / "two/checkpoint-2/optimizer-shard-1-of-2.safetensors"));
    EXPECT_FALSE(fs::exists(dir / "two/checkpoint-2/optimizer.safetensors"));
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizer, MpoDataParallel, ::testing::Values(MpoCase{false}, MpoCase{true}),
                         [](const auto& info) { return std::string(info.param.sharded ? "Sharded" : "Whole"); });

TEST(MpoDataParallelLora, TwoShardedRanksTrainTheAdaptersAsOneProcess) {
  TempDir dir("vlreward_dp");
  // configs/mpo_tiny.yaml without its freeze: section (LoRA freezes the base itself).
  std::string yaml = read_text(kRepoRoot + "/configs/mpo_tiny.yaml");
  const auto start = yaml.find("freeze:\n");
  ASSERT_NE(start, std::string::npos);
  auto end = yaml.find('\n', start) + 1;
  while (end < yaml.size() && yaml.compare(end, 2, "  ") == 0) end = yaml.find('\n', end) + 1;
  yaml.erase(start, end - start);
  const std::string config = dir.write("mpo_lora.yaml", yaml);
  std::vector<std::string> args = kMpoArgs;
  args[1] = config;
  args = with(args, {"lora.r=4", "lora.alpha=8", "train.batch_size=1"});
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 1, with(args, {"train.gradient_accumulation_steps=2", "--output-dir", dir / "one"}),
                      dir / "one.log"),
            std::vector<int>({0}))
      << read_text(dir / "one.log.rank0");
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 2,
                      with(args, {"train.shard_optimizer=true", "train.allreduce_bucket_mb=0.05", "--output-dir", dir / "two"}),
                      dir / "two.log"),
            std::vector<int>({0, 0}))
      << read_text(dir / "two.log.rank0") << read_text(dir / "two.log.rank1");
  const double metrics = metrics_difference(dir / "one/metrics.jsonl", dir / "two/metrics.jsonl");
  const double adapters = weights_difference(dir / "one/final_model/adapter/adapter_model.safetensors",
                                             dir / "two/final_model/adapter/adapter_model.safetensors");
  std::printf("[data parallel] LoRA, 2 sharded ranks: metrics max rel %.2e, adapters max rel %.2e\n", metrics, adapters);
  EXPECT_LE(metrics, 1e-6);
  EXPECT_LE(adapters, 1e-6);
}

TEST(MpoDataParallelBatch, TwoRanksMatchOneProcessWithTwiceTheBatchForPairMeanLosses) {
  // DPO-sigmoid alone is a mean over pairs, so 2 ranks × 1 pair compute what 1 process × 2 pairs computes (the SFT
  // term's token mean and δ's per-micro-batch update make that false for full MPO; the accumulation equality above
  // holds for it). A forward of 2 padded rows rounds differently from two forwards of 1 row in float32, so the match
  // is to that rounding: the same as one process's own batch 2 against batch 1 with accumulation 2, to the bit.
  TempDir dir("vlreward_dp");
  const auto sigmoid = with(kMpoArgs, {"loss.loss_type=[sigmoid]", "loss.loss_weights=[1.0]"});
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 1, with(sigmoid, {"train.batch_size=2", "--output-dir", dir / "batch2"}),
                      dir / "batch2.log"),
            std::vector<int>({0}));
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 1, with(sigmoid, {"train.batch_size=1", "train.gradient_accumulation_steps=2",
                                                       "--output-dir", dir / "accumulated"}),
                      dir / "accumulated.log"),
            std::vector<int>({0}));
  const auto two = run_ranks(MPO_TRAIN_BIN, 2,
                             with(sigmoid, {"train.batch_size=1", "train.shard_optimizer=true", "--output-dir", dir / "two"}),
                             dir / "two.log");
  ASSERT_EQ(two, std::vector<int>({0, 0})) << read_text(dir / "two.log.rank0") << read_text(dir / "two.log.rank1");
  EXPECT_LE(metrics_difference(dir / "accumulated/metrics.jsonl", dir / "two/metrics.jsonl"), 1e-12);
  EXPECT_EQ(weights_difference(dir / "accumulated/final_model", dir / "two/final_model"), 0.0);
  const auto x = metric_lines(dir / "batch2/metrics.jsonl"), y = metric_lines(dir / "two/metrics.jsonl");
  ASSERT_EQ(x.size(), y.size());
  double loss = 0, norm = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    loss = std::max(loss, rel(x[i].at("loss").get<double>(), y[i].at("loss").get<double>()));
    norm = std::max(norm, rel(x[i].at("grad_norm").get<double>(), y[i].at("grad_norm").get<double>()));
  }
  const double weights = weights_difference(dir / "batch2/final_model", dir / "two/final_model");
  std::printf("[data parallel] mpo-train 1x2 pairs vs 2 ranks x 1: loss max rel %.2e, grad norm %.2e, weights %.2e\n",
              loss, norm, weights);
  EXPECT_LE(loss, 1e-6);
  EXPECT_LE(norm, 1e-6);
  EXPECT_LE(weights, 1e-5);
}

TEST(MpoDataParallelResume, CheckpointsMoveBetweenWorldSizes) {
  TempDir dir("vlreward_dp");
  const std::vector<std::string> one_args = with(kMpoArgs, {"train.batch_size=1", "train.gradient_accumulation_steps=2"});
  const std::vector<std::string> two_args = with(kMpoArgs, {"train.batch_size=1", "train.shard_optimizer=true",
                                                            "train.allreduce_bucket_mb=0.05"});
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 1, with(one_args, {"--output-dir", dir / "one"}), dir / "one.log"),
            std::vector<int>({0}));
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 2, with(two_args, {"--output-dir", dir / "two"}), dir / "two.log"),
            std::vector<int>({0, 0}));
  // A 2-rank sharded checkpoint continued by one process, and a one-process checkpoint continued by 2 sharded ranks.
  fs::create_directories(dir / "two_then_one");
  fs::copy(dir / "two/checkpoint-2", dir / "two_then_one/checkpoint-2", fs::copy_options::recursive);
  fs::create_directories(dir / "one_then_two");
  fs::copy(dir / "one/checkpoint-2", dir / "one_then_two/checkpoint-2", fs::copy_options::recursive);
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 1, with(one_args, {"--output-dir", dir / "two_then_one", "--resume", "auto"}),
                      dir / "a.log"),
            std::vector<int>({0}))
      << read_text(dir / "a.log.rank0");
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 2, with(two_args, {"--output-dir", dir / "one_then_two", "--resume", "auto"}),
                      dir / "b.log"),
            std::vector<int>({0, 0}))
      << read_text(dir / "b.log.rank0") << read_text(dir / "b.log.rank1");
  const double to_one = weights_difference(dir / "one/final_model", dir / "two_then_one/final_model");
  const double to_two = weights_difference(dir / "two/final_model", dir / "one_then_two/final_model");
  std::printf("[data parallel] resume 2 ranks -> 1: weights max rel %.2e; 1 -> 2 ranks: %.2e\n", to_one, to_two);
  EXPECT_LE(to_one, 1e-6);
  EXPECT_LE(to_two, 1e-6);
  // A different global batch (ranks × accumulation) is refused, naming both.
  EXPECT_EQ(run_ranks(MPO_TRAIN_BIN, 1, with(kMpoArgs, {"train.batch_size=1", "--output-dir", dir / "one_then_two",
                                                         "--resume", dir / "two/checkpoint-2"}),
                      dir / "c.log"),
            std::vector<int>({2}));
  EXPECT_NE(read_text(dir / "c.log.rank0").find("ranks × accumulation"), std::string::npos)
      << read_text(dir / "c.log.rank0");
}

TEST(MpoDataParallelFaults, AKilledRankIsNamedAndTheRunResumes) {
  TempDir dir("vlreward_dp");
  const std::vector<std::string> args{"--config", "configs/mpo_tiny.yaml", "output.progress=false",
                                      "output.tensorboard=false", "train.num_threads=1", "train.batch_size=1",
                                      "train.max_steps=12", "output.save_steps=2", "output.save_total_limit=2",
                                      "train.collective_timeout_s=10"};
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 2, with(args, {"--output-dir", dir / "whole"}), dir / "whole.log"),
            std::vector<int>({0, 0}));
  // The same run; rank 1 is killed once the first checkpoint is committed.
  const int port = free_port();
  const auto out = with(args, {"--output-dir", dir / "killed"});
  const pid_t rank0 = spawn(MPO_TRAIN_BIN, out, rank_env(0, 2, port), dir / "killed.log.rank0");
  const pid_t rank1 = spawn(MPO_TRAIN_BIN, out, rank_env(1, 2, port), dir / "killed.log.rank1");
  const auto start = std::chrono::steady_clock::now();
  while (!fs::exists(dir / "killed/checkpoint-2") && std::chrono::steady_clock::now() - start < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(fs::exists(dir / "killed/checkpoint-2"));
  ::kill(rank1, SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  EXPECT_EQ(exit_code(rank1), 128 + SIGKILL);
  const int code0 = exit_code(rank0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  const std::string log0 = read_text(dir / "killed.log.rank0");
  if (code0 == 0) GTEST_SKIP() << "rank 1 was killed after the run had finished (machine too fast)";
  EXPECT_EQ(code0, 1) << log0;
  EXPECT_NE(log0.find("rank 1 did not reach"), std::string::npos) << log0;
  EXPECT_LE(seconds, 10 + 20) << "rank 0 took too long to give up";
  std::printf("[data parallel] rank 1 killed: rank 0 exited %d after %.1f s (timeout 10 s)\n", code0, seconds);
  // The last committed checkpoint resumes; the run ends as the uninterrupted one did.
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 2, with(out, {"--resume", "auto"}), dir / "resumed.log"), std::vector<int>({0, 0}))
      << read_text(dir / "resumed.log.rank0");
  const auto whole = metric_lines(dir / "whole/metrics.jsonl"), resumed = metric_lines(dir / "killed/metrics.jsonl");
  ASSERT_EQ(resumed.back().at("step"), whole.back().at("step"));
  for (const auto& [key, value] : whole.back().items())
    if (key != "tokens_per_second") EXPECT_EQ(resumed.back().at(key), value) << key;
  EXPECT_EQ(weights_difference(dir / "whole/final_model", dir / "killed/final_model"), 0.0);
}

TEST(MpoDataParallelOnline, OneRoundOnTwoRanksEqualsOneProcess) {
  // Each rank samples half the prompts (responses are seeded per prompt and sample), rank 0 scores and pairs them,
  // both train: the same pairs file, metrics and weights as one process with twice the accumulation.
  TempDir dir("vlreward_dp");
  const std::vector<std::string> args{"--config", "configs/mpo_online_tiny.yaml", "output.progress=false",
                                      "output.tensorboard=false", "train.num_threads=1", "online.rounds=1",
                                      "train.batch_size=1"};
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 1, with(args, {"train.gradient_accumulation_steps=2", "--output-dir", dir / "one"}),
                      dir / "one.log"),
            std::vector<int>({0}))
      << read_text(dir / "one.log.rank0");
  ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 2, with(args, {"train.shard_optimizer=true", "--output-dir", dir / "two"}),
                      dir / "two.log"),
            std::vector<int>({0, 0}))
      << read_text(dir / "two.log.rank0") << read_text(dir / "two.log.rank1");
  EXPECT_EQ(read_text(dir / "one/round-0/pairs.jsonl"), read_text(dir / "two/round-0/pairs.jsonl"));
  const double metrics = metrics_difference(dir / "one/metrics.jsonl", dir / "two/metrics.jsonl");
  const double weights = weights_difference(dir / "one/final_model", dir / "two/final_model");
  std::printf("[data parallel] online round: metrics max rel %.2e, weights max rel %.2e\n", metrics, weights);
  EXPECT_LE(metrics, 1e-6);
  EXPECT_LE(weights, 1e-6);
}

TEST(RewardDataParallel, TwoRanksEqualOneProcessWithTwiceTheAccumulation) {
  TempDir dir("vlreward_dp");
  const std::vector<std::string> args{"--config",        "configs/reward_train_tiny.yaml", "output.progress=false",
                                      "output.tensorboard=false", "train.num_threads=1",   "stages.0.batch_size=1",
                                      "stages.1.batch_size=1",    "stages.0.epochs=1",     "stages.1.epochs=1",
                                      "eval.batch_size=1"};
  ASSERT_EQ(run_ranks(REWARD_TRAIN_BIN, 1, with(args, {"train.gradient_accumulation_steps=2", "--output-dir", dir / "one"}),
                      dir / "one.log"),
            std::vector<int>({0}));
  for (const std::string shard : {"false", "true"}) {
    const std::string out = dir / ("two_" + shard);
    const auto codes = run_ranks(REWARD_TRAIN_BIN, 2,
                                 with(args, {"train.shard_optimizer=" + shard, "train.allreduce_bucket_mb=0.05",
                                             "--output-dir", out}),
                                 out + ".log");
    ASSERT_EQ(codes, std::vector<int>({0, 0})) << read_text(out + ".log.rank0") << read_text(out + ".log.rank1");
    const double metrics = metrics_difference(dir / "one/metrics.jsonl", out + "/metrics.jsonl");
    const double weights = weights_difference(dir / "one/final_model", out + "/final_model");
    std::printf("[data parallel] reward-train shard_optimizer=%s: metrics max rel %.2e, weights max rel %.2e\n",
                shard.c_str(), metrics, weights);
    EXPECT_LE(metrics, 1e-6);
    EXPECT_LE(weights, 1e-6);
    // Evaluation lines (split over the ranks, gathered in pair order) are the one process's.
    const auto x = metric_lines(dir / "one/metrics.jsonl"), y = metric_lines(out + "/metrics.jsonl");
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i)
      if (x[i].contains("eval")) EXPECT_EQ(x[i].at("eval"), y[i].at("eval"));
  }
}

TEST(DataParallelMemory, ShardedOptimizerStateIsOneOverWorldSize) {
  TempDir dir("vlreward_dp");
  auto state_bytes = [&](const std::string& log) {
    const std::regex line(R"(optimizer state (\d+) bytes)");
    std::smatch m;
    const std::string text = read_text(log);
    EXPECT_TRUE(std::regex_search(text, m, line)) << text;
    return std::stoll(m[1].str());
  };
  for (const std::string shard : {"false", "true"}) {
    const std::string out = dir / ("run_" + shard);
    ASSERT_EQ(run_ranks(MPO_TRAIN_BIN, 2,
                        with(kMpoArgs, {"train.batch_size=1", "train.max_steps=1", "train.shard_optimizer=" + shard,
                                        "--output-dir", out}),
                        out + ".log"),
              std::vector<int>({0, 0}));
  }
  const long long whole0 = state_bytes(dir / "run_false.log.rank0"), whole1 = state_bytes(dir / "run_false.log.rank1");
  const long long shard0 = state_bytes(dir / "run_true.log.rank0"), shard1 = state_bytes(dir / "run_true.log.rank1");
  std::printf("[data parallel] optimizer state per rank: whole %lld / %lld bytes, sharded %lld / %lld bytes\n", whole0,
              whole1, shard0, shard1);
  EXPECT_EQ(whole0, whole1);
  EXPECT_EQ(shard0 + shard1, whole0);  // the slices partition the state
  EXPECT_LE(std::abs(shard0 - shard1), 16 * 4 * 2) << "slices of a bucket differ by padding only";
}

}  // namespace
