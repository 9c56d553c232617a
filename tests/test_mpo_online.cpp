// Online MPO: reward-ranked pair selection on hand-made scores, pair building through a reward backend
// (item errors dropped, statistics, histogram, the pairs JSONL), online rounds on the tiny model (round dirs,
// kill + resume == uninterrupted, completed rounds skipped), SFT mode (no reference, the loss falls, strict
// lines), and config errors naming the key path. CPU, tests/fixtures/model/tiny.
#include <cstdint>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/safetensors.h"
#include "adapters/hf/safetensors_torch.h"
#include "fake_reward_backend.h"
#include "tests/test_support.h"
#include "mpo/checkpoint.h"
#include "mpo/online.h"
#include "mpo/pair_builder.h"
#include "mpo/data_fingerprint.h"
#include "reward/preference_data.h"
#include "mpo/train_config.h"
#include "mpo/trainer.h"
#include "reward/backends.h"

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

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// Byte equality without printing megabytes of weights on failure.
bool same_file(const std::string& a, const std::string& b) { return read_file(a) == read_file(b); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<ScoredResponse> scored(const std::vector<std::pair<std::string, std::optional<double>>>& items) {
  std::vector<ScoredResponse> out;
  for (const auto& [text, score] : items) out.push_back({text, score});
  return out;
}

PairOptions options(PairMode mode, int64_t k, double min_margin, uint64_t seed = 0) {
  PairOptions o;
  o.mode = mode;
  o.pairs_per_prompt = k;
  o.min_margin = min_margin;
  o.seed = seed;
  return o;
}

// A rule reward with fixed scores per response text; "FAIL" fails the item, unknown texts score 0.
class TableReward : public RewardBackend {
 public:
  explicit TableReward(std::map<std::string, double> table) : table_(std::move(table)) {}
  std::string name() const override { return "table"; }
  RewardCapabilities capabilities() const override { return {}; }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    batch_sizes.push_back(batch.size());
    std::vector<RewardResult> out;
    for (const auto& r : batch) {
      seen_ids.push_back(r.id);
      if (r.response == "FAIL") out.push_back(RewardResult::failure("refused"));
      else if (r.response == "NAN") out.push_back(RewardResult::success(std::nan("")));
      else out.push_back(RewardResult::success(table_.count(r.response) ? table_.at(r.response) : 0.0));
    }
    return out;
  }
  std::vector<size_t> batch_sizes;
  std::vector<std::string> seen_ids;

 private:
  std::map<std::string, double> table_;
};

}  // namespace

// ---- pair selection on hand-made scores -------------------------------------------------------------------------

TEST(PairBuildSelect, TiesTooFewAndMarginDropThePrompt) {
  auto tie = select_pairs(scored({{"a", 1.0}, {"b", 1.0}, {"c", 1.0}}), options(PairMode::kMaxMin, 1, 0), "p");
  EXPECT_EQ(tie.outcome, PromptOutcome::kTie);
  EXPECT_TRUE(tie.pairs.empty());
  auto few = select_pairs(scored({{"a", 1.0}, {"b", std::nullopt}, {"c", std::nullopt}}), options(PairMode::kMaxMin, 1, 0), "p");
  EXPECT_EQ(few.outcome, PromptOutcome::kTooFewScored);
  auto narrow = select_pairs(scored({{"a", 1.0}, {"b", 1.4}}), options(PairMode::kMaxMin, 1, 0.5), "p");
  EXPECT_EQ(narrow.outcome, PromptOutcome::kMargin);
  // Exactly min_margin passes.
  auto exact = select_pairs(scored({{"a", 1.0}, {"b", 1.5}}), options(PairMode::kMaxMin, 1, 0.5), "p");
  ASSERT_EQ(exact.outcome, PromptOutcome::kPaired);
  EXPECT_EQ(exact.pairs[0].chosen, 1u);
  EXPECT_EQ(exact.pairs[0].rejected, 0u);
  EXPECT_DOUBLE_EQ(exact.pairs[0].margin, 0.5);
}

TEST(PairBuildSelect, MaxMinPairsOutsideInWhileTheMarginHolds) {
  const auto r = scored({{"s3", 3.0}, {"s5", 5.0}, {"s1", 1.0}, {"s4", 4.0}, {"s2", 2.0}});
  auto one = select_pairs(r, options(PairMode::kMaxMin, 1, 0), "p");
  ASSERT_EQ(one.pairs.size(), 1u);
  EXPECT_EQ(one.pairs[0].chosen, 1u);  // 5
  EXPECT_EQ(one.pairs[0].rejected, 2u);  // 1
  auto three = select_pairs(r, options(PairMode::kMaxMin, 3, 0), "p");
  ASSERT_EQ(three.pairs.size(), 2u);  // 5 vs 1, 4 vs 2; the middle response is left alone
  EXPECT_EQ(three.pairs[1].chosen, 3u);
  EXPECT_EQ(three.pairs[1].rejected, 4u);
  EXPECT_DOUBLE_EQ(three.pairs[1].margin, 2.0);
  auto thresholded = select_pairs(r, options(PairMode::kMaxMin, 3, 2.5), "p");
  ASSERT_EQ(thresholded.pairs.size(), 1u);  // 4 vs 2 is below the margin
  EXPECT_DOUBLE_EQ(thresholded.pairs[0].margin, 4.0);
  // Errors (nullopt) are not candidates.
  auto with_errors = select_pairs(scored({{"x", std::nullopt}, {"a", 2.0}, {"b", 0.0}}), options(PairMode::kMaxMin, 1, 0), "p");
  ASSERT_EQ(with_errors.pairs.size(), 1u);
  EXPECT_EQ(with_errors.pairs[0].chosen, 1u);
  EXPECT_EQ(with_errors.pairs[0].rejected, 2u);
}

TEST(PairBuildSelect, MaxRandomDrawsSeededLowerResponsesAboveTheMargin) {
  const auto r = scored({{"best", 10.0}, {"a", 1.0}, {"b", 2.0}, {"c", 3.0}, {"d", 4.0}, {"e", 9.5}});
  std::set<size_t> drawn_over_seeds;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto s = select_pairs(r, options(PairMode::kMaxRandom, 2, 1.0, seed), "p");
    ASSERT_EQ(s.pairs.size(), 2u);
    EXPECT_NE(s.pairs[0].rejected, s.pairs[1].rejected);
    for (const auto& p : s.pairs) {
      EXPECT_EQ(p.chosen, 0u);
      EXPECT_NE(p.rejected, 5u);  // 9.5 is within the margin of the best
      EXPECT_GE(p.margin, 1.0);
      drawn_over_seeds.insert(p.rejected);
    }
    auto again = select_pairs(r, options(PairMode::kMaxRandom, 2, 1.0, seed), "p");
    EXPECT_EQ(again.pairs[0].rejected, s.pairs[0].rejected);
    EXPECT_EQ(again.pairs[1].rejected, s.pairs[1].rejected);
  }
  EXPECT_EQ(drawn_over_seeds, (std::set<size_t>{1, 2, 3, 4}));  // every eligible response gets drawn by some seed
  // K larger than the candidates: all of them.
  EXPECT_EQ(select_pairs(r, options(PairMode::kMaxRandom, 10, 1.0), "p").pairs.size(), 4u);
}

TEST(PairBuildSelect, DuplicateTextsAreNeverPairs) {
  // A stochastic reward scored the same text twice differently: never a pair of identical completions.
  auto same = select_pairs(scored({{"x", 2.0}, {"x", 1.0}}), options(PairMode::kMaxMin, 1, 0), "p");
  EXPECT_EQ(same.outcome, PromptOutcome::kDuplicate);
  // Repeated (chosen, rejected) texts count once; K then takes the next distinct pair.
  auto repeated = select_pairs(scored({{"good", 3.0}, {"good", 3.0}, {"mid", 2.0}, {"bad", 0.0}, {"bad", 0.0}, {"low", 1.0}}),
                               options(PairMode::kMaxMin, 3, 0), "p");
  ASSERT_EQ(repeated.pairs.size(), 2u);  // good-bad (twice: once), mid-low
  EXPECT_EQ(repeated.pairs[0].chosen, 0u);
  EXPECT_EQ(repeated.pairs[1].chosen, 2u);
  EXPECT_EQ(repeated.pairs[1].rejected, 5u);
  auto random = select_pairs(scored({{"good", 3.0}, {"bad", 0.0}, {"bad", 0.0}, {"good", 1.0}}),
                             options(PairMode::kMaxRandom, 5, 0), "p");
  ASSERT_EQ(random.pairs.size(), 1u);  // one distinct lower text, and "good" never against itself
  EXPECT_EQ(random.pairs[0].rejected, 1u);
}

// ---- pair building through a reward backend ---------------------------------------------------------------------

TEST(PairBuildRound, ScoresBatchesDropsErrorsAndCountsEverything) {
  TempDir dir;
  fs::copy_file(kImages + "/small.png", dir / "local.png");
  write_text(dir / "prompts.jsonl",
             "{\"id\": \"p0\", \"images\": [\"local.png\"], \"question\": \"q0\", \"reference\": \"r\"}\n"
             "{\"id\": \"p1\", \"question\": \"q1\", \"system\": \"Be brief.\"}\n"
             "{\"id\": \"p2\", \"question\": \"q2\"}\n"
             "{\"id\": \"p3\", \"question\": \"q3\"}\n");
  const auto prompts = read_prompt_jsonl(dir / "prompts.jsonl");
  const std::vector<std::vector<std::string>> responses{
      {"great", "FAIL", "poor", "ok"},  // 3 vs 0 (margin 3), FAIL dropped
      {"ok", "ok2", "NAN", "FAIL"},     // 1 vs 1: tie
      {"fine", "poor", "great", "ok"},  // 3 vs 0 and 2 vs 1
      {"tiny", "poor", "FAIL", "FAIL"}, // 0.05 vs 0: below the margin
  };
  TableReward reward({{"great", 3.0}, {"fine", 2.0}, {"ok", 1.0}, {"ok2", 1.0}, {"poor", 0.0}, {"tiny", 0.05}});
  PairOptions o = options(PairMode::kMaxMin, 2, 0.1);
  const BuiltPairs built = build_pairs(prompts, responses, reward, o, 5);
  EXPECT_EQ(reward.batch_sizes, (std::vector<size_t>{5, 5, 5, 1}));
  EXPECT_EQ(reward.seen_ids.front(), "p0/0");
  EXPECT_EQ(reward.seen_ids.back(), "p3/3");
  const PairStats& s = built.stats;
  EXPECT_EQ(s.prompts, 4);
  EXPECT_EQ(s.responses, 16);
  EXPECT_EQ(s.reward_errors, 5);  // 4 FAIL + 1 NaN
  EXPECT_EQ(s.responses_scored, 11);
  EXPECT_EQ(s.pairs, 3);
  EXPECT_EQ(s.prompts_paired, 2);
  EXPECT_EQ(s.dropped_tie, 1);
  EXPECT_EQ(s.dropped_margin, 1);
  EXPECT_EQ(s.dropped_duplicate, 0);
  EXPECT_EQ(s.dropped_too_few_scored, 0);
  EXPECT_DOUBLE_EQ(s.drop_rate, 0.5);
  EXPECT_DOUBLE_EQ(s.reward_min, 0.0);
  EXPECT_DOUBLE_EQ(s.reward_max, 3.0);
  EXPECT_NEAR(s.reward_mean, (3 + 0 + 1 + 1 + 1 + 2 + 0 + 3 + 1 + 0.05 + 0) / 11.0, 1e-12);
  EXPECT_NEAR(s.margin_mean, (3 + 3 + 1) / 3.0, 1e-12);
  // Margins 3, 3, 1: bins [2, 5) twice and [1, 2) once.
  ASSERT_EQ(s.margin_histogram.size(), margin_histogram_edges().size() + 1);
  std::vector<int64_t> expected(s.margin_histogram.size(), 0);
  expected[4] = 1;  // [1, 2)
  expected[5] = 2;  // [2, 5)
  EXPECT_EQ(s.margin_histogram, expected);
  EXPECT_EQ(s.to_json()["margin_histogram"][5]["count"], 2);
  EXPECT_EQ(s.to_metrics().at("pairs/margin_hist/2"), 2.0);

  // Records ready for the trainer and the JSONL lines: ids, original image references, scores, system prompt.
  ASSERT_EQ(built.records.size(), 3u);
  EXPECT_EQ(built.records[0].id, "p0/0");
  EXPECT_EQ(built.records[0].chosen, "great");
  EXPECT_EQ(built.records[0].rejected, "poor");
  EXPECT_EQ(built.records[2].id, "p2/1");
  EXPECT_EQ(built.lines[0]["images"], json::array({"local.png"}));
  EXPECT_EQ(built.lines[0]["chosen_score"], 3.0);
  EXPECT_EQ(built.lines[0]["rejected_score"], 0.0);
  EXPECT_EQ(built.lines[0]["prompt_id"], "p0");
  write_pairs_jsonl(dir / "pairs.jsonl", built.lines);
  const auto back = read_preference_jsonl(dir / "pairs.jsonl", jsonl_image_root(dir / "prompts.jsonl"));
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[0].images.at(0).path, dir / "local.png");
  EXPECT_EQ(back[1].question, built.records[1].question);
  // The same inputs give the same file (a stable data fingerprint).
  const std::string first = read_file(dir / "pairs.jsonl");
  TableReward again({{"great", 3.0}, {"fine", 2.0}, {"ok", 1.0}, {"ok2", 1.0}, {"poor", 0.0}, {"tiny", 0.05}});
  write_pairs_jsonl(dir / "pairs2.jsonl", build_pairs(prompts, responses, again, o, 3).lines);
  EXPECT_EQ(read_file(dir / "pairs2.jsonl"), first);
}

TEST(PairBuildRound, SystemPromptTravelsAndAllErrorsGiveNoPairs) {
  TempDir dir;
  write_text(dir / "prompts.jsonl", "{\"id\": \"p1\", \"question\": \"q1\", \"system\": \"Be brief.\"}\n");
  const auto prompts = read_prompt_jsonl(dir / "prompts.jsonl");
  TableReward reward({{"a", 1.0}});
  auto built = build_pairs(prompts, {{"a", "b"}}, reward, options(PairMode::kMaxMin, 1, 0));
  ASSERT_EQ(built.lines.size(), 1u);
  EXPECT_EQ(built.lines[0]["system"], "Be brief.");
  EXPECT_EQ(built.records[0].system_prompt.value_or(""), "Be brief.");
  auto failed = build_pairs(prompts, {{"FAIL", "FAIL"}}, reward, options(PairMode::kMaxMin, 1, 0));
  EXPECT_EQ(failed.stats.pairs, 0);
  EXPECT_EQ(failed.stats.reward_errors, 2);
  EXPECT_EQ(failed.stats.dropped_too_few_scored, 1);
  EXPECT_DOUBLE_EQ(failed.stats.drop_rate, 1.0);
}

// ---- online rounds on the tiny model ----------------------------------------------------------------------------

namespace {

// Three prompts (one with a relative image reference), a tiny config: 2 rounds, 3 samples of 6 tokens.
std::string write_online_config(const TempDir& dir, const std::string& reward_yaml = "{type: exact_match}",
                                const std::string& extra = "") {
  fs::copy_file(kImages + "/small.png", dir / "local.png", fs::copy_options::overwrite_existing);
  write_text(dir / "prompts.jsonl",
             "{\"id\": \"a\", \"images\": [\"local.png\"], \"question\": \"What colour?\", \"reference\": \"red\"}\n"
             "{\"id\": \"b\", \"question\": \"Say something.\", \"reference\": \"hi\"}\n"
             "{\"id\": \"c\", \"images\": [\"" + kImages + "/square.jpg\"], \"question\": \"How many?\", \"reference\": \"3\"}\n");
  const std::string yaml = "model:\n  path: " + kTinyModel +
                           "\n  max_pixels: 12544\n"
                           "loss:\n  loss_type: [sigmoid, bco_pair, sft]\n  loss_weights: [0.8, 0.2, 1.0]\n"
                           "train:\n  learning_rate: 1.0e-3\n  warmup_ratio: 0.0\n  batch_size: 1\n  num_threads: 1\n"
                           "output:\n  dir: " + (dir / "run") + "\n  save_steps: 1\n  progress: false\n  tensorboard: false\n"
                           "online:\n  prompts: " + (dir / "prompts.jsonl") +
                           "\n  rounds: 2\n  samples_per_prompt: 3\n  temperature: 1.0\n  max_new_tokens: 6\n"
                           "  seed: 5\n  batch_size: 4\n" + extra +
                           "reward: " + reward_yaml + "\n";
  write_text(dir / "online.yaml", yaml);
  return dir / "online.yaml";
}

struct Stop : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

TEST(OnlineMpo, TwoRoundsKillResumeEqualsUninterrupted) {
  TempDir dir;
  const std::string config_path = write_online_config(dir);
  test_support::FakeBackend reward;  // deterministic: a hash of the response text

  auto config_for = [&](const std::string& run) { return load_train_config(config_path, {"output.dir=" + (dir / run)}); };
  const auto full = run_online(config_for("full"), std::nullopt, &reward);
  EXPECT_EQ(full.rounds_trained, 2);
  for (int r = 0; r < 2; ++r) {
    const std::string round = dir / ("full/round-" + std::to_string(r));
    EXPECT_TRUE(fs::exists(round + "/DONE")) << round;
    EXPECT_TRUE(fs::exists(round + "/stats.json"));
    const auto pairs = read_jsonl(round + "/pairs.jsonl");
    ASSERT_FALSE(pairs.empty());
    for (const auto& p : pairs) {
      EXPECT_GT(p["chosen_score"].get<double>(), p["rejected_score"].get<double>());
      EXPECT_NE(p["chosen"], p["rejected"]);
      if (p["prompt_id"] == "a") {
        EXPECT_EQ(p["images"], json::array({"local.png"}));  // as the prompt file gave it
      }
    }
    const auto stats = json::parse(read_file(round + "/stats.json"));
    EXPECT_EQ(stats["responses"], 9);
    EXPECT_EQ(stats["pairs"].get<size_t>(), pairs.size());
  }
  // Round 1 sampled from the trained policy with its own seed: other responses than round 0.
  EXPECT_NE(read_file(dir / "full/round-0/pairs.jsonl"), read_file(dir / "full/round-1/pairs.jsonl"));
  const auto metrics = read_jsonl(dir / "full/metrics.jsonl");
  int summaries = 0, steps = 0;
  for (const auto& m : metrics) {
    if (m.contains("round_summary")) {
      ++summaries;
      EXPECT_TRUE(m.contains("pairs/kept"));
      EXPECT_TRUE(m.contains("train/loss_mean"));
    } else {
      ++steps;
      EXPECT_EQ(m["step"].get<int>(), steps);
      EXPECT_TRUE(m.contains("round"));
    }
  }
  EXPECT_EQ(summaries, 2);
  EXPECT_GT(steps, 1);
  const auto checkpoints = list_checkpoints(dir / "full");
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_EQ(checkpoint_round(checkpoints.back().second), 1);

  // Killed twice: right after round 0 finished, then at round 1's first checkpoint; each time resumed.
  OnlineHooks stop_after_round0;
  stop_after_round0.on_round_done = [](int64_t round, const PairStats&) {
    if (round == 0) throw Stop("killed after round 0");
  };
  EXPECT_EQ(error_of([&] { run_online(config_for("killed"), std::nullopt, &reward, stop_after_round0); }),
            "killed after round 0");
  EXPECT_TRUE(fs::exists(dir / "killed/round-0/DONE"));
  EXPECT_FALSE(fs::exists(dir / "killed/round-1"));
  // Without --resume the directory is refused.
  EXPECT_NE(error_of([&] { run_online(config_for("killed"), std::nullopt, &reward); }).find("pass --resume auto"),
            std::string::npos);

  OnlineHooks stop_in_round1;
  bool in_round1 = false;
  stop_in_round1.train.on_step = [&](const StepMetrics& m) { in_round1 = m.values.at("round") == 1.0; };
  stop_in_round1.train.on_checkpoint = [&](int64_t, const std::string&) {
    if (in_round1) throw Stop("killed in round 1");
  };
  EXPECT_EQ(error_of([&] { run_online(config_for("killed"), "auto", &reward, stop_in_round1); }), "killed in round 1");
  EXPECT_TRUE(fs::exists(dir / "killed/round-1/pairs.jsonl"));
  EXPECT_FALSE(fs::exists(dir / "killed/round-1/DONE"));

  const auto resumed = run_online(config_for("killed"), "auto", &reward);
  EXPECT_EQ(resumed.rounds_skipped, 1);
  EXPECT_EQ(resumed.rounds_trained, 1);
  for (int r = 0; r < 2; ++r) {
    const std::string name = "/round-" + std::to_string(r) + "/pairs.jsonl";
    EXPECT_TRUE(same_file(dir / ("killed" + name), dir / ("full" + name))) << name;
  }
  EXPECT_TRUE(same_file(dir / "killed/final_model/model.safetensors", dir / "full/final_model/model.safetensors"));
  // The metrics history is the uninterrupted run's: each step once, the same losses, one line per round.
  const auto killed_metrics = read_jsonl(dir / "killed/metrics.jsonl");
  ASSERT_EQ(killed_metrics.size(), metrics.size());
  for (size_t i = 0; i < metrics.size(); ++i) {
    EXPECT_EQ(killed_metrics[i]["step"], metrics[i]["step"]);
    if (metrics[i].contains("loss")) {
      EXPECT_EQ(killed_metrics[i]["loss"], metrics[i]["loss"]) << "line " << i;
    }
    if (metrics[i].contains("round_summary")) {
      EXPECT_EQ(killed_metrics[i]["pairs/kept"], metrics[i]["pairs/kept"]);
      EXPECT_EQ(killed_metrics[i]["train/loss_mean"], metrics[i]["train/loss_mean"]);
    }
  }

  // A rerun of a finished run skips every round and exports the same policy.
  const auto rerun = run_online(config_for("full"), "auto", &reward);
  EXPECT_EQ(rerun.rounds_skipped, 2);
  EXPECT_EQ(rerun.rounds_trained, 0);
  EXPECT_TRUE(same_file(dir / "killed/final_model/model.safetensors", dir / "full/final_model/model.safetensors"));
}

TEST(OnlineMpo, ReferenceRefreshStartsARoundAtZeroRewardsAndResumes) {
  TempDir dir;
  const std::string config_path = write_online_config(dir, "{type: exact_match}", "  reference_refresh_rounds: 1\n");
  test_support::FakeBackend reward;
  auto config_for = [&](const std::string& run) { return load_train_config(config_path, {"output.dir=" + (dir / run)}); };
  run_online(config_for("full"), std::nullopt, &reward);
  // Round 1 starts with the reference = the policy: its first step's rewards are exactly 0. Without the refresh the
  // reference is still the initial policy there, and they are not.
  TempDir plain_dir;
  run_online(load_train_config(write_online_config(plain_dir), {"output.dir=" + (dir / "plain")}), std::nullopt, &reward);
  auto first_step_of_round1 = [&](const std::string& run) {
    for (const auto& m : read_jsonl(dir / (run + "/metrics.jsonl")))
      if (!m.contains("round_summary") && m["round"] == 1.0) return m;
    return json();
  };
  const json refreshed = first_step_of_round1("full"), plain = first_step_of_round1("plain");
  ASSERT_FALSE(refreshed.is_null());
  ASSERT_FALSE(plain.is_null());
  EXPECT_EQ(refreshed["rewards_unscaled/chosen"].get<double>(), 0.0);
  EXPECT_EQ(refreshed["rewards_unscaled/rejected"].get<double>(), 0.0);
  EXPECT_NE(plain["rewards_unscaled/chosen"].get<double>(), 0.0);
  const auto checkpoints = list_checkpoints(dir / "full");
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_TRUE(fs::exists(checkpoints.back().second + "/reference.safetensors"));
  EXPECT_EQ(json::parse(read_file(checkpoints.back().second + "/trainer_state.json"))["reference_round"], 1);

  // Killed at round 1's first checkpoint, resumed: the refreshed reference comes back from the checkpoint.
  OnlineHooks stop_in_round1;
  bool in_round1 = false;
  stop_in_round1.train.on_step = [&](const StepMetrics& m) { in_round1 = m.values.at("round") == 1.0; };
  stop_in_round1.train.on_checkpoint = [&](int64_t, const std::string&) {
    if (in_round1) throw Stop("killed in round 1");
  };
  EXPECT_EQ(error_of([&] { run_online(config_for("killed"), std::nullopt, &reward, stop_in_round1); }), "killed in round 1");
  run_online(config_for("killed"), "auto", &reward);
  EXPECT_TRUE(same_file(dir / "killed/final_model/model.safetensors", dir / "full/final_model/model.safetensors"));

  // A refresh needs a reference model to refresh.
  const std::string error = error_of([&] { load_train_config(config_path, {"lora.r=4"}); });
  EXPECT_NE(error.find("online.reference_refresh_rounds: needs a reference model"), std::string::npos) << error;
}

TEST(OnlineMpo, RegistryRewardAndRoundsWithoutPairs) {
  TempDir dir;
  // exact_match against the references: the untrained tiny policy never answers "red", so every prompt ties, no
  // round has pairs, and the run still finishes (policy unchanged, rounds DONE with their statistics).
  const std::string config_path = write_online_config(dir);
  auto config = load_train_config(config_path);
  const auto result = run_online(config, std::nullopt);
  EXPECT_EQ(result.rounds_trained, 2);
  const auto stats = json::parse(read_file(dir / "run/round-1/stats.json"));
  EXPECT_EQ(stats["pairs"], 0);
  EXPECT_EQ(stats["dropped"]["tie"], 3);
  EXPECT_EQ(stats["reward_backend"], "exact_match");
  EXPECT_TRUE(fs::exists(dir / "run/round-1/DONE"));
  EXPECT_TRUE(list_checkpoints(dir / "run").empty());
  EXPECT_TRUE(fs::exists(dir / "run/final_model/model.safetensors"));
}

// ---- SFT mode ---------------------------------------------------------------------------------------------------

namespace {

std::string write_sft(const TempDir& dir, const std::string& train_extra = "") {
  std::string lines;
  const std::vector<std::string> images{"small.png", "square.jpg", "wide.png"};
  for (int i = 0; i < 4; ++i) {
    json line{{"id", "s" + std::to_string(i)}, {"question", "What is in picture " + std::to_string(i) + "?"},
              {i == 3 ? "chosen" : "answer", "A red shape number " + std::to_string(i) + "."}};
    if (i != 2) line["images"] = {kImages + "/" + images[static_cast<size_t>(i) % 3]};
    if (i == 3) line["rejected"] = "ignored under sft";
    lines += line.dump() + "\n";
  }
  write_text(dir / "sft.jsonl", lines);
  const std::string yaml = "model:\n  path: " + kTinyModel +
                           "\n  max_pixels: 12544\n"
                           "data:\n  train: " + (dir / "sft.jsonl") +
                           "\n  shuffle: false\n"
                           "loss:\n  loss_type: [sft]\n"
                           "train:\n  learning_rate: 1.0e-3\n  warmup_ratio: 0.0\n  batch_size: 4\n  epochs: 6\n"
                           "  num_threads: 1\n" + train_extra +
                           "output:\n  dir: " + (dir / "run") + "\n  progress: false\n  tensorboard: false\n";
  write_text(dir / "sft.yaml", yaml);
  return dir / "sft.yaml";
}

}  // namespace

TEST(SftMode, TrainsWithoutReferenceAndTheLossFalls) {
  TempDir dir;
  auto config = load_train_config(write_sft(dir));
  EXPECT_TRUE(config.sft_only());
  auto data = read_preference_jsonl(config.data.train, "", false);
  ASSERT_EQ(data.size(), 4u);
  EXPECT_EQ(data[0].chosen, "A red shape number 0.");
  EXPECT_EQ(data[3].chosen, "A red shape number 3.");  // "chosen" of a pair line
  MpoTrainer trainer(config);
  EXPECT_FALSE(trainer.has_reference_model());
  trainer.train(data, fingerprint_file(config.data.train, 4));
  const auto metrics = read_jsonl(dir / "run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 6u);
  for (const auto& m : metrics) {
    EXPECT_TRUE(m.contains("loss/sft"));
    EXPECT_FALSE(m.contains("rewards/chosen"));
    EXPECT_EQ(m["loss"], m["nll_loss"]);
  }
  EXPECT_LT(metrics.back()["loss"].get<double>(), 0.8 * metrics.front()["loss"].get<double>());
  EXPECT_TRUE(fs::exists(dir / "run/final_model/model.safetensors"));
  // An MPO config builds its reference.
  MpoTrainer mpo(load_train_config(dir / "sft.yaml", {"loss.loss_type=[sigmoid, sft]", "output.dir=" + (dir / "mpo")}));
  EXPECT_TRUE(mpo.has_reference_model());
}

TEST(SftMode, LinesAreStrict) {
  TempDir dir;
  const std::string path = dir / "data.jsonl";
  auto first_error = [&](const std::string& text, bool require_rejected) {
    write_text(path, text);
    return error_of([&] { read_preference_jsonl(path, "", require_rejected); });
  };
  // SFT: an answer (or chosen) is needed; rejected is optional.
  EXPECT_NE(first_error("{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": \"q\"}\n", false).find(path + ":2: answer: missing"),
            std::string::npos);
  EXPECT_NE(first_error("{\"question\": \"q\", \"answer\": \"\"}\n", false).find(path + ":1: answer: must not be empty"),
            std::string::npos);
  EXPECT_EQ(first_error("{\"question\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n", false), "(no error)");
  // A loss that needs rejected: a line without it is an error naming path:line.
  EXPECT_NE(first_error("{\"question\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"question\": \"q\", \"chosen\": \"a\"}\n", true)
                .find(path + ":2: rejected: missing"),
            std::string::npos);
  EXPECT_NE(first_error("{\"question\": \"q\", \"answer\": \"a\"}\n", true).find(path + ":1: chosen: missing"),
            std::string::npos);
}

// ---- config errors name the key path ----------------------------------------------------------------------------

TEST(OnlineConfig, ParsesAndRejectsWithKeyPaths) {
  TempDir dir;
  const std::string path = write_online_config(dir);
  const auto c = load_train_config(path, {"online.pair_mode=max_random", "online.pairs_per_prompt=2", "online.min_margin=0.5"});
  ASSERT_TRUE(c.online.has_value());
  EXPECT_EQ(c.online->rounds, 2);
  EXPECT_EQ(c.online->pairs.mode, PairMode::kMaxRandom);
  EXPECT_EQ(c.online->pairs.pairs_per_prompt, 2);
  EXPECT_EQ(c.online->pairs.min_margin, 0.5);
  EXPECT_EQ(c.reward["type"], "exact_match");
  EXPECT_EQ(TrainConfig::from_json(c.to_json(), "round trip").to_json(), c.to_json());

  auto error_with = [&](const std::vector<std::string>& overrides) {
    return error_of([&] { load_train_config(path, overrides); });
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {"online.sampels=3", "online: unknown key(s): sampels"},
      {"online.pair_mode=best_worst", "online.pair_mode: must be \"max_min\" or \"max_random\""},
      {"online.samples_per_prompt=1", "online.samples_per_prompt: must be >= 2"},
      {"online.top_p=0", "online.top_p: must be in (0, 1]"},
      {"online.temperature=-1", "online.temperature: must be >= 0"},
      {"online.min_margin=-0.1", "online.min_margin: must be >= 0"},
      {"online.rounds=0", "online.rounds: must be >= 1"},
      {"data.train=pairs.jsonl", "data.train: is not used with online"},
      {"train.epochs=3", "train.epochs: online runs train online.epochs_per_round (1)"},
      {"train.max_steps=3", "train.max_steps: is not used with online"},
      {"reward=3", "reward: must be a mapping"},
  };
  for (const auto& [override_text, expected] : cases) {
    const std::string error = error_with({override_text});
    EXPECT_NE(error.find(expected), std::string::npos) << override_text << " -> " << error;
    EXPECT_NE(error.find(path), std::string::npos) << "names the file: " << error;
  }
  // The reward section is checked by the registry with its key path, before any model is loaded.
  auto bad_reward = load_train_config(path, {"reward.type=nonesuch"});
  EXPECT_NE(error_of([&] { run_online(bad_reward, std::nullopt); }).find("reward.type: unknown reward backend \"nonesuch\""),
            std::string::npos);
  auto bad_key = load_train_config(path, {"reward.case_fould=true"});
  EXPECT_NE(error_of([&] { run_online(bad_key, std::nullopt); }).find("case_fould"), std::string::npos);
  // reward without online, online without reward.
  const std::string offline = dir / "offline.yaml";
  write_text(offline, "model: {path: m}\ndata: {train: t}\noutput: {dir: o}\nreward: {type: exact_match}\n");
  EXPECT_NE(error_of([&] { load_train_config(offline); }).find("reward: is only used with online"), std::string::npos);
  write_text(offline, "model: {path: m}\noutput: {dir: o}\nonline: {prompts: p}\n");
  EXPECT_NE(error_of([&] { load_train_config(offline); }).find("reward: is required with online"), std::string::npos);
  write_text(offline, "model: {path: m}\noutput: {dir: o}\nonline: {rounds: 2}\nreward: {type: exact_match}\n");
  EXPECT_NE(error_of([&] { load_train_config(offline); }).find("online.prompts: is required"), std::string::npos);
}

TEST(OnlineMpo, LoraRoundsSampleFromTheAdaptedPolicyAndExportTheMergedOne) {
  TempDir dir;
  const std::string config_path = write_online_config(dir);
  std::ofstream(config_path, std::ios::app) << "lora:\n  r: 4\n  alpha: 8\n  vision_target_modules: [qkv]\n";
  test_support::FakeBackend reward;
  const auto result = run_online(load_train_config(config_path), std::nullopt, &reward);
  EXPECT_EQ(result.rounds_trained, 2);
  // Checkpoints hold the adapters only; the final model is the merged one, with its adapters beside it.
  const auto checkpoints = list_checkpoints(dir / "run");
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_TRUE(fs::exists(checkpoints.back().second + "/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(checkpoints.back().second + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "run/final_model/adapter/adapter_config.json"));
  // Round 1 sampled from the policy round 0 trained (its adapters moved): other responses than round 0.
  EXPECT_NE(read_file(dir / "run/round-0/pairs.jsonl"), read_file(dir / "run/round-1/pairs.jsonl"));
  // The merged model differs from the base only in the adapted layers.
  const auto merged = SafetensorsCheckpoint::open(dir / "run/final_model");
  const auto base = SafetensorsCheckpoint::open(kTinyModel);
  for (const std::string name : {"model.layers.0.self_attn.q_proj.weight", "visual.blocks.0.attn.qkv.weight"})
    EXPECT_FALSE(torch::equal(to_tensor(merged.get(name)).to(torch::kFloat32),
                              to_tensor(base.get(name)).to(torch::kFloat32)))
        << name;
  EXPECT_TRUE(torch::equal(to_tensor(merged.get("model.layers.0.input_layernorm.weight")).to(torch::kFloat32),
                           to_tensor(base.get("model.layers.0.input_layernorm.weight")).to(torch::kFloat32)));
}
