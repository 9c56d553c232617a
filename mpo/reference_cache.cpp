#include "mpo/reference_cache.h"

#include <filesystem>

#include "adapters/common/crc32c.h"
#include "adapters/common/error.h"
#include "adapters/hf/safetensors.h"
#include "adapters/hf/safetensors_torch.h"

namespace vlreward::mpo {
namespace {

constexpr const char* kFormat = "vlreward-reference-logps/1";

}  // namespace

nlohmann::json reference_cache_key(const TrainConfig& config, const DataFingerprint& fingerprint,
                                   const std::vector<PreferenceRecord>& data) {
  uint32_t images = 0;
  for (const auto& record : data)
    for (const auto& image : record.images) {
      const uint32_t crc = image.path.empty() ? crc32c(image.bytes) : crc32c_of_file(image.path);
      images = crc32c_extend(images, &crc, sizeof crc);
    }
  nlohmann::json key{{"format", kFormat},
                     {"data", {{"crc32c", fingerprint.crc32c}, {"num_examples", fingerprint.num_examples}}},
                     {"images_crc32c", images},
                     {"reference", config.reference.path.empty() ? config.model.path : config.reference.path},
                     {"lora_base", config.lora.has_value()},
                     {"dtype", config.model.dtype},
                     {"min_pixels", config.model.min_pixels ? nlohmann::json(*config.model.min_pixels) : nlohmann::json()},
                     {"max_pixels", config.model.max_pixels ? nlohmann::json(*config.model.max_pixels) : nlohmann::json()}};
  return key;
}

std::optional<ReferenceLogps> load_reference_cache(const std::string& path, const nlohmann::json& key,
                                                   size_t num_records) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  const SafetensorsFile file = SafetensorsFile::open(path);
  const auto it = file.metadata().find("key");
  if (it == file.metadata().end() || it->second != key.dump()) return std::nullopt;
  ReferenceLogps out;
  for (const char* side : {"chosen", "rejected"}) {
    const auto values = to_tensor(file.get(side)).to(torch::kFloat64).contiguous();
    if (values.dim() != 1 || static_cast<size_t>(values.size(0)) != num_records)
      throw InputError(path, fmt::format("{}: expected {} values, got shape {}", side, num_records, c10::str(values.sizes())));
    auto& target = std::string(side) == "chosen" ? out.chosen : out.rejected;
    target.assign(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
  }
  return out;
}

void save_reference_cache(const std::string& path, const nlohmann::json& key, const ReferenceLogps& values) {
  auto tensor = [](const std::vector<double>& v) {
    return torch::tensor(v, torch::kFloat64).to(torch::kFloat32);  // the precision the log-probs were computed in
  };
  write_safetensors(path, {{"chosen", tensor(values.chosen)}, {"rejected", tensor(values.rejected)}},
                    {{"format", "pt"}, {"key", key.dump()}});
}

}  // namespace vlreward::mpo
