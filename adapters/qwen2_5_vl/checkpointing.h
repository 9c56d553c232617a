#pragma once
// Gradient checkpointing for one block of layers (transformers' gradient_checkpointing, torch.utils.checkpoint):
// the block runs without keeping its activations, and the backward pass runs it again and back-propagates
// through the recomputation, so the gradients are those of running the block directly while only its input is
// kept. The recomputation sees the random-number state and the bf16 autocast state of the first run (dropout
// draws the same masks).
#include <functional>
#include <torch/torch.h>

#include <vector>

namespace vlreward::qwen {

using Block = std::function<torch::Tensor(const torch::Tensor&)>;

// block(x), checkpointed when autograd records (grad mode on and x or one of `parameters` requiring a gradient);
// otherwise block(x) as it is. `parameters`: every tensor the block reads that may need a gradient — its trainable
// parameters and adapters (trainable_tensors) — so the result requires a gradient even when x does not (the first
// layer after a frozen embedding) and their gradients reach autograd. `block` must capture by value whatever else it
// reads (rotary tables, masks): it runs again during the backward pass.
torch::Tensor checkpointed(const Block& block, const torch::Tensor& x, const std::vector<torch::Tensor>& parameters);

// The tensors of `module` that require a gradient: its parameters and its layers' LoRA matrices.
std::vector<torch::Tensor> trainable_tensors(const torch::nn::Module& module);

}  // namespace vlreward::qwen
