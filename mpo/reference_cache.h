#pragma once
// Reference log-probs of offline preference data, computed once before training and kept beside the checkpoints
// in <output.dir>/reference_logps.safetensors (TRL's precompute_ref_log_probs, images included): no step runs a
// reference forward, and the reference model is released once they are known. The file is keyed by everything
// that decides the values — the data file's fingerprint, every image's bytes (CRC-32C, for images given by path
// as well as inline), the reference checkpoint and how it is built (dtype, LoRA base), the image processor's pixel
// bounds — so a changed data file or image recomputes the cache instead of reusing stale values.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "mpo/data_fingerprint.h"
#include "mpo/train_config.h"
#include "reward/preference_data.h"

namespace vlreward::mpo {

inline constexpr const char* kReferenceCacheFile = "reference_logps.safetensors";

// The key of `data` (read from `fingerprint`'s file) under `config`'s reference.
nlohmann::json reference_cache_key(const TrainConfig& config, const DataFingerprint& fingerprint,
                                   const std::vector<PreferenceRecord>& data);

struct ReferenceLogps {
  std::vector<double> chosen, rejected;  // one per record, in data order
};

// The cached values when `path` exists and was written under `key` for that many records; nullopt otherwise
// (absent, another key). A damaged file is an InputError naming it.
std::optional<ReferenceLogps> load_reference_cache(const std::string& path, const nlohmann::json& key,
                                                   size_t num_records);
// Writes the values with their key, atomically.
void save_reference_cache(const std::string& path, const nlohmann::json& key, const ReferenceLogps& values);

}  // namespace vlreward::mpo
