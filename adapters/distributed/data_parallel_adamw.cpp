#include "adapters/distributed/data_parallel_adamw.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include <fmt/format.h>

#include "adapters/common/error.h"
#include "adapters/hf/safetensors_torch.h"

namespace vlreward::dist {
namespace fs = std::filesystem;

struct DataParallelAdamW::Bucket {
  std::vector<size_t> params;    // indices into trainable_
  std::vector<int64_t> offsets;  // each parameter's first element in the bucket
  int64_t numel = 0;
  int64_t chunk = 0;             // elements per rank; the bucket is padded to chunk × world size
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;
};

struct DataParallelAdamW::Piece {
  size_t param = 0;
  int64_t param_offset = 0;  // first element of the parameter (flattened) this piece covers
  int64_t length = 0;
  size_t bucket = 0;
  int64_t chunk_offset = 0;  // where the piece lies in this rank's slice of the bucket
  torch::Tensor master;      // float32 [length]; a view of the parameter when that is float32
  bool views_parameter = false;
};

namespace {

std::string shard_file_name(int rank, int world) { return fmt::format("optimizer-shard-{}-of-{}.safetensors", rank, world); }

// AdamW state of one tensor of the optimizer, if it took a step.
torch::optim::AdamWParamState* adamw_state(torch::optim::AdamW& adamw, const torch::Tensor& p) {
  auto& state = adamw.state();
  auto it = state.find(p.unsafeGetTensorImpl());
  return it == state.end() ? nullptr : &static_cast<torch::optim::AdamWParamState&>(*it->second);
}

void install_adamw_state(torch::optim::AdamW& adamw, const torch::Tensor& p, int64_t step, const torch::Tensor& exp_avg,
                         const torch::Tensor& exp_avg_sq) {
  auto s = std::make_unique<torch::optim::AdamWParamState>();
  s->step(step);
  s->exp_avg(exp_avg.reshape(p.sizes()).to(p.options()).clone());
  s->exp_avg_sq(exp_avg_sq.reshape(p.sizes()).to(p.options()).clone());
  adamw.state()[p.unsafeGetTensorImpl()] = std::move(s);
}

// A checkpoint's optimizer state, either layout, indexed by parameter name and element range.
class SavedOptimizer {
 public:
  explicit SavedOptimizer(const std::string& dir) : dir_(dir) {
    const fs::path unsharded = fs::path(dir) / kOptimizerFile;
    if (fs::exists(unsharded)) {
      const size_t moments = open(unsharded.string());
      std::optional<size_t> masters;
      if (fs::exists(fs::path(dir) / kMasterWeightsFile)) masters = open((fs::path(dir) / kMasterWeightsFile).string());
      for (const auto& key : files_[moments].names()) {
        const auto dot = key.rfind('.');
        if (dot == std::string::npos) throw_input_error(files_[moments].path(), "unexpected tensor {}", key);
        const std::string suffix = key.substr(dot + 1), name = key.substr(0, dot);
        if (suffix == "step" || suffix == "exp_avg_sq") continue;
        if (suffix != "exp_avg") throw_input_error(files_[moments].path(), "unexpected tensor {}", key);
        Segment seg{0, files_[moments].get(key).numel(), moments, name, std::nullopt, name};
        if (masters && files_[*masters].contains(name)) seg.master_file = masters;
        segments_[name].push_back(seg);
      }
      if (masters)  // saved before the first step: masters without moments
        for (const auto& name : files_[*masters].names())
          if (!segments_.count(name))
            segments_[name].push_back({0, files_[*masters].get(name).numel(), std::nullopt, name, masters, name});
      return;
    }
    const std::regex pattern(R"(optimizer-shard-(\d+)-of-(\d+)\.safetensors)");
    std::map<int, std::string> shards;
    int world = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
      std::smatch m;
      const std::string file = entry.path().filename().string();
      if (!std::regex_match(file, m, pattern)) continue;
      const int w = std::stoi(m[2].str());
      if (world != 0 && w != world) throw_input_error(dir, "optimizer shards of two world sizes ({} and {})", world, w);
      world = w;
      shards[std::stoi(m[1].str())] = entry.path().string();
    }
    if (shards.empty()) throw_input_error(dir, "no optimizer state ({} or optimizer-shard-*.safetensors)", kOptimizerFile);
    for (int r = 0; r < world; ++r)
      if (!shards.count(r)) throw_input_error(dir, "optimizer shard {} is missing", shard_file_name(r, world));
    for (const auto& [rank, path] : shards) {
      const size_t f = open(path);
      for (const auto& key : files_[f].names()) {
        const auto at = key.rfind('@'), dot = key.rfind('.');
        if (at == std::string::npos || dot == std::string::npos || dot < at)
          throw_input_error(path, "unexpected tensor {}", key);
        if (key.substr(dot + 1) != "master") continue;
        const std::string name = key.substr(0, at), prefix = key.substr(0, dot);
        const int64_t offset = std::stoll(key.substr(at + 1, dot - at - 1));
        const bool moments = files_[f].contains(prefix + ".exp_avg");
        segments_[name].push_back({offset, files_[f].get(key).numel(), moments ? std::optional<size_t>(f) : std::nullopt,
                                   prefix, f, prefix + ".master"});
      }
    }
  }

  bool has(const std::string& name) const { return segments_.count(name) != 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& item : segments_) out.push_back(item.first);
    return out;
  }

  struct Range {
    torch::Tensor exp_avg, exp_avg_sq, master;  // float32 [length]; undefined when the checkpoint has none
    int64_t step = -1;                          // -1: no moments (saved before the first step)
  };

  Range read(const std::string& name, int64_t offset, int64_t length) const {
    const auto it = segments_.find(name);
    if (it == segments_.end())
      throw_input_error(dir_, "no optimizer state for trainable parameter {} (was the freeze set changed?)", name);
    Range out;
    int64_t covered = 0;
    for (const auto& seg : it->second) {
      const int64_t begin = std::max(offset, seg.offset), end = std::min(offset + length, seg.offset + seg.length);
      if (begin >= end) continue;
      covered += end - begin;
      auto copy = [&](torch::Tensor& dst, size_t file, const std::string& key) {
        if (!dst.defined()) dst = torch::zeros({length}, torch::kFloat32);
        const torch::Tensor src = to_tensor(files_[file].get(key)).reshape({-1});
        if (src.numel() != seg.length) throw_input_error(files_[file].path(), "{}: {} elements, expected {}", key, src.numel(), seg.length);
        dst.slice(0, begin - offset, end - offset).copy_(src.slice(0, begin - seg.offset, end - seg.offset));
      };
      if (seg.moments_file) {
        const auto& file = files_[*seg.moments_file];
        copy(out.exp_avg, *seg.moments_file, seg.prefix + ".exp_avg");
        copy(out.exp_avg_sq, *seg.moments_file, seg.prefix + ".exp_avg_sq");
        const torch::Tensor step = to_tensor(file.get(seg.prefix + ".step"));
        if (step.scalar_type() != torch::kInt64 || step.numel() != 1 || step.item<int64_t>() < 0)
          throw_input_error(file.path(), "{}.step: must be one non-negative int64", seg.prefix);
        out.step = step.item<int64_t>();
      }
      if (seg.master_file) copy(out.master, *seg.master_file, seg.master_key);
    }
    if (covered != length)
      throw_input_error(dir_, "the optimizer state of {} covers {} of elements [{}, {}) (shape changed?)", name, covered,
                        offset, offset + length);
    if (out.step >= 0 && (!out.exp_avg.defined()))
      throw_input_error(dir_, "{}: moments missing for part of the parameter", name);
    return out;
  }

 private:
  struct Segment {
    int64_t offset, length;
    std::optional<size_t> moments_file;
    std::string prefix;  // "<name>" or "<name>@<offset>"
    std::optional<size_t> master_file;
    std::string master_key;
  };
  size_t open(const std::string& path) {
    files_.push_back(SafetensorsFile::open(path));
    return files_.size() - 1;
  }

  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::vector<Segment>> segments_;
};

}  // namespace

DataParallelAdamW::DataParallelAdamW(const qwen::NamedParameters& trainable, const qwen::AdamWSettings& adamw,
                                     ProcessGroup& group, const DataParallelSettings& settings)
    : trainable_(trainable), group_(group), settings_(settings), adamw_settings_(adamw) {
  const int64_t world = group_.world_size();
  const int64_t cap = std::max<int64_t>(1, settings_.bucket_bytes / 4);
  for (size_t i = 0; i < trainable_.size(); ++i) {
    const torch::Tensor& p = trainable_[i].second;
    if (!p.is_contiguous()) throw std::invalid_argument("DataParallelAdamW: " + trainable_[i].first + " is not contiguous");
    const bool fits = !buckets_.empty() && buckets_.back().device == p.device() &&
                      buckets_.back().dtype == p.scalar_type() && buckets_.back().numel + p.numel() <= cap;
    if (!fits) {
      buckets_.emplace_back();
      buckets_.back().device = p.device();
      buckets_.back().dtype = p.scalar_type();
    }
    Bucket& b = buckets_.back();
    b.params.push_back(i);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
  }
  for (auto& b : buckets_) b.chunk = (b.numel + world - 1) / world;

  if (!sharded()) {
    masters_ = std::make_unique<qwen::MasterWeights>(trainable_);
    adamw_ = qwen::make_adamw(masters_->masters(), adamw);
    return;
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    const Bucket& b = buckets_[bi];
    const int64_t lo = group_.rank() * b.chunk, hi = lo + b.chunk;
    for (size_t k = 0; k < b.params.size(); ++k) {
      const auto& [name, p] = trainable_[b.params[k]];
      const int64_t begin = std::max(lo, b.offsets[k]), end = std::min(hi, b.offsets[k] + p.numel());
      if (begin >= end) continue;
      Piece piece;
      piece.param = b.params[k];
      piece.param_offset = begin - b.offsets[k];
      piece.length = end - begin;
      piece.bucket = bi;
      piece.chunk_offset = begin - lo;
      // float32 parameters are their own masters (no copy); others get a float32 copy of the slice.
      piece.views_parameter = p.scalar_type() == torch::kFloat32;
      pieces_.push_back(std::move(piece));
    }
  }
  make_piece_masters();
}

void DataParallelAdamW::make_piece_masters() {
  torch::NoGradGuard no_grad;
  qwen::NamedParameters named_pieces;
  for (Piece& piece : pieces_) {
    const auto& [name, p] = trainable_[piece.param];
    const torch::Tensor slice = p.detach().view({-1}).slice(0, piece.param_offset, piece.param_offset + piece.length);
    piece.master = piece.views_parameter ? slice : slice.to(torch::kFloat32, false, /*copy=*/true);
    named_pieces.emplace_back(name, piece.master);
  }
  adamw_.reset();
  if (!named_pieces.empty()) adamw_ = qwen::make_adamw(named_pieces, adamw_settings_);
}

DataParallelAdamW::~DataParallelAdamW() = default;

const qwen::MasterWeights& DataParallelAdamW::master_weights() const {
  if (!masters_) throw std::logic_error("DataParallelAdamW: a sharded optimizer keeps its masters in slices");
  return *masters_;
}

std::vector<bool> DataParallelAdamW::gradients_anywhere() {
  const auto device = trainable_.empty() ? torch::Device(torch::kCPU) : trainable_.front().second.device();
  torch::Tensor flags = torch::zeros({static_cast<int64_t>(trainable_.size())}, torch::TensorOptions().device(torch::kCPU));
  for (size_t i = 0; i < trainable_.size(); ++i)
    if (trainable_[i].second.grad().defined()) flags[static_cast<int64_t>(i)] = 1.0f;
  flags = flags.to(device);
  group_.all_reduce_sum(flags);
  const torch::Tensor host = flags.cpu();
  std::vector<bool> out(trainable_.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = host[static_cast<int64_t>(i)].item<float>() > 0;
  return out;
}

namespace {
// The bucket's gradients in float32, zeros where a parameter has none on this rank, padded to `padded` elements.
torch::Tensor flat_gradients(const qwen::NamedParameters& trainable, const std::vector<size_t>& params,
                             const std::vector<int64_t>& offsets, int64_t padded, torch::Device device) {
  torch::Tensor flat = torch::zeros({padded}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  for (size_t k = 0; k < params.size(); ++k) {
    const torch::Tensor& p = trainable[params[k]].second;
    if (p.grad().defined()) flat.slice(0, offsets[k], offsets[k] + p.numel()).copy_(p.grad().reshape({-1}));
  }
  return flat;
}
}  // namespace

void DataParallelAdamW::all_reduce_gradients(const std::vector<bool>& has_grad) {
  for (const Bucket& b : buckets_) {
    torch::Tensor flat = flat_gradients(trainable_, b.params, b.offsets, b.numel, b.device);
    group_.all_reduce_sum(flat);
    for (size_t k = 0; k < b.params.size(); ++k) {
      torch::Tensor p = trainable_[b.params[k]].second;
      if (!has_grad[b.params[k]]) continue;
      p.mutable_grad() = flat.slice(0, b.offsets[k], b.offsets[k] + p.numel()).view(p.sizes()).to(p.scalar_type());
    }
  }
}

double DataParallelAdamW::step(double max_grad_norm, double lr) {
  if (!group_.distributed() && !sharded()) return masters_->step(*adamw_, max_grad_norm, lr);
  const std::vector<bool> has_grad = gradients_anywhere();
  if (sharded()) {
    const int64_t world = group_.world_size();
    std::vector<torch::Tensor> slices;
    for (const Bucket& b : buckets_) {
      const torch::Tensor flat = flat_gradients(trainable_, b.params, b.offsets, b.chunk * world, b.device);
      torch::Tensor mine = torch::empty({b.chunk}, flat.options());
      group_.reduce_scatter_sum(flat, mine);
      slices.push_back(mine);
    }
    // The parameters' own gradients are not needed any more: only the slices step.
    qwen::clear_gradients(trainable_);
    std::vector<torch::Tensor> stepped;
    for (Piece& piece : pieces_) {
      if (!has_grad[piece.param]) {
        piece.master.mutable_grad().reset();
        continue;
      }
      piece.master.mutable_grad() =
          slices[piece.bucket].slice(0, piece.chunk_offset, piece.chunk_offset + piece.length).clone();
      stepped.push_back(piece.master);
    }
    const double squares = qwen::squared_gradient_sum(stepped);
    const auto device = buckets_.empty() ? torch::Device(torch::kCPU) : buckets_.front().device;
    torch::Tensor total = torch::full({1}, squares, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    group_.all_reduce_sum(total);
    const double norm = std::sqrt(total.cpu().item<double>());
    if (max_grad_norm > 0) {
      // torch.nn.utils.clip_grad_norm_'s coefficient.
      const double coefficient = std::min(1.0, max_grad_norm / (norm + 1e-6));
      if (coefficient < 1.0)
        for (Piece& piece : pieces_)
          if (piece.master.grad().defined()) piece.master.mutable_grad().mul_(coefficient);
    }
    if (adamw_) {
      for (auto& g : adamw_->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      adamw_->step();
    }
    for (Piece& piece : pieces_) piece.master.mutable_grad().reset();
    gather_parameters();
    return norm;
  }
  all_reduce_gradients(has_grad);
  return masters_->step(*adamw_, max_grad_norm, lr);
}

void DataParallelAdamW::gather_parameters() {
  torch::NoGradGuard no_grad;
  const int64_t world = group_.world_size();
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    const Bucket& b = buckets_[bi];
    const auto options = torch::TensorOptions().dtype(b.dtype).device(b.device);
    torch::Tensor mine = torch::zeros({b.chunk}, options);
    for (const Piece& piece : pieces_)
      if (piece.bucket == bi) mine.slice(0, piece.chunk_offset, piece.chunk_offset + piece.length).copy_(piece.master);
    torch::Tensor full = torch::empty({b.chunk * world}, options);
    group_.all_gather(mine, full);
    for (size_t k = 0; k < b.params.size(); ++k) {
      torch::Tensor p = trainable_[b.params[k]].second;
      p.view({-1}).copy_(full.slice(0, b.offsets[k], b.offsets[k] + p.numel()));
    }
  }
}

void DataParallelAdamW::reset_from_parameters() {
  if (masters_) {
    masters_->reset_from_parameters();
    return;
  }
  torch::NoGradGuard no_grad;
  for (Piece& piece : pieces_)
    if (!piece.views_parameter)
      piece.master.copy_(trainable_[piece.param].second.view({-1}).slice(0, piece.param_offset,
                                                                          piece.param_offset + piece.length));
}

int64_t DataParallelAdamW::state_bytes() const {
  // AdamW's two float32 moments for every stepped element, plus masters that are copies.
  int64_t bytes = 0;
  if (masters_) {
    for (size_t i = 0; i < trainable_.size(); ++i) {
      const int64_t n = trainable_[i].second.numel();
      bytes += 2 * n * 4;
      if (!trainable_[i].second.is_same(masters_->masters()[i].second)) bytes += n * 4;
    }
    return bytes;
  }
  for (const Piece& piece : pieces_) bytes += piece.length * 4 * (piece.views_parameter ? 2 : 3);
  return bytes;
}

void DataParallelAdamW::save(const std::string& dir) const {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  if (masters_) {
    if (!group_.is_main()) return;
    for (const auto& [name, master] : masters_->masters()) {
      auto* s = adamw_state(*adamw_, master);
      if (s == nullptr) continue;  // no step taken yet
      tensors.emplace_back(name + ".exp_avg", s->exp_avg());
      tensors.emplace_back(name + ".exp_avg_sq", s->exp_avg_sq());
      tensors.emplace_back(name + ".step", torch::tensor({s->step()}, torch::kInt64));
    }
    write_safetensors((fs::path(dir) / kOptimizerFile).string(), tensors, {{"format", "vlreward-adamw/1"}});
    if (masters_->active()) write_safetensors((fs::path(dir) / kMasterWeightsFile).string(), masters_->masters());
    return;
  }
  for (const Piece& piece : pieces_) {
    const std::string prefix = fmt::format("{}@{}", trainable_[piece.param].first, piece.param_offset);
    if (auto* s = adamw_ ? adamw_state(*adamw_, piece.master) : nullptr) {
      tensors.emplace_back(prefix + ".exp_avg", s->exp_avg());
      tensors.emplace_back(prefix + ".exp_avg_sq", s->exp_avg_sq());
      tensors.emplace_back(prefix + ".step", torch::tensor({s->step()}, torch::kInt64));
    }
    tensors.emplace_back(prefix + ".master", piece.master);
  }
  write_safetensors((fs::path(dir) / shard_file_name(group_.rank(), group_.world_size())).string(), tensors,
                    {{"format", "vlreward-adamw-shard/1"}});
}

void DataParallelAdamW::load(const std::string& dir) {
  const SavedOptimizer saved(dir);
  std::set<std::string> trainable_names;
  for (const auto& item : trainable_) trainable_names.insert(item.first);
  for (const auto& name : saved.names())
    if (!trainable_names.count(name))
      throw_input_error(dir, "optimizer state for {}, which is not a trainable parameter now (was the freeze set "
                             "changed?)", name);
  torch::NoGradGuard no_grad;
  const bool nothing_saved = saved.names().empty();  // saved before the first step of a float32 run
  // Masters start from the parameters just loaded; a checkpoint's float32 masters replace them where it has them.
  // Loading may have given the parameters new storage (a view of the checkpoint file), so slices that are views are
  // taken again, and the optimizer over them made anew (its state is installed below).
  if (sharded()) make_piece_masters();
  else reset_from_parameters();
  if (masters_) {
    for (size_t i = 0; i < trainable_.size(); ++i) {
      const auto& [name, master] = masters_->masters()[i];
      if (nothing_saved) break;
      const auto range = saved.read(name, 0, master.numel());  // throws naming a parameter without state
      if (range.step >= 0) install_adamw_state(*adamw_, master, range.step, range.exp_avg, range.exp_avg_sq);
      if (range.master.defined() && !master.is_same(trainable_[i].second)) {
        torch::Tensor m = master;
        m.view({-1}).copy_(range.master);
      }
    }
    masters_->masters_to_parameters();
    return;
  }
  for (Piece& piece : pieces_) {
    if (nothing_saved) break;
    const auto range = saved.read(trainable_[piece.param].first, piece.param_offset, piece.length);
    if (range.step >= 0) install_adamw_state(*adamw_, piece.master, range.step, range.exp_avg, range.exp_avg_sq);
    if (range.master.defined() && !piece.views_parameter) piece.master.copy_(range.master);
  }
  gather_parameters();  // every rank's loaded slices into the parameters (float32 ones are unchanged)
}

}  // namespace vlreward::dist
