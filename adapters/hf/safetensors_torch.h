#pragma once
// safetensors <-> torch::Tensor. Kept apart from safetensors.h so the formats layer stays torch-free.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "adapters/hf/safetensors.h"

namespace vlreward {

c10::ScalarType to_scalar_type(DType dtype);
// Throws InputError(source, ...) for a torch dtype safetensors here does not support (e.g. float64).
DType dtype_from_scalar_type(c10::ScalarType type, const std::string& source);

// A CPU tensor over the view's bytes, without copying: the tensor's deleter holds `view.owner`, so the mapping
// lives as long as the tensor. The mapping is copy-on-write: in-place ops on the tensor change only this process's
// copy of the touched pages, never the file. Copies only when the data is misaligned for its dtype (possible for files whose header length
// is not a multiple of 8) or empty. BOOL bytes other than 0/1 are rejected (InputError naming file and tensor),
// since torch assumes canonical bools.
torch::Tensor to_tensor(const TensorView& view);

// Writes named tensors (any device/layout; made contiguous CPU copies as needed) with write_safetensors.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace vlreward
