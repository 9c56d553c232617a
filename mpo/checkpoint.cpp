#include "mpo/checkpoint.h"

#include <cstdint>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/safetensors_torch.h"
#include "adapters/qwen2_5_vl/weights.h"
#include "adapters/common/crc32c.h"

namespace vlreward::mpo {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifestFormat = "vlreward-mpo-checkpoint/1";

struct FileSum {
  uint64_t size = 0;
  uint32_t crc = 0;
};

// Size and crc32c, streamed so multi-GB shards are never held in memory.
FileSum sum_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path, fmt::format("cannot open: {}", std::strerror(errno)));
  std::vector<char> buffer(size_t{4} << 20);
  FileSum sum;
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw InputError(path, fmt::format("read failed: {}", std::strerror(err)));
    }
    if (n == 0) break;
    sum.crc = crc32c_extend(sum.crc, buffer.data(), static_cast<size_t>(n));
    sum.size += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return sum;
}

std::vector<std::string> relative_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), dir).generic_string();
    if (rel != kManifestFile) files.push_back(rel);
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::optional<int64_t> step_of(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return std::nullopt;
  const std::string digits = name.substr(prefix.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 18) return std::nullopt;
  return std::stoll(digits);
}

}  // namespace

void write_manifest(const std::string& dir) {
  nlohmann::json files = nlohmann::json::object();
  for (const auto& rel : relative_files(dir)) {
    const FileSum sum = sum_file((fs::path(dir) / rel).string());
    files[rel] = {{"size", sum.size}, {"crc32c", sum.crc}};
  }
  nlohmann::json manifest{{"format", kManifestFormat}, {"files", files}, {"files_crc32c", crc32c(files.dump())}};
  write_file_atomic((fs::path(dir) / kManifestFile).string(), manifest.dump(2) + "\n");
}

void verify_manifest(const std::string& dir) {
  const std::string manifest_path = (fs::path(dir) / kManifestFile).string();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError(dir, "checkpoint directory does not exist");
  if (!fs::is_regular_file(manifest_path, ec))
    throw InputError(manifest_path, "missing: not a complete checkpoint (the manifest is written last)");
  const nlohmann::json manifest = read_json_file(manifest_path, "corrupted: not valid JSON");
  if (!manifest.is_object() || manifest.value("format", "") != kManifestFormat || !manifest.contains("files") ||
      !manifest["files"].is_object() || !manifest.contains("files_crc32c") || !manifest["files_crc32c"].is_number_unsigned())
    throw InputError(manifest_path, fmt::format("corrupted (not a {} manifest)", kManifestFormat));
  const auto& files = manifest["files"];
  if (crc32c(files.dump()) != manifest["files_crc32c"].get<uint32_t>())
    throw InputError(manifest_path, "corrupted (its file list does not match its checksum)");
  for (const auto& [rel, entry] : files.items()) {
    const std::string path = (fs::path(dir) / rel).string();
    if (!entry.is_object() || !entry.contains("size") || !entry["size"].is_number_unsigned() || !entry.contains("crc32c") ||
        !entry["crc32c"].is_number_unsigned())
      throw InputError(manifest_path, fmt::format("corrupted (bad entry for {})", rel));
    if (!fs::is_regular_file(path, ec)) throw InputError(path, "missing from the checkpoint (listed in manifest.json)");
    const uint64_t expected_size = entry["size"].get<uint64_t>();
    const uint64_t actual_size = fs::file_size(path, ec);
    if (actual_size != expected_size)
      throw InputError(path, fmt::format("{}: {} bytes, the manifest says {}",
                                         actual_size < expected_size ? "truncated" : "wrong size", actual_size,
                                         expected_size));
    const FileSum sum = sum_file(path);
    if (sum.crc != entry["crc32c"].get<uint32_t>())
      throw InputError(path, fmt::format("corrupted: crc32c {:08x}, the manifest says {:08x}", sum.crc,
                                         entry["crc32c"].get<uint32_t>()));
  }
  for (const auto& rel : relative_files(dir))
    if (!files.contains(rel)) throw InputError((fs::path(dir) / rel).string(), "not listed in manifest.json (foreign file)");
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    if (!entry.is_directory()) continue;
    if (auto step = step_of(entry.path().filename().string(), kCheckpointPrefix)) out.emplace_back(*step, entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void remove_stale_temp_checkpoints(const std::string& output_dir) {
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(output_dir))
    if (entry.is_directory() && entry.path().filename().string().rfind(kTempCheckpointPrefix, 0) == 0)
      stale.push_back(entry.path());
  for (const auto& path : stale) fs::remove_all(path);
}

void prune_checkpoints(const std::string& output_dir, int64_t keep) {
  auto checkpoints = list_checkpoints(output_dir);
  const int64_t excess = static_cast<int64_t>(checkpoints.size()) - keep;
  for (int64_t i = 0; i < excess; ++i) fs::remove_all(checkpoints[static_cast<size_t>(i)].second);
  if (excess > 0) fsync_directory(output_dir);
}

void save_torch_rng_state(const std::string& path) {
  auto generator = at::detail::getDefaultCPUGenerator();
  torch::Tensor state;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    state = generator.get_state();
  }
  write_safetensors(path, {{"torch_cpu", state}});
}

void load_torch_rng_state(const std::string& path) {
  auto file = SafetensorsFile::open(path);
  auto state = to_tensor(file.get("torch_cpu"));
  if (state.scalar_type() != torch::kUInt8) throw InputError(path, "torch_cpu: must be U8");
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  try {
    generator.set_state(state.clone());
  } catch (const c10::Error& e) {
    throw InputError(path, fmt::format("torch_cpu: not a CPU generator state ({})", e.what_without_backtrace()));
  }
}

}  // namespace vlreward::mpo
