// Times vlreward::Tokenizer on a text file (one unit per line), for bench/bench_tokenizer.py, which runs the HF
// reference on the same lines and compares the ids this writes.
//
//   bench_tokenizer --tokenizer <tokenizer.json> --text <file> [--ids-out <file>] [--threads N] [--repeat R]
//
// Prints one JSON object: bytes, lines, best seconds of a per-line encode loop (1 thread) and of encode_batch
// (N threads). --ids-out writes, per line, a little-endian uint32 count followed by the int32 ids.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/program_options.hpp>

#include "adapters/common/cli.h"
#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/tokenizer.h"
#include "bench/bench_support.h"

namespace po = boost::program_options;

namespace {

}  // namespace

int bench_tokenizer(int argc, char** argv) {
  std::string tokenizer_path, text_path, ids_out;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int repeat = 3;
  po::options_description options("bench_tokenizer options");
  options.add_options()
      ("help,h", "show this help")
      ("tokenizer", po::value(&tokenizer_path)->required(), "tokenizer.json")
      ("text", po::value(&text_path)->required(), "text file, one document per line")
      ("ids-out", po::value(&ids_out), "write the ids here (for the identity check)")
      ("threads", po::value(&threads), "threads for batch encode")
      ("repeat", po::value(&repeat), "timed repetitions");
  po::variables_map vm;
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;
  repeat = std::max(1, repeat);
  try {
    const auto tokenizer = vlreward::Tokenizer::from_files(tokenizer_path);
    const std::string text = vlreward::read_file(text_path);
    std::vector<std::string> lines;
    for (size_t start = 0; start < text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      lines.emplace_back(text.substr(start, end - start));
      start = end + 1;
    }

    std::vector<std::vector<int32_t>> loop_ids(lines.size());
    double loop_best = 1e30;
    for (int r = 0; r < repeat; ++r) {
      const auto start = vlreward::bench::Clock::now();
      for (size_t i = 0; i < lines.size(); ++i) loop_ids[i] = tokenizer.encode(lines[i]);
      loop_best = std::min(loop_best, vlreward::bench::seconds_since(start));
    }
    std::vector<std::vector<int32_t>> batch_ids;
    double batch_best = 1e30;
    for (int r = 0; r < repeat; ++r) {
      const auto start = vlreward::bench::Clock::now();
      batch_ids = tokenizer.encode_batch(lines, threads);
      batch_best = std::min(batch_best, vlreward::bench::seconds_since(start));
    }
    if (batch_ids != loop_ids) {
      std::fprintf(stderr, "encode_batch and encode disagree\n");
      return 1;
    }
    size_t total_ids = 0;
    for (const auto& ids : loop_ids) total_ids += ids.size();
    if (!ids_out.empty()) {
      std::ofstream out(ids_out, std::ios::binary);
      for (const auto& ids : loop_ids) {
        const auto n = static_cast<uint32_t>(ids.size());
        out.write(reinterpret_cast<const char*>(&n), sizeof n);
        out.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof(int32_t)));
      }
      if (!out) {
        std::fprintf(stderr, "cannot write %s\n", ids_out.c_str());
        return 1;
      }
    }
    std::printf("{\"bytes\": %zu, \"lines\": %zu, \"ids\": %zu, \"loop_seconds\": %.6f, \"batch_seconds\": %.6f, "
                "\"threads\": %d}\n",
                text.size(), lines.size(), total_ids, loop_best, batch_best, threads);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("bench_tokenizer", argc, argv, bench_tokenizer); }
