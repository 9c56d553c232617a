#pragma once
// Hugging Face checkpoints in and out for any module whose parameter names are hub keys.
#include <cstdint>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace vlreward::qwen {

// Maps a checkpoint key in either layout to the hub layout our modules use:
// model.visual.* -> visual.*, model.language_model.* -> model.*; others unchanged.
std::string hub_name(const std::string& checkpoint_key);

struct LoadReport {
  size_t loaded = 0;
  size_t ignored = 0;  // e.g. lm_head.weight in a checkpoint of a tied model
};

// Loads a checkpoint (directory with model.safetensors or model.safetensors.index.json, or one file) into
// `module`, converting dtypes (bf16/fp16/fp32 -> the parameter's dtype). Strict: one InputError lists every
// missing, unexpected, mis-shaped or non-float key. `tied_embeddings` allows lm_head.weight to be absent or extra.
// CPU parameters of the checkpoint's own dtype are not copied: they become views of the copy-on-write file
// mapping (see MappedFile), so a loaded model occupies its file's pages once.
LoadReport load_checkpoint(torch::nn::Module& module, const std::string& path, bool tied_embeddings);

// Writes the module's parameters in the hub layout as one model.safetensors in `dir` (atomically), or as
// shards of at most max_shard_bytes with model.safetensors.index.json when larger.
void save_checkpoint(const torch::nn::Module& module, const std::string& dir,
                     int64_t max_shard_bytes = int64_t{5} << 30);
// Fills `targets` in place from the safetensors file at `path` (written by write_safetensors from the same names):
// the file must hold exactly these names with these shapes; values are converted to each target's dtype, or, with
// `same_dtype`, must already have it. InputError naming the file and tensor otherwise.
void load_tensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& targets,
                  bool same_dtype = false);

// The same for named tensors in hub names (e.g. LoraAdapters::merged_parameters).
void save_checkpoint(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, const std::string& dir,
                     int64_t max_shard_bytes = int64_t{5} << 30);

}  // namespace vlreward::qwen
