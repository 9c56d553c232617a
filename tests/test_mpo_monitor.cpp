// Online MPO's reward-hacking and drift monitors: the sample metrics on hand-made scored responses (format share,
// accuracy, reward/correctness agreement, length), alarms and their config errors, and on the tiny model a reward
// that pays for the wrong thing stopping the run after its first round, while monitors that stay quiet leave
// training bit-identical. CPU, tests/fixtures/model/tiny.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "fake_reward_backend.h"
#include "mpo/monitor.h"
#include "mpo/online.h"
#include "mpo/train_config.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace vlreward;
using namespace vlreward::mpo;
using nlohmann::json;

namespace {

const std::string kFixtures = VLREWARD_FIXTURES_DIR;
const std::string kTinyModel = kFixtures + "/model/tiny";
const std::string kImages = kFixtures + "/reward/images";
using test_support::TempDir;

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

PromptRecord prompt(const std::string& id, std::optional<std::string> reference) {
  PromptRecord p;
  p.id = id;
  p.question = "What is it?";
  p.reference = std::move(reference);
  p.source = "test:" + id;
  return p;
}

std::string config_error(const std::string& monitor_yaml) {
  try {
    TrainConfig::from_json(json::parse(monitor_yaml), "monitor.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

json online_with_monitor(const json& monitor) {
  return {{"model", {{"path", kTinyModel}}},
          {"output", {{"dir", "run"}}},
          {"online", {{"prompts", "p.jsonl"}, {"monitor", monitor}}},
          {"reward", {{"type", "exact_match"}}}};
}

}  // namespace

TEST(MonitorSamples, FormatAccuracyAgreementAndLength) {
  MonitorSettings settings;
  settings.format = {{"type", "format"}, {"pattern", "(red|blue|[0-9])"}};
  RoundMonitor monitor(settings, "", 8, 4, 16);
  const std::vector<PromptRecord> prompts{prompt("p1", "red"), prompt("p2", "3"), prompt("p3", std::nullopt)};
  const std::vector<std::vector<ScoredResponse>> responses{
      {{"red", 1.0}, {"blue", 2.0}, {"reen", 5.0}},   // the reward prefers the misspelling: agreement 0/2
      {{"3", 4.0}, {"4", 1.0}, {"3!!", 0.0}},         // "3!!" is correct (trailing punctuation), out of format
      {{"x", 1.0}}};                                  // no reference: format only
  const std::vector<std::vector<int64_t>> lengths{{1, 1, 2}, {1, 1, 3}, {6}};
  const auto m = monitor.on_samples(prompts, responses, lengths);
  EXPECT_DOUBLE_EQ(m.at("monitor/sample_format_violations"), 3.0 / 7.0);  // reen, 3!!, x
  EXPECT_DOUBLE_EQ(m.at("monitor/sample_accuracy"), 3.0 / 6.0);           // red, 3, 3!!
  // p1: red(1) vs blue(2), reen(5): 0 of 2; p2: 3(4) and 3!!(0) vs 4(1): 1 of 2.
  EXPECT_DOUBLE_EQ(m.at("monitor/reward_correctness_agreement"), 1.0 / 4.0);
  EXPECT_DOUBLE_EQ(m.at("monitor/sample_tokens"), 15.0 / 7.0);

  // Ties count one half; no (correct, wrong) pair leaves the metric out; unscored responses are not compared.
  const auto tied = monitor.on_samples({prompt("q", "red")}, {{{"red", 1.0}, {"blue", 1.0}, {"green", std::nullopt}}},
                                       {{1, 1, 1}});
  EXPECT_DOUBLE_EQ(tied.at("monitor/reward_correctness_agreement"), 0.5);
  const auto none = monitor.on_samples({prompt("q", "red")}, {{{"red", 1.0}}}, {{1}});
  EXPECT_EQ(none.count("monitor/reward_correctness_agreement"), 0u);
  EXPECT_DOUBLE_EQ(none.at("monitor/sample_accuracy"), 1.0);

  // A correctness backend instead of the answer rule: the boxed answer.
  MonitorSettings boxed;
  boxed.correct = {{"type", "exact_match"}, {"extract", "boxed"}};
  RoundMonitor boxed_monitor(boxed, "", 8, 4, 16);
  const auto b = boxed_monitor.on_samples({prompt("q", "3")}, {{{"\\boxed{3}", 2.0}, {"3", 1.0}}}, {{4, 1}});
  EXPECT_DOUBLE_EQ(b.at("monitor/sample_accuracy"), 0.5);
  EXPECT_DOUBLE_EQ(b.at("monitor/reward_correctness_agreement"), 1.0);
  EXPECT_EQ(b.count("monitor/sample_format_violations"), 0u);  // no format check configured
}

TEST(MonitorAlarms, FireOnTheirThresholdsAndConfigErrorsNameTheKey) {
  const auto config = TrainConfig::from_json(
      online_with_monitor({{"format", {{"type", "format"}, {"pattern", "x"}}},
                           {"alarms",
                            {{{"metric", "monitor/sample_format_violations"}, {"above", 0.2}, {"action", "stop"}},
                             {{"metric", "reward_correctness_agreement"}, {"below", 0.6}},
                             {{"metric", "sample_tokens"}, {"above", 10}, {"below", 1}}}}}),
      "monitor.yaml");
  const MonitorSettings& settings = *config.online->monitor;
  ASSERT_EQ(settings.alarms.size(), 3u);
  EXPECT_EQ(settings.alarms[0].metric, "sample_format_violations");
  EXPECT_TRUE(settings.alarms[0].stop);
  EXPECT_FALSE(settings.alarms[1].stop);  // warn is the default action
  RoundMonitor monitor(settings, "", 8, 4, 16);
  auto fired = monitor.check({{"monitor/sample_format_violations", 0.5},
                              {"monitor/reward_correctness_agreement", 0.7},
                              {"monitor/sample_tokens", 0.5}});
  ASSERT_EQ(fired.size(), 2u);
  EXPECT_EQ(fired[0].message, "monitor/sample_format_violations = 0.5 is above 0.2 (stop)");
  EXPECT_EQ(fired[1].message, "monitor/sample_tokens = 0.5 is below 1 (warn)");
  EXPECT_TRUE(monitor.check({{"monitor/sample_format_violations", 0.2}}).empty());  // at the threshold: quiet
  EXPECT_TRUE(monitor.check({}).empty());                                            // not measured: quiet
  // The normalised config keeps the monitor settings.
  EXPECT_EQ(config.to_json()["online"]["monitor"]["alarms"][0]["metric"], "sample_format_violations");

  EXPECT_NE(config_error(online_with_monitor({{"alarms", {{{"metric", "kl_div"}, {"above", 1}}}}}).dump())
                .find("online.monitor.alarms[0].metric: unknown monitor metric \"kl_div\""),
            std::string::npos);
  EXPECT_NE(config_error(online_with_monitor({{"alarms", {{{"metric", "sample_format_violations"}, {"above", 1}}}}}).dump())
                .find("needs online.monitor.format"),
            std::string::npos);
  EXPECT_NE(config_error(online_with_monitor({{"alarms", {{{"metric", "kl"}, {"above", 1}}}}}).dump())
                .find("kl needs online.monitor.prompts"),
            std::string::npos);
  EXPECT_NE(config_error(online_with_monitor({{"alarms", {{{"metric", "sample_tokens"}}}}}).dump())
                .find("online.monitor.alarms[0].above: an alarm needs a threshold"),
            std::string::npos);
  EXPECT_NE(config_error(online_with_monitor({{"alarms", {{{"metric", "sample_tokens"}, {"above", 1}, {"action", "halt"}}}}}).dump())
                .find("online.monitor.alarms[0].action: must be \"warn\" or \"stop\""),
            std::string::npos);
  EXPECT_NE(config_error(online_with_monitor({{"format", "x"}}).dump()).find("online.monitor.format: must be a reward backend"),
            std::string::npos);
  EXPECT_NE(config_error(online_with_monitor({{"max_prompt", 3}}).dump()).find("max_prompt"), std::string::npos);
}

namespace {

std::string write_config(const TempDir& dir, const std::string& reward_yaml, const std::string& monitor_yaml) {
  fs::copy_file(kImages + "/small.png", dir / "local.png", fs::copy_options::overwrite_existing);
  write_text(dir / "prompts.jsonl",
             "{\"id\": \"a\", \"images\": [\"local.png\"], \"question\": \"What colour?\", \"reference\": \"red\"}\n"
             "{\"id\": \"b\", \"question\": \"Say something.\", \"reference\": \"hi\"}\n"
             "{\"id\": \"c\", \"images\": [\"" + kImages + "/square.jpg\"], \"question\": \"How many?\", \"reference\": \"3\"}\n");
  write_text(dir / "online.yaml",
             "model:\n  path: " + kTinyModel + "\n  max_pixels: 12544\n"
             "loss:\n  loss_type: [sigmoid, bco_pair, sft]\n  loss_weights: [0.8, 0.2, 1.0]\n"
             "train:\n  learning_rate: 1.0e-3\n  warmup_ratio: 0.0\n  batch_size: 1\n  num_threads: 1\n"
             "output:\n  dir: " + (dir / "run") + "\n  progress: false\n  tensorboard: false\n"
             "online:\n  prompts: " + (dir / "prompts.jsonl") +
             "\n  rounds: 2\n  samples_per_prompt: 4\n  temperature: 1.0\n  max_new_tokens: 6\n  seed: 5\n  batch_size: 4\n" +
             monitor_yaml + "reward: " + reward_yaml + "\n");
  return dir / "online.yaml";
}

std::vector<json> round_lines(const std::string& metrics_path) {
  std::vector<json> out;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    if (j.contains("round_summary")) out.push_back(j);
  }
  return out;
}

}  // namespace

TEST(OnlineMonitor, ARewardPayingForTheWrongThingStopsTheRunAfterItsRound) {
  TempDir dir;
  // "Correct" = the response has an upper-case letter (about 2 in 3 of the tiny policy's); the reward pays for
  // responses without one: every (correct, wrong) pair is ranked wrong-first, agreement 0, and the stop alarm ends
  // the run after round 0.
  const std::string config_path = write_config(
      dir, "{type: format, pattern: \"[^A-Z]*\"}",
      "  monitor:\n    prompts: " + (dir / "prompts.jsonl") +
          "\n    correct: {type: format, pattern: \".*[A-Z].*\"}\n"
          "    alarms:\n      - {metric: reward_correctness_agreement, below: 0.5, action: stop}\n");
  const auto config = load_train_config(config_path);
  std::string message;
  try {
    run_online(config, std::nullopt);
  } catch (const MonitorStop& e) {
    message = e.what();
  }
  ASSERT_NE(message.find("stopped by a monitor alarm after round-0 (1/2): monitor/reward_correctness_agreement = 0 is "
                         "below 0.5 (stop)"),
            std::string::npos)
      << message;
  EXPECT_TRUE(fs::exists(dir / "run/round-0/DONE"));
  EXPECT_FALSE(fs::exists(dir / "run/round-1"));
  EXPECT_FALSE(fs::exists(dir / "run/final_model"));
  const auto lines = round_lines(dir / "run/metrics.jsonl");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["monitor/alarms"], 1.0);
  EXPECT_EQ(lines[0]["monitor/reward_correctness_agreement"], 0.0);
  const auto summary = json::parse(read_file(dir / "run/monitor_summary.json"));
  EXPECT_EQ(summary["alarms"], 1);
  EXPECT_EQ(summary["rounds"][0]["monitor/reward_correctness_agreement"], 0.0);
}

TEST(OnlineMonitor, QuietMonitorsMeasureEveryRoundAndLeaveTrainingUnchanged) {
  TempDir dir;
  test_support::FakeBackend reward;
  const std::string monitor =
      "  monitor:\n    prompts: " + (dir / "prompts.jsonl") +
      "\n    format: {type: format, pattern: \".*\"}\n"
      "    alarms:\n      - {metric: sample_format_violations, above: 0.5, action: stop}\n"
      "      - {metric: kl, above: 1.0e6, action: stop}\n";
  const auto watched = load_train_config(write_config(dir, "{type: exact_match}", monitor), {"output.dir=" + (dir / "watched")});
  const auto plain = load_train_config(write_config(dir, "{type: exact_match}", ""), {"output.dir=" + (dir / "plain")});
  run_online(watched, std::nullopt, &reward);
  run_online(plain, std::nullopt, &reward);
  EXPECT_EQ(read_file(dir / "watched/final_model/model.safetensors"), read_file(dir / "plain/final_model/model.safetensors"));
  for (int r = 0; r < 2; ++r) {
    const std::string pairs = "/round-" + std::to_string(r) + "/pairs.jsonl";
    EXPECT_EQ(read_file(dir / ("watched" + pairs)), read_file(dir / ("plain" + pairs)));
  }
  const auto lines = round_lines(dir / "watched/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& line : lines) {
    EXPECT_EQ(line["monitor/alarms"], 0.0);
    EXPECT_EQ(line["monitor/sample_format_violations"], 0.0);
    EXPECT_EQ(line["monitor/heldout_format_violations"], 0.0);
    EXPECT_EQ(line["monitor/heldout_accuracy"], 0.0);  // the tiny random policy
    EXPECT_GT(line["monitor/heldout_tokens"].get<double>(), 0.0);
    EXPECT_TRUE(std::isfinite(line["monitor/kl"].get<double>()));
    EXPECT_GT(line["monitor/sample_tokens"].get<double>(), 0.0);
  }
  // The policy moved away from the reference: a non-zero KL estimate after training.
  EXPECT_NE(lines[1]["monitor/kl"].get<double>(), 0.0);
  EXPECT_EQ(json::parse(read_file(dir / "watched/monitor_summary.json"))["alarms"], 0);
  EXPECT_FALSE(fs::exists(dir / "plain/monitor_summary.json"));
}
