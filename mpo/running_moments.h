#pragma once
// The reward shift δ of MPO's BCO-pair term: TRL's RunningMoments (v0.9.6 – v0.28, trl/trainer/utils.py), a
// cumulative arithmetic mean (not an EMA) of the per-call inputs.
//
// Semantics kept from TRL 0.28 (for parity):
//   - init mean 0, var 1, count 1e-24, so the first update makes δ ≈ the first input;
//   - update() folds in the mean of xs (MPO passes ONE scalar per call: the batch mean of
//     concat(β·logratio_chosen, β·logratio_rejected), detached), and the caller reads δ after the update, so the
//     current batch is already inside δ;
//   - the arithmetic is TRL's: batch moments in float32, the increment computed in float32 and added to a double
//     mean (so δ has float32 granularity per step even for float64 inputs);
//   - across ranks, x̄ and its count are summed over all ranks (count += world size per call), as TRL's
//     get_global_statistics does, through a caller-supplied all-reduce (no c10d dependency here).
//
// Beyond TRL 0.28 (a documented choice):
//   - the state is serialisable (to_json / from_json, save / load) so a resumed run continues with the same δ;
//     the JSON has TRL's key names ("count", "mean", "var", "std"), so TRL's running.json loads here and ours
//     loads with TRL's RunningMoments.load_from_json;
//   - `frozen`: while set, update() changes nothing and δ stays the training value. Evaluation must freeze it:
//     TRL 0.28's DPOTrainer updates δ on every eval forward too, so evaluating mid-run shifts training.
//     (TRL's BCOTrainer made the same two fixes, PRs #1869 and #2867.) `frozen` is a mode, not state: it is
//     not serialised.
#include <torch/torch.h>

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace vlreward::mpo {

class RunningMoments {
 public:
  // Sums a small tensor over all ranks (all-reduce SUM) and returns the sum; same dtype and shape. Leave it empty
  // for a single process.
  using AllReduceSum = std::function<torch::Tensor(const torch::Tensor&)>;

  RunningMoments() = default;
  explicit RunningMoments(AllReduceSum all_reduce_sum) : all_reduce_sum_(std::move(all_reduce_sum)) {}

  void set_all_reduce(AllReduceSum all_reduce_sum) { all_reduce_sum_ = std::move(all_reduce_sum); }

  // Folds xs (any non-empty floating tensor, detached here) into the moments; no-op while frozen. Returns the
  // mean afterwards (= δ).
  double update(const torch::Tensor& xs);

  double mean() const { return mean_; }
  double var() const { return var_; }
  double stddev() const { return std_; }  // TRL's unbiased running std (1 before the first update, +inf after it)
  double count() const { return count_; }

  bool frozen() const { return frozen_; }
  void set_frozen(bool frozen) { frozen_ = frozen; }

  // {"count", "mean", "std" (when finite), "var"}; from_json needs count/mean/var (std is derived from them) and
  // throws InputError naming `source` and the key on a missing, non-numeric or out-of-range value.
  nlohmann::json to_json() const;
  static RunningMoments from_json(const nlohmann::json& state, const std::string& source);
  // Atomic file write / read (checkpoint helpers). The all-reduce and the frozen flag are not part of the file.
  void save(const std::string& path) const;
  static RunningMoments load(const std::string& path);

 private:
  double mean_ = 0.0;
  double var_ = 1.0;
  double std_ = 1.0;
  double count_ = 1e-24;
  bool frozen_ = false;
  AllReduceSum all_reduce_sum_;
};

// Freezes δ for a scope (evaluation) and restores the previous mode afterwards.
class FrozenScope {
 public:
  explicit FrozenScope(RunningMoments& moments) : moments_(moments), was_frozen_(moments.frozen()) {
    moments_.set_frozen(true);
  }
  ~FrozenScope() { moments_.set_frozen(was_frozen_); }
  FrozenScope(const FrozenScope&) = delete;
  FrozenScope& operator=(const FrozenScope&) = delete;

 private:
  RunningMoments& moments_;
  bool was_frozen_;
};

}  // namespace vlreward::mpo
