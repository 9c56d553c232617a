#include "adapters/qwen2_5_vl/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "adapters/qwen2_5_vl/pretrained.h"
#include "adapters/qwen2_5_vl/training_rules.h"

namespace vlreward::qwen {

NamedParameters select_trainable(torch::nn::Module& module, const FreezeRules& rules) {
  NamedParameters trainable;
  for (auto& item : module.named_parameters()) {
    torch::Tensor p = item.value();
    if (is_frozen(item.key(), rules)) {
      p.set_requires_grad(false);
      continue;
    }
    trainable.emplace_back(item.key(), p);
  }
  return trainable;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(const NamedParameters& trainable, const AdamWSettings& settings) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [name, p] : trainable) (uses_weight_decay(name) ? decay : no_decay).push_back(p);
  auto options = [&](double weight_decay) {
    return torch::optim::AdamWOptions(settings.learning_rate)
        .betas({settings.beta1, settings.beta2})
        .eps(settings.epsilon)
        .weight_decay(weight_decay);
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty())
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options(settings.weight_decay)));
  if (!no_decay.empty()) groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(options(0.0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options(settings.weight_decay));
}

void clear_gradients(const NamedParameters& trainable) {
  for (const auto& item : trainable) {
    torch::Tensor p = item.second;
    p.mutable_grad().reset();
  }
}

double squared_gradient_sum(const std::vector<torch::Tensor>& tensors) {
  constexpr int64_t kSlice = int64_t{1} << 24;
  torch::NoGradGuard no_grad;
  torch::Tensor total;
  for (const auto& t : tensors) {
    if (!t.grad().defined()) continue;
    const torch::Tensor flat = t.grad().reshape({-1});
    for (int64_t begin = 0; begin < flat.numel(); begin += kSlice) {
      const auto part = flat.slice(0, begin, std::min(flat.numel(), begin + kSlice)).to(torch::kFloat64).square().sum();
      total = total.defined() ? total + part : part;
    }
  }
  return total.defined() ? total.item<double>() : 0.0;
}

double clip_and_step(torch::optim::AdamW& optimizer, const NamedParameters& trainable, double max_grad_norm,
                     double lr) {
  std::vector<torch::Tensor> params;
  params.reserve(trainable.size());
  for (const auto& item : trainable) params.push_back(item.second);
  const double grad_norm = std::sqrt(squared_gradient_sum(params));
  if (max_grad_norm > 0) {
    const double coefficient = max_grad_norm / (grad_norm + 1e-6);
    if (coefficient < 1.0) {
      torch::NoGradGuard no_grad;
      for (auto& p : params)
        if (p.grad().defined()) p.mutable_grad().mul_(coefficient);
    }
  }
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  optimizer.step();
  return grad_norm;
}

MasterWeights::MasterWeights(const NamedParameters& trainable) : parameters_(trainable) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : trainable) {
    if (p.scalar_type() == torch::kFloat32) {
      masters_.emplace_back(name, p);
      continue;
    }
    active_ = true;
    masters_.emplace_back(name, p.detach().to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true));
  }
}

void MasterWeights::gradients_to_masters() {
  if (!active_) return;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const torch::Tensor& p = parameters_[i].second;
    torch::Tensor m = masters_[i].second;
    if (p.is_same(m)) continue;
    m.mutable_grad() = p.grad().defined() ? p.grad().to(torch::kFloat32) : torch::Tensor();
  }
}

void MasterWeights::masters_to_parameters() {
  if (!active_) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i)
    if (!parameters_[i].second.is_same(masters_[i].second)) parameters_[i].second.copy_(masters_[i].second);
}

void MasterWeights::reset_from_parameters() {
  if (!active_) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i)
    if (!parameters_[i].second.is_same(masters_[i].second)) masters_[i].second.copy_(parameters_[i].second);
}

double MasterWeights::step(torch::optim::AdamW& optimizer, double max_grad_norm, double lr) {
  gradients_to_masters();
  const double grad_norm = clip_and_step(optimizer, masters_, max_grad_norm, lr);
  masters_to_parameters();
  return grad_norm;
}

}  // namespace vlreward::qwen
