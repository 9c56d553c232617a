#pragma once
// A progress bar on stderr: done/total, rate and ETA. Redraws in place on a terminal; on a pipe or file it
// prints a line at most every few seconds so logs stay readable.
#include <chrono>
#include <cstdint>
#include <string>

namespace vlreward {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "items");
  void advance(int64_t n = 1, const std::string& status = {});
  void finish(const std::string& status = {});

 private:
  void draw(bool final, const std::string& status);

  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace vlreward
