// ab-compare: the statistics (exact counts and means, numpy percentiles, the bootstrap against an independent
// Python implementation of the same resampler, interval properties), answer matching, the reports (JSON, HTML
// escaping, inline SVG charts) and the executable end to end on the tiny model.
#include <cstdint>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/image/decode.h"
#include "adapters/image/thumbnail.h"
#include "plugin/wire/base64.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/weights.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "mpo/ab/compare.h"
#include "mpo/ab/report.h"
#include "mpo/ab/stats.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace vlreward;
using namespace vlreward::mpo;

namespace {

const std::string kFixtures = VLREWARD_FIXTURES_DIR;
const std::string kTinyModel = kFixtures + "/model/tiny";
const std::string kImages = kFixtures + "/reward/images";

BootstrapOptions boot(int64_t resamples, uint64_t seed = 0) {
  BootstrapOptions b;
  b.resamples = resamples;
  b.seed = seed;
  return b;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ statistics

TEST(AbStats, SplitMix64MatchesTheReferenceSequence) {
  SplitMix64 rng(0);  // Vigna's splitmix64.c from state 0
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(rng.next(), 0x06C45D188009454Full);
  SplitMix64 bounded(5);
  std::vector<int> seen(7, 0);
  for (int i = 0; i < 7000; ++i) {
    const uint64_t x = bounded.below(7);
    ASSERT_LT(x, 7u);
    ++seen[x];
  }
  for (int c : seen) EXPECT_GT(c, 850);  // ~1000 each
}

TEST(AbStats, WinsTiesLossesAndMeansAreExact) {
  // d = b − a = [0.5, 0, −0.75, 0.5, 0.25, −0.5, 0.5]: 4 wins, 1 tie, 2 losses; numpy: mean(d) = 0.0714285714...
  const std::vector<double> a = {0.5, 1.25, -0.75, 2.0, 0.0, 1.0, 3.5};
  const std::vector<double> b = {1.0, 1.25, -1.5, 2.5, 0.25, 0.5, 4.0};
  const auto c = compare_rewards(a, b, 0.0, boot(100));
  EXPECT_EQ(c.n, 7);
  EXPECT_EQ(c.wins, 4);
  EXPECT_EQ(c.ties, 1);
  EXPECT_EQ(c.losses, 2);
  EXPECT_DOUBLE_EQ(c.win_rate, 4.5 / 7);
  EXPECT_NEAR(c.mean_difference, 0.07142857142857142, 1e-15);
  EXPECT_NEAR(c.mean_a, 1.0714285714285714, 1e-15);
  EXPECT_NEAR(c.mean_b, 1.1428571428571428, 1e-15);
  // A tie band of 0.25 turns the 0.25 difference into a tie; 0.5 stays a win (strictly greater).
  const auto banded = compare_rewards(a, b, 0.25, boot(100));
  EXPECT_EQ(banded.wins, 3);
  EXPECT_EQ(banded.ties, 2);
  EXPECT_EQ(banded.losses, 2);
  EXPECT_EQ(outcome(0.5, 0.5), Outcome::kTie);
  EXPECT_EQ(outcome(-0.5000001, 0.5), Outcome::kLoss);
  EXPECT_THROW(compare_rewards({1.0}, {1.0, 2.0}, 0, boot(10)), std::invalid_argument);
  EXPECT_THROW(compare_rewards({1.0}, {std::nan("")}, 0, boot(10)), std::invalid_argument);
  EXPECT_THROW(compare_rewards({1.0}, {1.0}, -1, boot(10)), std::invalid_argument);
}

TEST(AbStats, QuantilesMatchNumpyPercentile) {
  // numpy.percentile([3, -1, 0.5, 2, 7.5, 0.25], [0, 2.5, 25, 50, 97.5, 100])
  std::vector<double> v = {3.0, -1.0, 0.5, 2.0, 7.5, 0.25};
  std::sort(v.begin(), v.end());
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.0), -1.0);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.025), -0.84375);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.25), 0.3125);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.5), 1.25);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.975), 6.9375);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 1.0), 7.5);
}

TEST(AbStats, BootstrapMatchesAnIndependentPythonImplementation) {
  // The same algorithm written in Python (splitmix64, rejection-sampled indices, numpy.percentile), 500
  // resamples, seed 42, on the differences above.
  const std::vector<double> a = {0.5, 1.25, -0.75, 2.0, 0.0, 1.0, 3.5};
  const std::vector<double> b = {1.0, 1.25, -1.5, 2.5, 0.25, 0.5, 4.0};
  const auto c = compare_rewards(a, b, 0.0, boot(500, 42));
  EXPECT_NEAR(c.win_rate_ci.low, 0.2857142857142857, 1e-12);
  EXPECT_NEAR(c.win_rate_ci.high, 0.9285714285714286, 1e-12);
  EXPECT_NEAR(c.mean_difference_ci.low, -0.2857142857142857, 1e-12);
  EXPECT_NEAR(c.mean_difference_ci.high, 0.39285714285714285, 1e-12);

  const std::vector<bool> ca = {true, false, true, true, false, false, true, false};
  const std::vector<bool> cb = {true, true, true, false, true, false, true, true};
  const auto acc = compare_accuracy(ca, cb, boot(300, 42));
  EXPECT_EQ(acc.n, 8);
  EXPECT_EQ(acc.correct_a, 4);
  EXPECT_EQ(acc.correct_b, 6);
  EXPECT_DOUBLE_EQ(acc.accuracy_a, 0.5);
  EXPECT_DOUBLE_EQ(acc.accuracy_b, 0.75);
  EXPECT_DOUBLE_EQ(acc.difference, 0.25);
  EXPECT_NEAR(acc.accuracy_a_ci.low, 0.125, 1e-12);
  EXPECT_NEAR(acc.accuracy_a_ci.high, 0.875, 1e-12);
  EXPECT_NEAR(acc.accuracy_b_ci.low, 0.5, 1e-12);
  EXPECT_NEAR(acc.accuracy_b_ci.high, 1.0, 1e-12);
  EXPECT_NEAR(acc.difference_ci.low, -0.19062499999999993, 1e-12);
  EXPECT_NEAR(acc.difference_ci.high, 0.625, 1e-12);
}

TEST(AbStats, IntervalsContainTheEstimateNarrowWithNAndCollapseOnConstantData) {
  const std::vector<double> a = {0.1, 0.7, 0.3, 0.9, 0.2, 0.4, 0.8, 0.35, 0.6, 0.05};
  const std::vector<double> b = {0.3, 0.6, 0.5, 0.95, 0.1, 0.45, 0.9, 0.3, 0.75, 0.2};
  const auto small = compare_rewards(a, b, 0.0, boot(2000, 1));
  EXPECT_TRUE(small.win_rate_ci.contains(small.win_rate));
  EXPECT_TRUE(small.mean_difference_ci.contains(small.mean_difference));
  EXPECT_LT(small.win_rate_ci.low, small.win_rate_ci.high);

  // The same data eight times over: the same point estimates, intervals about √8 narrower.
  std::vector<double> a8, b8;
  for (int k = 0; k < 8; ++k) {
    a8.insert(a8.end(), a.begin(), a.end());
    b8.insert(b8.end(), b.begin(), b.end());
  }
  const auto large = compare_rewards(a8, b8, 0.0, boot(2000, 1));
  EXPECT_DOUBLE_EQ(large.win_rate, small.win_rate);
  EXPECT_NEAR(large.mean_difference, small.mean_difference, 1e-12);
  const double w_small = small.win_rate_ci.high - small.win_rate_ci.low;
  const double w_large = large.win_rate_ci.high - large.win_rate_ci.low;
  EXPECT_LT(w_large, 0.6 * w_small);
  EXPECT_LT(large.mean_difference_ci.high - large.mean_difference_ci.low,
            0.6 * (small.mean_difference_ci.high - small.mean_difference_ci.low));

  // Constant differences (0.1, not exactly representable): every resample gives exactly the same value.
  const std::vector<double> zeros(9, 0.0), tenths(9, 0.1);
  const auto constant = compare_rewards(zeros, tenths, 0.0, boot(500, 3));
  EXPECT_EQ(constant.mean_difference, 0.1);
  EXPECT_EQ(constant.mean_difference_ci.low, 0.1);
  EXPECT_EQ(constant.mean_difference_ci.high, 0.1);
  EXPECT_EQ(constant.win_rate_ci.low, 1.0);
  EXPECT_EQ(constant.win_rate_ci.high, 1.0);
  // All ties: win rate exactly 0.5 and no significant difference.
  const auto ties = compare_rewards(tenths, tenths, 0.0, boot(500, 3));
  EXPECT_EQ(ties.ties, 9);
  EXPECT_EQ(ties.win_rate, 0.5);
  EXPECT_EQ(ties.win_rate_ci.low, 0.5);
  EXPECT_EQ(ties.win_rate_ci.high, 0.5);
  EXPECT_EQ(verdict(ties, "A", "B"), "no significant difference");
  EXPECT_EQ(verdict(constant, "A", "B"), "B better");
  EXPECT_EQ(verdict(compare_rewards(tenths, zeros, 0.0, boot(50)), "base", "tuned"), "base better");
  EXPECT_EQ(verdict(compare_rewards({}, {}, 0.0, boot(50)), "A", "B"), "no prompts compared");
}

TEST(AbStats, BootstrapIsDeterministicUnderItsSeed) {
  std::vector<double> a, b;  // 40 distinct differences, so different seeds give different interval ends
  for (int i = 0; i < 40; ++i) {
    a.push_back(0.01 * i * i);
    b.push_back(0.37 * i + ((i * 7) % 11) * 0.1);
  }
  const auto x = compare_rewards(a, b, 0.0, boot(1000, 11));
  const auto y = compare_rewards(a, b, 0.0, boot(1000, 11));
  const auto z = compare_rewards(a, b, 0.0, boot(1000, 12));
  EXPECT_EQ(x.win_rate_ci.low, y.win_rate_ci.low);
  EXPECT_EQ(x.win_rate_ci.high, y.win_rate_ci.high);
  EXPECT_EQ(x.mean_difference_ci.low, y.mean_difference_ci.low);
  EXPECT_EQ(x.mean_difference_ci.high, y.mean_difference_ci.high);
  EXPECT_TRUE(x.mean_difference_ci.low != z.mean_difference_ci.low ||
              x.mean_difference_ci.high != z.mean_difference_ci.high);
}

TEST(AbStats, AnswerNormalisation) {
  EXPECT_EQ(normalize_answer("  The   Red\tCar.  "), "the red car");
  EXPECT_EQ(normalize_answer("Yes!!"), "yes");
  EXPECT_EQ(normalize_answer("B ."), "b");
  EXPECT_EQ(normalize_answer("3.5"), "3.5");  // inner punctuation stays
  EXPECT_EQ(normalize_answer(""), "");
  EXPECT_TRUE(answer_matches("Red.\n", "red"));
  EXPECT_TRUE(answer_matches("New  York", "new york"));
  EXPECT_FALSE(answer_matches("The answer is red.", "red"));
  EXPECT_FALSE(answer_matches("3", "3.5"));
}

TEST(AbStats, HistogramBinsAndClamps) {
  const auto h = histogram({-1.0, -0.9, 0.0, 0.05, 1.0, 2.0}, 4, -1.0, 1.0);
  EXPECT_EQ(h.counts, (std::vector<int64_t>{2, 0, 2, 2}));
  EXPECT_THROW(histogram({}, 0, 0, 1), std::invalid_argument);
}

// ------------------------------------------------------------------------------------------------ reports

namespace {

AbResult sample_result() {
  AbResult r;
  r.label_a = "base";
  r.label_b = "tuned <v2>";
  r.policy_a = "/models/a";
  r.policy_b = "/models/b";
  r.prompts_path = "prompts.jsonl";
  r.reward_name = "exact_match";
  r.bootstrap = boot(200, 5);
  for (int i = 0; i < 6; ++i) {
    AbRow row;
    row.id = "q" + std::to_string(i);
    row.question = "What is shown? <img src=x onerror=alert(1)>";
    row.reference = i % 2 ? std::optional<std::string>("Red") : std::nullopt;
    row.response_a = i == 0 ? "<script>alert('a')</script> & more" : "red.";
    row.response_b = i == 1 ? std::string("bad utf8 \xC3\x28 here") : "Red";
    row.reward_a = 0.25 * i;
    row.reward_b = 0.3 * i;
    r.rows.push_back(row);
  }
  r.rows[4].reward_b.reset();
  r.rows[4].error_b = "exact_match: q4/b has no reference answer";
  summarize(r);
  return r;
}

}  // namespace

TEST(AbReport, SummarizeExcludesRewardErrorsAndScoresReferences) {
  const auto r = sample_result();
  EXPECT_EQ(r.reward_errors, 1);
  EXPECT_EQ(r.rewards.n, 5);
  EXPECT_EQ(r.rewards.ties, 1);  // row 0: 0 vs 0
  EXPECT_EQ(r.rewards.wins, 4);
  ASSERT_TRUE(r.accuracy.has_value());
  EXPECT_EQ(r.accuracy->n, 3);          // rows 1, 3, 5 have a reference
  EXPECT_EQ(r.accuracy->correct_a, 3);  // "red." matches "Red"
  EXPECT_EQ(r.accuracy->correct_b, 2);  // row 1's B response is not the answer
  EXPECT_FALSE(r.rows[0].correct_a.has_value());
  EXPECT_EQ(r.verdict, r.rewards.win_rate_ci.low > 0.5 ? "tuned <v2> better" : "no significant difference");
}

TEST(AbReport, JsonHoldsSummaryAndEveryRow) {
  const auto j = report_json(sample_result());
  EXPECT_EQ(j["format"], "vlreward-ab-compare/1");
  EXPECT_EQ(j["summary"]["compared"], 5);
  EXPECT_EQ(j["summary"]["reward_errors"], 1);
  EXPECT_EQ(j["summary"]["wins_b"], 4);
  EXPECT_EQ(j["summary"]["win_rate_b_ci"].size(), 2u);
  EXPECT_EQ(j["accuracy"]["correct_b"], 2);
  ASSERT_EQ(j["rows"].size(), 6u);
  EXPECT_EQ(j["rows"][4]["outcome"], "error");
  EXPECT_TRUE(j["rows"][4]["reward_b"].is_null());
  EXPECT_EQ(j["rows"][4]["error_b"], "exact_match: q4/b has no reference answer");
  EXPECT_TRUE(j["rows"][0]["reference"].is_null());
  EXPECT_EQ(j["rows"][1]["correct_a"], true);
  EXPECT_EQ(j["rows"][2]["outcome"], "b");
}

TEST(AbReport, HtmlIsSelfContainedEscapedAndHasTheCharts) {
  const auto r = sample_result();
  const std::string html = report_html(r, 3);
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t p = html.find(needle); p != std::string::npos; p = html.find(needle, p + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<svg"), 3u);  // outcomes, accuracy, histogram
  EXPECT_EQ(count("<script"), 0u);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;a&#39;)&lt;/script&gt; &amp; more"), std::string::npos);
  EXPECT_EQ(count("<img"), 0u);
  EXPECT_EQ(count("tuned <v2>"), 0u);
  EXPECT_NE(html.find("tuned &lt;v2&gt;"), std::string::npos);
  EXPECT_EQ(count("http"), 0u) << "no external URLs";
  EXPECT_EQ(count("<link"), 0u);
  EXPECT_NE(html.find("bad utf8 \xEF\xBF\xBD( here"), std::string::npos);  // invalid byte → U+FFFD
  EXPECT_NE(html.find("Responses (first 3 of 6 prompts)"), std::string::npos);
  EXPECT_EQ(count("<td class=\"num\">4</td>"), 0u) << "only the first 3 prompts are shown";
  // The JSON writer survives the invalid UTF-8 too.
  const auto dir = test_support::scratch_dir("reports");
  const auto [json_path, html_path] = write_reports(r, dir.string(), 3);
  EXPECT_TRUE(nlohmann::json::parse(read_file(json_path))["rows"].is_array());
  EXPECT_EQ(read_file(html_path), html);
}

TEST(AbReport, PromptImagesShowAsEmbeddedThumbnails) {
  // A thumbnail of a fixture image: a PNG data URI that fits 160 px and decodes back.
  const std::string path = std::string(VLREWARD_FIXTURES_DIR) + "/images/inputs/jpeg_progressive_480x640.jpg";
  const RgbImage full = decode_image_file(path);
  const std::string uri = thumbnail_data_uri(RewardImage::from_path(path), path, 32);
  ASSERT_EQ(uri.rfind("data:image/png;base64,", 0), 0u);
  const auto bytes = base64_decode(uri.substr(std::string("data:image/png;base64,").size()));
  ASSERT_TRUE(bytes.has_value());
  const RgbImage small = decode_image(*bytes, "thumbnail");
  EXPECT_EQ(std::max(small.width, small.height), 32);
  EXPECT_EQ(small.width * full.height, small.height * full.width) << "aspect ratio kept (480x640 -> 24x32)";
  auto r = sample_result();
  r.rows[0].thumbnails = {uri, uri};
  r.rows[1].thumbnails = {"javascript:alert(1)"};  // not an embedded PNG: never rendered
  const std::string html = report_html(r, 3);
  size_t images = 0;
  for (size_t p = html.find("<img src=\"data:image/png;base64,"); p != std::string::npos;
       p = html.find("<img src=\"data:image/png;base64,", p + 1))
    ++images;
  EXPECT_EQ(images, 2u);
  EXPECT_EQ(html.find("javascript:"), std::string::npos);
}

TEST(AbReport, EveryRewardFailedStillGivesAReport) {
  AbResult r;
  r.bootstrap = boot(100);
  for (int i = 0; i < 3; ++i) {
    AbRow row;
    row.id = "q" + std::to_string(i);
    row.error_a = row.error_b = "reward server down";
    r.rows.push_back(row);
  }
  summarize(r);
  EXPECT_EQ(r.reward_errors, 3);
  EXPECT_EQ(r.rewards.n, 0);
  EXPECT_FALSE(r.accuracy.has_value());
  EXPECT_EQ(r.verdict, "no prompts compared");
  const std::string html = report_html(r);
  EXPECT_NE(html.find("No prompt was scored for both policies"), std::string::npos);
  EXPECT_NE(html.find("No prompt has a reference answer"), std::string::npos);
  EXPECT_NE(console_summary(r).find("no prompts compared"), std::string::npos);
  EXPECT_TRUE(report_json(r)["accuracy"].is_null());
}

TEST(AbReport, HtmlEscape) {
  EXPECT_EQ(html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  EXPECT_EQ(html_escape("tab\tnew\nline\r\n"), "tab\tnew\nline\n");
  EXPECT_EQ(html_escape("\x01"), "\xEF\xBF\xBD");
  EXPECT_EQ(html_escape("caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80");
  EXPECT_EQ(html_escape("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(html_escape("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(html_escape("\xE2\x9C"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated
}

// ------------------------------------------------------------------------------------------------ scoring

namespace {

// Scores a response by its length; fails items whose response contains "fail"; throws on a batch holding "boom".
class ScriptedReward : public RewardBackend {
 public:
  std::string name() const override { return "scripted"; }
  RewardCapabilities capabilities() const override { return {}; }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    std::vector<RewardResult> out;
    for (const auto& r : batch) {
      if (r.response.find("boom") != std::string::npos) throw std::runtime_error("backend exploded");
      out.push_back(r.response.find("fail") != std::string::npos ? RewardResult::failure("cannot score " + r.id)
                                                                  : RewardResult::success(r.response.size()));
    }
    return out;
  }
};

}  // namespace

TEST(AbCompare, ScoringErrorsAreRecordedPerRowAndNeverAbort) {
  std::vector<PromptRecord> prompts(4);
  std::vector<Response> a(4), b(4);
  const char* texts_a[] = {"aa", "please fail", "boom", "same"};
  const char* texts_b[] = {"bbb", "b", "b", "same"};
  for (int i = 0; i < 4; ++i) {
    prompts[i].id = "p" + std::to_string(i);
    prompts[i].question = "q";
    a[i].text = texts_a[i];
    b[i].text = texts_b[i];
  }
  auto rows = make_rows(prompts, a, b);
  ScriptedReward reward;
  // Batches: (p0a, p0b) (p1a, p1b) (p2a, p2b) (p3a): p3's identical responses are scored once.
  score_rows(reward, prompts, rows, 2, false);
  EXPECT_EQ(rows[0].reward_a.value_or(-1), 2);
  EXPECT_EQ(rows[0].reward_b.value_or(-1), 3);
  EXPECT_FALSE(rows[1].reward_a.has_value());
  EXPECT_EQ(rows[1].error_a, "cannot score p1/a");
  EXPECT_TRUE(rows[1].reward_b.has_value());
  EXPECT_FALSE(rows[2].reward_a.has_value());
  EXPECT_FALSE(rows[2].reward_b.has_value());  // the whole batch failed
  EXPECT_NE(rows[2].error_b.find("backend exploded"), std::string::npos);
  ASSERT_TRUE(rows[3].reward_a.has_value());
  EXPECT_EQ(rows[3].reward_b, rows[3].reward_a);  // the same text: the same score, a tie
  AbResult result;
  result.rows = rows;
  result.bootstrap = boot(100);
  summarize(result);
  EXPECT_EQ(result.reward_errors, 2);
  EXPECT_EQ(result.rewards.n, 2);
  EXPECT_EQ(result.rewards.wins, 1);
  EXPECT_EQ(result.rewards.ties, 1);
}

// ------------------------------------------------------------------------------------------------ end to end

namespace {

int run(const std::string& command) {
  const int status = std::system((command + " >/dev/null 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string write_prompts(const fs::path& dir) {
  const auto path = dir / "prompts.jsonl";
  std::ofstream(path) << "{\"id\": \"colour\", \"images\": [\"" << kImages
                      << "/small.png\"], \"question\": \"What colour?\", \"reference\": \"red\"}\n"
                      << "{\"id\": \"count\", \"image\": \"" << kImages
                      << "/square.jpg\", \"question\": \"How many shapes?\", \"answer\": \"3\"}\n"
                      << "{\"id\": \"chart\", \"images\": [\"" << kImages
                      << "/chart.png\"], \"question\": \"Which bar is highest?\", \"reference\": \"B\"}\n"
                      << "{\"id\": \"free\", \"question\": \"Say something.\"}\n";
  return path.string();
}

// A copy of the tiny model with noise on every weight: another policy with different greedy responses.
std::string perturbed_tiny_model(const fs::path& dir) {
  const auto out = dir / "perturbed";
  fs::create_directories(out);
  for (const auto& entry : fs::directory_iterator(kTinyModel))
    if (entry.path().filename() != "model.safetensors") fs::copy_file(entry.path(), out / entry.path().filename());
  auto model = qwen::load_pretrained(kTinyModel, torch::kFloat32, torch::kCPU).model;
  torch::manual_seed(1234);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
  qwen::save_checkpoint(*model, out.string());
  return out.string();
}

const std::string kBin = AB_COMPARE_BIN;
const std::string kCommon = " --max-new-tokens 8 --bootstrap 1000 --max-pixels 12544 --no-progress";

}  // namespace

TEST(AbCompareCli, PolicyAgainstItselfIsAllTiesWithReferenceAccuracy) {
  const auto dir = test_support::scratch_dir("self");
  const std::string prompts = write_prompts(dir);
  std::ofstream(dir / "reward.yaml") << "type: exact_match\n";
  const auto out = dir / "out";
  ASSERT_EQ(run(kBin + " --policy-a " + kTinyModel + " --policy-b " + kTinyModel + " --prompts " + prompts +
                " --reward " + (dir / "reward.yaml").string() + " --output-dir " + out.string() + kCommon),
            0);
  const auto j = nlohmann::json::parse(read_file((out / "ab_compare.json").string()));
  const auto& s = j["summary"];
  EXPECT_EQ(s["prompts"], 4);
  EXPECT_EQ(s["compared"], 3);
  EXPECT_EQ(s["reward_errors"], 1) << "exact_match has no reference for \"free\": excluded and counted";
  EXPECT_EQ(s["ties"], 3);
  EXPECT_EQ(s["win_rate_b"], 0.5);
  EXPECT_LE(s["win_rate_b_ci"][0].get<double>(), 0.5);
  EXPECT_GE(s["win_rate_b_ci"][1].get<double>(), 0.5);
  EXPECT_EQ(s["mean_difference"], 0.0);
  EXPECT_EQ(s["verdict"], "no significant difference");
  EXPECT_EQ(j["accuracy"]["prompts"], 3);
  EXPECT_EQ(j["accuracy"]["difference"], 0.0);
  ASSERT_EQ(j["rows"].size(), 4u);
  for (const auto& row : j["rows"]) EXPECT_EQ(row["response_a"], row["response_b"]);
  EXPECT_EQ(j["rows"][3]["outcome"], "error");
  EXPECT_NE(j["rows"][3]["error_a"].get<std::string>().find("reference"), std::string::npos);
  const std::string html = read_file((out / "report.html").string());
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("no significant difference"), std::string::npos);
  // Three prompts have one image each: three embedded thumbnails beside the responses.
  size_t thumbnails = 0;
  for (size_t p = html.find("<img src=\"data:image/png;base64,"); p != std::string::npos;
       p = html.find("<img src=\"data:image/png;base64,", p + 1))
    ++thumbnails;
  EXPECT_EQ(thumbnails, 3u);
  if (!HasFailure()) fs::remove_all(dir);
}

TEST(AbCompareCli, PerturbedPolicyScoredByTheTinyRewardModel) {
  const auto dir = test_support::scratch_dir("perturbed");
  const std::string prompts = write_prompts(dir);
  const std::string policy_b = perturbed_tiny_model(dir);
  const auto out = dir / "out";
  ASSERT_EQ(run(kBin + " --policy-a " + kTinyModel + " --policy-b " + policy_b + " --prompts " + prompts +
                " --model " + kTinyModel + " --value-head " + kFixtures + "/reward/value_head.safetensors" +
                " --label-a base --label-b noisy --output-dir " + out.string() + kCommon),
            0);
  const auto j = nlohmann::json::parse(read_file((out / "ab_compare.json").string()));
  const auto& s = j["summary"];
  EXPECT_EQ(s["compared"], 4);
  EXPECT_EQ(s["reward_errors"], 0);
  EXPECT_EQ(s["wins_b"].get<int>() + s["ties"].get<int>() + s["wins_a"].get<int>(), 4);
  const double win_rate = s["win_rate_b"];
  EXPECT_GE(win_rate, s["win_rate_b_ci"][0].get<double>());
  EXPECT_LE(win_rate, s["win_rate_b_ci"][1].get<double>());
  bool any_differ = false;
  for (const auto& row : j["rows"]) {
    any_differ = any_differ || row["response_a"] != row["response_b"];
    EXPECT_TRUE(row["reward_a"].is_number());
    EXPECT_TRUE(row["reward_b"].is_number());
  }
  EXPECT_TRUE(any_differ) << "the perturbed policy should answer differently";
  EXPECT_EQ(j["policies"]["b"]["label"], "noisy");
  EXPECT_NE(read_file((out / "report.html").string()).find("noisy"), std::string::npos);
  if (!HasFailure()) fs::remove_all(dir);  // the perturbed checkpoint; kept for debugging when the test failed
}

TEST(AbCompareOptionsCheck, EveryBadValueIsNamedByItsOption) {
  EXPECT_NO_THROW(check_ab_compare_options(AbCompareOptions{}));
  const std::vector<std::pair<std::function<void(AbCompareOptions&)>, std::string>> cases{
      {[](AbCompareOptions& o) { o.label_b.clear(); }, "--label-a/--label-b: must not be empty"},
      {[](AbCompareOptions& o) { o.rollout.sampling.max_new_tokens = 0; }, "--max-new-tokens: must be positive"},
      {[](AbCompareOptions& o) { o.rollout.sampling.greedy = false, o.rollout.sampling.temperature = -1; },
       "--temperature: must be >= 0 (0: greedy decoding)"},
      {[](AbCompareOptions& o) { o.rollout.sampling.greedy = false, o.rollout.sampling.top_p = 1.5; },
       "--top-p: must be in (0, 1]"},
      {[](AbCompareOptions& o) { o.rollout.sampling.greedy = false, o.rollout.sampling.top_k = -2; },
       "--top-k: must be >= 0"},
      {[](AbCompareOptions& o) { o.rollout.batch_size = 0; }, "--batch-size: must be positive"},
      {[](AbCompareOptions& o) { o.reward_batch_size = -1; }, "--reward-batch-size: must be positive"},
      {[](AbCompareOptions& o) { o.tie_epsilon = -0.5; }, "--tie-epsilon: must be >= 0"},
      {[](AbCompareOptions& o) { o.bootstrap.resamples = 0; }, "--bootstrap: must be positive"},
  };
  for (const auto& [spoil, expected] : cases) {
    AbCompareOptions o;
    spoil(o);
    try {
      check_ab_compare_options(o);
      ADD_FAILURE() << "no error for " << expected;
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), expected);
    }
  }
}

TEST(AbCompareCli, UsageAndInputErrorsExitWithTwo) {
  const auto dir = test_support::scratch_dir("usage");
  const std::string prompts = write_prompts(dir);
  std::ofstream(dir / "reward.yaml") << "type: exact_match\n";
  const std::string reward = " --reward " + (dir / "reward.yaml").string();
  EXPECT_EQ(run(kBin + " --policy-a " + kTinyModel + " --policy-b " + dir.string() + " --prompts " + prompts + reward +
                " --output-dir x"),
            2)
      << "not a checkpoint";
  EXPECT_EQ(run(kBin + " --policy-a " + kTinyModel + " --policy-b " + kTinyModel + " --prompts " + prompts +
                " --output-dir x"),
            2)
      << "no reward";
  EXPECT_EQ(run(kBin + " --policy-a " + kTinyModel + " --policy-b " + kTinyModel + " --prompts " + prompts + reward +
                " --top-p 0.9 --output-dir x"),
            2)
      << "--top-p without --temperature";
  EXPECT_EQ(run(kBin + " --help"), 0);
}
