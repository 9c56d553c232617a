// The reward command lines run end to end on the committed samples, as the README documents them.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "adapters/common/mapped_file.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

namespace {

const std::string kFixtures = VLREWARD_FIXTURES_DIR;
const std::string kModelArgs = " --model " + kFixtures + "/model/tiny --value-head " + kFixtures +
                               "/reward/value_head.safetensors --no-progress";

int run(const std::string& command) {
  const int status = std::system((command + " 2>/dev/null").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST(RewardScoreCli, ScoresTheCommittedSampleAndMatchesTheReference) {
  auto dir = vlreward::test_support::scratch_dir("score");
  const std::string out = (dir / "scores.jsonl").string();
  ASSERT_EQ(run(std::string(REWARD_SCORE_BIN) + " --input " + kFixtures + "/reward/items.jsonl --output " + out + kModelArgs), 0);
  const auto expected = nlohmann::json::parse(vlreward::read_file(kFixtures + "/reward/expected.json"))["items"];
  std::ifstream in(out);
  size_t n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    auto record = nlohmann::json::parse(line);
    ASSERT_LT(n, expected.size());
    EXPECT_EQ(record["id"], expected[n]["id"]);
    const double want = expected[n]["score"];
    EXPECT_NEAR(record["score"].get<double>(), want, 1e-4 * std::max(1.0, std::abs(want)));
  }
  EXPECT_EQ(n, expected.size());
}

TEST(RewardScoreCli, ExitCodeSaysWhetherAnyLineFailed) {
  auto dir = vlreward::test_support::scratch_dir("failing");
  std::ofstream(dir / "in.jsonl") << R"({"id": "ok", "images": [], "question": "q", "response": "r"})" << "\n"
                                  << R"({"id": "bad", "images": ["missing.png"], "question": "q", "response": "r"})" << "\n";
  const std::string out = (dir / "out.jsonl").string();
  EXPECT_EQ(run(std::string(REWARD_SCORE_BIN) + " --input " + (dir / "in.jsonl").string() + " --output " + out + kModelArgs), 1);
  EXPECT_EQ(run(std::string(REWARD_SCORE_BIN) + " --input " + (dir / "in.jsonl").string() + " --output " + out + kModelArgs), 2)
      << "an existing output without --resume/--overwrite is a usage error";
  EXPECT_EQ(run(std::string(REWARD_SCORE_BIN) + " --input " + (dir / "in.jsonl").string() + " --output " + out +
                " --resume" + kModelArgs),
            1)
      << "resuming a complete output that holds an error record still says some lines failed";
  std::ofstream(dir / "good.jsonl") << R"({"id": "ok", "images": [], "question": "q", "response": "r"})" << "\n";
  const std::string good_out = (dir / "good_out.jsonl").string();
  const std::string good = std::string(REWARD_SCORE_BIN) + " --input " + (dir / "good.jsonl").string() + " --output " +
                           good_out + kModelArgs;
  EXPECT_EQ(run("trap '' XFSZ; ulimit -f 0; " + good), 3) << "an output that cannot be written: the run is incomplete";
  EXPECT_EQ(run(good + " --resume"), 0);
  EXPECT_EQ(run(good + " --resume"), 0) << "resuming a complete output of scores";
  EXPECT_EQ(run(std::string(REWARD_SCORE_BIN) + " --input x.jsonl --output y.jsonl"), 2) << "no backend given";
}

TEST(RewardEvalCli, EvaluatesTheVlRewardBenchSample) {
  auto dir = vlreward::test_support::scratch_dir("eval");
  const std::string out = (dir / "results.json").string();
  ASSERT_EQ(run(std::string(REWARD_EVAL_BIN) + " --data " + kFixtures + "/reward/vlrb_sample.jsonl --output " + out +
                kModelArgs),
            0);
  const auto results = nlohmann::json::parse(vlreward::read_file(out));
  const auto expected = nlohmann::json::parse(vlreward::read_file(kFixtures + "/reward/vlrb_expected.json"));
  EXPECT_EQ(results["overall"], expected["overall"]);
  EXPECT_EQ(results["macro_accuracy"], expected["macro_accuracy"]);
  EXPECT_EQ(results["categories"], expected["categories"]);
}
