#include "mpo/ab/stats.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace vlreward::mpo {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t n) {
  // Reject the lowest 2^64 mod n values so the rest is a whole number of copies of [0, n).
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = next();
    if (x >= threshold) return x % n;
  }
}

Outcome outcome(double difference, double tie_epsilon) {
  if (difference > tie_epsilon) return Outcome::kWin;
  if (difference < -tie_epsilon) return Outcome::kLoss;
  return Outcome::kTie;
}

double quantile_sorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double position = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return sorted[below] + (sorted[above] - sorted[below]) * fraction;
}

namespace {

void check_bootstrap(const BootstrapOptions& b) {
  if (b.resamples <= 0) throw std::invalid_argument("bootstrap resamples must be positive");
  if (!(b.confidence > 0 && b.confidence < 1)) throw std::invalid_argument("bootstrap confidence must be in (0, 1)");
}

Interval percentile_interval(std::vector<double>& values, double confidence) {
  std::sort(values.begin(), values.end());
  const double alpha = 1 - confidence;
  return {quantile_sorted(values, alpha / 2), quantile_sorted(values, 1 - alpha / 2)};
}

// Draws `resamples` index vectors of size n and hands each to `visit` as multiplicities (count[i] = how often
// prompt i was drawn); every statistic of one resample sees the same prompts, which makes the bootstrap paired.
template <typename Visit>
void for_each_resample(size_t n, const BootstrapOptions& options, uint64_t stream, Visit&& visit) {
  SplitMix64 rng(options.seed ^ stream);
  std::vector<int64_t> count(n);
  for (int64_t b = 0; b < options.resamples; ++b) {
    std::fill(count.begin(), count.end(), 0);
    for (size_t k = 0; k < n; ++k) ++count[rng.below(n)];
    visit(count);
  }
}

// Means as shift + Σ(x − shift)/n with the shift taken from the data: exact for constant data (the CI of a
// constant is [x, x]) and stabler when rewards carry a large common offset.
double shifted_mean(const std::vector<double>& x, double shift) {
  double sum = 0;
  for (double v : x) sum += v - shift;
  return x.empty() ? 0 : shift + sum / static_cast<double>(x.size());
}

}  // namespace

RewardComparison compare_rewards(const std::vector<double>& reward_a, const std::vector<double>& reward_b,
                                 double tie_epsilon, const BootstrapOptions& bootstrap) {
  if (reward_a.size() != reward_b.size())
    throw std::invalid_argument("compare_rewards: A has " + std::to_string(reward_a.size()) + " rewards, B has " +
                                std::to_string(reward_b.size()));
  if (!(tie_epsilon >= 0)) throw std::invalid_argument("tie epsilon must be >= 0");
  check_bootstrap(bootstrap);
  RewardComparison c;
  const size_t n = reward_a.size();
  c.n = static_cast<int64_t>(n);
  if (n == 0) return c;
  std::vector<double> d(n);
  std::vector<int> half_points(n);  // 2 for a win, 1 for a tie, 0 for a loss: integer sums, exact win rates
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(reward_a[i]) || !std::isfinite(reward_b[i]))
      throw std::invalid_argument("compare_rewards: reward of prompt " + std::to_string(i) + " is not finite");
    d[i] = reward_b[i] - reward_a[i];
    switch (outcome(d[i], tie_epsilon)) {
      case Outcome::kWin: ++c.wins, half_points[i] = 2; break;
      case Outcome::kTie: ++c.ties, half_points[i] = 1; break;
      case Outcome::kLoss: ++c.losses, half_points[i] = 0; break;
    }
  }
  const double nd = static_cast<double>(n);
  c.win_rate = (static_cast<double>(c.wins) + 0.5 * static_cast<double>(c.ties)) / nd;
  c.mean_a = shifted_mean(reward_a, reward_a[0]);
  c.mean_b = shifted_mean(reward_b, reward_b[0]);
  const double shift = d[0];
  c.mean_difference = shifted_mean(d, shift);

  std::vector<double> win_rates, means;
  win_rates.reserve(static_cast<size_t>(bootstrap.resamples));
  means.reserve(static_cast<size_t>(bootstrap.resamples));
  for_each_resample(n, bootstrap, 0, [&](const std::vector<int64_t>& count) {
    int64_t points = 0;
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
      if (count[i] == 0) continue;
      points += count[i] * half_points[i];
      sum += static_cast<double>(count[i]) * (d[i] - shift);
    }
    win_rates.push_back(static_cast<double>(points) / (2 * nd));
    means.push_back(shift + sum / nd);
  });
  c.win_rate_ci = percentile_interval(win_rates, bootstrap.confidence);
  c.mean_difference_ci = percentile_interval(means, bootstrap.confidence);
  return c;
}

AccuracyComparison compare_accuracy(const std::vector<bool>& correct_a, const std::vector<bool>& correct_b,
                                    const BootstrapOptions& bootstrap) {
  if (correct_a.size() != correct_b.size())
    throw std::invalid_argument("compare_accuracy: A has " + std::to_string(correct_a.size()) + " answers, B has " +
                                std::to_string(correct_b.size()));
  check_bootstrap(bootstrap);
  AccuracyComparison c;
  const size_t n = correct_a.size();
  c.n = static_cast<int64_t>(n);
  if (n == 0) return c;
  for (size_t i = 0; i < n; ++i) {
    c.correct_a += correct_a[i] ? 1 : 0;
    c.correct_b += correct_b[i] ? 1 : 0;
  }
  const double nd = static_cast<double>(n);
  c.accuracy_a = static_cast<double>(c.correct_a) / nd;
  c.accuracy_b = static_cast<double>(c.correct_b) / nd;
  c.difference = static_cast<double>(c.correct_b - c.correct_a) / nd;

  std::vector<double> acc_a, acc_b, diff;
  // A stream of its own ("accuracy" in ASCII), so adding references does not change the reward intervals.
  for_each_resample(n, bootstrap, 0x6163637572616379ull, [&](const std::vector<int64_t>& count) {
    int64_t a = 0, b = 0;
    for (size_t i = 0; i < n; ++i) {
      a += correct_a[i] ? count[i] : 0;
      b += correct_b[i] ? count[i] : 0;
    }
    acc_a.push_back(static_cast<double>(a) / nd);
    acc_b.push_back(static_cast<double>(b) / nd);
    diff.push_back(static_cast<double>(b - a) / nd);
  });
  c.accuracy_a_ci = percentile_interval(acc_a, bootstrap.confidence);
  c.accuracy_b_ci = percentile_interval(acc_b, bootstrap.confidence);
  c.difference_ci = percentile_interval(diff, bootstrap.confidence);
  return c;
}

std::string verdict(const RewardComparison& c, const std::string& label_a, const std::string& label_b) {
  if (c.n == 0) return "no prompts compared";
  if (c.win_rate_ci.low > 0.5) return label_b + " better";
  if (c.win_rate_ci.high < 0.5) return label_a + " better";
  return "no significant difference";
}

namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_trailing_punctuation(char c) {
  return c == '.' || c == ',' || c == ';' || c == ':' || c == '!' || c == '?';
}
}  // namespace

std::string normalize_answer(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();  // leading whitespace is dropped, inner runs become one space
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  while (!out.empty() && (is_trailing_punctuation(out.back()) || out.back() == ' ')) out.pop_back();
  return out;
}

bool answer_matches(const std::string& response, const std::string& reference) {
  return normalize_answer(response) == normalize_answer(reference);
}

Histogram histogram(const std::vector<double>& values, int bins, double low, double high) {
  if (bins <= 0 || !(low < high)) throw std::invalid_argument("histogram: need bins > 0 and low < high");
  Histogram h{low, high, std::vector<int64_t>(static_cast<size_t>(bins), 0)};
  const double width = (high - low) / bins;
  for (double v : values) {
    if (std::isnan(v)) continue;
    int bin = static_cast<int>(std::floor((v - low) / width));
    bin = std::clamp(bin, 0, bins - 1);
    ++h.counts[static_cast<size_t>(bin)];
  }
  return h;
}

}  // namespace vlreward::mpo
