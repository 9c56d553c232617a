#include "adapters/hf/safetensors_torch.h"

#include <cstdint>
#include <cstring>

#include "adapters/common/error.h"

namespace vlreward {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; so must the host be");

c10::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::U8: return torch::kUInt8;
    case DType::BOOL: return torch::kBool;
  }
  throw std::logic_error("unhandled DType");
}

DType dtype_from_scalar_type(c10::ScalarType type, const std::string& source) {
  switch (type) {
    case torch::kFloat32: return DType::F32;
    case torch::kFloat16: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kInt64: return DType::I64;
    case torch::kInt32: return DType::I32;
    case torch::kUInt8: return DType::U8;
    case torch::kBool: return DType::BOOL;
    default:
      throw_input_error(source, "torch dtype {} has no supported safetensors dtype (F32 F16 BF16 I64 I32 U8 BOOL)",
                        c10::toString(type));
  }
}

torch::Tensor to_tensor(const TensorView& view) {
  const auto options = torch::TensorOptions().dtype(to_scalar_type(view.dtype)).device(torch::kCPU);
  const std::vector<int64_t>& sizes = view.shape;
  if (view.dtype == DType::BOOL) {
    for (size_t i = 0; i < view.nbytes; ++i)
      if (view.data[i] > 1)
        throw_input_error(view.owner ? view.owner->path() : std::string(), "tensor '{}': BOOL element {} is {}, not 0 or 1",
                          view.name, i, static_cast<int>(view.data[i]));
  }
  if (view.nbytes == 0) return torch::empty(sizes, options);
  if (reinterpret_cast<uintptr_t>(view.data) % dtype_size(view.dtype) != 0) {
    torch::Tensor copy = torch::empty(sizes, options);
    std::memcpy(copy.data_ptr(), view.data, view.nbytes);
    return copy;
  }
  std::shared_ptr<const MappedFile> owner = view.owner;
  return torch::from_blob(const_cast<uint8_t*>(view.data), sizes, [owner](void*) mutable { owner.reset(); }, options);
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // contiguous CPU versions, alive until the write is done
  std::vector<TensorToWrite> out;
  keep.reserve(tensors.size());
  out.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    const DType dtype = dtype_from_scalar_type(tensor.scalar_type(), path + ": tensor '" + name + "'");
    torch::Tensor t = tensor.to(torch::kCPU).contiguous();
    keep.push_back(t);
    out.push_back({name, dtype, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.numel()) * dtype_size(dtype)});
  }
  write_safetensors(path, out, metadata);
}

}  // namespace vlreward
