#include "adapters/qwen2_5_vl/checkpointing.h"

#include <ATen/autocast_mode.h>

#include <memory>
#include <optional>

#include "adapters/qwen2_5_vl/autocast.h"
#include "adapters/qwen2_5_vl/layers.h"

namespace vlreward::qwen {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the backward pass needs besides tensors: the block and the state its first run saw.
struct Recompute : torch::CustomClassHolder {
  Block block;
  bool cuda_autocast = false;
  at::Generator cpu_generator;
  std::optional<at::Tensor> cpu_rng_state;
  std::optional<at::Generator> cuda_generator;
  std::optional<at::Tensor> cuda_rng_state;
};

// Sets the generators to the states recorded at the first run, and back on exit.
class RngReplay {
 public:
  explicit RngReplay(Recompute& r) : r_(r) {
    now_cpu_ = r_.cpu_generator.get_state();
    r_.cpu_generator.set_state(*r_.cpu_rng_state);
    if (r_.cuda_generator) {
      now_cuda_ = r_.cuda_generator->get_state();
      r_.cuda_generator->set_state(*r_.cuda_rng_state);
    }
  }
  ~RngReplay() {
    r_.cpu_generator.set_state(now_cpu_);
    if (r_.cuda_generator) r_.cuda_generator->set_state(now_cuda_);
  }

 private:
  Recompute& r_;
  at::Tensor now_cpu_, now_cuda_;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, c10::IValue recompute,
                               at::TensorList parameters) {
    ctx->saved_data["recompute"] = recompute;
    std::vector<torch::Tensor> saved{x};
    saved.insert(saved.end(), parameters.begin(), parameters.end());
    ctx->save_for_backward(saved);
    auto r = c10::static_intrusive_pointer_cast<Recompute>(recompute.toCapsule());
    torch::NoGradGuard no_grad;  // no graph, no saved activations
    return r->block(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto r = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor x = saved[0].detach().requires_grad_(saved[0].requires_grad());
    std::vector<torch::Tensor> inputs;
    if (x.requires_grad()) inputs.push_back(x);
    for (size_t i = 1; i < saved.size(); ++i)
      if (saved[i].requires_grad()) inputs.push_back(saved[i]);
    torch::Tensor out;
    {
      torch::AutoGradMode grad_mode(true);
      Bf16Autocast autocast(c10::DeviceType::CUDA, r->cuda_autocast);  // the engine thread has its own autocast state
      RngReplay rng(*r);
      out = r->block(x);
    }
    const variable_list grads =
        torch::autograd::grad({out}, inputs, {grad_outputs[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                              /*allow_unused=*/true);
    // One gradient per forward argument: x, the recompute capsule (none), each parameter.
    variable_list result;
    size_t next = 0;
    result.push_back(x.requires_grad() ? grads[next++] : torch::Tensor());
    result.emplace_back();
    for (size_t i = 1; i < saved.size(); ++i) result.push_back(saved[i].requires_grad() ? grads[next++] : torch::Tensor());
    return result;
  }
};

}  // namespace

torch::Tensor checkpointed(const Block& block, const torch::Tensor& x, const std::vector<torch::Tensor>& parameters) {
  bool records = torch::GradMode::is_enabled() && x.requires_grad();
  for (const auto& p : parameters) records = records || (torch::GradMode::is_enabled() && p.requires_grad());
  if (!records) return block(x);
  auto r = c10::make_intrusive<Recompute>();
  r->block = block;
  r->cuda_autocast = at::autocast::is_autocast_enabled(c10::DeviceType::CUDA);
  r->cpu_generator = at::detail::getDefaultCPUGenerator();
  r->cpu_rng_state = r->cpu_generator.get_state();
  if (x.is_cuda()) {
    r->cuda_generator = at::globalContext().defaultGenerator(x.device());
    r->cuda_rng_state = r->cuda_generator->get_state();
  }
  return CheckpointFunction::apply(x, c10::IValue::make_capsule(r), at::TensorList(parameters));
}

std::vector<torch::Tensor> trainable_tensors(const torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (const auto& p : module.parameters(/*recurse=*/true))
    if (p.requires_grad()) out.push_back(p);
  for (const auto& m : module.modules(/*include_self=*/true)) {
    const auto* linear = dynamic_cast<const LinearImpl*>(m.get());
    if (linear == nullptr || !linear->lora) continue;
    for (const auto& t : {linear->lora->A, linear->lora->B})
      if (t.requires_grad()) out.push_back(t);
  }
  return out;
}

}  // namespace vlreward::qwen
