#pragma once
// The optimizer step of a data-parallel run, for both trainers: AdamW (adapters/qwen2_5_vl/optimizer.h) over the
// trainable parameters, with the gradients summed over ranks first.
//
// Gradients travel in buckets: the trainable parameters in order, packed into float32 buffers of about
// bucket_bytes, one collective per bucket, once per optimizer step (after the last micro-batch's backward pass; a
// micro-batch never communicates). A parameter that has a gradient on no rank keeps none, so AdamW skips it as a
// single process would.
//
// Unsharded (the default): every rank holds the whole optimizer state; buckets are all-reduced, every rank clips
// and steps identically (MasterWeights for bf16 parameters).
//
// Sharded (ZeRO-1, shard_optimizer): each bucket is split into world_size equal slices, and a rank keeps float32
// masters and AdamW moments for its slice only — 1/world_size of the state. Gradients are reduce-scattered (each rank
// receives the sum of its slice), the global gradient norm is all-reduced from the slices' squared norms and
// clipped, each rank steps its slice, and the updated slices are all-gathered into every rank's parameters. A
// parameter cut by a slice boundary becomes two pieces with their own AdamW state; AdamW is elementwise, so the
// pieces step exactly as the whole parameter would.
//
// Checkpoints: unsharded, rank 0 writes optimizer.safetensors ("<name>.exp_avg", "<name>.exp_avg_sq",
// "<name>.step") and, for parameters that are not float32, master_weights.safetensors ("<name>"); sharded, every
// rank writes optimizer-shard-<rank>-of-<world>.safetensors ("<name>@<offset>.exp_avg" ... and ".master" for the
// piece starting at element <offset>). load() reads either layout from any world size: state is re-cut to this
// run's slices by element ranges.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "adapters/distributed/process_group.h"
#include "adapters/qwen2_5_vl/optimizer.h"

namespace vlreward::dist {

inline constexpr const char* kOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kMasterWeightsFile = "master_weights.safetensors";

struct DataParallelSettings {
  bool shard_optimizer = false;
  int64_t bucket_bytes = int64_t{25} << 20;  // PyTorch DDP's bucket_cap_mb default
};

class DataParallelAdamW {
 public:
  DataParallelAdamW(const qwen::NamedParameters& trainable, const qwen::AdamWSettings& adamw, ProcessGroup& group,
                    const DataParallelSettings& settings = {});
  ~DataParallelAdamW();

  // After every rank's backward passes: gradients summed over ranks, their global L2 norm clipped to max_grad_norm
  // (<= 0: no clipping), one AdamW step at `lr`, parameters refreshed. Returns the norm before clipping.
  double step(double max_grad_norm, double lr);
  // The masters take the parameters' current values (a resume without saved masters, a stage's start).
  void reset_from_parameters();

  // Called on every rank; see the top of this file for what each writes into `dir`.
  void save(const std::string& dir) const;
  // Called on every rank after the parameters were loaded from the same checkpoint.
  void load(const std::string& dir);

  bool sharded() const { return settings_.shard_optimizer; }
  // Bytes this rank holds for the optimizer: AdamW moments and float32 masters that are not the parameters.
  int64_t state_bytes() const;
  // Unsharded runs: the float32 masters AdamW steps (the parameters themselves where they are float32).
  const qwen::MasterWeights& master_weights() const;

 private:
  struct Bucket;
  struct Piece;
  // 1 for each parameter that has a gradient on some rank.
  std::vector<bool> gradients_anywhere();
  void all_reduce_gradients(const std::vector<bool>& has_grad);
  double sharded_step(double max_grad_norm, double lr);
  void gather_parameters();  // sharded: every rank's slices into every rank's parameters
  // Sharded: each piece's master (a view of its float32 parameter, else a float32 copy) and AdamW over them.
  void make_piece_masters();

  qwen::NamedParameters trainable_;
  ProcessGroup& group_;
  DataParallelSettings settings_;
  qwen::AdamWSettings adamw_settings_;
  std::vector<Bucket> buckets_;
  std::vector<Piece> pieces_;                     // sharded: this rank's slices
  std::unique_ptr<qwen::MasterWeights> masters_;  // unsharded
  std::unique_ptr<torch::optim::AdamW> adamw_;
};

}  // namespace vlreward::dist
