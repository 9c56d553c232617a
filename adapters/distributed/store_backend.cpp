#include "adapters/distributed/store_backend.h"

#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/distributed/c10d/exception.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstring>

#include "adapters/distributed/process_group.h"

namespace vlreward::dist {
namespace {

// The store backend completes every collective before returning it.
class CompletedWork : public c10d::Work {
 public:
  CompletedWork() { finish(); }
};

c10::intrusive_ptr<c10d::Work> completed() { return c10::make_intrusive<CompletedWork>(); }

at::Tensor checked_cpu(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "vlreward-store backend: ", what, " must be a CPU tensor (CUDA uses NCCL)");
  return t.contiguous();
}

void copy_bytes_into(at::Tensor& dst, const std::vector<uint8_t>& bytes, int from, const std::string& key) {
  const auto expected = static_cast<size_t>(dst.numel()) * dst.element_size();
  if (bytes.size() != expected)
    throw RankFailure(fmt::format("rank {} sent {} bytes for {}, expected {} (the ranks disagree on a collective)",
                                  from, bytes.size(), key, expected));
  std::memcpy(dst.data_ptr(), bytes.data(), bytes.size());
}

}  // namespace

StoreBackend::StoreBackend(c10::intrusive_ptr<c10d::Store> store, int rank, int size, std::chrono::milliseconds timeout)
    : c10d::Backend(rank, size), store_(std::move(store)), timeout_(timeout) {}

std::string StoreBackend::begin(const char* name) {
  current_ = fmt::format("{} #{}", name, sequence_);
  return fmt::format("{}/", sequence_++);
}

template <typename F>
auto StoreBackend::guarded(F&& operation) {
  try {
    return operation();
  } catch (const c10::Error& e) {
    throw RankFailure(fmt::format("rank {}: lost the rendezvous store during {} (its host, rank 0 or the launcher, "
                                  "died or the network failed): {}", getRank(), current_, e.what_without_backtrace()));
  }
}

void StoreBackend::publish(const std::string& key, const at::Tensor& tensor) {
  const auto* data = static_cast<const uint8_t*>(tensor.data_ptr());
  guarded([&] {
    store_->set(key, std::vector<uint8_t>(data, data + tensor.numel() * tensor.element_size()));
    return 0;
  });
}

std::vector<uint8_t> StoreBackend::fetch(const std::string& key, int from) {
  try {
    store_->wait({key}, timeout_);
    return store_->get(key);
  } catch (const c10::DistNetworkError& e) {
    throw RankFailure(fmt::format("rank {}: lost the rendezvous store while waiting for rank {} in {} (the store's "
                                  "host died or the network failed): {}", getRank(), from, current_,
                                  e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    throw RankFailure(fmt::format("rank {} did not reach {} within {} s: it died or hangs (seen from rank {}; {})", from,
                                  current_, timeout_.count() / 1000.0, getRank(), e.what_without_backtrace()));
  }
}

void StoreBackend::release(const std::string& prefix, const std::vector<std::string>& keys, int readers) {
  guarded([&] {
    if (store_->add(prefix + "done", 1) < readers) return 0;
    for (const auto& key : keys) store_->deleteKey(key);
    store_->deleteKey(prefix + "done");
    return 0;
  });
}

c10::intrusive_ptr<c10d::Work> StoreBackend::allreduce(std::vector<at::Tensor>& tensors,
                                                       const c10d::AllreduceOptions& opts) {
  TORCH_CHECK(opts.reduceOp == c10d::ReduceOp::SUM, "vlreward-store backend: only SUM all-reduce");
  for (auto& tensor : tensors) {
    const std::string prefix = begin("all-reduce");
    const at::Tensor mine = checked_cpu(tensor, "all-reduce input");
    publish(prefix + std::to_string(getRank()), mine);
    std::vector<std::string> keys;
    at::Tensor sum, part = at::empty_like(mine);
    for (int r = 0; r < getSize(); ++r) {
      keys.push_back(prefix + std::to_string(r));
      if (r == getRank()) {
        part.copy_(mine);
      } else {
        copy_bytes_into(part, fetch(keys.back(), r), r, current_);
      }
      sum = r == 0 ? part.clone() : sum.add_(part);  // rank order: the same bits on every rank
    }
    tensor.copy_(sum);
    release(prefix, keys, getSize());
  }
  return completed();
}

c10::intrusive_ptr<c10d::Work> StoreBackend::_allgather_base(at::Tensor& output, at::Tensor& input,
                                                             const c10d::AllgatherOptions&) {
  const std::string prefix = begin("all-gather");
  const at::Tensor mine = checked_cpu(input, "all-gather input");
  TORCH_CHECK(output.numel() == mine.numel() * getSize() && output.is_contiguous(),
              "vlreward-store backend: all-gather output must be contiguous with world size × input elements");
  publish(prefix + std::to_string(getRank()), mine);
  std::vector<std::string> keys;
  auto flat = output.view({getSize(), mine.numel()});
  for (int r = 0; r < getSize(); ++r) {
    keys.push_back(prefix + std::to_string(r));
    at::Tensor row = flat[r];
    if (r == getRank()) row.copy_(mine.view({-1}));
    else copy_bytes_into(row, fetch(keys.back(), r), r, current_);
  }
  release(prefix, keys, getSize());
  return completed();
}

c10::intrusive_ptr<c10d::Work> StoreBackend::_reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                                  const c10d::ReduceScatterOptions& opts) {
  TORCH_CHECK(opts.reduceOp == c10d::ReduceOp::SUM, "vlreward-store backend: only SUM reduce-scatter");
  const std::string prefix = begin("reduce-scatter");
  const at::Tensor mine = checked_cpu(input, "reduce-scatter input");
  const int64_t n = output.numel();
  TORCH_CHECK(mine.numel() == n * getSize(), "vlreward-store backend: reduce-scatter input must have world size × "
                                             "output elements");
  const auto rows = mine.view({getSize(), n});
  // Each destination gets only its slice: key <prefix><from>-><to>.
  for (int to = 0; to < getSize(); ++to)
    if (to != getRank()) publish(fmt::format("{}{}->{}", prefix, getRank(), to), rows[to].contiguous());
  at::Tensor sum, part = at::empty({n}, mine.options());
  std::vector<std::string> keys;
  for (int from = 0; from < getSize(); ++from) {
    if (from == getRank()) {
      part.copy_(rows[from]);
    } else {
      keys.push_back(fmt::format("{}{}->{}", prefix, from, getRank()));
      copy_bytes_into(part, fetch(keys.back(), from), from, current_);
    }
    sum = from == 0 ? part.clone() : sum.add_(part);
  }
  output.view({-1}).copy_(sum);
  guarded([&] {
    for (const auto& key : keys) store_->deleteKey(key);  // each slice has one reader
    return 0;
  });
  return completed();
}

c10::intrusive_ptr<c10d::Work> StoreBackend::broadcast(std::vector<at::Tensor>& tensors,
                                                       const c10d::BroadcastOptions& opts) {
  for (auto& tensor : tensors) {
    const std::string prefix = begin("broadcast");
    const std::string key = prefix + "value";
    if (getRank() == opts.rootRank) {
      publish(key, checked_cpu(tensor, "broadcast input"));
    } else {
      at::Tensor value = at::empty_like(tensor).contiguous();
      copy_bytes_into(value, fetch(key, static_cast<int>(opts.rootRank)), static_cast<int>(opts.rootRank), current_);
      tensor.copy_(value);
    }
    release(prefix, {key}, getSize());
  }
  return completed();
}

c10::intrusive_ptr<c10d::Work> StoreBackend::barrier(const c10d::BarrierOptions&) {
  const std::string prefix = begin("barrier");
  const at::Tensor nothing = at::empty({0}, at::kByte);
  publish(prefix + std::to_string(getRank()), nothing);
  std::vector<std::string> keys;
  for (int r = 0; r < getSize(); ++r) {
    keys.push_back(prefix + std::to_string(r));
    if (r != getRank()) fetch(keys.back(), r);
  }
  release(prefix, keys, getSize());
  return completed();
}

}  // namespace vlreward::dist
