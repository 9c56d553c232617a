#include "adapters/common/progress.h"

#include <cstdint>
#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace vlreward {
namespace {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 359999) return "--:--";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{:02d}:{:02d}", s / 60, s % 60);
}

}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void ProgressBar::advance(int64_t n, const std::string& status) {
  done_ += n;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.1 : 5.0)) draw(false, status);
}

void ProgressBar::finish(const std::string& status) { draw(true, status); }

void ProgressBar::draw(bool final, const std::string& status) {
  last_draw_ = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(last_draw_ - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : -1;
  constexpr int kWidth = 28;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * done_ / total_) : 0;
  const std::string bar = std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), ' ');
  std::string line = fmt::format("{} [{}] {}/{} {:.2f} {}/s elapsed {} ETA {}", label_, bar, done_, total_, rate, unit_,
                                 format_duration(elapsed), final ? "00:00" : format_duration(eta));
  if (!status.empty()) line += "  " + status;
  if (tty_) std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  else std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace vlreward
