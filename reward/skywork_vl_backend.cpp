#include "reward/skywork_vl_backend.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "adapters/common/error.h"
#include "adapters/hf/qwen2_5_vl_processor.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "plugin/config_reader.h"
#include "reward/model_inputs.h"
#include "reward/value_head.h"

namespace vlreward {
namespace {

torch::ScalarType parse_dtype(const std::string& name, const std::string& where) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  throw ConfigError(where + ": dtype must be \"float32\" or \"bfloat16\", got \"" + name + "\"");
}

qwen::AttentionImpl parse_attention(const std::string& name, const std::string& where) {
  if (name == "sdpa") return qwen::AttentionImpl::kFused;
  if (name == "eager") return qwen::AttentionImpl::kExplicit;
  throw ConfigError(where + ": attention must be \"sdpa\" or \"eager\", got \"" + name + "\"");
}

// A request turned into model inputs, or the reason it could not be.
struct PreparedItem {
  RewardInput input;
  std::string error;
};

class SkyworkVLReward : public RewardBackend {
 public:
  explicit SkyworkVLReward(const SkyworkVLOptions& options)
      : options_(options),
        processor_(Qwen2_5_VLProcessor::from_directory(options.model_dir, {options.min_pixels, options.max_pixels})),
        device_(qwen::parse_device(options.device, "skywork_vl.device")),
        max_padding_fraction_(options.max_padding_fraction.value_or(
            device_.is_cpu() ? 0.05 : std::numeric_limits<double>::infinity())) {
    // Parameters are created on the device and filled straight from the mapped checkpoint: no host copy of the
    // weights besides the mapping.
    auto pretrained = qwen::load_pretrained(options.model_dir, parse_dtype(options.dtype, "skywork_vl"), device_);
    const auto& config = pretrained.config;
    max_sample_tokens_ = options.max_sample_tokens.value_or(
        std::min(config.text.max_position_embeddings, SkyworkVLOptions::kDefaultMaxSampleTokens));
    model_ = pretrained.model;
    model_->eval();
    model_->set_attention_impl(parse_attention(options.attention, "skywork_vl"));
    head_ = load_value_head(options.value_head_path, config.text.hidden_size);
    head_->to(device_);
  }

  std::string name() const override { return "skywork_vl"; }
  RewardCapabilities capabilities() const override { return {true, false, true}; }

  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    std::vector<RewardResult> results(batch.size());
    std::vector<PreparedItem> items;
    items.reserve(batch.size());
    for (const auto& request : batch) items.push_back(prepare(request));

    // Longest first, then greedily fill batches under the token, size and padding budgets.
    std::vector<size_t> order;
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].error.empty()) order.push_back(i);
      else results[i] = RewardResult::failure(items[i].error);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return items[a].input.input_ids.size() > items[b].input.input_ids.size(); });
    size_t start = 0;
    while (start < order.size()) {
      const int64_t longest = static_cast<int64_t>(items[order[start]].input.input_ids.size());
      int64_t real_tokens = longest;
      size_t end = start + 1;
      while (end < order.size()) {
        const int64_t count = static_cast<int64_t>(end - start + 1);
        const int64_t real = real_tokens + static_cast<int64_t>(items[order[end]].input.input_ids.size());
        const int64_t padded = count * longest;
        if (count > options_.max_batch_size || padded > options_.max_batch_tokens ||
            static_cast<double>(padded - real) > max_padding_fraction_ * static_cast<double>(real))
          break;
        real_tokens = real;
        ++end;
      }
      std::vector<size_t> group(order.begin() + static_cast<std::ptrdiff_t>(start),
                                order.begin() + static_cast<std::ptrdiff_t>(end));
      try {
        auto scores = forward(items, group);
        for (size_t k = 0; k < group.size(); ++k) results[group[k]] = RewardResult::success(scores[k]);
      } catch (const std::exception& e) {
        for (size_t index : group) results[index] = RewardResult::failure(std::string("scoring failed: ") + e.what());
      }
      start = end;
    }
    return results;
  }

 private:
  PreparedItem prepare(const RewardRequest& request) const {
    PreparedItem item;
    const std::string source = request.id.empty() ? "request" : "request " + request.id;
    try {
      item.input = prepare_reward_input(processor_, request, source);
    } catch (const std::exception& e) {
      item.error = e.what();
      return item;
    }
    const auto tokens = static_cast<int64_t>(item.input.input_ids.size());
    if (tokens > max_sample_tokens_) {
      item.error = fmt::format("{}: {} tokens after the chat template, over the limit of {} (max_sample_tokens)",
                               source, tokens, max_sample_tokens_);
      item.input = {};
    }
    return item;
  }

  std::vector<double> forward(const std::vector<PreparedItem>& items, const std::vector<size_t>& group) {
    torch::InferenceMode inference;
    std::vector<const RewardInput*> rows;
    for (size_t index : group) rows.push_back(&items[index].input);
    const RewardBatch batch = build_reward_batch(rows, processor_.pad_token_id(), device_);
    auto values = reward_values(model_, head_, batch).to(torch::kCPU, torch::kFloat64);
    return {values.data_ptr<double>(), values.data_ptr<double>() + values.numel()};
  }

  SkyworkVLOptions options_;
  Qwen2_5_VLProcessor processor_;
  torch::Device device_;
  double max_padding_fraction_;
  int64_t max_sample_tokens_ = 0;
  qwen::Qwen2_5_VLModel model_{nullptr};
  ValueHead head_{nullptr};
};

}  // namespace

SkyworkVLOptions SkyworkVLOptions::from_config(const nlohmann::json& config, const std::string& where) {
  ConfigReader reader(config, where);
  SkyworkVLOptions o;
  o.model_dir = reader.required<std::string>("model");
  o.value_head_path = reader.optional<std::string>(
      "value_head", (std::filesystem::path(o.model_dir) / "value_head.safetensors").string());
  o.dtype = reader.optional<std::string>("dtype", o.dtype);
  parse_dtype(o.dtype, reader.path("dtype"));
  o.device = reader.optional<std::string>("device", o.device);
  o.attention = reader.optional<std::string>("attention", o.attention);
  parse_attention(o.attention, reader.path("attention"));
  o.max_batch_tokens = reader.optional<int64_t>("max_batch_tokens", o.max_batch_tokens);
  o.max_batch_size = reader.optional<int64_t>("max_batch_size", o.max_batch_size);
  o.max_padding_fraction = reader.maybe<double>("max_padding_fraction");
  o.min_pixels = reader.maybe<int64_t>("min_pixels");
  o.max_pixels = reader.maybe<int64_t>("max_pixels");
  o.max_sample_tokens = reader.maybe<int64_t>("max_sample_tokens");
  if (o.max_sample_tokens && *o.max_sample_tokens <= 0) reader.fail("max_sample_tokens", "must be positive");
  if (o.max_batch_tokens <= 0) reader.fail("max_batch_tokens", "must be positive");
  if (o.max_batch_size <= 0) reader.fail("max_batch_size", "must be positive");
  if (o.max_padding_fraction && !(*o.max_padding_fraction >= 0))
    reader.fail("max_padding_fraction", "must be a non-negative number");
  reader.finish();
  return o;
}

std::unique_ptr<RewardBackend> make_skywork_vl_backend(const SkyworkVLOptions& options) {
  try {
    return std::make_unique<SkyworkVLReward>(options);
  } catch (const InputError& e) {
    throw ConfigError(std::string("skywork_vl: ") + e.what());
  }
}

}  // namespace vlreward
