#pragma once
// safetensors: memory-mapped reader (single file or sharded checkpoint) and atomic writer.
// Torch-free: tensors are handed out as views into the mapping; adapters/hf/safetensors_torch.h wraps
// them as torch::Tensor without copying.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/common/mapped_file.h"

namespace vlreward {

enum class DType { F32, F16, BF16, I64, I32, U8, BOOL };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // the safetensors spelling: "F32", "BF16", ...
// Parses a safetensors dtype string; throws InputError(source, "unknown dtype ...") otherwise.
DType dtype_from_name(std::string_view name, const std::string& source);

// A tensor inside a mapped file. `owner` keeps the mapping alive as long as the view (or a torch::Tensor
// made from it) lives.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::shared_ptr<const MappedFile> owner;

  int64_t numel() const;
};

// Largest header the reference accepts (Rust `safetensors` MAX_HEADER_SIZE).
constexpr uint64_t kSafetensorsMaxHeaderSize = 100'000'000;

// One .safetensors file. Validation follows the reference (Rust `safetensors`): the header must be valid
// JSON, every dtype known, offsets in order, contiguous, non-overlapping, covering the data section exactly,
// and shape x dtype size equal to each byte span.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);  // throws InputError naming the path

  const std::string& path() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;  // throws InputError naming file and tensor
  size_t size() const { return tensors_.size(); }

 private:
  std::shared_ptr<const MappedFile> file_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorView> tensors_;
};

// A checkpoint directory or file: `model.safetensors`, or shards listed by `model.safetensors.index.json`.
class SafetensorsCheckpoint {
 public:
  // `path` is a directory (index.json preferred, else model.safetensors), an index.json, or a .safetensors file.
  static SafetensorsCheckpoint open(const std::string& path);

  std::vector<std::string> names() const;  // sorted, across all shards
  bool contains(const std::string& name) const;
  const TensorView& get(const std::string& name) const;  // throws InputError naming checkpoint and tensor
  const std::vector<SafetensorsFile>& shards() const { return shards_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t> shard_of_;  // tensor name -> index into shards_
};

// A tensor to write: raw little-endian bytes (nbytes must equal numel x dtype size).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes a .safetensors file atomically (temp + rename), byte-identical to Python `safetensors.save_file`
// for the same tensors and metadata: tensors ordered by descending dtype alignment then name, compact JSON,
// header padded with spaces to a multiple of 8. Metadata keys are written sorted; the reference writes them
// in Rust HashMap order (random per process), so files with more than one metadata key only match it up to
// that order. An empty map writes no "__metadata__" entry (Python's metadata=None). Throws InputError naming
// the path (and tensor) for inconsistent input.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace vlreward
