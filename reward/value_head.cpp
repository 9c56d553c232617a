#include "reward/value_head.h"

#include <cstdint>

#include "adapters/common/error.h"
#include "adapters/hf/safetensors_torch.h"

namespace vlreward {

namespace {
constexpr const char* kWeight = "v_head.summary.weight";
constexpr const char* kBias = "v_head.summary.bias";
}  // namespace

ValueHeadImpl::ValueHeadImpl(int64_t hidden_size) {
  // Registered as summary.* under a "v_head" parent by the owner; here plain names keep the module reusable.
  weight = register_parameter("weight", torch::zeros({1, hidden_size}, torch::kFloat32));
  bias = register_parameter("bias", torch::zeros({1}, torch::kFloat32));
}

torch::Tensor ValueHeadImpl::forward(const torch::Tensor& hidden) const {
  return at::linear(hidden.to(weight.device(), torch::kFloat32), weight, bias).squeeze(-1);
}

ValueHead load_value_head(const std::string& path, int64_t hidden_size) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  std::string unexpected;
  for (const auto& name : file.names())
    if (name != kWeight && name != kBias) unexpected += (unexpected.empty() ? "" : ", ") + name;
  if (!unexpected.empty()) throw_input_error(path, "unexpected tensors: {} (expected {} and {})", unexpected, kWeight, kBias);
  ValueHead head(hidden_size);
  torch::NoGradGuard no_grad;
  auto load = [&](const char* key, torch::Tensor& target) {
    if (!file.contains(key)) throw_input_error(path, "missing tensor {}", key);
    auto t = to_tensor(file.get(key));
    if (t.sizes() != target.sizes())
      throw_input_error(path, "{} has shape [{}], the model needs [{}]", key, fmt::join(t.sizes(), ", "),
                        fmt::join(target.sizes(), ", "));
    if (!t.is_floating_point()) throw_input_error(path, "{} must be a float tensor", key);
    target.copy_(t);
  };
  load(kWeight, head->weight);
  load(kBias, head->bias);
  return head;
}

void save_value_head(const ValueHead& head, const std::string& path) {
  write_safetensors(path, {{kWeight, head->weight.detach()}, {kBias, head->bias.detach()}}, {{"format", "pt"}});
}

}  // namespace vlreward
