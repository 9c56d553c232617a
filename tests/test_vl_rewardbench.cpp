// VL-RewardBench evaluation: schema parsing, cal.py's categories and metrics, ties, and the scoring loop.
// Expected numbers come from tests/fixtures/reward/vlrb_expected.json (gen_reward.py: the model-card recipe on
// the tiny checkpoint, metrics computed as cal.py does).
#include "reward/vl_rewardbench.h"

#include <cstdint>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"

namespace fs = std::filesystem;
using namespace vlreward;
using json = nlohmann::json;

namespace {

const fs::path kDir = fs::path(VLREWARD_FIXTURES_DIR) / "reward";

json expected() { return json::parse(read_file((kDir / "vlrb_expected.json").string())); }

std::vector<std::optional<std::array<double, 2>>> reference_scores(const json& exp) {
  std::vector<std::optional<std::array<double, 2>>> scores;
  for (const auto& p : exp["pairs"]) scores.push_back(std::array<double, 2>{p["scores"][0], p["scores"][1]});
  return scores;
}

void expect_metrics_equal_fixture(const VlrbMetrics& m, const json& exp) {
  ASSERT_EQ(m.categories.size(), 3u);
  for (const auto& [name, e] : exp["categories"].items()) {
    SCOPED_TRACE(name);
    const auto& c = m.categories.at(name);
    EXPECT_EQ(c.n, e["n"].get<int64_t>());
    EXPECT_EQ(c.correct, e["correct"].get<int64_t>());
    EXPECT_EQ(c.ties, e["ties"].get<int64_t>());
    EXPECT_EQ(c.accuracy(), e["accuracy"].get<double>());  // exact: same integer division
  }
  ASSERT_EQ(m.datasets.size(), exp["datasets"].size());
  for (const auto& [name, e] : exp["datasets"].items()) {
    SCOPED_TRACE(name);
    const auto& d = m.datasets.at(name);
    EXPECT_EQ(d.n, e["n"].get<int64_t>());
    EXPECT_EQ(d.correct, e["correct"].get<int64_t>());
    EXPECT_EQ(d.ties, e["ties"].get<int64_t>());
  }
  EXPECT_EQ(m.overall.n, exp["overall"]["n"].get<int64_t>());
  EXPECT_EQ(m.overall.correct, exp["overall"]["correct"].get<int64_t>());
  EXPECT_EQ(m.overall.ties, exp["overall"]["ties"].get<int64_t>());
  EXPECT_EQ(m.overall.accuracy(), exp["overall"]["accuracy"].get<double>());
  ASSERT_TRUE(m.macro_accuracy.has_value());
  EXPECT_EQ(*m.macro_accuracy, exp["macro_accuracy"].get<double>());  // exact: cal.py's summation order
}

fs::path temp_file(const std::string& name, const std::string& content) {
  auto dir = fs::temp_directory_path() / ("vlreward_vlrb_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto path = dir / name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "<no InputError>";
}

const char* kGoodLine =
    R"({"id": "RLAIF-V-1", "query": "q", "image": "images/chart.png", "response": ["a", "b"], )"
    R"("human_ranking": [0, 1], "query_source": "RLAIF-V"})";

}  // namespace

TEST(VlRewardBench, DatasetFromIdFollowsCalPy) {
  // ids in the style of the benchmark's data; the rule is cal.py's get_dataset_from_id
  const std::map<std::string, std::string> cases = {
      {"RLAIF-V-14", "rlaif-v"},
      {"RLHF-V-31", "rlhf-v"},
      {"hallucination_pair-1003", "povid"},
      {"mathverse_1294", "reasoning_tasks"},
      {"mmmu_pro_test_Marketing_150", "reasoning_tasks"},
      {"wildvision-battle-13", "wildvision-battle"},
      {"LRVInstruction-000000007746", "vlfeedback"},
      {"jailbreak-typo-HateSpeech-70", "vlfeedback"},
      {"svit-complex_reasoning-876", "vlfeedback"},
      {"RLAIF", "rlaif-v"},            // no separator: the whole id is the prefix
      {"rlaif-v-1", "vlfeedback"},     // case-sensitive
      {"mathverse-x_1", "reasoning_tasks"},  // the first of '_' / '-' cuts
      {"", "vlfeedback"},
  };
  for (const auto& [id, dataset] : cases) EXPECT_EQ(vlrb_dataset_from_id(id), dataset) << id;
  EXPECT_EQ(vlrb_category_of_dataset("vlfeedback"), "general");
  EXPECT_EQ(vlrb_category_of_dataset("wildvision-battle"), "general");
  EXPECT_EQ(vlrb_category_of_dataset("povid"), "hallucination");
  EXPECT_EQ(vlrb_category_of_dataset("rlhf-v"), "hallucination");
  EXPECT_EQ(vlrb_category_of_dataset("rlaif-v"), "hallucination");
  EXPECT_EQ(vlrb_category_of_dataset("reasoning_tasks"), "reasoning");
  EXPECT_THROW(vlrb_category_of_dataset("mmmu"), std::out_of_range);
}

TEST(VlRewardBench, DatasetFromQuerySource) {
  EXPECT_EQ(vlrb_dataset_from_query_source("WildVision"), "wildvision-battle");
  EXPECT_EQ(vlrb_dataset_from_query_source("vlfeedback"), "vlfeedback");
  EXPECT_EQ(vlrb_dataset_from_query_source("POVID"), "povid");
  EXPECT_EQ(vlrb_dataset_from_query_source("RLHF-V"), "rlhf-v");
  EXPECT_EQ(vlrb_dataset_from_query_source("rlaif-v"), "rlaif-v");
  EXPECT_EQ(vlrb_dataset_from_query_source("MMMU-Pro"), "reasoning_tasks");
  EXPECT_EQ(vlrb_dataset_from_query_source("MATHVERSE"), "reasoning_tasks");
  EXPECT_FALSE(vlrb_dataset_from_query_source("COCO").has_value());
  EXPECT_FALSE(vlrb_dataset_from_query_source("").has_value());
}

TEST(VlRewardBench, FixtureMetricsFromReferenceScores) {
  const auto exp = expected();
  const auto pairs = read_vlrb_file((kDir / "vlrb_sample.jsonl").string());
  ASSERT_EQ(pairs.size(), exp["pairs"].size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& e = exp["pairs"][i];
    SCOPED_TRACE(pairs[i].id);
    EXPECT_EQ(pairs[i].id, e["id"].get<std::string>());
    EXPECT_EQ(pairs[i].line, static_cast<int64_t>(i + 1));
    EXPECT_EQ(pairs[i].preferred, e["human_ranking"][0].get<int>() == 0 ? 0 : 1);
    EXPECT_EQ(pairs[i].dataset, e["dataset"].get<std::string>());
    EXPECT_EQ(pairs[i].category, e["category"].get<std::string>());
    const auto verdict = judge_vlrb_pair(pairs[i], {e["scores"][0].get<double>(), e["scores"][1].get<double>()});
    EXPECT_EQ(verdict.correct, e["correct"].get<bool>());
    EXPECT_EQ(verdict.tie, e["tie"].get<bool>());
  }
  const auto metrics = compute_vlrb_metrics(pairs, reference_scores(exp));
  expect_metrics_equal_fixture(metrics, exp);
  EXPECT_EQ(metrics.overall.ties, 1);

  // the sample's query_source names give the same categories as cal.py's id rule
  const auto by_source = read_vlrb_file((kDir / "vlrb_sample.jsonl").string(), VlrbCategorySource::kQuerySource);
  for (size_t i = 0; i < pairs.size(); ++i) EXPECT_EQ(by_source[i].dataset, pairs[i].dataset) << pairs[i].id;
  expect_metrics_equal_fixture(compute_vlrb_metrics(by_source, reference_scores(exp)), exp);

  // JSON and table carry the same numbers
  const auto j = vlrb_metrics_json(metrics);
  EXPECT_EQ(j["macro_accuracy"].get<double>(), exp["macro_accuracy"].get<double>());
  EXPECT_EQ(j["overall"]["accuracy"].get<double>(), exp["overall"]["accuracy"].get<double>());
  EXPECT_EQ(j["categories"]["hallucination"]["ties"].get<int64_t>(), 1);
  const auto table = format_vlrb_table(metrics);
  EXPECT_NE(table.find("hallucination        7        4     1     57.14"), std::string::npos) << table;
  EXPECT_NE(table.find("overall             15        9     1     60.00"), std::string::npos) << table;
  EXPECT_NE(table.find("60.71"), std::string::npos) << table;
}

TEST(VlRewardBench, TiesCountAsWrong) {
  auto pair = parse_vlrb_line(kGoodLine, 1, "t");
  EXPECT_EQ(pair.preferred, 0);
  auto v = judge_vlrb_pair(pair, {1.5, 1.5});
  EXPECT_FALSE(v.correct);
  EXPECT_TRUE(v.tie);
  v = judge_vlrb_pair(pair, {1.5, -2.0});
  EXPECT_TRUE(v.correct);
  EXPECT_FALSE(v.tie);
  v = judge_vlrb_pair(pair, {-2.0, 1.5});
  EXPECT_FALSE(v.correct);
  EXPECT_FALSE(v.tie);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  v = judge_vlrb_pair(pair, {nan, 0.0});
  EXPECT_FALSE(v.correct);
  EXPECT_FALSE(v.tie);

  auto second = pair;
  second.preferred = 1;
  const std::vector<VlrbPair> pairs = {pair, pair, second, second};
  const auto m = compute_vlrb_metrics(pairs, {std::array<double, 2>{0.25, 0.25}, std::array<double, 2>{3, 1},
                                              std::array<double, 2>{-1, -1}, std::array<double, 2>{0, 2}});
  const auto& h = m.categories.at("hallucination");
  EXPECT_EQ(h.n, 4);
  EXPECT_EQ(h.correct, 2);
  EXPECT_EQ(h.ties, 2);
  EXPECT_EQ(h.accuracy(), 0.5);
  EXPECT_EQ(m.datasets.at("rlaif-v").ties, 2);
  EXPECT_EQ(m.overall.ties, 2);
  // general and reasoning are empty: cal.py's macro would divide by zero, we report none
  EXPECT_EQ(m.categories.at("general").n, 0);
  EXPECT_FALSE(m.macro_accuracy.has_value());
  EXPECT_TRUE(vlrb_metrics_json(m)["macro_accuracy"].is_null());
  EXPECT_TRUE(vlrb_metrics_json(m)["categories"]["general"]["accuracy"].is_null());
  EXPECT_NE(format_vlrb_table(m).find("- (a category is empty)"), std::string::npos);
}

TEST(VlRewardBench, SchemaErrorsNameLineAndField) {
  struct Case {
    std::string line;
    std::string message;  // expected substring after "data.jsonl:7: "
  };
  const std::vector<Case> cases = {
      {R"({"id": "x", "query": )", "not valid JSON"},
      {R"({"id": "x", "query": "q", "response": ["a", 1e400]})", "response[1]: number out of range"},
      {R"(["id", "x"])", "expected a JSON object, got array"},
      {R"({"query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 1]})",
       "missing field \"id\""},
      {R"({"id": 5, "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 1]})",
       "field \"id\" must be a string, got number 5"},
      {R"({"id": "", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 1]})",
       "field \"id\" is empty"},
      {R"({"id": "x", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 1]})",
       "missing field \"query\""},
      {R"({"id": "x", "query": "q", "response": ["a", "b"], "human_ranking": [0, 1]})",
       "missing field \"image\""},
      {R"({"id": "x", "query": "q", "image": "a", "image_path": "b", "response": ["a", "b"], "human_ranking": [0, 1]})",
       "give \"image\" or \"image_path\", not both"},
      {R"({"id": "x", "query": "q", "image": null, "response": ["a", "b"], "human_ranking": [0, 1]})",
       "field \"image\" must be a string, got null"},
      {R"({"id": "x", "query": "q", "image": "a.png", "human_ranking": [0, 1]})", "missing field \"response\""},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a"], "human_ranking": [0, 1]})",
       "field \"response\" must be a list of 2 strings, got [\"a\"]"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b", "c"], "human_ranking": [0, 1]})",
       "field \"response\" must be a list of 2 strings"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": "ab", "human_ranking": [0, 1]})",
       "field \"response\" must be a list of 2 strings"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", 2], "human_ranking": [0, 1]})",
       "field \"response\"[1] must be a string, got number"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b"]})", "missing field \"human_ranking\""},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 0]})",
       "field \"human_ranking\" must be [0, 1] (first response preferred) or [1, 0], got [0,0]"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [1, 2]})",
       "field \"human_ranking\" must be [0, 1]"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0.0, 1.0]})",
       "field \"human_ranking\" must be [0, 1]"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": "[0, 1]"})",
       "field \"human_ranking\" must be [0, 1]"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 1, 0]})",
       "field \"human_ranking\" must be [0, 1]"},
      {R"({"id": "x", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 1], "query_source": 3})",
       "field \"query_source\" must be a string or null, got number"},
  };
  for (const auto& c : cases) {
    const auto message = error_of([&] { parse_vlrb_line(c.line, 7, "data.jsonl"); });
    EXPECT_EQ(message.rfind("data.jsonl:7: ", 0), 0u) << message;
    EXPECT_NE(message.find(c.message), std::string::npos) << "line: " << c.line << "\nerror: " << message;
  }

  // categorizing by query_source: unknown and missing sources are errors naming them
  const std::string coco =
      R"({"id": "RLAIF-V-14", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [0, 1], )"
      R"("query_source": "COCO"})";
  EXPECT_NO_THROW(parse_vlrb_line(coco, 1, "d"));  // cal.py's id rule does not look at it
  auto message = error_of([&] { parse_vlrb_line(coco, 3, "d.jsonl", VlrbCategorySource::kQuerySource); });
  EXPECT_NE(message.find("d.jsonl:3: unknown query_source \"COCO\" (known: WildVision"), std::string::npos)
      << message;
  const std::string no_source =
      R"({"id": "mathverse_1", "query": "q", "image": "a.png", "response": ["a", "b"], "human_ranking": [1, 0], )"
      R"("query_source": null})";
  const auto pair = parse_vlrb_line(no_source, 1, "d");
  EXPECT_EQ(pair.category, "reasoning");
  EXPECT_EQ(pair.preferred, 1);
  EXPECT_EQ(pair.query_source, "");
  message = error_of([&] { parse_vlrb_line(no_source, 4, "d.jsonl", VlrbCategorySource::kQuerySource); });
  EXPECT_NE(message.find("d.jsonl:4: field \"query_source\" is missing or null"), std::string::npos) << message;

  // "image_path" (the GitHub data.jsonl spelling) is accepted
  const auto github = parse_vlrb_line(
      R"({"id": "hallucination_pair-1", "query": "q", "image_path": "images/povid/x.jpg", "response": ["a", "b"], )"
      R"("human_ranking": [0, 1], "models": ["m1", "m2"], "meta": {}})",
      1, "d");
  EXPECT_EQ(github.image, "images/povid/x.jpg");
  EXPECT_EQ(github.category, "hallucination");
}

TEST(VlRewardBench, FileErrorsNameTheLine) {
  const std::string good2 =
      R"({"id": "RLAIF-V-2", "query": "q", "image": "i.png", "response": ["a", "b"], "human_ranking": [1, 0]})";
  // blank lines and CRLF are fine; line numbers count every physical line
  auto path = temp_file("ok.jsonl", std::string(kGoodLine) + "\r\n\n  \n" + good2);
  auto pairs = read_vlrb_file(path.string());
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].line, 1);
  EXPECT_EQ(pairs[1].line, 4);
  EXPECT_EQ(pairs[0].query_source, "RLAIF-V");

  path = temp_file("bad.jsonl", std::string(kGoodLine) + "\n" + good2 + "\n{\"id\": \"x\"}\n");
  auto message = error_of([&] { read_vlrb_file(path.string()); });
  EXPECT_EQ(message, path.string() + ":3: missing field \"query\"");

  // the same pair twice (responses in either order) would be merged by cal.py: an error here
  const std::string swapped =
      R"({"id": "RLAIF-V-1", "query": "q", "image": "other.png", "response": ["b", "a"], "human_ranking": [1, 0]})";
  path = temp_file("dup.jsonl", std::string(kGoodLine) + "\n" + good2 + "\n" + swapped + "\n");
  message = error_of([&] { read_vlrb_file(path.string()); });
  EXPECT_EQ(message, path.string() + ":3: pair \"RLAIF-V-1\" repeats line 1 (same id, query and responses)");
  // same id with another query is a different pair (the real data has such ids)
  const std::string same_id =
      R"({"id": "RLAIF-V-1", "query": "q2", "image": "i.png", "response": ["a", "b"], "human_ranking": [0, 1]})";
  path = temp_file("same_id.jsonl", std::string(kGoodLine) + "\n" + same_id + "\n");
  EXPECT_EQ(read_vlrb_file(path.string()).size(), 2u);

  path = temp_file("empty.jsonl", "\n\n");
  message = error_of([&] { read_vlrb_file(path.string()); });
  EXPECT_NE(message.find("no pairs"), std::string::npos) << message;
  message = error_of([&] { read_vlrb_file((kDir / "does_not_exist.jsonl").string()); });
  EXPECT_NE(message.find("does_not_exist.jsonl"), std::string::npos) << message;
}

namespace {

// Answers with the fixture's reference scores, looked up by (image file, query, response); checks that every
// request has the shape the Skywork-VL backend expects.
class ReferenceBackend : public RewardBackend {
 public:
  explicit ReferenceBackend(const json& exp) {
    std::ifstream in(kDir / "vlrb_sample.jsonl");
    std::string line;
    size_t i = 0;
    while (std::getline(in, line)) {
      const auto row = json::parse(line);
      for (int k = 0; k < 2; ++k) {
        const auto key = std::make_tuple((kDir / row["image"].get<std::string>()).string(),
                                         row["query"].get<std::string>(), row["response"][k].get<std::string>());
        const double score = exp["pairs"][i]["scores"][k];
        auto [it, inserted] = scores_.emplace(key, score);
        if (!inserted && it->second != score) ADD_FAILURE() << "fixture has one key with two scores";
      }
      ++i;
    }
  }
  std::string name() const override { return "reference"; }
  RewardCapabilities capabilities() const override { return {true, false, true}; }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    batch_sizes.push_back(batch.size());
    std::vector<RewardResult> out;
    for (const auto& r : batch) {
      EXPECT_FALSE(r.system_prompt.has_value());
      EXPECT_EQ(r.turns.size(), 1u);
      EXPECT_EQ(r.turns[0].role, "user");
      EXPECT_EQ(r.image_count(), 1u);
      EXPECT_EQ(r.turns[0].content.size(), 2u);  // [image, question]
      const auto& image = r.turns[0].content[0].image.path;
      if (check_images) {
        EXPECT_TRUE(fs::is_regular_file(image)) << image;
      }
      const auto& question = r.turns[0].content[1].text;
      if (r.response == fail_response) {
        out.push_back(RewardResult::failure("refused"));
        continue;
      }
      auto it = scores_.find({image, question, r.response});
      out.push_back(it == scores_.end() ? RewardResult::failure("unknown request " + r.id)
                                        : RewardResult::success(it->second));
    }
    if (drop_one) out.pop_back();
    return out;
  }
  std::vector<size_t> batch_sizes;
  std::string fail_response;
  bool drop_one = false;
  bool check_images = true;

 private:
  std::map<std::tuple<std::string, std::string, std::string>, double> scores_;
};

}  // namespace

TEST(VlRewardBench, EvaluateScoresEveryResponseInBatches) {
  const auto exp = expected();
  const auto pairs = read_vlrb_file((kDir / "vlrb_sample.jsonl").string());
  for (int64_t batch_size : {1, 2, 3, 8, 64}) {
    SCOPED_TRACE(batch_size);
    ReferenceBackend backend(exp);
    VlrbEvalOptions options;
    options.image_root = kDir.string();
    options.batch_size = batch_size;
    const auto ev = evaluate_vlrb(backend, pairs, options);
    EXPECT_EQ(ev.failed(), 0);
    size_t requests = 0;
    for (size_t s : backend.batch_sizes) {
      EXPECT_LE(s, static_cast<size_t>(batch_size));
      requests += s;
    }
    EXPECT_EQ(requests, 2 * pairs.size() - 1);  // the tie pair's identical responses are scored once
    // pairs are not split across calls: with 2 per call, every call holds exactly one pair
    if (batch_size == 2) {
      EXPECT_EQ(backend.batch_sizes.size(), pairs.size());
    }
    for (size_t i = 0; i < pairs.size(); ++i) {
      ASSERT_TRUE(ev.scores[i].has_value()) << ev.errors[i];
      EXPECT_EQ((*ev.scores[i])[0], exp["pairs"][i]["scores"][0].get<double>());
      EXPECT_EQ((*ev.scores[i])[1], exp["pairs"][i]["scores"][1].get<double>());
    }
    expect_metrics_equal_fixture(ev.metrics, exp);
    const auto results = vlrb_results_json(ev);
    EXPECT_EQ(results["failed"].get<int64_t>(), 0);
    EXPECT_EQ(results["pairs"].size(), pairs.size());
    EXPECT_EQ(results["pairs"][10]["tie"].get<bool>(), true);
    EXPECT_EQ(results["pairs"][10]["id"].get<std::string>(), "RLAIF-V-16250");
  }
}

TEST(VlRewardBench, EvaluateLeavesFailedPairsOut) {
  const auto exp = expected();
  const auto pairs = read_vlrb_file((kDir / "vlrb_sample.jsonl").string());
  ReferenceBackend backend(exp);
  backend.fail_response = pairs[0].responses[1];  // fails one response of the first pair (general)
  VlrbEvalOptions options;
  options.image_root = kDir.string();
  const auto ev = evaluate_vlrb(backend, pairs, options);
  EXPECT_EQ(ev.failed(), 1);
  EXPECT_FALSE(ev.scores[0].has_value());
  EXPECT_EQ(ev.errors[0], "response 1: refused");
  const auto& general = ev.metrics.categories.at("general");
  EXPECT_EQ(general.n, exp["categories"]["general"]["n"].get<int64_t>() - 1);
  EXPECT_EQ(ev.metrics.overall.n, exp["overall"]["n"].get<int64_t>() - 1);
  const auto results = vlrb_results_json(ev);
  EXPECT_EQ(results["failed"].get<int64_t>(), 1);
  EXPECT_EQ(results["pairs"][0]["error"].get<std::string>(), "response 1: refused");
  EXPECT_FALSE(results["pairs"][0].contains("scores"));

  // a relative image root that is wrong makes every lookup fail, never crash
  ReferenceBackend lost(exp);
  lost.check_images = false;
  options.image_root = "/nonexistent";
  const auto none = evaluate_vlrb(lost, pairs, options);
  EXPECT_EQ(none.failed(), static_cast<int64_t>(pairs.size()));
  EXPECT_EQ(none.metrics.overall.n, 0);
  EXPECT_EQ(none.errors[3].rfind("response 0: unknown request svit-complex_reasoning-876#0", 0), 0u) << none.errors[3];

  // a backend that breaks the one-result-per-request contract is an error, not UB
  ReferenceBackend broken(exp);
  broken.drop_one = true;
  options.image_root = kDir.string();
  EXPECT_THROW(evaluate_vlrb(broken, pairs, options), std::runtime_error);
  options.batch_size = 0;
  EXPECT_THROW(evaluate_vlrb(backend, pairs, options), std::invalid_argument);
}

TEST(VlRewardBench, RequestsResolveImagePaths) {
  auto pair = parse_vlrb_line(kGoodLine, 1, "t");
  auto requests = vlrb_requests(pair, "/data/vlrb");
  EXPECT_EQ(requests[0].turns[0].content[0].image.path, "/data/vlrb/images/chart.png");
  EXPECT_EQ(requests[0].response, "a");
  EXPECT_EQ(requests[1].response, "b");
  EXPECT_EQ(requests[1].turns[0].content[1].text, "q");
  EXPECT_EQ(requests[0].id, "RLAIF-V-1#0");
  pair.image = "/abs/x.png";
  EXPECT_EQ(vlrb_requests(pair, "/data")[0].turns[0].content[0].image.path, "/abs/x.png");
  pair.image = "rel.png";
  EXPECT_EQ(vlrb_requests(pair, "")[0].turns[0].content[0].image.path, "rel.png");
}
