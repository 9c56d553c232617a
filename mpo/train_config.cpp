#include "mpo/train_config.h"

#include <cmath>
#include <cstdint>

#include "adapters/common/config_file.h"
#include "plugin/config_reader.h"

namespace vlreward::mpo {
namespace {

using nlohmann::json;
using Section = ConfigReader;

}  // namespace

TrainConfig TrainConfig::from_json(const json& config, const std::string& source) {
  TrainConfig c;
  Section root(config, "", source);

  Section model = root.section("model");
  static_cast<qwen::ModelSource&>(c.model) = qwen::read_model_section(model);
  c.model.bf16_autocast = model.optional<bool>("bf16_autocast", c.model.bf16_autocast);
  model.finish();

  Section reference = root.section("reference");
  const std::string ref_source = reference.optional<std::string>("source", "model");
  if (ref_source == "model") c.reference.source = ReferenceSource::kModel;
  else if (ref_source == "precomputed") c.reference.source = ReferenceSource::kPrecomputed;
  else reference.fail("source", "must be \"model\" or \"precomputed\", got \"" + ref_source + "\"");
  c.reference.path = reference.optional<std::string>("path", "");
  if (c.reference.source == ReferenceSource::kPrecomputed && !c.reference.path.empty())
    reference.fail("path", "is only used with source \"model\"");
  c.reference.precompute = reference.optional<bool>("precompute", false);
  if (c.reference.precompute && c.reference.source != ReferenceSource::kModel)
    reference.fail("precompute", "computes the reference model's log-probs: it needs source \"model\"");
  if (c.reference.precompute && root.raw("online") != nullptr)
    reference.fail("precompute", "applies to offline data (online pairs are new every round)");
  reference.finish();

  c.lora = qwen::read_optional_lora(root);
  if (c.lora && !c.reference.path.empty())
    throw ConfigError(source, "reference.path: with lora the reference is the base model (model.path) with the "
                              "adapters disabled; remove reference.path");
  Section freeze = root.section("freeze");
  c.freeze = qwen::read_freeze_section(freeze, c.freeze);
  if (c.freeze.vision_tower && c.freeze.merger && c.freeze.llm)
    throw ConfigError(source, "freeze: vision_tower, merger and llm are all frozen: nothing would train");

  const bool online = root.raw("online") != nullptr;
  Section data = root.section("data");
  if (online) {
    if (data.raw("train") != nullptr) data.fail("train", "is not used with online (the pairs come from online.prompts); remove it");
  } else {
    c.data.train = data.required_text("train");
  }
  c.data.image_root = data.optional<std::string>("image_root", "");
  c.data.shuffle = data.optional<bool>("shuffle", true);
  data.finish();

  Section loss = root.section("loss");
  if (const json* types = loss.raw("loss_type")) {
    if (types->is_string()) {
      c.loss.terms = {parse_loss_term(types->get<std::string>(), source + ": " + loss.path("loss_type"))};
    } else if (types->is_array()) {
      c.loss.terms.clear();
      for (size_t i = 0; i < types->size(); ++i) {
        const std::string where = "loss_type[" + std::to_string(i) + "]";
        c.loss.terms.push_back(
            parse_loss_term(loss.element<std::string>((*types)[i], where), source + ": " + loss.path(where)));
      }
    } else {
      loss.fail("loss_type", "must be a loss name or a list of them, got " + types->dump());
    }
    // Weights default to 1 per term (TRL), unless given.
    c.loss.weights.assign(c.loss.terms.size(), 1.0);
  }
  if (auto weights = loss.maybe<std::vector<double>>("loss_weights")) c.loss.weights = *weights;
  c.loss.beta = loss.optional<double>("beta", c.loss.beta);
  c.loss.label_smoothing = loss.optional<double>("label_smoothing", c.loss.label_smoothing);
  c.loss.bco_reward_shift = loss.optional<bool>("bco_reward_shift", c.loss.bco_reward_shift);
  const std::string sft_tokens = loss.optional<std::string>("sft_tokens", "completion");
  if (sft_tokens == "completion") c.sft_tokens = SftTokens::kCompletion;
  else if (sft_tokens == "trl_0.28") c.sft_tokens = SftTokens::kTrl028IgnoreIdZero;
  else loss.fail("sft_tokens", "must be \"completion\" or \"trl_0.28\", got \"" + sft_tokens + "\"");
  loss.finish();
  c.loss.validate(source + ": loss");
  if (c.reference.precompute && c.sft_only())
    throw ConfigError(source, "reference.precompute: has no use with loss_type [sft]");
  if (c.reference.source == ReferenceSource::kPrecomputed && c.loss.terms.size() == 1 && c.loss.uses(LossTerm::kSft))
    throw ConfigError(source, "reference.source: \"precomputed\" has no use with loss_type [sft]");

  Section train = root.section("train");
  auto& t = c.train;
  auto positive = [&](const char* key, double v) {
    if (!(v > 0)) train.fail(key, "must be > 0, got " + json(v).dump());
    return v;
  };
  auto non_negative = [&](const char* key, double v) {
    if (v < 0) train.fail(key, "must be >= 0, got " + json(v).dump());
    return v;
  };
  auto unit = [&](const char* key, double v) {
    if (!(v >= 0 && v < 1)) train.fail(key, "must be in [0, 1), got " + json(v).dump());
    return v;
  };
  t.learning_rate = positive("learning_rate", train.optional<double>("learning_rate", t.learning_rate));
  t.weight_decay = non_negative("weight_decay", train.optional<double>("weight_decay", t.weight_decay));
  t.adam_beta1 = unit("adam_beta1", train.optional<double>("adam_beta1", t.adam_beta1));
  t.adam_beta2 = unit("adam_beta2", train.optional<double>("adam_beta2", t.adam_beta2));
  t.adam_epsilon = positive("adam_epsilon", train.optional<double>("adam_epsilon", t.adam_epsilon));
  t.warmup_ratio = train.optional<double>("warmup_ratio", t.warmup_ratio);
  if (!(t.warmup_ratio >= 0 && t.warmup_ratio <= 1)) train.fail("warmup_ratio", "must be in [0, 1], got " + json(t.warmup_ratio).dump());
  t.max_grad_norm = non_negative("max_grad_norm", train.optional<double>("max_grad_norm", t.max_grad_norm));
  t.batch_size = static_cast<int64_t>(positive("batch_size", static_cast<double>(train.optional<int64_t>("batch_size", t.batch_size))));
  t.gradient_accumulation_steps = static_cast<int64_t>(
      positive("gradient_accumulation_steps",
               static_cast<double>(train.optional<int64_t>("gradient_accumulation_steps", t.gradient_accumulation_steps))));
  const std::optional<int64_t> epochs = train.maybe<int64_t>("epochs");
  t.epochs = static_cast<int64_t>(positive("epochs", static_cast<double>(epochs.value_or(t.epochs))));
  t.max_steps = static_cast<int64_t>(non_negative("max_steps", static_cast<double>(train.optional<int64_t>("max_steps", t.max_steps))));
  if (online && t.max_steps > 0) train.fail("max_steps", "is not used with online (each round trains online.epochs_per_round epochs)");
  const int64_t seed = train.optional<int64_t>("seed", static_cast<int64_t>(t.seed));
  if (seed < 0) train.fail("seed", "must be >= 0");
  t.seed = static_cast<uint64_t>(seed);
  t.num_threads = static_cast<int64_t>(non_negative("num_threads", static_cast<double>(train.optional<int64_t>("num_threads", t.num_threads))));
  t.gradient_checkpointing = qwen::read_gradient_checkpointing(train);
  t.logprob_chunk_size = static_cast<int64_t>(
      positive("logprob_chunk_size", static_cast<double>(train.optional<int64_t>("logprob_chunk_size", t.logprob_chunk_size))));
  t.data_parallel = qwen::read_data_parallel(train);
  train.finish();

  Section output = root.section("output");
  c.output.dir = output.required_text("dir");
  c.output.save_steps = output.optional<int64_t>("save_steps", c.output.save_steps);
  if (c.output.save_steps < 0) output.fail("save_steps", "must be >= 0 (0 = only at the end)");
  c.output.save_total_limit = output.optional<int64_t>("save_total_limit", c.output.save_total_limit);
  if (c.output.save_total_limit < 1) output.fail("save_total_limit", "must be >= 1 (the newest checkpoint is the resume point)");
  c.output.tensorboard = output.optional<bool>("tensorboard", c.output.tensorboard);
  c.output.jsonl = output.optional<bool>("jsonl", c.output.jsonl);
  c.output.progress = output.optional<bool>("progress", c.output.progress);
  output.finish();

  if (online) {
    Section o = root.section("online");
    TrainConfig::Online on;
    on.prompts = o.required_text("prompts");
    auto at_least = [&](const char* key, int64_t fallback, int64_t minimum) {
      const int64_t v = o.optional<int64_t>(key, fallback);
      if (v < minimum) o.fail(key, fmt::format("must be >= {}, got {}", minimum, v));
      return v;
    };
    on.rounds = at_least("rounds", on.rounds, 1);
    on.samples_per_prompt = at_least("samples_per_prompt", on.samples_per_prompt, 2);
    on.temperature = o.optional<double>("temperature", on.temperature);
    if (on.temperature < 0) o.fail("temperature", "must be >= 0 (0 = greedy)");
    on.top_p = o.optional<double>("top_p", on.top_p);
    if (!(on.top_p > 0 && on.top_p <= 1)) o.fail("top_p", "must be in (0, 1], got " + json(on.top_p).dump());
    on.top_k = at_least("top_k", on.top_k, 0);
    on.max_new_tokens = at_least("max_new_tokens", on.max_new_tokens, 1);
    on.seed = static_cast<uint64_t>(at_least("seed", 0, 0));
    on.pairs.min_margin = o.optional<double>("min_margin", on.pairs.min_margin);
    if (on.pairs.min_margin < 0) o.fail("min_margin", "must be >= 0");
    const std::string mode = o.optional<std::string>("pair_mode", "max_min");
    if (mode == "max_min") on.pairs.mode = PairMode::kMaxMin;
    else if (mode == "max_random") on.pairs.mode = PairMode::kMaxRandom;
    else o.fail("pair_mode", "must be \"max_min\" or \"max_random\", got \"" + mode + "\"");
    on.pairs.pairs_per_prompt = at_least("pairs_per_prompt", on.pairs.pairs_per_prompt, 1);
    on.epochs_per_round = at_least("epochs_per_round", on.epochs_per_round, 1);
    on.batch_size = at_least("batch_size", on.batch_size, 1);
    on.reward_batch_size = at_least("reward_batch_size", on.reward_batch_size, 1);
    on.reference_refresh_rounds = at_least("reference_refresh_rounds", on.reference_refresh_rounds, 0);
    if (o.has("monitor")) {
      Section monitor = o.section("monitor");
      on.monitor = read_monitor_settings(monitor);
    }
    o.finish();
    // One number of epochs: the round's. train.epochs may repeat it (as the normalised config does) but not differ.
    if (epochs && *epochs != on.epochs_per_round)
      train.fail("epochs", fmt::format("online runs train online.epochs_per_round ({}) epochs per round; remove "
                                       "train.epochs (it is {})", on.epochs_per_round, *epochs));
    c.train.epochs = on.epochs_per_round;
    const json* reward_config = root.raw("reward");
    if (reward_config == nullptr) throw ConfigError(source, "reward: is required with online (a reward backend config, {type: ...})");
    if (!reward_config->is_object()) throw ConfigError(source, "reward: must be a mapping with a \"type\", got " + reward_config->dump());
    c.reward = *reward_config;
    c.online = on;
  } else if (root.raw("reward") != nullptr) {
    throw ConfigError(source, "reward: is only used with online (add an online: section or remove reward)");
  }

  if (c.online && c.online->reference_refresh_rounds > 0 && (!c.uses_reference_model() || c.reference.precompute))
    throw ConfigError(source, "online.reference_refresh_rounds: needs a reference model to refresh (reference.source "
                              "model, no lora, no reference.precompute, a loss that uses the reference)");
  root.finish();
  return c;
}

json TrainConfig::to_json() const {
  json types = json::array();
  for (auto term : loss.terms) types.push_back(std::string(loss_term_name(term)));
  json m{{"path", model.path}, {"dtype", model.dtype}, {"device", model.device}, {"bf16_autocast", model.bf16_autocast}};
  if (model.min_pixels) m["min_pixels"] = *model.min_pixels;
  if (model.max_pixels) m["max_pixels"] = *model.max_pixels;
  json out{
      {"model", m},
      {"reference",
       {{"source", reference.source == ReferenceSource::kModel ? "model" : "precomputed"}, {"path", reference.path},
        {"precompute", reference.precompute}}},
      {"freeze", {{"vision_tower", freeze.vision_tower}, {"merger", freeze.merger}, {"llm", freeze.llm}}},
      {"data", online ? json{{"image_root", data.image_root}, {"shuffle", data.shuffle}}
                      : json{{"train", data.train}, {"image_root", data.image_root}, {"shuffle", data.shuffle}}},
      {"loss",
       {{"loss_type", types},
        {"loss_weights", loss.weights},
        {"beta", loss.beta},
        {"label_smoothing", loss.label_smoothing},
        {"bco_reward_shift", loss.bco_reward_shift},
        {"sft_tokens", sft_tokens == SftTokens::kCompletion ? "completion" : "trl_0.28"}}},
      {"train",
       {{"learning_rate", train.learning_rate},
        {"weight_decay", train.weight_decay},
        {"adam_beta1", train.adam_beta1},
        {"adam_beta2", train.adam_beta2},
        {"adam_epsilon", train.adam_epsilon},
        {"warmup_ratio", train.warmup_ratio},
        {"max_grad_norm", train.max_grad_norm},
        {"batch_size", train.batch_size},
        {"gradient_accumulation_steps", train.gradient_accumulation_steps},
        {"epochs", train.epochs},
        {"max_steps", train.max_steps},
        {"seed", train.seed},
        {"num_threads", train.num_threads},
        {"gradient_checkpointing", qwen::checkpointing_to_json(train.gradient_checkpointing)},
        {"logprob_chunk_size", train.logprob_chunk_size}}},
      {"output",
       {{"dir", output.dir},
        {"save_steps", output.save_steps},
        {"save_total_limit", output.save_total_limit},
        {"tensorboard", output.tensorboard},
        {"jsonl", output.jsonl},
        {"progress", output.progress}}},
  };
  if (lora) out["lora"] = qwen::lora_to_json(*lora);
  if (online) {
    const auto& o = *online;
    out["online"] = {{"prompts", o.prompts},
                     {"rounds", o.rounds},
                     {"samples_per_prompt", o.samples_per_prompt},
                     {"temperature", o.temperature},
                     {"top_p", o.top_p},
                     {"top_k", o.top_k},
                     {"max_new_tokens", o.max_new_tokens},
                     {"seed", o.seed},
                     {"min_margin", o.pairs.min_margin},
                     {"pair_mode", pair_mode_name(o.pairs.mode)},
                     {"pairs_per_prompt", o.pairs.pairs_per_prompt},
                     {"epochs_per_round", o.epochs_per_round},
                     {"batch_size", o.batch_size},
                     {"reward_batch_size", o.reward_batch_size},
                     {"reference_refresh_rounds", o.reference_refresh_rounds}};
    if (o.monitor) out["online"]["monitor"] = o.monitor->to_json();
    out["reward"] = reward;
  }
  qwen::data_parallel_to_json(train.data_parallel, out["train"]);
  return out;
}

qwen::TrainingSetup TrainConfig::memory_setup() const {
  qwen::TrainingSetup s = qwen::training_setup(model, lora, freeze, train.gradient_checkpointing);
  s.reference_copy = uses_reference_model() && !reference.precompute;
  s.logprob_chunk = train.logprob_chunk_size;
  s.shard_optimizer = train.data_parallel.shard_optimizer;
  return s;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  json config = load_config_file(path);
  for (const auto& assignment : overrides) apply_override(config, assignment);
  return TrainConfig::from_json(config, path);
}

}  // namespace vlreward::mpo
