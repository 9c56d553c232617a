#pragma once
// Where this process sits in a multi-process run, read from the variables torchrun (or any launcher following its
// convention) sets: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Torch-free.
//
//   torchrun --nproc-per-node 2 --no-python mpo-train --config configs/mpo_tiny.yaml
//
// Without those variables the process runs alone (rank 0 of 1), exactly as a plain command line.
#include <cstdint>
#include <string>

namespace vlreward::dist {

struct LaunchEnvironment {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  std::string master_addr;   // the rendezvous store's host
  int master_port = 0;
  // torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE): every rank
  // connects as a client. Otherwise rank 0 serves it.
  bool agent_store = false;
  int restart_count = 0;     // TORCHELASTIC_RESTART_COUNT: keeps the keys of a restarted attempt apart
  bool distributed() const { return world_size > 1; }
};

// Reads the launch variables. None of RANK/WORLD_SIZE set: a single process. A partial or invalid set is an
// InputError naming the variable and its value.
LaunchEnvironment read_launch_environment();

// The device a rank trains on: "cuda" becomes cuda:<LOCAL_RANK> in a multi-process run; any other value (cpu, an
// explicit cuda:N) is kept.
std::string device_for_rank(const std::string& device, const LaunchEnvironment& env);

}  // namespace vlreward::dist
