#pragma once
// Atomic writes: readers see either the old file or the complete new one, never a partial write.
#include <string>
#include <string_view>

namespace vlreward {

// Writes `bytes` to `path` via a temp file in the same directory, fsync, then rename(2).
// Throws std::runtime_error (naming the path and errno text) on any I/O failure; the temp file is removed.
void write_file_atomic(const std::string& path, std::string_view bytes);

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
