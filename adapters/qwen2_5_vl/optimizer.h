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

// Clips the gradients' global L2 norm to max_grad_norm (<= 0: no clipping), sets every group's learning rate to
// `lr` and steps. Returns the norm before clipping.
double clip_and_step(torch::optim::AdamW& optimizer, const NamedParameters& trainable, double max_grad_norm,
                     double lr);

}  // namespace vlreward::qwen
