// The memory-saving paths of training give the results of the plain ones: chunked log-probabilities (lm_head +
// log-softmax + gather per chunk of positions, logits recomputed in the backward pass) vs the logits of the whole
// batch; gradient checkpointing of decoder layers and vision blocks vs keeping the activations (also with LoRA
// dropout, whose masks the recomputation must draw again); a frozen vision tower runs without a graph.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "adapters/qwen2_5_vl/checkpointing.h"
#include "adapters/common/error.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/lora.h"
#include "adapters/qwen2_5_vl/memory_plan.h"
#include "adapters/qwen2_5_vl/optimizer.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "mpo/logprobs.h"
#include "tests/mpo_test_support.h"

using namespace vlreward;
using namespace vlreward::mpo;

namespace {

const std::string kModelDir = std::string(VLREWARD_FIXTURES_DIR) + "/model/tiny";

double relative_error(const torch::Tensor& actual, const torch::Tensor& want) {
  const auto a = actual.detach().cpu().to(torch::kFloat64);
  const auto e = want.detach().cpu().to(torch::kFloat64);
  return (a - e).abs().max().item<double>() / std::max(e.abs().max().item<double>(), 1e-30);
}

const Qwen2_5_VLProcessor& processor() {
  static const Qwen2_5_VLProcessor p = Qwen2_5_VLProcessor::from_directory(kModelDir);
  return p;
}

qwen::Qwen2_5_VLModel load_tiny() { return qwen::load_pretrained(kModelDir, torch::kFloat32, torch::kCPU).model; }

// Gradients of a loss over the chunked log-probs of the fixture's first 2 pairs (images included), by name.
std::map<std::string, torch::Tensor> gradients(qwen::Qwen2_5_VLModel& model, const qwen::NamedParameters& trainable,
                                               double* loss_out) {
  qwen::clear_gradients(trainable);
  const auto batch = test_support::fixture_micro_batch(processor(), 0, 2);
  qwen::ForwardOptions options;
  options.logits = false;
  const auto hidden = model->forward(batch.input, options).last_hidden_state;
  const auto lp = chunked_completion_logps(hidden, model->lm_head_weight(), batch.input.input_ids,
                                           batch.completion_mask, 7);
  const auto pairs = split_pairs(lp.sequence_logps, batch.num_pairs);
  const auto loss = -torch::log_sigmoid(0.1 * (pairs.chosen - pairs.rejected)).mean() +
                    sft_nll(lp, batch.input.input_ids, batch.num_pairs);
  loss.backward();
  *loss_out = loss.item<double>();
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, p] : trainable) out[name] = p.grad().defined() ? p.grad().clone() : torch::Tensor();
  return out;
}

void expect_same_gradients(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
                           const char* what) {
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, g] : a) {
    const auto& h = b.at(name);
    ASSERT_EQ(g.defined(), h.defined()) << what << ": " << name;
    if (!g.defined()) continue;
    const double e = relative_error(h, g);
    worst = std::max(worst, e);
    EXPECT_LE(e, 1e-6) << what << ": " << name;
  }
  std::printf("[training_memory] %s: %zu gradients, max rel %.3g\n", what, a.size(), worst);
}

}  // namespace

TEST(ChunkedLogps, EqualsTheWholeBatchsLogitsInValuesAndGradients) {
  torch::manual_seed(7);
  const int64_t R = 3, S = 11, H = 16, V = 53;
  const auto hidden = torch::randn({R, S, H}, torch::kFloat64).requires_grad_();
  const auto weight = (0.3 * torch::randn({V, H}, torch::kFloat64)).requires_grad_();
  const auto ids = torch::randint(0, V, {R, S}, torch::kInt64);
  auto mask = torch::zeros({R, S}, torch::kInt64);
  mask.slice(1, 4, 9).fill_(1);
  mask[1].slice(0, 2, 11).fill_(1);
  mask[2].zero_();  // a row without completion tokens
  const auto coefficients = torch::randn({R}, torch::kFloat64);

  const auto whole = completion_logps(at::linear(hidden, weight), ids, mask);
  (whole.sequence_logps * coefficients).sum().backward();
  const auto grad_hidden = hidden.grad().clone(), grad_weight = weight.grad().clone();
  hidden.mutable_grad().reset();
  weight.mutable_grad().reset();
  for (const int64_t chunk : {1, 4, 1000}) {
    const auto chunked = chunked_completion_logps(hidden.to(torch::kFloat32), weight.to(torch::kFloat32), ids, mask, chunk);
    EXPECT_LE(relative_error(chunked.token_logps, whole.token_logps), 1e-6) << chunk;
    EXPECT_LE(relative_error(chunked.sequence_logps, whole.sequence_logps), 1e-6) << chunk;
    EXPECT_TRUE(torch::equal(chunked.token_mask, whole.token_mask));
    (chunked.sequence_logps * coefficients.to(torch::kFloat32)).sum().backward();
    EXPECT_LE(relative_error(hidden.grad(), grad_hidden), 1e-6) << chunk;
    EXPECT_LE(relative_error(weight.grad(), grad_weight), 1e-6) << chunk;
    hidden.mutable_grad().reset();
    weight.mutable_grad().reset();
  }
  EXPECT_THROW(chunked_completion_logps(hidden, weight.slice(0, 0, 5), ids, mask), std::invalid_argument);
  EXPECT_THROW(chunked_completion_logps(hidden, weight, ids, mask, 0), std::invalid_argument);
}

TEST(ChunkedLogps, ModelsLogitsAndChunksAgreeOnTheFixture) {
  auto model = load_tiny();
  const auto batch = test_support::fixture_micro_batch(processor(), 0, 4);
  torch::NoGradGuard no_grad;
  const auto out = model->forward(batch.input);
  const auto whole = completion_logps(out.logits, batch.input.input_ids, batch.completion_mask);
  const auto chunked = chunked_completion_logps(out.last_hidden_state, model->lm_head_weight(), batch.input.input_ids,
                                                batch.completion_mask, 5);
  EXPECT_LE(relative_error(chunked.sequence_logps, whole.sequence_logps), 1e-6);
}

TEST(GradientCheckpointing, RecomputesTheBlockInTheBackwardPass) {
  int calls = 0;
  torch::manual_seed(3);
  const auto w = torch::randn({4, 4}).requires_grad_();
  const qwen::Block block = [&calls, w](const torch::Tensor& x) {
    ++calls;
    return torch::tanh(x.mm(w));
  };
  const auto x = torch::randn({3, 4});  // needs no gradient: w alone makes the result need one
  const auto y = qwen::checkpointed(block, x, {w});
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  EXPECT_EQ(calls, 2);  // once more in the backward pass
  const auto checkpointed_grad = w.grad().clone();
  w.mutable_grad().reset();
  block(x).sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), checkpointed_grad));
  {
    torch::NoGradGuard no_grad;  // nothing records: the block runs as it is, once
    calls = 0;
    EXPECT_FALSE(qwen::checkpointed(block, x, {w}).requires_grad());
    EXPECT_EQ(calls, 1);
  }
}

TEST(GradientCheckpointing, SameGradientsForDecoderLayersAndVisionBlocks) {
  auto model = load_tiny();
  model->train();
  const auto trainable = qwen::select_trainable(*model, {});
  double plain_loss = 0, checkpointed_loss = 0;
  const auto plain = gradients(model, trainable, &plain_loss);
  model->set_gradient_checkpointing({/*decoder_layers=*/true, /*vision_blocks=*/true});
  const auto checkpointed = gradients(model, trainable, &checkpointed_loss);
  EXPECT_LE(std::abs(checkpointed_loss - plain_loss) / std::abs(plain_loss), 1e-6);
  expect_same_gradients(plain, checkpointed, "full fine-tuning");
  // Parameters of the vision tower and the first layer got gradients through the recomputation.
  EXPECT_GT(checkpointed.at("visual.blocks.0.attn.qkv.weight").abs().sum().item<double>(), 0);
  EXPECT_GT(checkpointed.at("model.layers.0.self_attn.q_proj.weight").abs().sum().item<double>(), 0);
}

TEST(GradientCheckpointing, LoraWithDropoutDrawsTheSameMasksInTheRecomputation) {
  auto model = load_tiny();
  model->train();
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  qwen::LoraSettings settings;
  settings.dropout = 0.3;
  settings.vision_target_modules = {"qkv", "merger"};
  auto adapters = qwen::LoraAdapters::attach(model, settings, 5);
  {
    torch::NoGradGuard no_grad;  // B starts at zero (PEFT's init): give it values so A gets gradients too
    for (auto& [name, t] : adapters.parameters())
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.02);
  }
  double plain_loss = 0, checkpointed_loss = 0;
  torch::manual_seed(11);
  const auto plain = gradients(model, adapters.parameters(), &plain_loss);
  model->set_gradient_checkpointing({true, true});
  torch::manual_seed(11);
  const auto checkpointed = gradients(model, adapters.parameters(), &checkpointed_loss);
  EXPECT_LE(std::abs(checkpointed_loss - plain_loss) / std::abs(plain_loss), 1e-6);
  expect_same_gradients(plain, checkpointed, "LoRA with dropout 0.3");
  // Different masks give different gradients: the comparison above can fail.
  torch::manual_seed(12);
  double other_loss = 0;
  const auto other = gradients(model, adapters.parameters(), &other_loss);
  EXPECT_GT(relative_error(other.begin()->second, plain.begin()->second), 1e-3);
}

TEST(FrozenVisionTower, RunsWithoutAGraph) {
  auto model = load_tiny();
  model->train();
  qwen::FreezeRules rules;
  rules.vision_tower = rules.merger = true;
  qwen::select_trainable(*model, rules);
  const auto batch = test_support::fixture_micro_batch(processor(), 0, 1);
  const auto image = model->image_embeddings(batch.input.pixel_values, batch.input.image_grids);
  EXPECT_FALSE(image.requires_grad());
  EXPECT_FALSE(image.grad_fn());
  const auto hidden = model->forward(batch.input, {false, false}).last_hidden_state;
  EXPECT_TRUE(hidden.requires_grad());  // the decoder still trains
  // The same with decoder-only LoRA over a frozen base.
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  auto adapters = qwen::LoraAdapters::attach(model, qwen::LoraSettings{}, 1);
  EXPECT_FALSE(model->image_embeddings(batch.input.pixel_values, batch.input.image_grids).grad_fn());
  EXPECT_TRUE(model->forward(batch.input, {false, false}).last_hidden_state.requires_grad());
}

TEST(MemoryPlan, ParameterCountsAreTheModelsOwn) {
  for (const std::string& path : {kModelDir + "/config.json", std::string(VLREWARD_SOURCE_DIR) + "/configs/qwen2_5_vl_7b/config.json"}) {
    const auto config = Qwen2_5_VLConfig::load(path);
    qwen::Qwen2_5_VLModel meta(config, torch::TensorOptions().device(torch::kMeta));
    int64_t total = 0, vision = 0, merger = 0, lm_head = 0;
    for (const auto& p : meta->named_parameters()) {
      total += p.value().numel();
      if (p.key().rfind("visual.merger.", 0) == 0) merger += p.value().numel();
      else if (p.key().rfind("visual.", 0) == 0) vision += p.value().numel();
      else if (p.key().rfind("lm_head.", 0) == 0) lm_head += p.value().numel();
    }
    qwen::TrainingSetup setup;
    const auto counts = qwen::count_parameters(config, setup);
    EXPECT_EQ(counts.total, total) << path;
    EXPECT_EQ(counts.vision, vision) << path;
    EXPECT_EQ(counts.merger, merger) << path;
    EXPECT_EQ(counts.lm_head, lm_head) << path;
    EXPECT_EQ(counts.trainable, total) << path;
    // LoRA: the adapters attach() creates.
    for (auto& p : meta->parameters()) p.set_requires_grad(false);
    setup.lora.emplace();
    setup.lora->vision_target_modules = {"qkv", "proj", "merger"};
    auto adapters = qwen::LoraAdapters::attach(meta, *setup.lora, 0);
    int64_t adapter_params = 0;
    for (const auto& [name, t] : adapters.parameters()) adapter_params += t.numel();
    EXPECT_EQ(qwen::count_parameters(config, setup).trainable, adapter_params) << path;
  }
  // Qwen2.5-VL-7B: 8.29 B parameters.
  const auto seven_b = Qwen2_5_VLConfig::load(std::string(VLREWARD_SOURCE_DIR) + "/configs/qwen2_5_vl_7b/config.json");
  EXPECT_NEAR(static_cast<double>(qwen::count_parameters(seven_b, {}).total) / 1e9, 8.29, 0.01);
}

TEST(MemoryPlan, SizesAndCheckpointing) {
  EXPECT_EQ(qwen::parse_memory_size("80GiB", "x"), int64_t{80} << 30);
  EXPECT_EQ(qwen::parse_memory_size("80 GB", "x"), int64_t{80'000'000'000});
  EXPECT_EQ(qwen::parse_memory_size("512MiB", "x"), int64_t{512} << 20);
  EXPECT_THROW(qwen::parse_memory_size("80 parsecs", "x"), InputError);
  EXPECT_THROW(qwen::parse_memory_size("-1GiB", "x"), InputError);
  const auto seven_b = Qwen2_5_VLConfig::load(std::string(VLREWARD_SOURCE_DIR) + "/configs/qwen2_5_vl_7b/config.json");
  qwen::TrainingSetup setup;
  setup.parameter_bytes = 2;
  setup.lora.emplace();
  setup.lora->r = 16;
  qwen::MicroBatchShape shape{4, 2048, 1024, 512};
  const auto plain = qwen::plan_training_memory(seven_b, setup, shape);
  setup.checkpointing = {true, true};
  const auto checkpointed = qwen::plan_training_memory(seven_b, setup, shape);
  EXPECT_LT(checkpointed.activations * 10, plain.activations);
  EXPECT_EQ(checkpointed.weights, plain.weights);
  EXPECT_GE(qwen::largest_fitting_batch(seven_b, setup, shape, int64_t{80} << 30), 2);
  EXPECT_EQ(qwen::largest_fitting_batch(seven_b, setup, shape, int64_t{8} << 30), 0);  // the weights alone are 15 GiB
}

TEST(LoraLayers, SharedAdapterInputGivesTheLayersOwnResult) {
  // Over a bf16 base the adapters (float32) read a float32 copy of the input; layers reading one input share it.
  torch::manual_seed(5);
  qwen::Linear layer(16, 8, true, torch::TensorOptions().dtype(torch::kBFloat16));
  {
    torch::NoGradGuard no_grad;
    layer->weight.normal_(0, 0.1);
    layer->bias.normal_(0, 0.1);
  }
  auto enabled = std::make_shared<bool>(true);
  auto branch = std::make_shared<qwen::LoraBranch>();
  branch->A = torch::randn({4, 16});
  branch->B = torch::randn({8, 4});
  branch->scaling = 2.0;
  branch->enabled = enabled;
  layer->lora = branch;
  const auto x = torch::randn({3, 16}).to(torch::kBFloat16);
  const auto shared = qwen::lora_input(x, {layer.get()});
  ASSERT_EQ(shared.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(layer->forward(x, shared), layer->forward(x)));
  // PEFT's formula: (W x + b) + scaling · B(A(x)) in float32, cast back to the layer's dtype.
  const auto want = (at::linear(x, layer->weight, layer->bias) +
                     at::linear(at::linear(x.to(torch::kFloat32), branch->A), branch->B) * 2.0)
                        .to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(layer->forward(x), want));
  *enabled = false;
  EXPECT_FALSE(qwen::lora_input(x, {layer.get()}).defined());
  EXPECT_TRUE(torch::equal(layer->forward(x), at::linear(x, layer->weight, layer->bias)));
}
