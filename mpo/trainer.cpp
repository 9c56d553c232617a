#include "mpo/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/hf/safetensors_torch.h"
#include "adapters/qwen2_5_vl/batch.h"
#include "adapters/common/train_log.h"
#include "adapters/qwen2_5_vl/optimizer.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "adapters/qwen2_5_vl/weights.h"
#include "adapters/qwen2_5_vl/autocast.h"
#include "mpo/checkpoint.h"
#include "mpo/logprobs.h"
#include "mpo/losses.h"
#include "mpo/pair_tokenization.h"
#include "mpo/reference_cache.h"

namespace vlreward::mpo {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStateFormat = "vlreward-mpo-trainer-state/1";
constexpr const char* kTrainerStateFile = "trainer_state.json";
constexpr const char* kRngFile = "rng_state.safetensors";
constexpr const char* kRunningMomentsFile = "running_moments.json";
constexpr const char* kReferenceFile = "reference.safetensors";  // a refreshed reference (online runs)

// The progress bar's status text: loss, reward accuracy and margin, lr, grad norm, tokens/s.
std::string progress_status(const std::map<std::string, double>& metrics) {
  auto get = [&](const char* key) {
    auto it = metrics.find(key);
    return it == metrics.end() ? 0.0 : it->second;
  };
  return fmt::format("loss {:.4f} acc {:.2f} margin {:.3f} lr {:.2e} |g| {:.3f} {:.0f} tok/s", get("loss"),
                     get("rewards/accuracies"), get("rewards/margins"), get("lr"), get("grad_norm"),
                     get("tokens_per_second"));
}

// Rank 0 alone logs (its metrics are the global ones).
TrainLogOptions log_options(const TrainConfig& config, bool jsonl, bool main_rank) {
  TrainLogOptions options;
  options.dir = config.output.dir;
  options.jsonl = jsonl && main_rank;
  options.tensorboard = config.output.tensorboard && main_rank;
  options.progress = config.output.progress && main_rank;
  options.label = "mpo-train";
  options.status = progress_status;
  return options;
}

// One micro-batch, tokenized and on the device.
struct MicroBatch {
  ConcatenatedBatch batch;
  std::vector<const PreferenceRecord*> records;
  int64_t tokens = 0;
};

// SFT (loss [sft] alone): rows prompt ++ chosen only, right-padded, with their completion mask.
MicroBatch prepare_sft_micro_batch(const Qwen2_5_VLProcessor& processor,
                                   const std::vector<const PreferenceRecord*>& records, const torch::Device& device) {
  std::vector<std::vector<int64_t>> rows;
  std::vector<std::pair<int64_t, int64_t>> spans;  // [prompt length, row length)
  std::vector<float> pixels;
  std::vector<qwen::GridTHW> grids;
  int64_t patch_rows = 0, row_size = 0;
  for (const PreferenceRecord* record : records) {
    TokenizedPair pair = tokenize_sft(processor, *record, record->source);
    std::vector<int64_t> row = std::move(pair.tokens.prompt);
    const auto prompt_length = static_cast<int64_t>(row.size());
    row.insert(row.end(), pair.tokens.chosen.begin(), pair.tokens.chosen.end());
    spans.emplace_back(prompt_length, static_cast<int64_t>(row.size()));
    rows.push_back(std::move(row));
    pixels.insert(pixels.end(), pair.images.pixel_values.begin(), pair.images.pixel_values.end());
    grids.insert(grids.end(), pair.images.grid_thw.begin(), pair.images.grid_thw.end());
    patch_rows += pair.images.rows;
    if (pair.images.rows > 0) row_size = pair.images.row_size;
  }
  auto padded = qwen::pad_batch(rows, processor.pad_token_id(), qwen::PaddingSide::kRight);
  MicroBatch mb;
  mb.records = records;
  mb.batch.num_pairs = static_cast<int64_t>(records.size());
  mb.batch.completion_mask = torch::zeros_like(padded.attention_mask);
  for (size_t r = 0; r < spans.size(); ++r)
    mb.batch.completion_mask[static_cast<int64_t>(r)].slice(0, spans[r].first, spans[r].second).fill_(1);
  auto& input = mb.batch.input;
  input.input_ids = padded.input_ids.to(device);
  input.attention_mask = padded.attention_mask.to(device);
  if (patch_rows > 0) {
    input.pixel_values = torch::from_blob(pixels.data(), {patch_rows, row_size}, torch::kFloat32).clone().to(device);
    input.image_grids = grids;
  }
  mb.batch.completion_mask = mb.batch.completion_mask.to(device);
  mb.tokens = input.attention_mask.sum().item<int64_t>();
  return mb;
}

// logprobs.h sft_nll for rows that are all chosen completions (no rejected half).
torch::Tensor sft_rows_nll(const CompletionLogps& lp, const torch::Tensor& input_ids, SftTokens tokens) {
  auto counted = lp.token_mask;
  if (tokens == SftTokens::kTrl028IgnoreIdZero) counted = counted & (input_ids.slice(1, 1).to(counted.device()) != 0);
  const auto total = torch::where(counted, lp.token_logps, torch::zeros({}, lp.token_logps.options())).sum();
  const int64_t count = counted.sum().item<int64_t>();
  return -total / static_cast<double>(std::max<int64_t>(count, 1));
}

MicroBatch prepare_micro_batch(const Qwen2_5_VLProcessor& processor, const std::vector<const PreferenceRecord*>& records,
                               const torch::Device& device) {
  std::vector<PreferencePairTokens> tokens;
  std::vector<float> pixels;
  std::vector<qwen::GridTHW> grids;
  int64_t rows = 0, row_size = 0;
  for (const PreferenceRecord* record : records) {
    TokenizedPair pair = tokenize_pair(processor, *record, record->source);
    tokens.push_back(std::move(pair.tokens));
    pixels.insert(pixels.end(), pair.images.pixel_values.begin(), pair.images.pixel_values.end());
    grids.insert(grids.end(), pair.images.grid_thw.begin(), pair.images.grid_thw.end());
    rows += pair.images.rows;
    if (pair.images.rows > 0) row_size = pair.images.row_size;
  }
  torch::Tensor pixel_values;
  if (rows > 0) pixel_values = torch::from_blob(pixels.data(), {rows, row_size}, torch::kFloat32).clone();
  MicroBatch mb;
  mb.records = records;
  mb.batch = build_concatenated_batch(tokens, processor.pad_token_id(), pixel_values, grids);
  auto& input = mb.batch.input;
  input.input_ids = input.input_ids.to(device);
  input.attention_mask = input.attention_mask.to(device);
  if (input.pixel_values.defined()) input.pixel_values = input.pixel_values.to(device);
  mb.batch.completion_mask = mb.batch.completion_mask.to(device);
  mb.tokens = input.attention_mask.sum().item<int64_t>();
  return mb;
}

struct ModelLogps {
  PairLogps logps;
  torch::Tensor nll;  // defined when requested
};

// The completion log-probs of a batch: the decoder's last hidden states through lm_head in chunks of positions
// (chunked_completion_logps), never the logits of the whole batch.
CompletionLogps batch_logps(qwen::Qwen2_5_VLModel& model, const ConcatenatedBatch& batch, int64_t chunk_rows) {
  qwen::ForwardOptions options;
  options.logits = false;
  const auto hidden = model->forward(batch.input, options).last_hidden_state;
  return chunked_completion_logps(hidden, model->lm_head_weight(), batch.input.input_ids, batch.completion_mask,
                                  chunk_rows);
}

ModelLogps model_logps(qwen::Qwen2_5_VLModel& model, const ConcatenatedBatch& batch, bool autocast, bool need_nll,
                       SftTokens sft_tokens, int64_t chunk_rows) {
  qwen::Bf16Autocast guard(c10::DeviceType::CUDA, autocast);
  auto lp = batch_logps(model, batch, chunk_rows);
  ModelLogps out;
  out.logps = split_pairs(lp.sequence_logps, batch.num_pairs);
  if (need_nll) out.nll = sft_nll(lp, batch.input.input_ids, batch.num_pairs, sft_tokens);
  return out;
}

// The config sections that decide what a step computes (and, online, which pairs later rounds get); a resumed
// run must use the same. online.rounds may grow (a run can be extended); generation batch sizes never change results.
json resume_relevant(const json& config) {
  json out{{"loss", config.at("loss")}, {"freeze", config.at("freeze")}, {"reference", config.at("reference")},
           {"train", config.at("train")}, {"data", json{{"shuffle", config.at("data").at("shuffle")}}},
           {"lora", config.value("lora", json())}};
  // Memory and communication settings: the same results either way (a sharded optimizer state is re-cut on load).
  // gradient_accumulation_steps: compared as micro-batches per step over all ranks (resume checks it against the
  // checkpoint's world size), so a run may continue on another number of ranks with the same global batch.
  for (const char* key : {"num_threads", "gradient_checkpointing", "logprob_chunk_size", "shard_optimizer",
                          "allreduce_bucket_mb", "collective_timeout_s", "gradient_accumulation_steps"})
    out["train"].erase(key);
  out["model"] = json{{"dtype", config.at("model").at("dtype")}};
  if (config.contains("online")) {
    out["online"] = config.at("online");
    // Generation batch sizes never change results; the monitors only watch (they draw from their own generators).
    for (const char* key : {"rounds", "batch_size", "reward_batch_size", "monitor"}) out["online"].erase(key);
    out["reward"] = config.value("reward", json());
  }
  return out;
}

void diff_keys(const json& a, const json& b, const std::string& prefix, std::vector<std::string>& out) {
  if (a.is_object() && b.is_object()) {
    for (const auto& [key, value] : a.items())
      diff_keys(value, b.contains(key) ? b.at(key) : json(), prefix.empty() ? key : prefix + "." + key, out);
    for (const auto& [key, value] : b.items())
      if (!a.contains(key)) out.push_back(prefix.empty() ? key : prefix + "." + key);
    return;
  }
  if (a != b) out.push_back(prefix + " (checkpoint " + a.dump() + ", now " + b.dump() + ")");
}

template <typename T>
T state_field(const json& state, const char* key, const std::string& path) {
  try {
    return state.at(key).get<T>();
  } catch (const json::exception&) {
    throw InputError(path, fmt::format("missing or invalid \"{}\"", key));
  }
}

}  // namespace

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle, std::string* engine_state) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::seed_seq seq{static_cast<uint32_t>(seed & 0xFFFFFFFFu), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(epoch & 0xFFFFFFFF), static_cast<uint32_t>(static_cast<uint64_t>(epoch) >> 32)};
  std::mt19937_64 engine(seq);
  // Our own Fisher-Yates: std::shuffle's draws differ between standard libraries.
  if (shuffle)
    for (int64_t i = n - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(engine() % static_cast<uint64_t>(i + 1));
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
  if (engine_state != nullptr) {
    std::ostringstream text;
    text << engine;
    *engine_state = text.str();
  }
  return order;
}

std::optional<std::string> resolve_resume(const std::string& resume, const std::string& output_dir) {
  if (resume != "auto") return resume;
  auto checkpoints = list_checkpoints(output_dir);
  if (checkpoints.empty()) return std::nullopt;
  return checkpoints.back().second;
}

MpoModels load_mpo_models(const TrainConfig& config) {
  const torch::Device device = qwen::parse_device(config.model.device, "model.device");
  const auto dtype = qwen::parse_parameter_dtype(config.model.dtype, "model.dtype");
  MpoModels models;
  models.processor = std::make_unique<Qwen2_5_VLProcessor>(
      Qwen2_5_VLProcessor::from_directory(config.model.path, {config.model.min_pixels, config.model.max_pixels}));
  models.policy = qwen::load_pretrained(config.model.path, dtype, device).model;
  // SFT alone never looks at a reference, so none is loaded (half the memory).
  if (config.uses_reference_model())
    models.reference = qwen::load_pretrained(config.reference.path.empty() ? config.model.path : config.reference.path,
                                             dtype, device).model;
  return models;
}

MpoTrainer::MpoTrainer(TrainConfig config, std::shared_ptr<dist::ProcessGroup> group)
    : MpoTrainer(config, load_mpo_models(config), std::move(group)) {}

MpoTrainer::MpoTrainer(TrainConfig config, MpoModels models, std::shared_ptr<dist::ProcessGroup> group)
    : config_(std::move(config)),
      device_(qwen::parse_device(config_.model.device, "model.device")),
      processor_(std::move(models.processor)),
      policy_(std::move(models.policy)),
      reference_(std::move(models.reference)),
      group_(group ? std::move(group) : std::make_shared<dist::ProcessGroup>()) {
  if (!processor_ || policy_.is_empty()) throw InputError("MpoTrainer", "needs a processor and a policy model");
  const bool uses_reference = config_.uses_reference_model();
  if (uses_reference == reference_.is_empty())
    throw InputError("reference.source", uses_reference ? "is \"model\" but no reference model was given"
                                                        : "uses no reference model, but one was given");
  if (config_.train.num_threads > 0) torch::set_num_threads(static_cast<int>(config_.train.num_threads));
  torch::manual_seed(config_.train.seed);
  policy_->to(device_);
  policy_->train();
  if (!reference_.is_empty()) {
    reference_->to(device_);
    reference_->eval();
    for (auto& p : reference_->parameters()) p.set_requires_grad(false);
  }
  if (config_.lora) {
    adapters_.emplace(qwen::LoraAdapters::for_training(policy_, *config_.lora, config_.train.seed));
    trainable_ = adapters_->parameters();
  } else {
    trainable_ = qwen::select_trainable(*policy_, config_.freeze);
    if (trainable_.empty()) throw InputError("freeze", "every parameter is frozen: nothing to train");
  }
  policy_->set_gradient_checkpointing(config_.train.gradient_checkpointing);
  const auto& t = config_.train;
  optimizer_ = std::make_unique<dist::DataParallelAdamW>(
      trainable_, qwen::AdamWSettings{t.learning_rate, t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay},
      *group_, dist::DataParallelSettings{t.data_parallel.shard_optimizer,
                                          static_cast<int64_t>(t.data_parallel.bucket_mb * 1024 * 1024)});
}

MpoTrainer::~MpoTrainer() = default;

int64_t MpoTrainer::steps_per_epoch(int64_t num_examples) const {
  const int64_t micro = (num_examples + config_.train.batch_size - 1) / config_.train.batch_size;
  const int64_t per_step = micro_batches_per_step();
  return (micro + per_step - 1) / per_step;
}

int64_t MpoTrainer::micro_batches_per_step() const {
  return config_.train.gradient_accumulation_steps * group_->world_size();
}

uint64_t MpoTrainer::data_seed() const {
  // Offline: train.seed as before. Online: a different data order per round even when rounds have equal sizes.
  if (state_.round < 0) return config_.train.seed;
  return config_.train.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(state_.round + 1);
}

int64_t checkpoint_round(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kTrainerStateFile).string();
  const json state = read_json_file(path, "not valid JSON");
  if (!state.is_object() || !state.contains("round")) return -1;
  return state_field<int64_t>(state.at("round"), "index", path);
}

void MpoTrainer::set_total_steps(int64_t total_steps) {
  state_.total_steps = total_steps;
  state_.warmup_steps = static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * config_.train.warmup_ratio));
}

namespace {

// The metric sums of every rank, added in rank order (the same on every rank).
std::map<std::string, double> sum_over_ranks(dist::ProcessGroup& group, const std::map<std::string, double>& mine) {
  if (!group.distributed()) return mine;
  // "key value" lines: fmt's shortest round-trip form keeps every bit, and nan/inf too (JSON has neither).
  std::string local;
  for (const auto& [key, value] : mine) local += fmt::format("{} {}\n", key, value);
  std::map<std::string, double> total;
  for (const auto& text : group.all_gather_text(local)) {
    std::istringstream lines(text);
    std::string key, value;
    while (lines >> key >> value) total[key] += std::strtod(value.c_str(), nullptr);
  }
  return total;
}

}  // namespace

StepMetrics MpoTrainer::optimizer_step(const std::vector<std::vector<const PreferenceRecord*>>& micro_batches) {
  if (micro_batches.empty()) throw std::invalid_argument("optimizer_step: no micro-batches");
  for (const auto& records : micro_batches)
    if (records.empty()) throw std::invalid_argument("optimizer_step: empty micro-batch");
  const auto start = std::chrono::steady_clock::now();
  const bool autocast = uses_autocast();
  const bool need_nll = config_.loss.uses(LossTerm::kSft);
  const double scale = 1.0 / static_cast<double>(micro_batches.size());
  qwen::clear_gradients(trainable_);
  std::map<std::string, double> sums;  // over this rank's micro-batches; "loss" and "tokens" among them
  const bool sft_only = config_.sft_only();
  // Rank r runs micro-batches r, r + W, …: wave w runs micro-batches wW … wW + W − 1 side by side.
  const auto world = static_cast<size_t>(group_->world_size()), rank = static_cast<size_t>(group_->rank());
  const size_t waves = (micro_batches.size() + world - 1) / world;
  const bool shared_delta =
      group_->distributed() && config_.loss.uses(LossTerm::kBcoPair) && config_.loss.bco_reward_shift && !sft_only;
  for (size_t wave = 0; wave < waves; ++wave) {
    const size_t index = wave * world + rank;
    const bool mine = index < micro_batches.size();
    if (sft_only) {
      if (!mine) continue;
      MicroBatch mb = prepare_sft_micro_batch(*processor_, micro_batches[index], device_);
      torch::Tensor nll, sequence_logps;
      {
        qwen::Bf16Autocast guard(c10::DeviceType::CUDA, autocast);
        auto lp = batch_logps(policy_, mb.batch, config_.train.logprob_chunk_size);
        nll = sft_rows_nll(lp, mb.batch.input.input_ids, config_.sft_tokens);
        sequence_logps = lp.sequence_logps.detach();
      }
      const auto loss = nll * config_.loss.weights.at(0);
      (loss * scale).backward();
      sums["loss"] += loss.item<double>();
      sums["loss/sft"] += nll.item<double>();
      sums["nll_loss"] += nll.item<double>();
      sums["logps/chosen"] += sequence_logps.mean().item<double>();
      sums["tokens"] += static_cast<double>(mb.tokens);
      continue;
    }
    std::optional<MicroBatch> mb;
    ModelLogps policy;
    PreferenceLogps logps;
    if (mine) {
      const auto& records = micro_batches[index];
      mb.emplace(prepare_micro_batch(*processor_, records, device_));
      policy = model_logps(policy_, mb->batch, autocast, need_nll, config_.sft_tokens, config_.train.logprob_chunk_size);
      logps = PreferenceLogps{policy.logps.chosen, policy.logps.rejected, {}, {}};
      const PairLogps ref = reference_logps(records, mb->batch);
      logps.ref_chosen = ref.chosen.to(logps.chosen.scalar_type());
      logps.ref_rejected = ref.rejected.to(logps.chosen.scalar_type());
    }
    std::optional<double> delta;
    if (shared_delta) {
      // Every rank folds the wave's batch rewards into δ in micro-batch order and takes the δ after its own.
      torch::Tensor reward = mine ? bco_pair_batch_reward(logps, config_.loss.beta) : torch::Tensor();
      const auto reward_dtype = mine ? reward.scalar_type() : torch::kFloat32;
      torch::Tensor mine_value = torch::full({2}, 0.0, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
      if (mine) {
        mine_value[0] = 1.0;
        mine_value[1] = reward.to(torch::kFloat64).reshape({});
      }
      torch::Tensor all = torch::empty({static_cast<int64_t>(2 * world)}, mine_value.options());
      group_->all_gather(mine_value, all);
      const torch::Tensor host = all.cpu();
      for (size_t r = 0; r < world; ++r) {
        if (host[static_cast<int64_t>(2 * r)].item<double>() == 0) continue;
        running_.update(torch::full({}, host[static_cast<int64_t>(2 * r + 1)].item<double>(),
                                    torch::TensorOptions().dtype(reward_dtype)));
        if (r == rank) delta = running_.mean();
      }
    }
    if (!mine) continue;
    LossResult result = compute_mpo_loss(config_.loss, logps, policy.nll, &running_, delta);
    (result.loss * scale).backward();
    sums["loss"] += result.loss.item<double>();
    for (const auto& [key, value] : result.metrics.to_map(false)) sums[key] += value;
    sums["tokens"] += static_cast<double>(mb->tokens);
  }
  const double lr = config_.train.learning_rate * cosine_schedule_factor(state_.global_step - state_.round_start_step,
                                                                         state_.warmup_steps, state_.total_steps);
  const double grad_norm = optimizer_->step(config_.train.max_grad_norm, lr);
  ++state_.global_step;
  sums = sum_over_ranks(*group_, sums);

  StepMetrics out;
  out.step = state_.global_step;
  const double tokens = sums["tokens"];
  sums.erase("tokens");
  for (const auto& [key, value] : sums) out.values[key] = value * scale;
  out.values["lr"] = lr;
  out.values["grad_norm"] = grad_norm;
  if (state_.round >= 0) out.values["round"] = static_cast<double>(state_.round);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.values["tokens_per_second"] = seconds > 0 ? tokens / seconds : 0.0;
  return out;
}

bool MpoTrainer::uses_autocast() const { return device_.is_cuda() && config_.model.bf16_autocast; }

PairLogps MpoTrainer::reference_logps(const std::vector<const PreferenceRecord*>& records,
                                      const ConcatenatedBatch& batch) {
  const bool stored = config_.reference.source == ReferenceSource::kPrecomputed;
  if (stored || !precomputed_reference_.empty()) {
    std::vector<double> chosen, rejected;
    for (const auto* r : records) {
      if (stored) {
        if (!r->ref_chosen_logp)
          throw InputError(r->source, "ref_chosen_logp/ref_rejected_logp: missing (reference.source is \"precomputed\")");
        chosen.push_back(*r->ref_chosen_logp);
        rejected.push_back(*r->ref_rejected_logp);
        continue;
      }
      const auto it = precomputed_reference_.find(r);
      if (it == precomputed_reference_.end())
        throw std::logic_error("MpoTrainer: no precomputed reference log-probs for " + r->source);
      chosen.push_back(it->second.first);
      rejected.push_back(it->second.second);
    }
    auto options = torch::TensorOptions().dtype(torch::kFloat64);
    return {torch::tensor(chosen, options).to(device_, torch::kFloat32),
            torch::tensor(rejected, options).to(device_, torch::kFloat32)};
  }
  torch::NoGradGuard no_grad;
  // LoRA: the reference is the policy's base, the adapters switched off for this forward.
  std::optional<qwen::AdaptersDisabled> base;
  if (adapters_) base.emplace(*adapters_);
  const PairLogps ref = model_logps(adapters_ ? policy_ : reference_, batch, uses_autocast(), false, config_.sft_tokens,
                                    config_.train.logprob_chunk_size)
                            .logps;
  return {ref.chosen.detach(), ref.rejected.detach()};
}

MpoTrainer::CompletionLogprobs MpoTrainer::completion_logprobs(const std::vector<const PreferenceRecord*>& records,
                                                              int64_t batch_size) {
  if (!can_run_reference())
    throw std::logic_error("MpoTrainer::completion_logprobs: this run has no reference model to compare the policy with");
  if (batch_size <= 0) throw std::invalid_argument("MpoTrainer::completion_logprobs: batch_size must be positive");
  torch::NoGradGuard no_grad;
  const bool was_training = policy_->is_training();
  policy_->eval();  // no LoRA dropout
  auto sequence_logps = [&](qwen::Qwen2_5_VLModel& model, const MicroBatch& mb) {
    qwen::Bf16Autocast guard(c10::DeviceType::CUDA, uses_autocast());
    return batch_logps(model, mb.batch, config_.train.logprob_chunk_size).sequence_logps.to(torch::kCPU, torch::kFloat64);
  };
  CompletionLogprobs out;
  for (size_t begin = 0; begin < records.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(records.size(), begin + static_cast<size_t>(batch_size));
    const std::vector<const PreferenceRecord*> part(records.begin() + static_cast<std::ptrdiff_t>(begin),
                                                    records.begin() + static_cast<std::ptrdiff_t>(end));
    const MicroBatch mb = prepare_sft_micro_batch(*processor_, part, device_);
    const torch::Tensor policy = sequence_logps(policy_, mb);
    torch::Tensor reference;
    {
      std::optional<qwen::AdaptersDisabled> base;
      if (adapters_) base.emplace(*adapters_);
      reference = sequence_logps(adapters_ ? policy_ : reference_, mb);
    }
    const torch::Tensor tokens = mb.batch.completion_mask.sum(1).to(torch::kCPU);
    for (int64_t r = 0; r < policy.size(0); ++r) {
      out.policy.push_back(policy[r].item<double>());
      out.reference.push_back(reference[r].item<double>());
      out.tokens.push_back(tokens[r].item<int64_t>());
    }
  }
  if (was_training) policy_->train();
  return out;
}

void MpoTrainer::precompute_reference(const std::vector<PreferenceRecord>& data, const DataFingerprint& fingerprint) {
  const std::string path = (fs::path(config_.output.dir) / kReferenceCacheFile).string();
  const json key = reference_cache_key(config_, fingerprint, data);
  // Rank 0 computes and caches; the other ranks read its cache.
  if (!group_->is_main()) group_->barrier();
  std::optional<ReferenceLogps> values = load_reference_cache(path, key, data.size());
  if (!values && !group_->is_main()) throw std::runtime_error("mpo-train: rank 0 wrote no reference cache at " + path);
  if (values) {
    std::fprintf(stderr, "mpo-train: reference log-probs of %zu pairs read from %s\n", data.size(), path.c_str());
  } else {
    values.emplace();
    const auto batch_size = static_cast<size_t>(config_.train.batch_size);
    for (size_t begin = 0; begin < data.size(); begin += batch_size) {
      std::vector<const PreferenceRecord*> records;
      for (size_t i = begin; i < std::min(data.size(), begin + batch_size); ++i) records.push_back(&data[i]);
      const MicroBatch mb = prepare_micro_batch(*processor_, records, device_);
      const PairLogps ref = reference_logps(records, mb.batch);
      const auto chosen = ref.chosen.to(torch::kCPU, torch::kFloat64).contiguous();
      const auto rejected = ref.rejected.to(torch::kCPU, torch::kFloat64).contiguous();
      values->chosen.insert(values->chosen.end(), chosen.data_ptr<double>(), chosen.data_ptr<double>() + chosen.numel());
      values->rejected.insert(values->rejected.end(), rejected.data_ptr<double>(),
                              rejected.data_ptr<double>() + rejected.numel());
    }
    save_reference_cache(path, key, *values);
    std::fprintf(stderr, "mpo-train: reference log-probs of %zu pairs computed into %s\n", data.size(), path.c_str());
  }
  if (group_->is_main()) group_->barrier();
  for (size_t i = 0; i < data.size(); ++i)
    precomputed_reference_[&data[i]] = {values->chosen[i], values->rejected[i]};
  reference_ = qwen::Qwen2_5_VLModel(nullptr);  // no longer needed: its memory goes back
}

std::string MpoTrainer::train(const std::vector<PreferenceRecord>& data, const DataFingerprint& fingerprint,
                              const TrainCallbacks& callbacks) {
  if (data.empty()) throw InputError(config_.data.train, config_.sft_only() ? "no SFT examples" : "no preference pairs");
  const int64_t n = static_cast<int64_t>(data.size());
  const int64_t total = config_.train.max_steps > 0 ? config_.train.max_steps : config_.train.epochs * steps_per_epoch(n);
  if (state_.total_steps != 0 && state_.total_steps != total)
    throw InputError(config_.output.dir, fmt::format("the checkpoint's schedule has {} steps, this run {}", state_.total_steps, total));
  set_total_steps(total);

  fs::create_directories(config_.output.dir);
  if (config_.reference.precompute) precompute_reference(data, fingerprint);
  if (group_->distributed())
    std::fprintf(stderr, "mpo-train: rank %d of %d: optimizer state %lld bytes (%s)\n", group_->rank(),
                 group_->world_size(), static_cast<long long>(optimizer_->state_bytes()),
                 optimizer_->sharded() ? "sharded" : "whole");
  TrainLogger logger(log_options(config_, config_.output.jsonl, group_->is_main()), total, state_.global_step);
  run_schedule(data, fingerprint, [&](const StepMetrics& m) { logger.log_step(m.step, m.values); }, callbacks);
  const std::string final_dir = (fs::path(config_.output.dir) / "final_model").string();
  if (group_->is_main()) {
    const std::string temp_dir = (fs::path(config_.output.dir) / ".tmp-final_model").string();
    fs::remove_all(temp_dir);
    export_policy(temp_dir);
    commit_directory(temp_dir, final_dir);
  }
  group_->barrier();  // no rank reports the final model before it exists
  logger.finish(fmt::format("done: {} steps -> {}", state_.global_step, final_dir));
  return final_dir;
}

void MpoTrainer::refresh_reference() {
  if (reference_.is_empty()) throw std::logic_error("refresh_reference: this run has no reference model");
  torch::NoGradGuard no_grad;
  auto source = policy_->named_parameters();
  for (auto& item : reference_->named_parameters()) item.value().copy_(source[item.key()]);
  auto buffers = policy_->named_buffers();
  for (auto& item : reference_->named_buffers()) item.value().copy_(buffers[item.key()]);
}

void MpoTrainer::train_round(int64_t round, const std::vector<PreferenceRecord>& data,
                             const DataFingerprint& fingerprint, const TrainCallbacks& callbacks) {
  if (data.empty()) throw InputError(fingerprint.path, "no preference pairs");
  if (round < state_.round)
    throw InputError(config_.output.dir, fmt::format("round {} requested, but the policy is already past round {} "
                                                     "(a checkpoint of a later round was resumed)", round, state_.round));
  if (round != state_.round) {  // a new round: its own schedule and data order, from the current step
    const int64_t every = config_.online ? config_.online->reference_refresh_rounds : 0;
    if (every > 0 && round > 0 && round % every == 0) {
      refresh_reference();
      state_.reference_round = round;
      std::fprintf(stderr, "mpo-train: round %lld: the reference is now the current policy\n",
                   static_cast<long long>(round));
    }
    state_.round = round;
    state_.round_start_step = state_.global_step;
    state_.epoch = 0;
    state_.index_in_epoch = 0;
    state_.total_steps = 0;
    data_rng_state_.clear();
  }
  const int64_t total = config_.train.epochs * steps_per_epoch(static_cast<int64_t>(data.size()));
  if (state_.total_steps != 0 && state_.total_steps != total)
    throw InputError(fingerprint.path, fmt::format("the checkpoint's round {} schedule has {} steps, this run {}", round,
                                                   state_.total_steps, total));
  set_total_steps(total);
  fs::create_directories(config_.output.dir);
  // metrics.jsonl belongs to the online runner (one file over all rounds, with its round lines): the callbacks
  // write it. TensorBoard and the progress bar per round.
  TrainLogger logger(log_options(config_, /*jsonl=*/false, group_->is_main()), total,
                     state_.global_step - state_.round_start_step);
  run_schedule(data, fingerprint, [&](const StepMetrics& m) { logger.log_step(m.step, m.values); }, callbacks);
  logger.finish(fmt::format("round {}: {} steps (global step {})", round, total, state_.global_step));
}

void MpoTrainer::run_schedule(const std::vector<PreferenceRecord>& data, const DataFingerprint& fingerprint,
                              const std::function<void(const StepMetrics&)>& log_step, const TrainCallbacks& callbacks) {
  if (config_.reference.source == ReferenceSource::kPrecomputed && !config_.sft_only())
    for (const auto& r : data)
      if (!r.ref_chosen_logp)
        throw InputError(r.source, "ref_chosen_logp/ref_rejected_logp: missing (reference.source is \"precomputed\")");
  const int64_t n = static_cast<int64_t>(data.size());
  if (group_->is_main()) remove_stale_temp_checkpoints(config_.output.dir);
  group_->barrier();  // before any rank writes into a new temporary checkpoint
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  int64_t last_saved = -1;
  if (!list_checkpoints(config_.output.dir).empty()) last_saved = list_checkpoints(config_.output.dir).back().first;
  const int64_t bs = config_.train.batch_size;
  while (state_.global_step - state_.round_start_step < state_.total_steps) {
    if (state_.index_in_epoch >= n) {
      ++state_.epoch;
      state_.index_in_epoch = 0;
    }
    if (order_epoch != state_.epoch) {
      order = epoch_order(n, data_seed(), state_.epoch, config_.data.shuffle, &data_rng_state_);
      order_epoch = state_.epoch;
    }
    std::vector<std::vector<const PreferenceRecord*>> micro;
    int64_t index = state_.index_in_epoch;
    while (static_cast<int64_t>(micro.size()) < micro_batches_per_step() && index < n) {
      std::vector<const PreferenceRecord*> batch;
      for (int64_t k = index; k < std::min(n, index + bs); ++k) batch.push_back(&data[static_cast<size_t>(order[static_cast<size_t>(k)])]);
      index = std::min(n, index + bs);
      micro.push_back(std::move(batch));
    }
    StepMetrics metrics = optimizer_step(micro);
    state_.index_in_epoch = index;
    metrics.values["epoch"] = static_cast<double>(state_.epoch) + static_cast<double>(index) / static_cast<double>(n);
    log_step(metrics);
    if (callbacks.on_step) callbacks.on_step(metrics);
    if (config_.output.save_steps > 0 && state_.global_step % config_.output.save_steps == 0) {
      const std::string dir = save_checkpoint(fingerprint);
      last_saved = state_.global_step;
      if (callbacks.on_checkpoint) callbacks.on_checkpoint(state_.global_step, dir);
    }
  }
  if (last_saved != state_.global_step) {
    const std::string dir = save_checkpoint(fingerprint);
    if (callbacks.on_checkpoint) callbacks.on_checkpoint(state_.global_step, dir);
  }
}

void MpoTrainer::export_policy(const std::string& dir) const {
  if (!adapters_) {
    qwen::export_pretrained(*policy_, config_.model.path, dir, config_.model.dtype, {kManifestFile});
    return;
  }
  adapters_->export_merged(*policy_, config_.model.path, dir, config_.model.dtype, {kManifestFile});
}

std::string MpoTrainer::save_checkpoint(const DataFingerprint& data) {
  const std::string name = fmt::format("{}{}", kCheckpointPrefix, state_.global_step);
  const fs::path temp = fs::path(config_.output.dir) / fmt::format("{}{}", kTempCheckpointPrefix, state_.global_step);
  const fs::path final_dir = fs::path(config_.output.dir) / name;
  // Rank 0 prepares the directory, every rank writes its optimizer shard (sharded runs), rank 0 writes the rest and
  // commits; the barriers keep the ranks in that order, so a committed checkpoint is complete.
  if (group_->is_main()) {
    fs::remove_all(temp);
    fs::create_directories(temp);
  }
  group_->barrier();
  optimizer_->save(temp.string());
  group_->barrier();
  if (!group_->is_main()) {
    group_->barrier();
    return final_dir.string();
  }
  if (adapters_) adapters_->save(temp.string(), config_.model.path);
  else export_policy(temp.string());
  save_torch_rng_state((temp / kRngFile).string());
  if (state_.reference_round >= 0) {
    std::vector<std::pair<std::string, torch::Tensor>> reference;
    for (const auto& item : reference_->named_parameters()) reference.emplace_back(item.key(), item.value());
    write_safetensors((temp / kReferenceFile).string(), reference);
  }
  running_.save((temp / kRunningMomentsFile).string());
  if (data_rng_state_.empty())  // saved before the first step: the state the first epoch's shuffle leaves
    epoch_order(data.num_examples, data_seed(), state_.epoch, config_.data.shuffle, &data_rng_state_);
  json state{
      {"format", kStateFormat},
      {"global_step", state_.global_step},
      {"epoch", state_.epoch},
      {"index_in_epoch", state_.index_in_epoch},
      {"scheduler", {{"last_step", state_.global_step}, {"warmup_steps", state_.warmup_steps}, {"total_steps", state_.total_steps},
                     {"base_lr", config_.train.learning_rate}, {"type", "cosine_with_warmup"}}},
      {"data", {{"path", data.path.empty() ? config_.data.train : data.path}, {"num_examples", data.num_examples},
                {"crc32c", data.crc32c}}},
      {"data_rng", {{"seed", data_seed()}, {"epoch", state_.epoch}, {"mt19937_64", data_rng_state_}}},
      {"config", config_.to_json()},
      {"world_size", group_->world_size()},
  };
  // Online: the round this schedule belongs to (its pairs file is the data above) and the step it began at.
  if (state_.round >= 0) state["round"] = {{"index", state_.round}, {"start_step", state_.round_start_step}};
  if (state_.reference_round >= 0) state["reference_round"] = state_.reference_round;
  write_file_atomic((temp / kTrainerStateFile).string(), state.dump(2) + "\n");
  write_manifest(temp.string());
  commit_directory(temp.string(), final_dir.string());
  prune_checkpoints(config_.output.dir, config_.output.save_total_limit);
  group_->barrier();
  return final_dir.string();
}

void MpoTrainer::resume(const std::string& checkpoint_dir, const DataFingerprint& data) {
  verify_manifest(checkpoint_dir);
  const fs::path dir(checkpoint_dir);
  const std::string state_path = (dir / kTrainerStateFile).string();
  const json state = read_json_file(state_path, "not valid JSON");
  if (!state.is_object() || state.value("format", "") != kStateFormat)
    throw InputError(state_path, fmt::format("not a {} file", kStateFormat));
  // Same data and the same step computation, or the continuation would not be the interrupted run's.
  const json& saved_data = state.at("data");
  if (state_field<int64_t>(saved_data, "num_examples", state_path) != data.num_examples ||
      state_field<uint32_t>(saved_data, "crc32c", state_path) != data.crc32c)
    throw InputError(data.path.empty() ? config_.data.train : data.path,
                     fmt::format("differs from the data the checkpoint {} was trained on ({} pairs, crc32c {:08x}); "
                                 "resume needs the same file",
                                 checkpoint_dir, saved_data.value("num_examples", int64_t{-1}),
                                 saved_data.value("crc32c", uint32_t{0})));
  std::vector<std::string> changed;
  diff_keys(resume_relevant(state.at("config")), resume_relevant(config_.to_json()), "", changed);
  if (!changed.empty()) {
    std::string list;
    for (const auto& c : changed) list += (list.empty() ? "" : "; ") + c;
    throw InputError(state_path, "the config differs from the checkpoint's in: " + list);
  }
  {
    const int64_t saved_world = state.value("world_size", int64_t{1});
    const int64_t saved_accumulation = state.at("config").at("train").value("gradient_accumulation_steps", int64_t{1});
    if (saved_world * saved_accumulation != micro_batches_per_step())
      throw InputError(state_path, fmt::format("the checkpoint's steps have {} micro-batches ({} ranks × "
                                               "gradient_accumulation_steps {}), this run's {} ({} × {}): keep "
                                               "ranks × accumulation equal to resume",
                                               saved_world * saved_accumulation, saved_world, saved_accumulation,
                                               micro_batches_per_step(), group_->world_size(),
                                               config_.train.gradient_accumulation_steps));
  }
  if (adapters_) {
    adapters_->load_weights(checkpoint_dir);
  } else {
    const auto model_config = Qwen2_5_VLConfig::load((dir / "config.json").string());
    qwen::load_checkpoint(*policy_, checkpoint_dir, model_config.text.tie_word_embeddings);
  }
  // AdamW's moments and the float32 masters the run stepped (the checkpoint's bf16 weights are them rounded), cut
  // to this run's slices whatever world size wrote them.
  optimizer_->load(checkpoint_dir);
  load_torch_rng_state((dir / kRngFile).string());
  running_ = RunningMoments::load((dir / kRunningMomentsFile).string());
  state_.global_step = state_field<int64_t>(state, "global_step", state_path);
  state_.epoch = state_field<int64_t>(state, "epoch", state_path);
  state_.index_in_epoch = state_field<int64_t>(state, "index_in_epoch", state_path);
  const json& scheduler = state.at("scheduler");
  state_.total_steps = state_field<int64_t>(scheduler, "total_steps", state_path);
  state_.warmup_steps = state_field<int64_t>(scheduler, "warmup_steps", state_path);
  state_.round = -1;
  state_.round_start_step = 0;
  if (state.contains("round")) {
    state_.round = state_field<int64_t>(state.at("round"), "index", state_path);
    state_.round_start_step = state_field<int64_t>(state.at("round"), "start_step", state_path);
    if (state_.round < 0 || state_.round_start_step < 0 || state_.round_start_step > state_.global_step)
      throw InputError(state_path, "round: out of range");
  }
  state_.reference_round = state.value("reference_round", int64_t{-1});
  if (state_.reference_round >= 0) {
    if (reference_.is_empty()) throw InputError(state_path, "reference_round: this run has no reference model to restore");
    std::vector<std::pair<std::string, torch::Tensor>> reference;
    for (const auto& item : reference_->named_parameters()) reference.emplace_back(item.key(), item.value());
    qwen::load_tensors((dir / kReferenceFile).string(), reference, /*same_dtype=*/true);
  }
  if (state_.global_step < 0 || state_.epoch < 0 || state_.index_in_epoch < 0 || state_.index_in_epoch > data.num_examples)
    throw InputError(state_path, "data cursor out of range");
  // The data-order RNG is a function of (seed, epoch); the stored engine state double-checks that this build
  // draws the same order.
  std::string engine;
  epoch_order(data.num_examples, data_seed(), state_.epoch, config_.data.shuffle, &engine);
  if (engine != state_field<std::string>(state.at("data_rng"), "mt19937_64", state_path))
    throw InputError(state_path, "data_rng: this build's data order differs from the checkpoint's");
  data_rng_state_ = engine;
}

}  // namespace vlreward::mpo
