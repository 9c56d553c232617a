#include "adapters/qwen2_5_vl/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <boost/program_options.hpp>
#include <filesystem>
#include <fmt/format.h>

#include "adapters/common/error.h"

namespace vlreward::qwen {
namespace {

bool has(const std::vector<std::string>& list, const char* name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

// The linear layers of one decoder layer / vision block as (name, in, out).
struct LinearShape {
  const char* name;
  int64_t in, out;
};

std::vector<LinearShape> decoder_linears(const Qwen2_5_VLTextConfig& t) {
  const int64_t h = t.hidden_size, kv = t.num_key_value_heads * t.head_dim(), i = t.intermediate_size;
  return {{"q_proj", h, h}, {"k_proj", h, kv}, {"v_proj", h, kv}, {"o_proj", h, h},
          {"gate_proj", h, i}, {"up_proj", h, i}, {"down_proj", i, h}};
}

std::vector<LinearShape> vision_linears(const Qwen2_5_VLVisionConfig& v) {
  const int64_t h = v.hidden_size, i = v.intermediate_size;
  return {{"qkv", h, 3 * h}, {"proj", h, h}, {"gate_proj", h, i}, {"up_proj", h, i}, {"down_proj", i, h}};
}

// Bytes one token keeps for the LoRA branches of one layer: each adapted layer's rank-r intermediate, and over a
// non-float32 base one float32 copy per distinct input (q/k/v share one, gate/up share one: lora_input()); over a
// float32 base the inputs are the layers' own.
int64_t lora_activation_bytes(const std::vector<LinearShape>& layers, const std::vector<std::string>& targets, int64_t r,
                              int64_t a) {
  int64_t bytes = 0;
  std::vector<std::string> inputs;  // one name per shared input
  auto input_of = [](const std::string& name) -> std::string {
    if (name == "q_proj" || name == "k_proj" || name == "v_proj") return "attention";
    if (name == "gate_proj" || name == "up_proj") return "mlp";
    return name;
  };
  for (const auto& l : layers) {
    if (!has(targets, l.name)) continue;
    bytes += 4 * r;
    const std::string input = input_of(l.name);
    if (a < 4 && std::find(inputs.begin(), inputs.end(), input) == inputs.end()) {
      inputs.push_back(input);
      bytes += 4 * l.in;
    }
  }
  return bytes;
}

}  // namespace

TrainingSetup training_setup(const ModelSource& model, const std::optional<LoraSettings>& lora,
                             const FreezeRules& freeze, const CheckpointingRules& checkpointing) {
  TrainingSetup s;
  s.parameter_bytes = model.dtype == "bfloat16" ? 2 : 4;
  s.lora = lora;
  s.freeze = freeze;
  s.checkpointing = checkpointing;
  return s;
}

ParameterCounts count_parameters(const Qwen2_5_VLConfig& config, const TrainingSetup& setup) {
  const auto& t = config.text;
  const auto& v = config.vision;
  ParameterCounts c;
  const int64_t h = t.hidden_size, kv = t.num_key_value_heads * t.head_dim();
  int64_t layer = 2 * h;  // the two RMSNorms
  for (const auto& l : decoder_linears(t)) layer += l.in * l.out;
  layer += h + 2 * kv;  // q/k/v biases
  c.decoder = t.vocab_size * h + t.num_hidden_layers * layer + h;
  c.lm_head = t.tie_word_embeddings ? 0 : t.vocab_size * h;
  const int64_t hv = v.hidden_size;
  int64_t block = 2 * hv;
  for (const auto& l : vision_linears(v)) block += l.in * l.out + l.out;  // every vision linear has a bias
  const int64_t patch = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
  c.vision = hv * patch + v.depth * block;
  const int64_t merged = hv * v.spatial_merge_size * v.spatial_merge_size;
  c.merger = hv + merged * merged + merged + merged * v.out_hidden_size + v.out_hidden_size;
  c.total = c.decoder + c.lm_head + c.vision + c.merger;
  if (setup.lora) {
    const auto& s = *setup.lora;
    for (const auto& l : decoder_linears(t))
      if (has(s.target_modules, l.name)) c.trainable += t.num_hidden_layers * s.r * (l.in + l.out);
    for (const auto& l : vision_linears(v))
      if (has(s.vision_target_modules, l.name)) c.trainable += v.depth * s.r * (l.in + l.out);
    if (has(s.vision_target_modules, "merger"))
      c.trainable += s.r * (merged + merged) + s.r * (merged + v.out_hidden_size);
  } else {
    const auto& f = setup.freeze;
    c.trainable = (f.vision_tower ? 0 : c.vision) + (f.merger ? 0 : c.merger) + (f.llm ? 0 : c.decoder) +
                  (f.llm || !f.lm_head_in_objective ? 0 : c.lm_head);
  }
  return c;
}

MemoryPlan plan_training_memory(const Qwen2_5_VLConfig& config, const TrainingSetup& setup,
                                const MicroBatchShape& shape) {
  const auto& t = config.text;
  const auto& v = config.vision;
  MemoryPlan p;
  p.parameters = count_parameters(config, setup);
  const int64_t a = setup.parameter_bytes;
  p.weights = p.parameters.total * a;
  p.reference = setup.reference_copy ? p.weights : 0;
  const int64_t trainable_bytes = setup.lora ? 4 : a;
  p.trainable = setup.lora ? p.parameters.trainable * 4 : 0;
  p.gradients = p.parameters.trainable * trainable_bytes;
  // AdamW steps float32 (masters of bf16 parameters, moments in the masters' dtype); ZeRO-1 cuts both into slices.
  const int64_t optimizer_bytes = 8 + (trainable_bytes == 4 ? 0 : 4);
  const int64_t shards = setup.shard_optimizer ? std::max<int64_t>(1, setup.world_size) : 1;
  p.optimizer = (p.parameters.trainable * optimizer_bytes + shards - 1) / shards;
  p.optimizer_shards = shards;

  // Which parts record a graph.
  const LoraSettings s = setup.lora.value_or(LoraSettings{});
  const bool decoder_graph = setup.lora ? !s.target_modules.empty() : !setup.freeze.llm;
  bool vision_adapted = false;
  for (const auto& l : vision_linears(v)) vision_adapted = vision_adapted || has(s.vision_target_modules, l.name);
  const bool vision_graph = setup.lora ? vision_adapted : !setup.freeze.vision_tower;
  const bool decoder_trains = !setup.lora && !setup.freeze.llm;  // its linear layers keep their inputs
  const bool vision_trains = !setup.lora && !setup.freeze.vision_tower;

  const int64_t h = t.hidden_size, kv = t.num_key_value_heads * t.head_dim(), i = t.intermediate_size;
  // Per token of one decoder layer (see the header); a frozen base keeps less: its linear layers need no inputs.
  int64_t layer_token = decoder_trains ? a * (7 * h + 4 * kv + 4 * i) + 8 * h
                                       : a * (2 * h + 2 * kv + 3 * i) + 8 * h;
  if (setup.lora) layer_token += lora_activation_bytes(decoder_linears(t), s.target_modules, s.r, a);
  const int64_t hv = v.hidden_size, iv = v.intermediate_size;
  int64_t block_patch = vision_trains ? a * (11 * hv + 4 * iv) + 8 * hv : a * (6 * hv + 3 * iv) + 8 * hv;
  if (setup.lora) block_patch += lora_activation_bytes(vision_linears(v), s.vision_target_modules, s.r, a);

  const int64_t tokens = shape.rows * shape.tokens;
  const int64_t patches = shape.rows * shape.image_patches;
  const int64_t decoder_layer = decoder_graph ? tokens * layer_token : 0;
  const int64_t vision_block = vision_graph ? patches * block_patch : 0;
  // Kept around the layers: embeddings and the final norm's input/output, the completion rows' hidden states.
  const int64_t outside =
      decoder_graph ? tokens * (3 * a * h) + (setup.lm_head_logits ? 4 * shape.rows * shape.completion_tokens * h : 0) : 0;
  p.activations_without_checkpointing = t.num_hidden_layers * decoder_layer + v.depth * vision_block + outside;
  p.activations_with_checkpointing = (decoder_graph ? t.num_hidden_layers * tokens * a * h : 0) +
                                     (vision_graph ? v.depth * patches * a * hv : 0) + outside;
  const auto& cp = setup.checkpointing;
  p.activations = (cp.decoder_layers ? (decoder_graph ? t.num_hidden_layers * tokens * a * h : 0)
                                     : t.num_hidden_layers * decoder_layer) +
                  (cp.vision_blocks ? (vision_graph ? v.depth * patches * a * hv : 0) : v.depth * vision_block) +
                  outside;
  const int64_t chunk_rows = std::min(setup.logprob_chunk, shape.rows * shape.completion_tokens);
  // A chunk's logits in the compute dtype, their float32 copy and log-sum-exp's float32 temporary.
  const int64_t logits = setup.lm_head_logits ? 5 * chunk_rows * t.vocab_size * 4 / 2 : 0;
  const int64_t recompute = std::max(cp.decoder_layers ? decoder_layer : 0, cp.vision_blocks ? vision_block : 0);
  p.transient = std::max(logits, recompute);
  return p;
}

int64_t largest_fitting_batch(const Qwen2_5_VLConfig& config, const TrainingSetup& setup, MicroBatchShape shape,
                              int64_t budget_bytes, int64_t rows_per_example) {
  int64_t best = 0;
  for (int64_t pairs = 1; pairs <= 4096; pairs *= 2) {
    shape.rows = rows_per_example * pairs;
    if (plan_training_memory(config, setup, shape).total() > budget_bytes) break;
    best = pairs;
  }
  if (best == 0) return 0;
  for (int64_t pairs = best + 1; pairs < 2 * best; ++pairs) {  // refine between best and 2·best
    shape.rows = rows_per_example * pairs;
    if (plan_training_memory(config, setup, shape).total() > budget_bytes) break;
    best = pairs;
  }
  return best;
}

int64_t parse_memory_size(const std::string& text, const std::string& source) {
  size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    throw InputError(source, fmt::format("\"{}\" is not a size (e.g. 80GiB, 80GB, 512MiB)", text));
  }
  std::string unit;
  for (size_t k = end; k < text.size(); ++k)
    if (!std::isspace(static_cast<unsigned char>(text[k]))) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[k])));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "kib") scale = 1024.0;
  else if (unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "kb") scale = 1e3;
  else if (unit == "mb") scale = 1e6;
  else if (unit == "gb") scale = 1e9;
  if (scale == 0 || !(value > 0) || !std::isfinite(value))
    throw InputError(source, fmt::format("\"{}\" is not a size (e.g. 80GiB, 80GB, 512MiB)", text));
  return static_cast<int64_t>(value * scale);
}

std::string format_memory_plan(const MemoryPlan& p, const MicroBatchShape& shape, int64_t budget_bytes,
                               int64_t largest_pairs) {
  auto gib = [](int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024 * 1024); };
  std::string out = fmt::format(
      "parameters: {:.3f} B ({:.3f} B trainable)\n"
      "micro-batch: {} rows x {} tokens, {} image patches per row, {} completion tokens per row\n"
      "  weights                         {:9.2f} GiB\n"
      "  reference copy                  {:9.2f} GiB\n"
      "  trainable adapters (float32)    {:9.2f} GiB\n"
      "  gradients                       {:9.2f} GiB\n"
      "  AdamW state + float32 masters   {:9.2f} GiB{}\n"
      "  activations                     {:9.2f} GiB  (without checkpointing {:.2f}, with {:.2f})\n"
      "  largest transient buffer        {:9.2f} GiB\n"
      "  total                           {:9.2f} GiB\n",
      static_cast<double>(p.parameters.total) / 1e9, static_cast<double>(p.parameters.trainable) / 1e9, shape.rows,
      shape.tokens, shape.image_patches, shape.completion_tokens, gib(p.weights), gib(p.reference), gib(p.trainable),
      gib(p.gradients), gib(p.optimizer), p.optimizer_shards > 1 ? fmt::format("  (1/{} of it: sharded)", p.optimizer_shards) : "",
      gib(p.activations), gib(p.activations_without_checkpointing),
      gib(p.activations_with_checkpointing), gib(p.transient), gib(p.total()));
  if (budget_bytes > 0)
    out += fmt::format("fits in {:.1f} GiB: {}; largest micro-batch that fits: {} example(s)\n", gib(budget_bytes),
                       p.total() <= budget_bytes ? "yes" : "no", largest_pairs);
  return out;
}

void add_memory_plan_options(boost::program_options::options_description& options) {
  namespace po = boost::program_options;
  options.add_options()
      ("plan", "print the memory this config needs on one device (nothing is loaded or allocated) and exit")
      ("plan-gpu-memory", po::value<std::string>(), "with --plan: the device's memory (e.g. 80GiB): does it fit, and the "
                                                    "largest micro-batch that does")
      ("plan-tokens", po::value<int64_t>()->default_value(2048), "with --plan: tokens per sequence (prompt, image "
                                                                 "tokens and completion)")
      ("plan-completion-tokens", po::value<int64_t>()->default_value(512), "with --plan: completion tokens per sequence")
      ("plan-image-pixels", po::value<int64_t>()->default_value(448 * 448), "with --plan: image pixels per sequence "
                                                                            "(0: text only)")
      ("plan-world-size", po::value<int64_t>()->default_value(1), "with --plan: data-parallel ranks (one device each); "
                                                                  "with train.shard_optimizer the optimizer state is "
                                                                  "split over them");
}

std::string memory_plan_for_options(const boost::program_options::variables_map& vm, const std::string& model_path,
                                    const TrainingSetup& given_setup, int64_t examples_per_micro_batch,
                                    int64_t rows_per_example) {
  TrainingSetup setup = given_setup;
  setup.world_size = vm["plan-world-size"].as<int64_t>();
  if (setup.world_size < 1) throw InputError("--plan-world-size", "must be >= 1");
  const auto config = Qwen2_5_VLConfig::load((std::filesystem::path(model_path) / "config.json").string());
  MicroBatchShape shape;
  shape.rows = rows_per_example * examples_per_micro_batch;
  shape.tokens = vm["plan-tokens"].as<int64_t>();
  shape.completion_tokens = vm["plan-completion-tokens"].as<int64_t>();
  const int64_t pixels = vm["plan-image-pixels"].as<int64_t>();
  if (shape.tokens < 2) throw InputError("--plan-tokens", "must be >= 2");
  if (shape.completion_tokens < 1 || shape.completion_tokens >= shape.tokens)
    throw InputError("--plan-completion-tokens", "must be >= 1 and less than --plan-tokens");
  if (pixels < 0) throw InputError("--plan-image-pixels", "must be >= 0");
  shape.image_patches = pixels / (config.vision.patch_size * config.vision.patch_size);
  const MemoryPlan plan = plan_training_memory(config, setup, shape);
  int64_t budget = 0, largest = 0;
  if (vm.count("plan-gpu-memory")) {
    budget = parse_memory_size(vm["plan-gpu-memory"].as<std::string>(), "--plan-gpu-memory");
    largest = largest_fitting_batch(config, setup, shape, budget, rows_per_example);
  }
  return model_path + "\n" + format_memory_plan(plan, shape, budget, largest);
}

}  // namespace vlreward::qwen
