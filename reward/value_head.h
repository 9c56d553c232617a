#pragma once
// TRL's ValueHead as Skywork-VL Reward ships it: v_head.summary = Linear(hidden, 1) with bias, run in fp32
// (dropout is inactive at inference), weights in value_head.safetensors beside the HF checkpoint.
#include <cstdint>
#include <torch/torch.h>

#include <string>

namespace vlreward {

class ValueHeadImpl : public torch::nn::Module {
 public:
  explicit ValueHeadImpl(int64_t hidden_size);
  // hidden [..., hidden] in any dtype → values [...] in fp32.
  torch::Tensor forward(const torch::Tensor& hidden) const;

  torch::Tensor weight, bias;  // v_head.summary.weight [1, hidden], v_head.summary.bias [1]
};
TORCH_MODULE(ValueHead);

// Strict: exactly v_head.summary.weight [1, hidden] and v_head.summary.bias [1]; errors name the file and key.
ValueHead load_value_head(const std::string& path, int64_t hidden_size);
void save_value_head(const ValueHead& head, const std::string& path);

}  // namespace vlreward
