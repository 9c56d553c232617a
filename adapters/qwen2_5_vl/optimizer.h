#pragma once
// The optimizer side of one training step, the same for both trainers (mpo-train, reward-train) and as transformers'
// Trainer does it: AdamW in two groups by the weight-decay rule, gradients cleared to none, the global gradient norm
// clipped, the scheduled learning rate set, one step.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "adapters/qwen2_5_vl/pretrained_config.h"  // FreezeRules

namespace vlreward::qwen {

using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;

// The parameters of `module` that train under `rules`, in named_parameters() order; the others stop requiring
// gradients (no gradient is computed or kept for them).
NamedParameters select_trainable(torch::nn::Module& module, const FreezeRules& rules);

struct AdamWSettings {
  double learning_rate = 0;
  double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;
  double weight_decay = 0;
};

// AdamW over `trainable`: weight decay for the names uses_weight_decay accepts, none for biases and norms.
std::unique_ptr<torch::optim::AdamW> make_adamw(const NamedParameters& trainable, const AdamWSettings& settings);

// Gradients to none (PyTorch's zero_grad(set_to_none=True), what transformers' Trainer does): a parameter without
// a gradient this step (the vision tower on a text-only batch) is skipped by AdamW — no moment decay, no weight
// decay — whether or not it had a gradient before, so a resumed run (fresh, gradient-less tensors) steps exactly as
// the uninterrupted one. LibTorch's zero_grad() would zero them and keep updating.
void clear_gradients(const NamedParameters& trainable);

// Mixed precision for parameters kept in bf16 (or fp16): float32 master copies that AdamW steps (its moments are then
// float32 too) and from which the parameters are refreshed after each step, as transformers' and DeepSpeed's bf16
// training keep them; an update smaller than the parameter's bf16 spacing accumulates instead of rounding away.
// bf16 has float32's exponent range, so no loss scaling is needed. For float32 parameters (and LoRA adapters) there
// is nothing to do: masters() are the parameters themselves.
class MasterWeights {
 public:
  explicit MasterWeights(const NamedParameters& trainable);
  bool active() const { return active_; }  // some parameter is not float32
  const NamedParameters& masters() const { return masters_; }  // what the optimizer steps (the parameters' names)
  // master.grad = the parameter's gradient in float32 (none where the parameter has none).
  void gradients_to_masters();
  // Parameters = masters rounded to their dtype.
  void masters_to_parameters();
  // Masters = the parameters (a stage's start, a resume without saved masters).
  void reset_from_parameters();
  // One optimizer step through the masters: gradients to the masters, clip_and_step on them, parameters refreshed.
  // Returns the gradient norm before clipping.
  double step(torch::optim::AdamW& optimizer, double max_grad_norm, double lr);

 private:
  NamedParameters parameters_, masters_;
  bool active_ = false;
};

// Σ g² over the tensors' gradients (those that have one), accumulated in float64 slice by slice (no float64 copy
// of a large gradient). The global norm is its square root: exact to float64 rounding, and the same whether the
// gradients are whole parameters or a sharded optimizer's slices of them (torch's float32 clip_grad_norm_ is off by
// a few 1e-6 relative on large gradients, and by a different amount for every way of cutting them).
double squared_gradient_sum(const std::vector<torch::Tensor>& tensors);

// Clips the gradients' global L2 norm (squared_gradient_sum) to max_grad_norm (<= 0: no clipping) with
// torch.nn.utils.clip_grad_norm_'s coefficient max_norm / (norm + 1e-6), sets every group's learning rate to `lr`
// and steps. Returns the norm before clipping.
double clip_and_step(torch::optim::AdamW& optimizer, const NamedParameters& trainable, double max_grad_norm,
                     double lr);

}  // namespace vlreward::qwen
