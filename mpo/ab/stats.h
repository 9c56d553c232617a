#pragma once
// Statistics for ab-compare (torch-free): paired reward comparison of policy B against policy A over the same
// prompts, ground-truth accuracy, and percentile bootstrap confidence intervals.
//
// Per prompt i, d_i = r_B − r_A: a win for B when d_i > tie_epsilon, a tie when |d_i| ≤ tie_epsilon, a loss
// otherwise. Win rate = (wins + 0.5·ties) / n. Confidence intervals come from a paired bootstrap over prompts:
// each resample draws n prompt indices with replacement and recomputes every statistic on those same prompts,
// and the interval is the (α/2, 1 − α/2) percentile of the resampled values (numpy's default linear
// interpolation). The resampler is splitmix64 with rejection sampling for the index, so a seed gives the same
// intervals on every platform and standard library.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vlreward::mpo {

// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, fully specified, so results do not depend on the standard
// library's distributions.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  uint64_t below(uint64_t n);  // uniform in [0, n), unbiased (rejection); n > 0

 private:
  uint64_t state_;
};

struct Interval {
  double low = 0, high = 0;
  bool contains(double x) const { return low <= x && x <= high; }
};

struct BootstrapOptions {
  int64_t resamples = 10000;
  uint64_t seed = 0;
  double confidence = 0.95;
};

struct RewardComparison {
  int64_t n = 0;  // prompts compared (both rewards present)
  int64_t wins = 0, ties = 0, losses = 0;  // from B's side
  double win_rate = 0;                     // (wins + 0.5·ties) / n
  Interval win_rate_ci;
  double mean_a = 0, mean_b = 0;
  double mean_difference = 0;  // mean of d = r_B − r_A
  Interval mean_difference_ci;
};

struct AccuracyComparison {
  int64_t n = 0;  // prompts with a reference
  int64_t correct_a = 0, correct_b = 0;
  double accuracy_a = 0, accuracy_b = 0;
  Interval accuracy_a_ci, accuracy_b_ci;
  double difference = 0;  // accuracy_b − accuracy_a (paired)
  Interval difference_ci;
};

// Win/tie/loss of a single difference.
enum class Outcome { kLoss = -1, kTie = 0, kWin = 1 };
Outcome outcome(double difference, double tie_epsilon);

// Rewards of A and B per prompt (same length, finite). Throws std::invalid_argument for mismatched lengths,
// a negative tie_epsilon or non-finite rewards. n = 0 gives zeros and empty intervals.
RewardComparison compare_rewards(const std::vector<double>& reward_a, const std::vector<double>& reward_b,
                                 double tie_epsilon, const BootstrapOptions& bootstrap);

// Correctness of A and B per prompt with a reference (same length).
AccuracyComparison compare_accuracy(const std::vector<bool>& correct_a, const std::vector<bool>& correct_b,
                                    const BootstrapOptions& bootstrap);

// The q-quantile (0 ≤ q ≤ 1) of sorted values with linear interpolation, as numpy.percentile(values, 100·q).
double quantile_sorted(const std::vector<double>& sorted, double q);

// "B better" when the win-rate CI lies above 0.5, "A better" when below, "no significant difference" when it
// contains 0.5 (also when n = 0).
std::string verdict(const RewardComparison& comparison, const std::string& label_a, const std::string& label_b);

// Ground-truth matching. A response is correct when normalize_answer(response) == normalize_answer(reference):
// ASCII whitespace trimmed, ASCII letters lowercased, runs of whitespace collapsed to one space, then trailing
// punctuation (. , ; : ! ? and whitespace before it) stripped. "The answer is B." does not match "B": the rule is
// meant for short-answer prompts ("Answer with one word").
std::string normalize_answer(const std::string& text);
bool answer_matches(const std::string& response, const std::string& reference);

// Equal-width histogram of `values` over [low, high] (low < high) with `bins` bins; the last bin includes high,
// values outside the range are clamped into the end bins.
struct Histogram {
  double low = 0, high = 0;
  std::vector<int64_t> counts;
};
Histogram histogram(const std::vector<double>& values, int bins, double low, double high);

}  // namespace vlreward::mpo
