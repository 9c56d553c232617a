#pragma once
// A c10d backend for CPU tensors whose collectives run through the run's key-value store (the TCP store torchrun's
// rendezvous provides). Each rank publishes its part under a key numbered by the collective's sequence and reads the
// others'; sums are taken in rank order, so every rank holds bit-identical results and a 2-rank sum of gradients
// equals what one process accumulating both micro-batches holds. Traffic goes through the store's host, which suits
// CPU runs of a few ranks (tests, small jobs); GPUs use NCCL.
//
// Waiting on a peer's key is bounded by the timeout: a rank that died or hangs is named in the RankFailure the
// others throw; a store host that is gone is named too.
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace vlreward::dist {

class StoreBackend : public c10d::Backend {
 public:
  StoreBackend(c10::intrusive_ptr<c10d::Store> store, int rank, int size, std::chrono::milliseconds timeout);
  const std::string getBackendName() const override { return "vlreward-store"; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts = c10d::AllreduceOptions()) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts = c10d::AllgatherOptions()) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output, at::Tensor& input,
      const c10d::ReduceScatterOptions& opts = c10d::ReduceScatterOptions()) override;
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts = c10d::BroadcastOptions()) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts = c10d::BarrierOptions()) override;

 private:
  // "<sequence>/" for the next collective, and a description for error messages.
  std::string begin(const char* name);
  void publish(const std::string& key, const at::Tensor& tensor);
  // The bytes rank `from` published under `key`, waiting up to the timeout.
  std::vector<uint8_t> fetch(const std::string& key, int from);
  // Counts this rank's reads of the collective's keys; the last of `readers` deletes them.
  void release(const std::string& prefix, const std::vector<std::string>& keys, int readers);
  // Runs a store operation; a lost connection becomes a RankFailure naming the collective.
  template <typename F>
  auto guarded(F&& operation);

  c10::intrusive_ptr<c10d::Store> store_;
  std::chrono::milliseconds timeout_;
  uint64_t sequence_ = 0;
  std::string current_;  // the collective in progress, for messages
};

}  // namespace vlreward::dist
