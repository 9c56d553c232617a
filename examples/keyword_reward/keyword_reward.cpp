// Example reward plugin: score = sum of the weights of the configured keywords that occur in the response.
// Built as a separate MODULE library that links nothing from vlreward; loaded with
//   {"type": "plugin", "path": ".../libkeyword_reward.so",
//    "config": {"keywords": {"cat": 1.0, "dog": 0.5}, "case_sensitive": false}}
// Each keyword counts once however often it occurs. An empty response is an item error.
#include <cctype>
#include <stdexcept>
#include <utility>

#include "plugin/plugin_sdk.h"

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class KeywordReward : public vlreward::RewardBackend {
 public:
  explicit KeywordReward(const nlohmann::json& config) {
    for (const auto& item : config.items())
      if (item.key() != "keywords" && item.key() != "case_sensitive")
        throw std::invalid_argument("unknown key \"" + item.key() + "\" (known: keywords, case_sensitive)");
    case_sensitive_ = config.value("case_sensitive", false);
    const auto keywords = config.find("keywords");
    if (keywords == config.end() || !keywords->is_object() || keywords->empty())
      throw std::invalid_argument("\"keywords\" must be a non-empty object {keyword: weight}");
    for (const auto& [keyword, weight] : keywords->items()) {
      if (keyword.empty() || !weight.is_number())
        throw std::invalid_argument("keyword \"" + keyword + "\" needs a non-empty name and a numeric weight");
      keywords_.emplace_back(case_sensitive_ ? keyword : lower(keyword), weight.get<double>());
    }
  }

  std::string name() const override { return "keyword_reward"; }
  vlreward::RewardCapabilities capabilities() const override { return {}; }

  std::vector<vlreward::RewardResult> score(const std::vector<vlreward::RewardRequest>& batch) override {
    std::vector<vlreward::RewardResult> results;
    for (const auto& request : batch) {
      if (request.response.empty()) {
        results.push_back(vlreward::RewardResult::failure("request \"" + request.id + "\": empty response"));
        continue;
      }
      const std::string text = case_sensitive_ ? request.response : lower(request.response);
      double total = 0.0;
      for (const auto& [keyword, weight] : keywords_)
        if (text.find(keyword) != std::string::npos) total += weight;
      results.push_back(vlreward::RewardResult::success(total));
    }
    return results;
  }

 private:
  bool case_sensitive_ = false;
  std::vector<std::pair<std::string, double>> keywords_;
};

}  // namespace

VLREWARD_PLUGIN(KeywordReward)
