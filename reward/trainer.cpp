#include "reward/trainer.h"

#include <cstdint>

#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <random>
#include <regex>

#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/crc32c.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/common/progress.h"
#include "adapters/common/train_log.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/optimizer.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "adapters/qwen2_5_vl/weights.h"

namespace vlreward {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kDoneFile = "DONE";
constexpr const char* kDoneFormat = "vlreward-reward-train-stage/1";
constexpr const char* kValueHeadFile = "value_head.safetensors";
constexpr const char* kWeightName = "v_head.summary.weight";
constexpr const char* kBiasName = "v_head.summary.bias";

// What decides stage k's result: the model and head it starts from, the shared settings, stages 1..k.
json stage_identity(const RewardTrainConfig& config, size_t k) {
  const json all = config.to_json();
  json stages = json::array();
  for (size_t i = 0; i <= k; ++i) {
    json s = all.at("stages")[i];
    json files = json::array();
    for (const auto& path : config.stages[i].data) {
      std::error_code ec;
      const std::string digest =
          fs::is_regular_file(path, ec) ? fmt::format("crc32c:{:08x}", crc32c_of_file(path)) : "missing";
      files.push_back({{"path", path}, {"digest", digest}});
    }
    s["data"] = files;
    stages.push_back(s);
  }
  json train = all.at("train");
  train.erase("num_threads");
  // The same results either way.
  for (const char* key : {"gradient_checkpointing", "shard_optimizer", "allreduce_bucket_mb", "collective_timeout_s"})
    train.erase(key);
  json model = all.at("model");
  model.erase("device");
  return json{{"model", model}, {"value_head", all.at("value_head")}, {"freeze", all.at("freeze")},
              {"lora", all.at("lora")}, {"data", {{"shuffle", config.data.shuffle}}}, {"train", train},
              {"stages", stages}};
}

void diff_keys(const json& a, const json& b, const std::string& prefix, std::vector<std::string>& out) {
  if (a.is_object() && b.is_object()) {
    for (const auto& [key, value] : a.items())
      diff_keys(value, b.contains(key) ? b.at(key) : json(), prefix.empty() ? key : prefix + "." + key, out);
    for (const auto& [key, value] : b.items())
      if (!a.contains(key)) out.push_back(prefix.empty() ? key : prefix + "." + key);
    return;
  }
  if (a.is_array() && b.is_array() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i) diff_keys(a[i], b[i], prefix + "[" + std::to_string(i) + "]", out);
    return;
  }
  if (a != b) out.push_back(prefix + " (then " + a.dump() + ", now " + b.dump() + ")");
}

std::string stage_dir(const RewardTrainConfig& config, size_t k) {
  return (fs::path(config.output.dir) / fmt::format("stage-{}", k + 1)).string();
}

// Whether stage k (0-based) finished under this same config; throws when it finished under another one.
bool stage_done(const RewardTrainConfig& config, size_t k) {
  const fs::path done = fs::path(stage_dir(config, k)) / kDoneFile;
  std::error_code ec;
  if (!fs::is_regular_file(done, ec)) return false;
  const json record = read_json_file(done.string(), "not valid JSON");
  if (!record.is_object() || record.value("format", "") != kDoneFormat || !record.contains("identity"))
    throw InputError(done.string(), fmt::format("not a {} file", kDoneFormat));
  std::vector<std::string> changed;
  diff_keys(record.at("identity"), stage_identity(config, k), "", changed);
  if (!changed.empty()) {
    std::string list;
    for (const auto& c : changed) list += (list.empty() ? "" : "; ") + c;
    throw InputError(done.string(),
                     fmt::format("stage {} was trained with another config or data; choose another output.dir or "
                                 "delete {} and the stages after it. Differences: {}",
                                 k + 1, stage_dir(config, k), list));
  }
  return true;
}

std::vector<PreferenceRecord> read_stage_data(const std::vector<std::string>& files, const std::string& image_root) {
  std::vector<PreferenceRecord> pairs;
  for (const auto& file : files) {
    auto more = read_preference_jsonl(file, image_root);
    pairs.insert(pairs.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  return pairs;
}

std::string status_line(const std::map<std::string, double>& m) {
  return fmt::format("loss {:.4f} acc {:.2f} margin {:+.3f} lr {:.2e} |g| {:.3f}", m.at("loss"), m.at("accuracy"),
                     m.at("margin"), m.at("lr"), m.at("grad_norm"));
}

}  // namespace

std::vector<int64_t> pair_order(int64_t n, uint64_t seed, int64_t stage, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  if (!shuffle) return order;
  std::seed_seq seq{static_cast<uint32_t>(seed & 0xFFFFFFFFu), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(stage), static_cast<uint32_t>(epoch)};
  std::mt19937_64 engine(seq);
  // Our own Fisher-Yates: std::shuffle's draws differ between standard libraries.
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(engine() % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

RewardModels load_reward_models(const RewardTrainConfig& config) {
  const torch::Device device = qwen::parse_device(config.model.device, "model.device");
  RewardModels models;
  models.processor = std::make_unique<Qwen2_5_VLProcessor>(
      Qwen2_5_VLProcessor::from_directory(config.model.path, {config.model.min_pixels, config.model.max_pixels}));
  auto pretrained =
      qwen::load_pretrained(config.model.path, qwen::parse_parameter_dtype(config.model.dtype, "model.dtype"), device);
  models.backbone = pretrained.model;
  const int64_t hidden = pretrained.config.text.hidden_size;
  if (!config.value_head.path.empty()) {
    models.value_head = load_value_head(config.value_head.path, hidden);
  } else {
    models.value_head = ValueHead(hidden);
    if (config.value_head.init == "normal") {
      torch::NoGradGuard no_grad;
      auto gen = at::make_generator<at::CPUGeneratorImpl>(config.value_head.seed);
      models.value_head->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(hidden + 1)), gen);
    }
  }
  return models;
}

RewardTrainer::RewardTrainer(RewardTrainConfig config, std::shared_ptr<dist::ProcessGroup> group)
    : RewardTrainer(config, load_reward_models(config), std::move(group)) {}

RewardTrainer::RewardTrainer(RewardTrainConfig config, RewardModels models, std::shared_ptr<dist::ProcessGroup> group)
    : config_(std::move(config)),
      device_(qwen::parse_device(config_.model.device, "model.device")),
      processor_(std::move(models.processor)),
      model_(std::move(models.backbone)),
      head_(std::move(models.value_head)),
      group_(group ? std::move(group) : std::make_shared<dist::ProcessGroup>()) {
  if (!processor_ || model_.is_empty() || head_.is_empty())
    throw InputError("RewardTrainer", "needs a processor, a backbone and a value head");
  if (config_.train.num_threads > 0) torch::set_num_threads(static_cast<int>(config_.train.num_threads));
  model_->to(device_);
  head_->to(device_);
  // train() mode changes nothing in this model (no dropout), but says what the module is doing.
  model_->train();
  if (config_.lora) {
    adapters_.emplace(qwen::LoraAdapters::for_training(model_, *config_.lora, config_.train.seed));
    trainable_ = adapters_->parameters();
  } else {
    trainable_ = qwen::select_trainable(*model_, config_.freeze);
  }
  model_->set_gradient_checkpointing(config_.train.gradient_checkpointing);
  trainable_.emplace_back(kWeightName, head_->weight);
  trainable_.emplace_back(kBiasName, head_->bias);
}

RewardTrainer::~RewardTrainer() = default;

std::pair<torch::Tensor, torch::Tensor> RewardTrainer::score_pairs(const std::vector<const PreferenceRecord*>& pairs) {
  std::vector<RewardInput> inputs;
  inputs.reserve(2 * pairs.size());
  for (const bool chosen : {true, false})
    for (const PreferenceRecord* pair : pairs)
      inputs.push_back(prepare_reward_input(*processor_, chosen ? pair->chosen_request() : pair->rejected_request(),
                                            pair->source + (chosen ? " (chosen)" : " (rejected)")));
  std::vector<const RewardInput*> rows;
  for (const auto& input : inputs) rows.push_back(&input);
  const RewardBatch batch = build_reward_batch(rows, processor_->pad_token_id(), device_);
  auto values = reward_values(model_, head_, batch);
  const auto b = static_cast<int64_t>(pairs.size());
  return {values.slice(0, 0, b), values.slice(0, b, 2 * b)};
}

void RewardTrainer::begin_stage(double learning_rate, double warmup_ratio, int64_t total_steps) {
  const auto& t = config_.train;
  learning_rate_ = learning_rate;
  step_ = 0;
  total_steps_ = total_steps;
  warmup_steps_ = static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
  // Each stage starts from the weights as exported (a rerun that skipped the earlier stages starts from those too).
  optimizer_ = std::make_unique<dist::DataParallelAdamW>(
      trainable_, qwen::AdamWSettings{learning_rate, t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay},
      *group_, dist::DataParallelSettings{t.data_parallel.shard_optimizer,
                                          static_cast<int64_t>(t.data_parallel.bucket_mb * 1024 * 1024)});
  if (group_->distributed())
    std::fprintf(stderr, "reward-train: rank %d of %d: optimizer state %lld bytes (%s)\n", group_->rank(),
                 group_->world_size(), static_cast<long long>(optimizer_->state_bytes()),
                 optimizer_->sharded() ? "sharded" : "whole");
}

RewardStepMetrics RewardTrainer::optimizer_step(const std::vector<std::vector<const PreferenceRecord*>>& micro_batches) {
  if (!optimizer_) throw std::logic_error("optimizer_step: begin_stage() first");
  if (micro_batches.empty()) throw std::invalid_argument("optimizer_step: no micro-batches");
  for (const auto& batch : micro_batches)
    if (batch.empty()) throw std::invalid_argument("optimizer_step: empty micro-batch");
  const double scale = 1.0 / static_cast<double>(micro_batches.size());
  qwen::clear_gradients(trainable_);
  // loss (sum of micro-batch means), correct pairs, margin, chosen and rejected reward sums, pairs
  std::array<double, 6> sums{};
  const auto world = static_cast<size_t>(group_->world_size());
  for (size_t m = static_cast<size_t>(group_->rank()); m < micro_batches.size(); m += world) {
    const auto& batch = micro_batches[m];
    auto [chosen, rejected] = score_pairs(batch);
    auto margin = chosen - rejected;
    auto loss = -torch::log_sigmoid(margin).mean();
    (loss * scale).backward();
    sums[0] += loss.item<double>();
    auto mg = margin.detach().to(torch::kCPU, torch::kFloat64);
    sums[1] += mg.gt(0).sum().item<double>();
    sums[2] += mg.sum().item<double>();
    sums[3] += chosen.detach().to(torch::kFloat64).sum().item<double>();
    sums[4] += rejected.detach().to(torch::kFloat64).sum().item<double>();
    sums[5] += static_cast<double>(batch.size());
  }
  const double lr = learning_rate_ * cosine_schedule_factor(step_, warmup_steps_, total_steps_);
  const double grad_norm = optimizer_->step(config_.train.max_grad_norm, lr);
  ++step_;
  if (group_->distributed()) {
    torch::Tensor total = torch::tensor(std::vector<double>(sums.begin(), sums.end()), torch::kFloat64).to(device_);
    group_->all_reduce_sum(total);
    total = total.cpu();
    for (size_t i = 0; i < sums.size(); ++i) sums[i] = total[static_cast<int64_t>(i)].item<double>();
  }

  RewardStepMetrics out;
  out.step = step_;
  const double n = sums[5];
  out.values = {{"loss", sums[0] * scale},         {"accuracy", sums[1] / n},
                {"margin", sums[2] / n},           {"rewards/chosen", sums[3] / n},
                {"rewards/rejected", sums[4] / n}, {"lr", lr},
                {"grad_norm", grad_norm}};
  return out;
}

PairEvaluation RewardTrainer::evaluate(const std::vector<PreferenceRecord>& pairs, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  PairEvaluation out;
  double loss_sum = 0;
  // Rank r scores batches r, r + W, …; the scores are then gathered in pair order.
  const auto step = static_cast<size_t>(batch_size) * static_cast<size_t>(group_->world_size());
  for (size_t start = static_cast<size_t>(batch_size) * static_cast<size_t>(group_->rank()); start < pairs.size();
       start += step) {
    std::vector<const PreferenceRecord*> batch;
    for (size_t i = start; i < std::min(pairs.size(), start + static_cast<size_t>(batch_size)); ++i)
      batch.push_back(&pairs[i]);
    auto [chosen, rejected] = score_pairs(batch);
    auto c = chosen.to(torch::kCPU, torch::kFloat64).contiguous();
    auto r = rejected.to(torch::kCPU, torch::kFloat64).contiguous();
    loss_sum += -torch::log_sigmoid(c - r).sum().item<double>();
    out.chosen.insert(out.chosen.end(), c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    out.rejected.insert(out.rejected.end(), r.data_ptr<double>(), r.data_ptr<double>() + r.numel());
  }
  if (group_->distributed()) {
    json mine{{"chosen", out.chosen}, {"rejected", out.rejected}};
    const auto all = group_->all_gather_text(mine.dump());
    std::vector<std::vector<double>> chosen, rejected;
    for (const auto& text : all) {
      const json part = json::parse(text);
      chosen.push_back(part.at("chosen").get<std::vector<double>>());
      rejected.push_back(part.at("rejected").get<std::vector<double>>());
    }
    out.chosen.clear();
    out.rejected.clear();
    loss_sum = 0;
    // Batch k came from rank k mod W, as its (k div W)-th batch.
    const auto world = static_cast<size_t>(group_->world_size()), b = static_cast<size_t>(batch_size);
    for (size_t start = 0, k = 0; start < pairs.size(); start += b, ++k) {
      const size_t rank = k % world, offset = (k / world) * b, count = std::min(b, pairs.size() - start);
      for (size_t i = 0; i < count; ++i) {
        const double c = chosen[rank].at(offset + i), r = rejected[rank].at(offset + i);
        out.chosen.push_back(c);
        out.rejected.push_back(r);
        loss_sum += -torch::log_sigmoid(torch::tensor(c - r, torch::kFloat64)).item<double>();
      }
    }
  }
  out.pairs = static_cast<int64_t>(pairs.size());
  double correct = 0, margin = 0;
  for (size_t i = 0; i < out.chosen.size(); ++i) {
    correct += out.chosen[i] > out.rejected[i] ? 1 : 0;
    margin += out.chosen[i] - out.rejected[i];
  }
  const double n = std::max<double>(1, static_cast<double>(out.pairs));
  out.loss = loss_sum / n;
  out.accuracy = correct / n;
  out.margin = margin / n;
  return out;
}

void RewardTrainer::export_model(const std::string& dir) const {
  // Weights and the head come from memory; a DONE marker or manifest would describe another directory.
  // LoRA: the merged backbone (loadable as is) and the adapters in PEFT's format in adapter/.
  if (adapters_) {
    adapters_->export_merged(*model_, config_.model.path, dir, config_.model.dtype, {kDoneFile, "manifest.json"});
  } else {
    qwen::export_pretrained(*model_, config_.model.path, dir, config_.model.dtype, {kDoneFile, "manifest.json"});
  }
  save_value_head(head_, (fs::path(dir) / kValueHeadFile).string());
}

void RewardTrainer::load_model(const std::string& dir) {
  if (adapters_) {
    adapters_->load_weights((fs::path(dir) / qwen::kAdapterDir).string());  // the base stays model.path's
  } else {
    const auto model_config = Qwen2_5_VLConfig::load((fs::path(dir) / "config.json").string());
    qwen::load_checkpoint(*model_, dir, model_config.text.tie_word_embeddings);
  }
  ValueHead loaded = load_value_head((fs::path(dir) / kValueHeadFile).string(), head_->weight.size(1));
  torch::NoGradGuard no_grad;
  head_->weight.copy_(loaded->weight);
  head_->bias.copy_(loaded->bias);
}

std::string RewardTrainer::train(const RewardTrainCallbacks& callbacks) {
  const fs::path out_dir(config_.output.dir);
  const bool main_rank = group_->is_main();  // rank 0 alone writes; every rank reads
  if (main_rank) {
    fs::create_directories(out_dir);
    for (const auto& entry : fs::directory_iterator(out_dir))  // left by a crash while exporting
      if (entry.is_directory() && entry.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(entry.path());
  }
  group_->barrier();

  // Every stage's data is read up front, so a bad line fails the run before hours of training.
  std::vector<std::vector<PreferenceRecord>> data;
  for (const auto& stage : config_.stages) data.push_back(read_stage_data(stage.data, config_.data.image_root));
  std::vector<PreferenceRecord> eval_pairs;
  if (!config_.eval.data.empty()) eval_pairs = read_preference_jsonl(config_.eval.data, config_.data.image_root);

  size_t first = 0;
  while (first < config_.stages.size() && stage_done(config_, first)) ++first;
  if (first > 0) {
    load_model(stage_dir(config_, first - 1));
    for (size_t k = 0; k < first; ++k)
      if (callbacks.on_stage_done) callbacks.on_stage_done(static_cast<int64_t>(k + 1), stage_dir(config_, k));
  }
  // metrics.jsonl keeps the lines of the stages this run does not redo; TensorBoard has one run per stage
  // (tensorboard/stage-N), and the redone stages' runs start afresh.
  std::unique_ptr<MetricsJsonl> metrics;
  if (config_.output.jsonl && main_rank)
    metrics = std::make_unique<MetricsJsonl>((out_dir / "metrics.jsonl").string(), [&](const json& line) {
      auto stage = line.find("stage");
      return stage != line.end() && stage->is_number_integer() && stage->get<int64_t>() <= static_cast<int64_t>(first);
    });
  auto tensorboard_dir = [&](size_t k) { return out_dir / "tensorboard" / fmt::format("stage-{}", k + 1); };
  if (config_.output.tensorboard && main_rank)
    for (size_t k = first; k < config_.stages.size(); ++k) fs::remove_all(tensorboard_dir(k));

  for (size_t k = first; k < config_.stages.size(); ++k) {
    const auto& stage = config_.stages[k];
    const auto& pairs = data[k];
    const auto n = static_cast<int64_t>(pairs.size());
    // One optimizer step: gradient_accumulation_steps micro-batches on each rank.
    const int64_t bs = stage.batch_size, accumulation = config_.train.gradient_accumulation_steps * group_->world_size();
    const int64_t micro_per_epoch = (n + bs - 1) / bs;
    const int64_t steps_per_epoch = (micro_per_epoch + accumulation - 1) / accumulation;
    begin_stage(stage.learning_rate, stage.warmup_ratio, steps_per_epoch * stage.epochs);
    const int64_t stage_number = static_cast<int64_t>(k + 1);
    std::unique_ptr<TensorBoardWriter> tensorboard;
    if (config_.output.tensorboard && main_rank)
      tensorboard = std::make_unique<TensorBoardWriter>(tensorboard_dir(k).string());
    std::unique_ptr<ProgressBar> progress;
    if (config_.output.progress && main_rank)
      progress = std::make_unique<ProgressBar>(
          fmt::format("stage {}/{} {}", stage_number, config_.stages.size(), stage.name), total_steps_, "steps");
    for (int64_t epoch = 0; epoch < stage.epochs; ++epoch) {
      const auto order = pair_order(n, config_.train.seed, static_cast<int64_t>(k), epoch, config_.data.shuffle);
      int64_t index = 0;
      while (index < n) {
        std::vector<std::vector<const PreferenceRecord*>> micro;
        while (static_cast<int64_t>(micro.size()) < accumulation && index < n) {
          std::vector<const PreferenceRecord*> batch;
          for (int64_t i = index; i < std::min(n, index + bs); ++i)
            batch.push_back(&pairs[static_cast<size_t>(order[static_cast<size_t>(i)])]);
          index = std::min(n, index + bs);
          micro.push_back(std::move(batch));
        }
        RewardStepMetrics m = optimizer_step(micro);
        m.values["epoch"] = static_cast<double>(epoch) + static_cast<double>(index) / static_cast<double>(n);
        json line{{"stage", stage_number}, {"stage_name", stage.name}, {"step", m.step}};
        for (const auto& [key, value] : m.values) line[key] = value;
        if (metrics) metrics->append(line);
        if (tensorboard) tensorboard->add_scalars(m.step, m.values);
        if (progress) progress->advance(1, status_line(m.values));
        if (callbacks.on_step) callbacks.on_step(stage_number, m);
      }
    }
    json done{{"format", kDoneFormat}, {"stage", stage_number}, {"name", stage.name}, {"steps", step_},
              {"pairs", n}, {"identity", stage_identity(config_, k)}};
    std::optional<PairEvaluation> evaluation;
    if (!eval_pairs.empty()) {
      evaluation = evaluate(eval_pairs, config_.eval.batch_size);
      const auto& e = *evaluation;
      json eval{{"pairs", e.pairs}, {"loss", e.loss}, {"accuracy", e.accuracy}, {"margin", e.margin}};
      done["eval"] = eval;
      if (metrics) metrics->append({{"stage", stage_number}, {"stage_name", stage.name}, {"step", step_}, {"eval", eval}});
      if (tensorboard)
        tensorboard->add_scalars(step_, {{"eval/loss", e.loss}, {"eval/accuracy", e.accuracy}, {"eval/margin", e.margin}});
    }
    if (progress)
      progress->finish(evaluation ? fmt::format("eval acc {:.3f} margin {:+.3f}", evaluation->accuracy, evaluation->margin)
                                  : std::string("done"));
    if (evaluation && callbacks.on_eval) callbacks.on_eval(stage_number, *evaluation);
    const std::string final_dir = stage_dir(config_, k);
    if (main_rank) {
      const std::string temp_dir = (out_dir / fmt::format(".tmp-stage-{}", k + 1)).string();
      fs::remove_all(temp_dir);
      export_model(temp_dir);
      write_file_atomic((fs::path(temp_dir) / kDoneFile).string(), done.dump(2) + "\n");  // last: marks it complete
      commit_directory(temp_dir, final_dir);
      // Later stages trained from an older version of this one are stale now.
      for (size_t later = k + 1; later < config_.stages.size(); ++later) fs::remove_all(stage_dir(config_, later));
    }
    group_->barrier();
    if (callbacks.on_stage_done) callbacks.on_stage_done(stage_number, final_dir);
  }

  const std::string final_dir = (out_dir / "final_model").string();
  if (main_rank) {
    const std::string temp_dir = (out_dir / ".tmp-final_model").string();
    fs::remove_all(temp_dir);
    export_model(temp_dir);
    commit_directory(temp_dir, final_dir);
  }
  group_->barrier();
  return final_dir;
}

}  // namespace vlreward
