#pragma once
// Durable, atomic writes of files and directories: readers see either the old version or the complete new one,
// never a partial write, and what a commit returned from survives a crash. One rule for every writer of
// checkpoints and outputs: a failed fsync is an error (std::runtime_error naming the path), because "written"
// would otherwise be a guess. A filesystem that cannot fsync a directory at all (EINVAL) has nothing to make
// durable there and counts as done.
#include <string>
#include <string_view>

namespace vlreward {

// Writes `bytes` to `path` via a temp file in the same directory, fsync, then rename(2) and fsync of the directory.
// Throws std::runtime_error (naming the path and errno text) on any I/O failure; the temp file is removed.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Copies the file `from` to `to` the same way.
void copy_file_atomic(const std::string& from, const std::string& to);

// fsync(2) on a directory, so the entries created, renamed or removed in it are durable.
void fsync_directory(const std::string& dir);

// Puts a finished directory in place: fsyncs `temp_dir` and every directory under it (the files in it were written
// with the functions above), removes an existing `final_dir`, renames `temp_dir` to `final_dir` and fsyncs the
// parent. A crash leaves the old `final_dir` or the new one (or, between the removal and the rename, none, with the
// complete new one still under its temp name).
void commit_directory(const std::string& temp_dir, const std::string& final_dir);

// Streaming variant for large outputs: the writer callback receives an open FILE*; the rename happens only
// if the callback returns without throwing.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();  // aborts (removes the temp file) unless commit() ran
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();  // flush, fsync, rename, fsync the directory

 private:
  std::string path_, temp_path_;
  int fd_ = -1;
};

}  // namespace vlreward
