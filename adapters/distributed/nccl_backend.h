#pragma once
// The NCCL c10d backend for CUDA ranks (ProcessGroupNCCL), when the build has CUDA; otherwise an error saying so.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace vlreward::dist {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    std::chrono::milliseconds timeout);

}  // namespace vlreward::dist
