#include "mpo/running_moments.h"

#include <cmath>
#include <limits>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"

namespace vlreward::mpo {

namespace {

// TRL evaluates these steps as float32 tensor ops with Python scalars; each scalar is rounded to float32 before
// the op, which is what the casts below reproduce (one rounding per op, no fused multiply-add).
float f32(double v) { return static_cast<float>(v); }

float derived_std(float var, double count) {
  // (new_var * tot_count / (tot_count - 1)).float().sqrt(): +inf after the first update (count - 1 == 0).
  // The square root goes through torch like TRL's, whose float32 sqrt is not always correctly rounded (1 ulp).
  const float scaled = (var * f32(count)) / f32(count - 1.0);
  return torch::scalar_tensor(scaled, torch::kFloat32).sqrt().item<float>();
}

struct BatchMoments {
  float mean;
  float var;
  double count;
};

BatchMoments batch_moments(const torch::Tensor& xs, const RunningMoments::AllReduceSum& all_reduce_sum) {
  if (!all_reduce_sum) {
    // torch.var_mean(xs, unbiased=False) in xs's dtype, then .float().
    auto [var, mean] = torch::var_mean(xs, /*unbiased=*/false);
    return {mean.to(torch::kFloat32).item<float>(), var.to(torch::kFloat32).item<float>(),
            static_cast<double>(xs.numel())};
  }
  // get_global_statistics: all-reduce [sum, count] in xs's dtype, then the squared deviations from the global mean.
  auto sum_and_count = torch::stack({xs.sum(), torch::scalar_tensor(static_cast<double>(xs.numel()), xs.options())});
  auto reduced = all_reduce_sum(sum_and_count);
  if (!reduced.defined() || reduced.numel() != 2)
    throw std::runtime_error("RunningMoments: the all-reduce must return the summed [sum, count] tensor");
  reduced = reduced.to(xs.scalar_type());
  auto global_mean = reduced[0] / reduced[1];
  auto sum_var = (xs - global_mean).pow(2).sum();
  auto reduced_var = all_reduce_sum(sum_var);
  if (!reduced_var.defined() || reduced_var.numel() != 1)
    throw std::runtime_error("RunningMoments: the all-reduce must return the summed scalar");
  auto global_var = reduced_var.to(xs.scalar_type()).reshape({}) / reduced[1];
  return {global_mean.to(torch::kFloat32).item<float>(), global_var.to(torch::kFloat32).item<float>(),
          reduced[1].item<double>()};
}

double number_at(const nlohmann::json& state, const char* key, const std::string& source) {
  const auto it = state.find(key);
  if (it == state.end()) throw_input_error(source, "missing key \"{}\"", key);
  if (!it->is_number()) throw_input_error(source, "\"{}\" must be a number, got {}", key, it->dump());
  const double value = it->get<double>();
  if (!std::isfinite(value)) throw_input_error(source, "\"{}\" must be finite, got {}", key, it->dump());
  return value;
}

}  // namespace

double RunningMoments::update(const torch::Tensor& xs_in) {
  if (frozen_) return mean_;
  if (!xs_in.defined() || xs_in.numel() == 0) throw std::invalid_argument("RunningMoments::update: empty input");
  if (!xs_in.is_floating_point()) throw std::invalid_argument("RunningMoments::update: input must be floating point");
  torch::NoGradGuard no_grad;
  const auto xs = xs_in.detach();
  const BatchMoments batch = batch_moments(xs, all_reduce_sum_);

  const float delta = batch.mean - f32(mean_);
  const double tot_count = count_ + batch.count;
  const float new_sum = batch.var * f32(batch.count);
  const float old_sum = f32(var_ * count_) + (((delta * delta) * f32(count_)) * f32(batch.count)) / f32(tot_count);
  const float tot_sum = old_sum + new_sum;

  mean_ += static_cast<double>((delta * f32(batch.count)) / f32(tot_count));
  const float new_var = tot_sum / f32(tot_count);
  std_ = static_cast<double>(derived_std(new_var, tot_count));
  var_ = static_cast<double>(new_var);
  count_ = tot_count;
  return mean_;
}

nlohmann::json RunningMoments::to_json() const {
  nlohmann::json state = {{"count", count_}, {"mean", mean_}, {"var", var_}};
  if (std::isfinite(std_)) state["std"] = std_;  // JSON has no infinity; it is derived again on load
  return state;
}

RunningMoments RunningMoments::from_json(const nlohmann::json& state, const std::string& source) {
  if (!state.is_object()) throw_input_error(source, "running moments must be a JSON object, got {}", state.type_name());
  RunningMoments out;
  out.count_ = number_at(state, "count", source);
  out.mean_ = number_at(state, "mean", source);
  out.var_ = number_at(state, "var", source);
  if (!(out.count_ > 0)) throw_input_error(source, "\"count\" must be > 0, got {}", out.count_);
  if (out.var_ < 0) throw_input_error(source, "\"var\" must be >= 0, got {}", out.var_);
  if (state.contains("std")) {
    out.std_ = number_at(state, "std", source);
    if (out.std_ < 0) throw_input_error(source, "\"std\" must be >= 0, got {}", out.std_);
  } else if (out.count_ < 1.0) {
    out.std_ = 1.0;  // never updated: TRL's initial std
  } else {
    out.std_ = static_cast<double>(derived_std(f32(out.var_), out.count_));
  }
  for (const auto& item : state.items()) {
    const auto& key = item.key();
    if (key != "count" && key != "mean" && key != "var" && key != "std")
      throw_input_error(source, "unknown key \"{}\" (expected count, mean, var, std)", key);
  }
  return out;
}

void RunningMoments::save(const std::string& path) const { write_file_atomic(path, to_json().dump(2) + "\n"); }

RunningMoments RunningMoments::load(const std::string& path) {
  return from_json(read_json_file(path, "not valid JSON"), path);
}

}  // namespace vlreward::mpo
