#pragma once
// What the C++ benchmarks share: wall and CPU clocks, the process's resident memory, and their command lines
// (parsed and reported as every vlreward command: adapters/common/cli.h; a bad option exits 2).
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>

namespace vlreward::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU time of the whole process (all threads): robust to other work on a shared machine.
inline double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// VmHWM of /proc/self/status: the peak resident set of this process image. (getrusage's ru_maxrss is not used:
// Linux carries it across fork + execve, so it would report the launching Python process's peak.)
inline double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // "VmHWM:  123456 kB"
  return -1;
}

// Resets VmHWM to the current resident set (Linux's clear_refs "5"), so a later peak_rss_mib() is the peak of what
// ran since.
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

inline double current_rss_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

}  // namespace vlreward::bench
