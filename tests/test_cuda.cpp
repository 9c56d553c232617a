// CUDA checks: the tiny model in bf16 on the GPU tracks the fp32 CPU reference, and the Skywork-VL backend scores
// in bf16 on CUDA. Each skips with "no CUDA device" where there is none.
#include <cstdint>
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "adapters/common/mapped_file.h"
#include "adapters/qwen2_5_vl/batch.h"
#include "adapters/qwen2_5_vl/generate.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/weights.h"
#include "adapters/qwen2_5_vl/lora.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "mpo/logprobs.h"
#include "tests/mpo_test_support.h"
#include "plugin/registry.h"
#include "reward/backends.h"
#include "reward/score_jsonl.h"

using namespace vlreward;
using namespace vlreward::qwen;

namespace {
const std::string kFixtures = VLREWARD_FIXTURES_DIR;

Qwen2_5_VLModel load_tiny(torch::ScalarType dtype, torch::Device device) {
  auto model = load_pretrained(kFixtures + "/model/tiny", dtype, device).model;
  model->eval();
  return model;
}
}  // namespace

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(Cuda, Bf16LogitsTrackCpuFp32AndGreedyDecodes) {
  torch::NoGradGuard no_grad;
  auto cpu = load_tiny(torch::kFloat32, torch::kCPU);
  auto gpu = load_tiny(torch::kBFloat16, torch::kCUDA);
  auto batch = pad_batch({{1, 2, 3, 4, 5, 6, 7, 8}, {9, 10, 11}}, 2000, PaddingSide::kLeft);
  ModelInput in{batch.input_ids, batch.attention_mask, {}, {}};
  auto reference = cpu->forward(in).logits;
  auto cuda_in = in;
  cuda_in.input_ids = in.input_ids.cuda();
  cuda_in.attention_mask = in.attention_mask.cuda();
  auto logits = gpu->forward(cuda_in).logits.to(torch::kCPU, torch::kFloat32);
  auto real = batch.attention_mask.eq(1);
  const double rel = ((logits.index({real}) - reference.index({real})).norm() / reference.index({real}).norm()).item<double>();
  std::printf("  cuda bf16 vs cpu fp32 logits: rel %.3e\n", rel);
  EXPECT_LE(rel, 5e-2);
  SamplingParams greedy;
  greedy.max_new_tokens = 16;
  auto out = generate(gpu, cuda_in, {greedy}, {}, 2000);
  EXPECT_EQ(out[0].tokens.size(), 16u);
}

TEST_F(Cuda, SkyworkBackendScoresOnGpu) {
  RewardRegistry registry;
  register_reward_backends(registry);
  auto backend = registry.create({{"type", "skywork_vl"},
                                  {"model", kFixtures + "/model/tiny"},
                                  {"value_head", kFixtures + "/reward/value_head.safetensors"},
                                  {"dtype", "bfloat16"},
                                  {"device", "cuda"}});
  std::ifstream in(kFixtures + "/reward/items.jsonl");
  std::vector<RewardRequest> requests;
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) requests.push_back(parse_score_line(line, ++n, kFixtures + "/reward"));
  const auto expected = nlohmann::json::parse(read_file(kFixtures + "/reward/expected.json"))["items"];
  auto results = backend->score(requests);
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].error;
    const double want = expected[i]["score"];
    EXPECT_NEAR(*results[i].score, want, 0.15 * std::max(1.0, std::abs(want))) << requests[i].id;
  }
}

// LoRA over the fp32 tiny model with gradient checkpointing and chunked log-probs: the adapters' gradients on CUDA
// (TF32 off) equal the CPU's, and the checkpointed recomputation runs on the device.
TEST_F(Cuda, LoraCheckpointedChunkedGradientsMatchCpu) {
  at::globalContext().setAllowTF32CuBLAS(false);
  const auto processor = Qwen2_5_VLProcessor::from_directory(kFixtures + "/model/tiny");
  const auto batch = test_support::fixture_micro_batch(processor, 0, 2);
  auto grads_on = [&](torch::Device device) {
    auto model = load_pretrained(kFixtures + "/model/tiny", torch::kFloat32, device).model;
    model->train();
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    auto adapters = LoraAdapters::load(model, kFixtures + "/lora/initial");
    model->set_gradient_checkpointing({true, true});
    auto input = batch.input;
    input.input_ids = input.input_ids.to(device);
    input.attention_mask = input.attention_mask.to(device);
    input.pixel_values = input.pixel_values.to(device);
    ForwardOptions options;
    options.logits = false;
    const auto hidden = model->forward(input, options).last_hidden_state;
    const auto lp = mpo::chunked_completion_logps(hidden, model->lm_head_weight(), input.input_ids,
                                                  batch.completion_mask.to(device), 5);
    lp.sequence_logps.sum().backward();
    std::vector<torch::Tensor> out;
    for (const auto& [name, t] : adapters.parameters()) out.push_back(t.grad().cpu());
    return out;
  };
  const auto cpu = grads_on(torch::kCPU), gpu = grads_on(torch::kCUDA);
  ASSERT_EQ(cpu.size(), gpu.size());
  double worst = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double rel = ((gpu[i] - cpu[i]).norm() / cpu[i].norm().clamp_min(1e-12)).item<double>();
    worst = std::max(worst, rel);
    EXPECT_LE(rel, 1e-4) << i;
  }
  std::printf("  cuda vs cpu LoRA gradients (checkpointed, chunked): max rel %.3e\n", worst);
}
