#pragma once
// The ranks of a data-parallel run and the collectives the trainers use, on c10d backends: NCCL for CUDA devices,
// and for CPU devices vlreward's store backend (store_backend.h; the torch wheel ships Gloo's library but not the
// headers a C++ program needs to create it). A default-constructed group is a single process: rank 0 of 1, every
// collective returns at once, so trainers run one code path with or without a launcher.
//
// Every collective is called by every rank in the same order. A rank that does not arrive within the timeout makes
// the others throw a RankFailure naming it (a dead or hung rank), so a run never waits forever.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "adapters/distributed/launch.h"

namespace vlreward::dist {

// A peer died, hung past the timeout or lost its connection. what() names the rank when it is known.
class RankFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr std::chrono::milliseconds kDefaultCollectiveTimeout{30 * 60 * 1000};  // c10d's default

class ProcessGroup {
 public:
  ProcessGroup();  // a single process
  // Joins the run `env` describes (rendezvous through its TCP store) with the backend for `device`'s type.
  ProcessGroup(const LaunchEnvironment& env, c10::Device device, std::chrono::milliseconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  bool is_main() const { return env_.rank == 0; }
  bool distributed() const { return env_.world_size > 1; }
  const LaunchEnvironment& environment() const { return env_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // In place: tensor = the sum over ranks (every rank gets the same values).
  void all_reduce_sum(at::Tensor& tensor);
  // output = concatenation over ranks of `input` (each rank's of the same shape); output has world_size × numel.
  void all_gather(const at::Tensor& input, at::Tensor& output);
  // output (n elements) = the sum over ranks of input's slice [rank·n, (rank+1)·n); input has world_size × n.
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output);
  // Every rank's text, in rank order.
  std::vector<std::string> all_gather_text(const std::string& text);
  void barrier();

 private:
  struct Backend;
  LaunchEnvironment env_;
  c10::Device device_{c10::kCPU};
  std::chrono::milliseconds timeout_{kDefaultCollectiveTimeout};
  std::unique_ptr<Backend> backend_;
};

// The command lines' entry: the group of the launch environment (a single process without launch variables).
// `device` (a config's model.device) becomes this rank's device (device_for_rank); peers wait `timeout_s` for each
// other. Rank 0 prints one line naming the world size and backend.
std::shared_ptr<ProcessGroup> join_launch_group(std::string& device, double timeout_s);

}  // namespace vlreward::dist
