#pragma once
// Copy-on-write memory map of a whole file (MAP_PRIVATE): reads come from the page cache, writes through it stay
// private to the process, the file is never modified. Shared (via shared_ptr) by every tensor view into it.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace vlreward {

class MappedFile {
 public:
  // Throws InputError naming the path if it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view bytes() const { return {reinterpret_cast<const char*>(data_), size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string; throws InputError naming the path on failure.
std::string read_file(const std::string& path);

}  // namespace vlreward
