#include "adapters/distributed/process_group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>

#include "adapters/distributed/nccl_backend.h"
#include "adapters/distributed/store_backend.h"

namespace vlreward::dist {

struct ProcessGroup::Backend {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

namespace {

void wait(const c10::intrusive_ptr<c10d::Work>& work, int rank) {
  try {
    work->wait();
  } catch (const RankFailure&) {
    throw;
  } catch (const c10::Error& e) {
    // NCCL reports a peer that died or timed out through its watchdog.
    throw RankFailure(fmt::format("rank {}: a collective failed: {}", rank, e.what_without_backtrace()));
  }
}

}  // namespace

ProcessGroup::ProcessGroup() = default;
ProcessGroup::~ProcessGroup() {
  // Rank 0 serves the store (unless torchrun's agent does): on a normal exit it leaves last, after every peer's last
  // store operation, so no peer loses the store mid-collective. Unwinding from an error it leaves at once: peers
  // waiting on it then fail fast with a lost-store error instead of waiting out the timeout.
  if (!backend_ || env_.agent_store || std::uncaught_exceptions() > 0) return;
  try {
    if (!is_main()) {
      backend_->store->add("exit", 1);
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::min(timeout_, std::chrono::milliseconds(60000));
    while (backend_->store->add("exit", 0) < world_size() - 1 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } catch (const std::exception&) {  // a peer's store is already gone: nothing left to wait for
  }
}

ProcessGroup::ProcessGroup(const LaunchEnvironment& env, c10::Device device, std::chrono::milliseconds timeout)
    : env_(env), device_(device), timeout_(timeout) {
  if (!env_.distributed()) return;
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env_.master_port);
  options.isServer = env_.rank == 0 && !env_.agent_store;
  options.numWorkers = env_.world_size;
  options.waitWorkers = false;
  options.timeout = timeout_;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, options);
  } catch (const c10::Error& e) {
    throw RankFailure(fmt::format("rank {}: cannot reach the rendezvous store at {}:{}: {}", env_.rank,
                                  env_.master_addr, env_.master_port, e.what_without_backtrace()));
  }
  store = c10::make_intrusive<c10d::PrefixStore>(fmt::format("vlreward/attempt_{}", env_.restart_count), store);
  backend_ = std::make_unique<Backend>();
  backend_->store = store;
  if (device_.is_cuda()) backend_->backend = make_nccl_backend(store, env_.rank, env_.world_size, timeout_);
  else backend_->backend = c10::make_intrusive<StoreBackend>(store, env_.rank, env_.world_size, timeout_);
  barrier();  // every rank is there before the first real collective
}

void ProcessGroup::all_reduce_sum(at::Tensor& tensor) {
  if (!distributed()) return;
  std::vector<at::Tensor> tensors{tensor};
  wait(backend_->backend->allreduce(tensors), env_.rank);
}

void ProcessGroup::all_gather(const at::Tensor& input, at::Tensor& output) {
  if (!distributed()) {
    output.view({-1}).copy_(input.reshape({-1}));
    return;
  }
  at::Tensor in = input.contiguous();
  wait(backend_->backend->_allgather_base(output, in), env_.rank);
}

void ProcessGroup::reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) {
  if (!distributed()) {
    output.view({-1}).copy_(input.reshape({-1}));
    return;
  }
  at::Tensor in = input.contiguous();
  wait(backend_->backend->_reduce_scatter_base(output, in), env_.rank);
}

std::vector<std::string> ProcessGroup::all_gather_text(const std::string& text) {
  if (!distributed()) return {text};
  const auto on_device = at::TensorOptions().device(device_);
  // Lengths first, then every text padded to the longest.
  at::Tensor length = at::full({1}, static_cast<int64_t>(text.size()), on_device.dtype(at::kLong));
  at::Tensor lengths = at::empty({world_size()}, on_device.dtype(at::kLong));
  all_gather(length, lengths);
  const at::Tensor sizes = lengths.cpu();
  const int64_t longest = sizes.max().item<int64_t>();
  at::Tensor mine = at::zeros({longest}, at::kByte);
  std::memcpy(mine.data_ptr(), text.data(), text.size());
  at::Tensor all = at::empty({world_size() * longest}, on_device.dtype(at::kByte));
  all_gather(mine.to(device_), all);
  const at::Tensor bytes = all.cpu();
  std::vector<std::string> out;
  for (int r = 0; r < world_size(); ++r)
    out.emplace_back(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()) + r * longest,
                     static_cast<size_t>(sizes[r].item<int64_t>()));
  return out;
}

void ProcessGroup::barrier() {
  if (!distributed()) return;
  if (device_.is_cuda()) {  // NCCL's barrier needs a device; a one-element all-reduce is the portable equivalent
    at::Tensor token = at::zeros({1}, at::TensorOptions().device(device_));
    all_reduce_sum(token);
    token.cpu();
    return;
  }
  wait(backend_->backend->barrier(), env_.rank);
}

std::shared_ptr<ProcessGroup> join_launch_group(std::string& device, double timeout_s) {
  const LaunchEnvironment env = read_launch_environment();
  if (!env.distributed()) return std::make_shared<ProcessGroup>();
  device = device_for_rank(device, env);
  const c10::Device rank_device(device);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  auto group = std::make_shared<ProcessGroup>(env, rank_device, timeout);
  if (group->is_main())
    std::fprintf(stderr, "data parallel: %d ranks (%s), collective timeout %.0f s\n", env.world_size,
                 rank_device.is_cuda() ? "NCCL" : "vlreward-store over the TCP store", timeout_s);
  return group;
}

}  // namespace vlreward::dist
