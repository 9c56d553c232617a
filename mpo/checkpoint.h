#pragma once
// MPO training checkpoints on disk: crash-safe directories with a checksummed manifest.
//
// <output>/checkpoint-<step>/
//   model.safetensors (or shards + index), config.json, tokenizer and preprocessor files   the policy, HF layout
//   optimizer.safetensors   per trainable parameter "<name>.exp_avg", "<name>.exp_avg_sq", "<name>.step" (I64);
//                           a sharded data-parallel run writes optimizer-shard-<rank>-of-<world>.safetensors instead
//                           (adapters/distributed/data_parallel_adamw.h), and bf16 runs add master_weights.safetensors
//   rng_state.safetensors   "torch_cpu": LibTorch's CPU generator state (U8)
//   running_moments.json    δ (RunningMoments, TRL's keys)
//   trainer_state.json      global step, data cursor, scheduler, data-order RNG, data fingerprint, config, and
//                           for online runs the round ({"index", "start_step"}) whose pairs file the fingerprint is of
//   manifest.json           size and crc32c of every file above (and a crc32c of its own file list)
//
// A checkpoint is written into <output>/.tmp-checkpoint-<step>/, every file fsynced, the manifest last, then
// the directory is renamed into place and the parent fsynced: a reader sees a complete checkpoint or none.
// Loading verifies the manifest first, so a truncated or corrupted file is named, never loaded.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vlreward::mpo {

inline constexpr const char* kManifestFile = "manifest.json";
inline constexpr const char* kCheckpointPrefix = "checkpoint-";
inline constexpr const char* kTempCheckpointPrefix = ".tmp-checkpoint-";

// Lists every regular file under `dir` (recursively, except manifest.json) with its size and crc32c into
// dir/manifest.json (written atomically).
void write_manifest(const std::string& dir);
// Throws InputError naming the checkpoint file at fault: manifest.json missing/unparsable/altered, a listed
// file missing, truncated or extended (size), or corrupted (crc32c), or a file present but not listed.
void verify_manifest(const std::string& dir);

// checkpoint-<step> directories of `output_dir`, sorted by step.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir);
// Deletes .tmp-checkpoint-* directories (a crash while saving leaves one behind).
void remove_stale_temp_checkpoints(const std::string& output_dir);
// Keeps the newest `keep` checkpoints.
void prune_checkpoints(const std::string& output_dir, int64_t keep);

// LibTorch's default CPU generator state <-> safetensors ("torch_cpu").
void save_torch_rng_state(const std::string& path);
void load_torch_rng_state(const std::string& path);

}  // namespace vlreward::mpo
