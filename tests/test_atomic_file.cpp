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

TEST(AtomicFile, CopyIsWholeAndNamesAMissingSource) {
  const auto dir = temp_dir() / "copy";
  fs::create_directories(dir);
  std::string big(300000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 % 251);
  vlreward::write_file_atomic((dir / "from.bin").string(), big);
  vlreward::copy_file_atomic((dir / "from.bin").string(), (dir / "to.bin").string());
  EXPECT_EQ(vlreward::read_file((dir / "to.bin").string()), big);
  try {
    vlreward::copy_file_atomic((dir / "absent.bin").string(), (dir / "to.bin").string());
    FAIL() << "copied a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.bin"), std::string::npos) << e.what();
  }
  EXPECT_EQ(vlreward::read_file((dir / "to.bin").string()), big);  // the old copy stays whole
}

// A committed directory replaces the old one whole: nested files and all, the temp name gone.
TEST(AtomicFile, CommitDirectoryReplacesTheOldDirectoryWhole) {
  const auto root = temp_dir() / "commit";
  fs::remove_all(root);
  fs::create_directories(root / "final" / "old_only");
  vlreward::write_file_atomic((root / "final" / "old_only" / "x").string(), "old");
  fs::create_directories(root / ".tmp-final" / "nested");
  vlreward::write_file_atomic((root / ".tmp-final" / "a.json").string(), "{}");
  vlreward::write_file_atomic((root / ".tmp-final" / "nested" / "b.bin").string(), "b");
  vlreward::commit_directory((root / ".tmp-final").string(), (root / "final").string());
  EXPECT_FALSE(fs::exists(root / ".tmp-final"));
  EXPECT_FALSE(fs::exists(root / "final" / "old_only"));
  EXPECT_EQ(vlreward::read_file((root / "final" / "a.json").string()), "{}");
  EXPECT_EQ(vlreward::read_file((root / "final" / "nested" / "b.bin").string()), "b");
  EXPECT_THROW(vlreward::commit_directory((root / "missing").string(), (root / "final").string()), std::exception);
  EXPECT_TRUE(fs::exists(root / "final" / "a.json"));  // a failed commit leaves the committed directory alone
  EXPECT_THROW(vlreward::fsync_directory((root / "missing").string()), std::runtime_error);
}

TEST(MappedFile, MissingFileIsInputError) {
  EXPECT_THROW(vlreward::MappedFile::open("/nonexistent-vlreward-file"), vlreward::InputError);
}
