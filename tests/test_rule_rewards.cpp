// Rule rewards (exact_match, regex_match, format) and the composite backend, with known values.
#include <gtest/gtest.h>

#include "plugin/config_reader.h"
#include "reward/backends.h"
#include "reward/rule_backends.h"

namespace vlreward {
namespace {

using nlohmann::json;

// Test-only stand-in for a reward model: {"scores": {"<request id>": score}}, or {"throw": "message"}.
class FixedBackend : public RewardBackend {
 public:
  FixedBackend(std::map<std::string, double> scores, std::string throw_message)
      : scores_(std::move(scores)), throw_message_(std::move(throw_message)) {}
  std::string name() const override { return "fixed"; }
  RewardCapabilities capabilities() const override {
    RewardCapabilities caps;
    caps.images = true;
    return caps;
  }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    if (!throw_message_.empty()) throw std::runtime_error(throw_message_);
    std::vector<RewardResult> out;
    for (const auto& r : batch) {
      auto it = scores_.find(r.id);
      out.push_back(it == scores_.end() ? RewardResult::failure("fixed: no score for \"" + r.id + "\"")
                                        : RewardResult::success(it->second));
    }
    return out;
  }

 private:
  std::map<std::string, double> scores_;
  std::string throw_message_;
};

RewardRegistry make_registry() {
  RewardRegistry registry;
  register_reward_backends(registry);
  registry.add("fixed", [](const json& config, const std::string& where, const RewardRegistry&) {
    ConfigReader reader(config, where);
    auto scores = reader.optional<std::map<std::string, double>>("scores", {});
    auto message = reader.optional<std::string>("throw", "");
    reader.finish();
    return std::make_unique<FixedBackend>(std::move(scores), std::move(message));
  });
  return registry;
}

std::unique_ptr<RewardBackend> create(const json& config) { return make_registry().create(config); }

std::string config_error(const json& config) {
  try {
    make_registry().create(config);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

RewardRequest request(std::string id, std::string response, std::optional<std::string> reference) {
  return RewardRequest::single_turn(std::move(id), {}, "question?", std::move(response), std::move(reference));
}

// Scores one response against one reference; NaN if the item failed.
double score_one(RewardBackend& backend, const std::string& response, std::optional<std::string> reference) {
  auto results = backend.score({request("r", response, std::move(reference))});
  EXPECT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].ok()) << results[0].error;
  return results[0].ok() ? *results[0].score : std::nan("");
}

TEST(LastBoxed, NestedEscapedAndUnclosed) {
  EXPECT_EQ(last_boxed_content("so \\boxed{1} or rather \\boxed{\\frac{1}{2}}."), "\\frac{1}{2}");
  EXPECT_EQ(last_boxed_content("\\boxed{a \\boxed{b}}"), "a \\boxed{b}");  // outermost box wins
  EXPECT_EQ(last_boxed_content("\\boxed{3} and then \\boxed{4"), "3");     // an unclosed box is ignored
  EXPECT_EQ(last_boxed_content("\\boxed{\\{1, 2\\}}"), "\\{1, 2\\}");       // escaped braces are content
  EXPECT_EQ(last_boxed_content("\\boxed{}"), "");
  EXPECT_EQ(last_boxed_content("no box {here}"), std::nullopt);
  EXPECT_EQ(last_boxed_content("\\boxed{x}}}"), "x");
}

TEST(ExactMatch, WholeResponseTrimmed) {
  auto backend = create({{"type", "exact_match"}});
  EXPECT_EQ(backend->name(), "exact_match");
  EXPECT_TRUE(backend->capabilities().needs_reference);
  EXPECT_EQ(score_one(*backend, " 42 \n", "42"), 1.0);
  EXPECT_EQ(score_one(*backend, "42", "\t42"), 1.0);
  EXPECT_EQ(score_one(*backend, "4 2", "42"), 0.0);
  EXPECT_EQ(score_one(*backend, "Paris", "paris"), 0.0);  // case matters by default
}

TEST(ExactMatch, CaseFoldAndCollapseWhitespace) {
  auto backend = create({{"type", "exact_match"}, {"case_fold", true}, {"collapse_whitespace", true}});
  EXPECT_EQ(score_one(*backend, "New\n  YORK city", "new york  City"), 1.0);
  EXPECT_EQ(score_one(*backend, "NewYork", "new york"), 0.0);
  auto fold_only = create({{"type", "exact_match"}, {"case_fold", true}});
  EXPECT_EQ(score_one(*fold_only, "New\n  YORK", "new york"), 0.0);
  EXPECT_EQ(score_one(*fold_only, "New YORK", "new york"), 1.0);
}

TEST(ExactMatch, BoxedWithNestingAndConfiguredScores) {
  auto backend =
      create({{"type", "exact_match"}, {"extract", "boxed"}, {"match_score", 2.5}, {"mismatch_score", -1}});
  EXPECT_EQ(score_one(*backend, "First \\boxed{3}, no: the answer is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"), 2.5);
  EXPECT_EQ(score_one(*backend, "The answer is \\boxed{ 7 }", "7"), 2.5);
  EXPECT_EQ(score_one(*backend, "The answer is \\boxed{3}", "\\frac{1}{2}"), -1.0);
  EXPECT_EQ(score_one(*backend, "The answer is 1/2", "1/2"), -1.0);  // no box: no answer
}

TEST(ExactMatch, RegexCaptureLastMatchWins) {
  auto backend = create({{"type", "exact_match"}, {"extract", "regex"}, {"extract_pattern", "Answer:\\s*(\\w+)"}});
  EXPECT_EQ(score_one(*backend, "Answer: A\nwait...\nAnswer: C", "C"), 1.0);
  EXPECT_EQ(score_one(*backend, "Answer: A\nwait...\nAnswer: C", "A"), 0.0);
  EXPECT_EQ(score_one(*backend, "no answer given", "A"), 0.0);
  // UTF-8 aware (\S is one character, not one byte) and tolerant of invalid UTF-8 in the response.
  auto cjk = create({{"type", "exact_match"}, {"extract", "regex"}, {"extract_pattern", "答案：(\\S)"}});
  EXPECT_EQ(score_one(*cjk, "答案：甲。\xff\xfe 答案：乙。", "乙"), 1.0);
}

TEST(ExactMatch, MissingReferenceIsAnItemError) {
  auto backend = create({{"type", "exact_match"}});
  auto results = backend->score({request("with", "1", "1"), request("without", "1", std::nullopt)});
  ASSERT_EQ(results.size(), 2u);
  ASSERT_TRUE(results[0].ok());
  EXPECT_EQ(*results[0].score, 1.0);
  EXPECT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].error, "exact_match: request \"without\" has no reference answer");
}

TEST(ExactMatch, ConfigErrorsNameTheKey) {
  EXPECT_EQ(config_error({{"type", "exact_match"}, {"extarct", "boxed"}}), "reward: unknown key(s): extarct");
  EXPECT_EQ(config_error({{"type", "exact_match"}, {"extract", "last"}}),
            "reward.extract: must be \"response\", \"boxed\" or \"regex\", got \"last\"");
  EXPECT_EQ(config_error({{"type", "exact_match"}, {"extract", "regex"}}), "reward.extract_pattern: is required");
  EXPECT_EQ(config_error({{"type", "exact_match"}, {"extract", "regex"}, {"extract_pattern", "(a)(b)"}}),
            "reward.extract_pattern: must have exactly one capture group, has 2");
  EXPECT_EQ(config_error({{"type", "exact_match"}, {"extract", "regex"}, {"extract_pattern", "(a"}}),
            "reward.extract_pattern: invalid regex \"(a\": missing closing parenthesis at offset 2");
  EXPECT_EQ(config_error({{"type", "exact_match"}, {"extract_pattern", "(a)"}}),
            "reward.extract_pattern: is only used with \"extract\": \"regex\"");
  EXPECT_EQ(config_error({{"type", "exact_match"}, {"case_fold", "yes"}}),
            "reward.case_fold: must be true or false, got string \"yes\"");
}

TEST(RegexMatch, ReferenceIsAFullMatchRegex) {
  auto backend = create({{"type", "regex_match"}, {"extract", "boxed"}});
  EXPECT_TRUE(backend->capabilities().needs_reference);
  EXPECT_EQ(score_one(*backend, "\\boxed{4.00}", "4(\\.0+)?"), 1.0);
  EXPECT_EQ(score_one(*backend, "\\boxed{ 4 }", "4(\\.0+)?"), 1.0);  // the answer is trimmed
  EXPECT_EQ(score_one(*backend, "\\boxed{14}", "4(\\.0+)?"), 0.0);   // must match the whole answer
  EXPECT_EQ(score_one(*backend, "\\boxed{4.0x}", "4(\\.0+)?"), 0.0);
  EXPECT_EQ(score_one(*backend, "\\boxed{ab}", "a|ab"), 1.0);  // full match backtracks into alternatives
  EXPECT_EQ(score_one(*backend, "\\boxed{A}", "a"), 0.0);
  EXPECT_EQ(score_one(*create({{"type", "regex_match"}, {"case_fold", true}}), "A", "a"), 1.0);
}

TEST(RegexMatch, BadReferenceRegexIsAnItemError) {
  auto backend = create({{"type", "regex_match"}});
  auto results = backend->score({request("bad", "x", "(x"), request("good", "x", "x"), request("none", "x", {})});
  ASSERT_EQ(results.size(), 3u);
  EXPECT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error,
            "regex_match: request \"bad\": reference is an invalid regex \"(x\": missing closing parenthesis at "
            "offset 2");
  ASSERT_TRUE(results[1].ok());
  EXPECT_EQ(*results[1].score, 1.0);
  EXPECT_EQ(results[2].error, "regex_match: request \"none\" has no reference regex");
}

TEST(RegexMatch, ConfiguredPattern) {
  auto backend = create({{"type", "regex_match"}, {"pattern", "[A-D]"}, {"case_fold", true},
                         {"extract", "regex"}, {"extract_pattern", "option (\\w+)"}});
  EXPECT_FALSE(backend->capabilities().needs_reference);
  EXPECT_EQ(score_one(*backend, "I pick option b", std::nullopt), 1.0);
  EXPECT_EQ(score_one(*backend, "I pick option e", "e"), 0.0);  // the reference is not used
  EXPECT_EQ(config_error({{"type", "regex_match"}, {"pattern", "[A-"}}),
            "reward.pattern: invalid regex \"[A-\": missing terminating ] for character class at offset 3");
}

TEST(Format, R1V2ThinkThenAnswer) {
  auto backend = create({{"type", "format"}, {"pattern", "<think>.*</think>\\s*\\S.*"}});
  EXPECT_FALSE(backend->capabilities().needs_reference);
  EXPECT_EQ(score_one(*backend, "<think>\n2+2\nis 4\n</think>\nThe answer is \\boxed{4}\n", std::nullopt), 1.0);
  EXPECT_EQ(score_one(*backend, "The answer is 4", std::nullopt), 0.0);
  EXPECT_EQ(score_one(*backend, "<think>4</think>\n", std::nullopt), 0.0);  // no answer after the thinking
  EXPECT_EQ(score_one(*backend, "x <think>4</think> 4", std::nullopt), 0.0);  // must start with <think>
}

TEST(Format, OptionsAndErrors) {
  auto search = create({{"type", "format"}, {"pattern", "</answer>"}, {"full_match", false},
                        {"match_score", 0.5}, {"mismatch_score", -0.5}});
  EXPECT_EQ(score_one(*search, "<answer>4</answer> trailing", std::nullopt), 0.5);
  EXPECT_EQ(score_one(*search, "<answer>4", std::nullopt), -0.5);
  auto no_dotall = create({{"type", "format"}, {"pattern", "a.b"}, {"dotall", false}});
  EXPECT_EQ(score_one(*no_dotall, "a\nb", std::nullopt), 0.0);
  EXPECT_EQ(score_one(*no_dotall, "a-b", std::nullopt), 1.0);
  // Invalid UTF-8 is never matched, so it cannot be part of a full match (PCRE2 10.42 alone would accept this).
  auto whole = create({{"type", "format"}, {"pattern", "A.*"}});
  EXPECT_EQ(score_one(*whole, "A\x80" "B", std::nullopt), 0.0);
  EXPECT_EQ(score_one(*whole, "AéB", std::nullopt), 1.0);
  EXPECT_EQ(config_error({{"type", "format"}}), "reward.pattern: is required");
  EXPECT_EQ(config_error({{"type", "format"}, {"pattern", "x"}, {"match", 1}}), "reward: unknown key(s): match");
}

TEST(Registry, KnowsRuleBackends) {
  EXPECT_EQ(config_error({{"type", "nope"}}),
            "reward.type: unknown reward backend \"nope\" (known: composite, exact_match, fixed, format, plugin, "
            "regex_match, remote, skywork_vl)");
}

// Skywork R1V2's hybrid reward r = r_rule + r_θ + r_format, with a fixed stand-in for the reward model r_θ.
json r1v2_config(double w_rule, double w_model, double w_format) {
  return {{"type", "composite"},
          {"components",
           {{{"name", "rule"}, {"weight", w_rule}, {"backend", {{"type", "exact_match"}, {"extract", "boxed"}}}},
            {{"name", "model"},
             {"weight", w_model},
             {"backend", {{"type", "fixed"}, {"scores", {{"good", 0.75}, {"wrong", -0.5}, {"noformat", 0.25}}}}}},
            {{"name", "format"},
             {"weight", w_format},
             {"backend", {{"type", "format"}, {"pattern", "<think>.*</think>\\s*\\S.*"}}}}}}};
}

TEST(Composite, R1V2HybridReward) {
  auto backend = create(r1v2_config(1.0, 1.0, 1.0));
  EXPECT_EQ(backend->name(), "composite");
  const RewardCapabilities caps = backend->capabilities();
  EXPECT_TRUE(caps.images);           // from the model stand-in
  EXPECT_TRUE(caps.needs_reference);  // from the rule
  auto results = backend->score({request("good", "<think>2+2</think> The answer is \\boxed{4}", "4"),
                                 request("wrong", "<think>hm</think> \\boxed{5}", "4"),
                                 request("noformat", "\\boxed{4}", "4"),
                                 request("noref", "<think>x</think> \\boxed{4}", std::nullopt)});
  ASSERT_EQ(results.size(), 4u);
  ASSERT_TRUE(results[0].ok()) << results[0].error;
  EXPECT_DOUBLE_EQ(*results[0].score, 2.75);
  EXPECT_EQ(results[0].components, (std::map<std::string, double>{{"rule", 1.0}, {"model", 0.75}, {"format", 1.0}}));
  ASSERT_TRUE(results[1].ok());
  EXPECT_DOUBLE_EQ(*results[1].score, 0.5);
  EXPECT_EQ(results[1].components, (std::map<std::string, double>{{"rule", 0.0}, {"model", -0.5}, {"format", 1.0}}));
  ASSERT_TRUE(results[2].ok());
  EXPECT_DOUBLE_EQ(*results[2].score, 1.25);
  // Two components fail "noref": the error names both; the part that worked is still reported.
  EXPECT_FALSE(results[3].ok());
  EXPECT_EQ(results[3].error,
            "component \"rule\": exact_match: request \"noref\" has no reference answer; "
            "component \"model\": fixed: no score for \"noref\"");
  EXPECT_EQ(results[3].components, (std::map<std::string, double>{{"format", 1.0}}));
}

TEST(Composite, Weights) {
  auto backend = create(r1v2_config(0.5, 2.0, 0.1));
  auto results = backend->score({request("good", "<think>2+2</think> The answer is \\boxed{4}", "4")});
  ASSERT_TRUE(results[0].ok()) << results[0].error;
  EXPECT_DOUBLE_EQ(*results[0].score, 0.5 * 1.0 + 2.0 * 0.75 + 0.1 * 1.0);
  EXPECT_EQ(results[0].components.at("model"), 0.75);  // parts are unweighted
}

TEST(Composite, PluginAsRewardModelAndNesting) {
  json inner = {{"type", "composite"},
                {"components",
                 {{{"name", "rule"}, {"backend", {{"type", "exact_match"}, {"extract", "boxed"}}}},
                  {{"name", "model"},
                   {"weight", 0.5},
                   {"backend",
                    {{"type", "plugin"},
                     {"path", KEYWORD_PLUGIN_PATH},
                     {"config", {{"keywords", {{"because", 1.0}, {"therefore", 2.0}}}}}}}}}}};
  json outer = {{"type", "composite"},
                {"components",
                 {{{"name", "hybrid"}, {"backend", inner}},
                  {{"name", "format"}, {"weight", 3.0}, {"backend", {{"type", "format"}, {"pattern", ".*\\}"}}}}}}};
  auto backend = create(outer);
  auto results = backend->score({request("a", "Because 2+2=4, THEREFORE \\boxed{4}", "4"),
                                 request("b", "\\boxed{5}", "4")});
  ASSERT_TRUE(results[0].ok()) << results[0].error;
  EXPECT_DOUBLE_EQ(*results[0].score, (1.0 + 0.5 * 3.0) + 3.0 * 1.0);
  EXPECT_EQ(results[0].components,
            (std::map<std::string, double>{
                {"hybrid", 2.5}, {"hybrid.rule", 1.0}, {"hybrid.model", 3.0}, {"format", 1.0}}));
  ASSERT_TRUE(results[1].ok()) << results[1].error;
  EXPECT_DOUBLE_EQ(*results[1].score, 0.0 + 3.0);
}

TEST(Composite, ThrowingComponentFailsEveryItem) {
  auto backend = create({{"type", "composite"},
                         {"components",
                          {{{"name", "ok"}, {"backend", {{"type", "format"}, {"pattern", ".*"}}}},
                           {{"name", "rm"}, {"backend", {{"type", "fixed"}, {"throw", "CUDA out of memory"}}}}}}});
  auto results = backend->score({request("a", "x", {}), request("b", "y", {})});
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.error, "component \"rm\": CUDA out of memory");
    EXPECT_EQ(r.components, (std::map<std::string, double>{{"ok", 1.0}}));
  }
}

TEST(Composite, ConfigErrorsNameTheComponentPath) {
  json rule = {{"type", "exact_match"}};
  EXPECT_EQ(config_error({{"type", "composite"}, {"components", {{{"name", "a"}, {"backend", rule}},
                                                                 {{"name", "b"}, {"backend", {{"type", "nope"}}}}}}}),
            "reward.components[1].backend.type: unknown reward backend \"nope\" (known: composite, exact_match, "
            "fixed, format, plugin, regex_match, remote, skywork_vl)");
  EXPECT_EQ(config_error({{"type", "composite"},
                          {"components", json::array({{{"name", "a"}, {"backend", {{"type", "exact_match"}, {"x", 1}}}}})}}),
            "reward.components[0].backend: unknown key(s): x");
  EXPECT_EQ(config_error({{"type", "composite"}, {"components", json::array({{{"name", "a"}, {"wieght", 1}, {"backend", rule}}})}}),
            "reward.components[0]: unknown key(s): wieght");
  EXPECT_EQ(config_error({{"type", "composite"},
                          {"components", {{{"name", "a"}, {"backend", rule}}, {{"name", "a"}, {"backend", rule}}}}}),
            "reward.components[1].name: \"a\" is used twice");
  EXPECT_EQ(config_error({{"type", "composite"}, {"components", json::array({{{"name", "a"}}})}}),
            "reward.components[0].backend: is required");
  EXPECT_EQ(config_error({{"type", "composite"}, {"components", json::array({{{"backend", rule}}})}}),
            "reward.components[0].name: is required");
  EXPECT_EQ(config_error({{"type", "composite"}, {"components", json::array()}}),
            "reward.components: must be a non-empty array");
  EXPECT_EQ(config_error({{"type", "composite"}}), "reward.components: is required");
  EXPECT_EQ(config_error({{"type", "composite"}, {"components", json::array({1})}}),
            "reward.components[0]: must be an object, got number 1");
}

}  // namespace
}  // namespace vlreward
