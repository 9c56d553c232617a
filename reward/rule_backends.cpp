#include "reward/rule_backends.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cstdint>
#include <pcre2.h>

#include <stdexcept>

#include "plugin/config_reader.h"

namespace vlreward {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof buffer);
  return n < 0 ? "PCRE2 error " + std::to_string(code) : std::string(reinterpret_cast<const char*>(buffer));
}

// A compiled PCRE2 pattern (UTF-8; invalid UTF-8 in subjects is tolerated, never matched). Immutable after
// construction, so one instance is safe to share between threads (match data is per call).
class Regex {
 public:
  // Throws std::invalid_argument with PCRE2's message and the offset of the problem.
  Regex(const std::string& pattern, bool full_match, bool caseless, bool dotall) {
    uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    // Anchoring is set at compile time: at match time it would disable JIT.
    if (full_match) options |= PCRE2_ANCHORED | PCRE2_ENDANCHORED;
    if (caseless) options |= PCRE2_CASELESS;
    if (dotall) options |= PCRE2_DOTALL;
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error,
                                     &offset, nullptr);
    if (code == nullptr)
      throw std::invalid_argument("invalid regex \"" + pattern + "\": " + pcre2_message(error) + " at offset " +
                                  std::to_string(offset));
    code_.reset(code, pcre2_code_free);
    full_match_ = full_match;
    // No JIT: PCRE2 10.42's JIT misses multibyte matches of \S, \W, \D under PCRE2_MATCH_INVALID_UTF
    // (PCRE2Project/pcre2#224, fixed later); the interpreter is fast enough for reward rules.
  }

  uint32_t capture_count() const {
    uint32_t n = 0;
    pcre2_pattern_info(code_.get(), PCRE2_INFO_CAPTURECOUNT, &n);
    return n;
  }

  // Whether the pattern matches `subject` (entirely, when compiled with full_match). Throws std::runtime_error
  // when matching itself fails (e.g. a backtracking limit).
  bool matches(const std::string& subject) const {
    MatchData data(code_.get());
    if (!match(subject, 0, 0, data)) return false;
    if (!full_match_) return true;
    // Re-check the span: 10.42's interpreter can end a match at an invalid UTF-8 fragment's end instead of the
    // subject's (PCRE2Project/pcre2#343).
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    return ovector[0] == 0 && ovector[1] == subject.size();
  }

  // Capture group 1 of the last match in `subject` (matches that leave the group unset are skipped).
  std::optional<std::string> last_capture(const std::string& subject) const {
    MatchData data(code_.get());
    std::optional<std::string> last;
    size_t start = 0;
    uint32_t options = 0;
    while (start <= subject.size()) {
      if (!match(subject, start, options, data)) {
        if (options == 0) break;
        // An empty match was followed by no non-empty one here: step over one UTF-8 character.
        options = 0;
        if (start == subject.size()) break;
        ++start;
        while (start < subject.size() && (static_cast<unsigned char>(subject[start]) & 0xC0) == 0x80) ++start;
        continue;
      }
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
      if (ovector[2] != PCRE2_UNSET) last = subject.substr(ovector[2], ovector[3] - ovector[2]);
      start = ovector[1];
      // After an empty match, look for a non-empty one at the same place before moving on.
      options = ovector[0] == ovector[1] ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
    }
    return last;
  }

 private:
  class MatchData {
   public:
    explicit MatchData(const pcre2_code* code) : data_(pcre2_match_data_create_from_pattern(code, nullptr)) {
      if (data_ == nullptr) throw std::bad_alloc();
    }
    ~MatchData() { pcre2_match_data_free(data_); }
    MatchData(const MatchData&) = delete;
    MatchData& operator=(const MatchData&) = delete;
    pcre2_match_data* get() const { return data_; }

   private:
    pcre2_match_data* data_;
  };

  bool match(const std::string& subject, size_t start, uint32_t options, const MatchData& data) const {
    const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                               options, data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0) throw std::runtime_error("regex matching failed: " + pcre2_message(rc));
    return true;
  }

  std::shared_ptr<pcre2_code> code_;
  bool full_match_ = false;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string normalize(const std::string& text, bool case_fold, bool collapse_whitespace) {
  size_t begin = 0, end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  std::string out;
  out.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) {
    char c = text[i];
    if (collapse_whitespace && is_space(c)) {
      if (!is_space(text[i - 1])) out.push_back(' ');  // i > begin: the trimmed text starts with non-space
      continue;
    }
    if (case_fold && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    out.push_back(c);
  }
  return out;
}

Regex compile_config_regex(ConfigReader& reader, const std::string& key, bool full_match, bool caseless, bool dotall) {
  const std::string pattern = reader.required<std::string>(key);
  try {
    return Regex(pattern, full_match, caseless, dotall);
  } catch (const std::invalid_argument& e) {
    reader.fail(key, e.what());
  }
}

// How an answer is pulled out of a response and normalised, shared by exact_match and regex_match.
struct AnswerRule {
  enum class Extract { kResponse, kBoxed, kRegex };
  Extract extract = Extract::kResponse;
  std::optional<Regex> extract_regex;
  bool case_fold = false;
  bool collapse_whitespace = false;
  double match_score = 1.0;
  double mismatch_score = 0.0;

  static AnswerRule read(ConfigReader& reader) {
    AnswerRule rule;
    const std::string extract = reader.optional<std::string>("extract", "response");
    if (extract == "response") {
      rule.extract = Extract::kResponse;
    } else if (extract == "boxed") {
      rule.extract = Extract::kBoxed;
    } else if (extract == "regex") {
      rule.extract = Extract::kRegex;
      rule.extract_regex = compile_config_regex(reader, "extract_pattern", false, false, false);
      if (rule.extract_regex->capture_count() != 1)
        reader.fail("extract_pattern", "must have exactly one capture group, has " +
                                           std::to_string(rule.extract_regex->capture_count()));
    } else {
      reader.fail("extract", "must be \"response\", \"boxed\" or \"regex\", got \"" + extract + "\"");
    }
    if (rule.extract != Extract::kRegex && reader.maybe<std::string>("extract_pattern"))
      reader.fail("extract_pattern", "is only used with \"extract\": \"regex\"");
    rule.case_fold = reader.optional<bool>("case_fold", false);
    rule.collapse_whitespace = reader.optional<bool>("collapse_whitespace", false);
    rule.match_score = reader.optional<double>("match_score", 1.0);
    rule.mismatch_score = reader.optional<double>("mismatch_score", 0.0);
    return rule;
  }

  // The extracted answer, not yet normalised; nullopt when the response has none.
  std::optional<std::string> extract_answer(const std::string& response) const {
    switch (extract) {
      case Extract::kResponse: return response;
      case Extract::kBoxed: return last_boxed_content(response);
      case Extract::kRegex: return extract_regex->last_capture(response);
    }
    return std::nullopt;
  }
  std::string normalized(const std::string& text) const { return normalize(text, case_fold, collapse_whitespace); }
};

std::string item_label(const std::string& backend, const RewardRequest& request) {
  return backend + ": request \"" + request.id + "\"";
}

class ExactMatchBackend : public RewardBackend {
 public:
  explicit ExactMatchBackend(AnswerRule rule) : rule_(std::move(rule)) {}
  std::string name() const override { return "exact_match"; }
  RewardCapabilities capabilities() const override {
    RewardCapabilities caps;
    caps.needs_reference = true;
    return caps;
  }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    std::vector<RewardResult> results;
    results.reserve(batch.size());
    for (const auto& request : batch) {
      if (!request.reference) {
        results.push_back(RewardResult::failure(item_label(name(), request) + " has no reference answer"));
        continue;
      }
      try {
        const auto answer = rule_.extract_answer(request.response);
        const bool match = answer && rule_.normalized(*answer) == rule_.normalized(*request.reference);
        results.push_back(RewardResult::success(match ? rule_.match_score : rule_.mismatch_score));
      } catch (const std::exception& e) {
        results.push_back(RewardResult::failure(item_label(name(), request) + ": " + e.what()));
      }
    }
    return results;
  }

 private:
  AnswerRule rule_;
};

class RegexMatchBackend : public RewardBackend {
 public:
  RegexMatchBackend(AnswerRule rule, std::optional<Regex> pattern)
      : rule_(std::move(rule)), pattern_(std::move(pattern)) {}
  std::string name() const override { return "regex_match"; }
  RewardCapabilities capabilities() const override {
    RewardCapabilities caps;
    caps.needs_reference = !pattern_;
    return caps;
  }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    std::vector<RewardResult> results;
    results.reserve(batch.size());
    for (const auto& request : batch) {
      if (!pattern_ && !request.reference) {
        results.push_back(RewardResult::failure(item_label(name(), request) + " has no reference regex"));
        continue;
      }
      try {
        std::optional<Regex> reference_regex;
        if (!pattern_) {
          try {
            reference_regex.emplace(*request.reference, true, rule_.case_fold, false);
          } catch (const std::invalid_argument& e) {
            results.push_back(RewardResult::failure(item_label(name(), request) + ": reference is an " + e.what()));
            continue;
          }
        }
        const Regex& regex = pattern_ ? *pattern_ : *reference_regex;
        const auto answer = rule_.extract_answer(request.response);
        const bool match = answer && regex.matches(rule_.normalized(*answer));
        results.push_back(RewardResult::success(match ? rule_.match_score : rule_.mismatch_score));
      } catch (const std::exception& e) {
        results.push_back(RewardResult::failure(item_label(name(), request) + ": " + e.what()));
      }
    }
    return results;
  }

 private:
  AnswerRule rule_;
  std::optional<Regex> pattern_;  // none: each request's reference is the pattern
};

class FormatBackend : public RewardBackend {
 public:
  FormatBackend(Regex pattern, double match_score, double mismatch_score)
      : pattern_(std::move(pattern)), match_score_(match_score), mismatch_score_(mismatch_score) {}
  std::string name() const override { return "format"; }
  RewardCapabilities capabilities() const override { return {}; }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    std::vector<RewardResult> results;
    results.reserve(batch.size());
    for (const auto& request : batch) {
      try {
        results.push_back(RewardResult::success(pattern_.matches(request.response) ? match_score_ : mismatch_score_));
      } catch (const std::exception& e) {
        results.push_back(RewardResult::failure(item_label(name(), request) + ": " + e.what()));
      }
    }
    return results;
  }

 private:
  Regex pattern_;
  double match_score_, mismatch_score_;
};

}  // namespace

std::optional<std::string> last_boxed_content(const std::string& text) {
  static const std::string kOpen = "\\boxed{";
  std::optional<std::string> last;
  size_t search = 0;
  for (size_t at; (at = text.find(kOpen, search)) != std::string::npos;) {
    const size_t content = at + kOpen.size();
    int depth = 1;
    size_t i = content;
    for (; i < text.size() && depth > 0; ++i) {
      if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == '{' || text[i + 1] == '}')) {
        ++i;  // an escaped brace is content, not structure
      } else if (text[i] == '{') {
        ++depth;
      } else if (text[i] == '}') {
        --depth;
      }
    }
    if (depth == 0) {
      last = text.substr(content, i - 1 - content);
      search = i;  // boxes nested inside this one are part of its content
    } else {
      search = content;  // unclosed: a later, complete box may still follow
    }
  }
  return last;
}

std::unique_ptr<RewardBackend> make_exact_match_backend(const nlohmann::json& config, const std::string& where) {
  ConfigReader reader(config, where);
  AnswerRule rule = AnswerRule::read(reader);
  reader.finish();
  return std::make_unique<ExactMatchBackend>(std::move(rule));
}

std::unique_ptr<RewardBackend> make_regex_match_backend(const nlohmann::json& config, const std::string& where) {
  ConfigReader reader(config, where);
  AnswerRule rule = AnswerRule::read(reader);
  std::optional<Regex> pattern;
  if (reader.maybe<std::string>("pattern")) pattern = compile_config_regex(reader, "pattern", true, rule.case_fold, false);
  reader.finish();
  return std::make_unique<RegexMatchBackend>(std::move(rule), std::move(pattern));
}

std::unique_ptr<RewardBackend> make_format_backend(const nlohmann::json& config, const std::string& where) {
  ConfigReader reader(config, where);
  const bool full_match = reader.optional<bool>("full_match", true);
  const bool dotall = reader.optional<bool>("dotall", true);
  const bool case_fold = reader.optional<bool>("case_fold", false);
  Regex pattern = compile_config_regex(reader, "pattern", full_match, case_fold, dotall);
  const double match_score = reader.optional<double>("match_score", 1.0);
  const double mismatch_score = reader.optional<double>("mismatch_score", 0.0);
  reader.finish();
  return std::make_unique<FormatBackend>(std::move(pattern), match_score, mismatch_score);
}

}  // namespace vlreward
