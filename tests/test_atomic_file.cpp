#include "adapters/common/atomic_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"

namespace fs = std::filesystem;
using vlreward::AtomicFileWriter;

namespace {
fs::path temp_dir() {
  auto d = fs::temp_directory_path() / ("vlreward_atomic_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}
}  // namespace

TEST(AtomicFile, WritesWholeContent) {
  auto p = temp_dir() / "a.txt";
  vlreward::write_file_atomic(p.string(), "hello");
  EXPECT_EQ(vlreward::read_file(p.string()), "hello");
  vlreward::write_file_atomic(p.string(), "replaced");
  EXPECT_EQ(vlreward::read_file(p.string()), "replaced");
}

TEST(AtomicFile, AbandonedWriterLeavesOldFileAndNoTemp) {
  auto dir = temp_dir() / "abandon";
  fs::create_directories(dir);
  auto p = dir / "b.txt";
  vlreward::write_file_atomic(p.string(), "old");
  {
    AtomicFileWriter w(p.string());
    w.write("partial new cont");
    // destroyed without commit(): simulates an exception mid-write
  }
  EXPECT_EQ(vlreward::read_file(p.string()), "old");
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1u) << "temp file left behind";
}

TEST(AtomicFile, UnwritableDirectoryThrowsNamingPath) {
  try {
    vlreward::write_file_atomic("/nonexistent-dir-vlreward/x.bin", "x");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir-vlreward/x.bin"), std::string::npos) << e.what();
  }
}

TEST(MappedFile, MissingFileIsInputError) {
  EXPECT_THROW(vlreward::MappedFile::open("/nonexistent-vlreward-file"), vlreward::InputError);
}
