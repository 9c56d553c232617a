// Qwen2.5-VL model: properties that need no reference outputs (cache vs recompute, batching invariance,
// checkpoint round trips and loader errors, window layout). Parity with transformers is in
// test_qwen2_5_vl_parity.cpp.
#include <cstdint>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/safetensors_torch.h"
#include "adapters/qwen2_5_vl/batch.h"
#include "adapters/qwen2_5_vl/generate.h"
#include "adapters/qwen2_5_vl/model.h"
#include "adapters/qwen2_5_vl/weights.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace vlreward;
using namespace vlreward::qwen;

namespace {

const std::string kFixtures = VLREWARD_FIXTURES_DIR;

// The spec's tiny config with a small vocabulary so the test model is cheap.
Qwen2_5_VLConfig tiny_config() {
  auto config = Qwen2_5_VLConfig::load(kFixtures + "/config/tiny.json");
  config.text.vocab_size = 320;
  config.image_token_id = 300;
  config.video_token_id = 301;
  config.vision_start_token_id = 302;
  config.vision_end_token_id = 303;
  return config;
}

Qwen2_5_VLModel tiny_model(uint64_t seed = 7) {
  Qwen2_5_VLModel model(tiny_config(), torch::TensorOptions().dtype(torch::kFloat32));
  model->init_weights(seed, 0.1);
  model->eval();
  return model;
}

double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

// A row with one image: text, <vision_start>, n image pads, <vision_end>, text.
std::vector<int64_t> image_row(const Qwen2_5_VLConfig& c, int64_t image_tokens, int64_t prefix, int64_t suffix,
                               int64_t salt) {
  std::vector<int64_t> row;
  for (int64_t i = 0; i < prefix; ++i) row.push_back((i * 7 + salt) % 290);
  row.push_back(c.vision_start_token_id);
  for (int64_t i = 0; i < image_tokens; ++i) row.push_back(c.image_token_id);
  row.push_back(c.vision_end_token_id);
  for (int64_t i = 0; i < suffix; ++i) row.push_back((i * 13 + salt) % 290);
  return row;
}

}  // namespace

TEST(VisionWindows, SpecExample16x16PatchGrid) {
  auto c = tiny_config().vision;
  auto w = vision_windows({{1, 16, 16}}, c);
  EXPECT_EQ(w.cu_window_seqlens, (std::vector<int32_t>{0, 64, 128, 192, 256}));
  EXPECT_EQ(w.cu_seqlens, (std::vector<int32_t>{0, 256}));
  ASSERT_EQ(w.window_index.size(), 64u);
  // First window = merged rows 0..3, cols 0..3 of the 8x8 merged grid.
  EXPECT_EQ(std::vector<int64_t>(w.window_index.begin(), w.window_index.begin() + 5),
            (std::vector<int64_t>{0, 1, 2, 3, 8}));
}

TEST(RopeIndex, TextAfterImageResumesAtMaxSide) {
  auto c = tiny_config();
  // 2 text tokens, vision_start, 6 pads for a (1, 4, 6) grid -> merged 2x3, vision_end, 1 text token.
  std::vector<int64_t> ids = image_row(c, 6, 2, 1, 0);
  RopeIndexInput in;
  in.input_ids = ids.data();
  in.batch = 1;
  in.seq = static_cast<int64_t>(ids.size());
  in.image_grids = {{1, 4, 6}};
  auto r = compute_rope_index(in, {c.image_token_id, c.video_token_id, c.vision_start_token_id}, 2, 2);
  const int64_t S = in.seq;
  std::vector<int64_t> t(r.position_ids.begin(), r.position_ids.begin() + S);
  std::vector<int64_t> h(r.position_ids.begin() + S, r.position_ids.begin() + 2 * S);
  std::vector<int64_t> w(r.position_ids.begin() + 2 * S, r.position_ids.end());
  EXPECT_EQ(t, (std::vector<int64_t>{0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7}));
  EXPECT_EQ(h, (std::vector<int64_t>{0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7}));
  EXPECT_EQ(w, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7}));
  EXPECT_EQ(r.rope_deltas, (std::vector<int64_t>{8 - S}));
}

TEST(RopeIndex, MoreImagesThanGridsIsAnError) {
  auto c = tiny_config();
  std::vector<int64_t> ids = image_row(c, 6, 1, 1, 0);
  RopeIndexInput in;
  in.input_ids = ids.data();
  in.batch = 1;
  in.seq = static_cast<int64_t>(ids.size());
  in.video_grids = {{1, 4, 6}};  // grids given, but for a video
  EXPECT_THROW(compute_rope_index(in, {c.image_token_id, c.video_token_id, c.vision_start_token_id}, 2, 2),
               InputError);
}

TEST(Model, KvCacheDecodeEqualsFullRecomputationFor30StepsWithPadding) {
  torch::NoGradGuard no_grad;
  auto model = tiny_model();
  const auto& c = model->config();
  // Row 0 has an image (4x4 patches -> 4 tokens) and is longer; row 1 is text only, left padded.
  std::vector<std::vector<int64_t>> rows = {image_row(c, 4, 3, 4, 1), {5, 9, 17, 33, 65}};
  auto pixels = torch::randn({16, c.vision.patch_input_size()}, torch::TensorOptions().dtype(torch::kFloat32));
  auto batch = pad_batch(rows, 0, PaddingSide::kLeft);
  ModelInput input{batch.input_ids, batch.attention_mask, pixels, {{1, 4, 4}}};

  const int64_t steps = 30;
  KVCache cache = model->model->make_cache(2, batch.input_ids.size(1) + steps);
  auto out = model->forward(input, {}, &cache);
  auto next = out.logits.select(1, -1).argmax(-1, true);
  torch::Tensor ids = batch.input_ids, mask = batch.attention_mask;
  for (int64_t step = 0; step < steps; ++step) {
    ids = torch::cat({ids, next}, 1);
    mask = torch::cat({mask, torch::ones({2, 1}, torch::kInt64)}, 1);
    auto incremental = model->decode(next, cache).select(1, 0);
    auto full = model->forward({ids, mask, pixels, {{1, 4, 4}}}).logits.select(1, -1);
    EXPECT_LE(relative_error(incremental, full), 1e-5) << "step " << step;
    next = incremental.argmax(-1, true);
  }
}

TEST(Model, BatchedRightPaddedEqualsOneAtATime) {
  torch::NoGradGuard no_grad;
  auto model = tiny_model();
  const auto& c = model->config();
  std::vector<std::vector<int64_t>> rows = {image_row(c, 4, 2, 9, 3), {11, 12, 13}, image_row(c, 4, 5, 1, 4)};
  auto pixels = torch::randn({32, c.vision.patch_input_size()});
  auto batch = pad_batch(rows, 0, PaddingSide::kRight);
  auto batched = model->forward({batch.input_ids, batch.attention_mask, pixels, {{1, 4, 4}, {1, 4, 4}}});
  int64_t image = 0;
  for (size_t b = 0; b < rows.size(); ++b) {
    auto single = pad_batch({rows[b]}, 0, PaddingSide::kRight);
    const bool has_image = b != 1;
    ModelInput in{single.input_ids, single.attention_mask, {}, {}};
    if (has_image) {
      in.pixel_values = pixels.narrow(0, 16 * image++, 16);
      in.image_grids = {{1, 4, 4}};
    }
    auto alone = model->forward(in).logits[0];
    const auto n = static_cast<int64_t>(rows[b].size());
    EXPECT_LE(relative_error(batched.logits[static_cast<int64_t>(b)].narrow(0, 0, n), alone), 1e-5) << "row " << b;
  }
}

TEST(Model, FusedAttentionAgreesWithExplicitOnCpuFp32) {
  // kFused runs at::scaled_dot_product_attention (the fused CPU kernel here), kExplicit the eager reference.
  torch::NoGradGuard no_grad;
  auto model = tiny_model();
  const auto& c = model->config();
  auto batch = pad_batch({image_row(c, 4, 3, 6, 2), {4, 5, 6}}, 0, PaddingSide::kLeft);
  ModelInput in{batch.input_ids, batch.attention_mask, torch::randn({16, c.vision.patch_input_size()}), {{1, 4, 4}}};
  model->set_attention_impl(AttentionImpl::kExplicit);
  auto explicit_logits = model->forward(in).logits;
  model->set_attention_impl(AttentionImpl::kFused);
  auto fused_logits = model->forward(in).logits;
  auto real = batch.attention_mask.eq(1);
  EXPECT_LE(relative_error(fused_logits.index({real}), explicit_logits.index({real})), 1e-5);
}

TEST(Model, Bfloat16OnCpuTracksFloat32) {
  torch::NoGradGuard no_grad;
  auto model = tiny_model(11);
  Qwen2_5_VLModel bf16(tiny_config(), torch::TensorOptions().dtype(torch::kBFloat16));
  {
    auto source = model->named_parameters();
    for (auto& p : bf16->named_parameters()) p.value().copy_(source[p.key()]);
  }
  bf16->eval();
  const auto& c = model->config();
  auto batch = pad_batch({image_row(c, 4, 2, 5, 1)}, 0, PaddingSide::kRight);
  auto pixels = torch::randn({16, c.vision.patch_input_size()});
  auto full = model->forward({batch.input_ids, batch.attention_mask, pixels, {{1, 4, 4}}}).logits;
  auto half = bf16->forward({batch.input_ids, batch.attention_mask, pixels, {{1, 4, 4}}}).logits;
  EXPECT_EQ(half.scalar_type(), torch::kBFloat16);
  EXPECT_LE(relative_error(half.to(torch::kFloat32), full), 5e-2);
}

TEST(Model, ImageTokenCountMustMatchFeatures) {
  torch::NoGradGuard no_grad;
  auto model = tiny_model();
  const auto& c = model->config();
  auto batch = pad_batch({image_row(c, 5, 1, 1, 0)}, 0, PaddingSide::kRight);
  auto pixels = torch::randn({16, c.vision.patch_input_size()});
  try {
    model->forward({batch.input_ids, batch.attention_mask, pixels, {{1, 4, 4}}});
    FAIL() << "expected a token/feature mismatch error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tokens: 5, features 4"), std::string::npos) << e.what();
  }
}

TEST(Generate, GreedyIsDeterministicAndStopsPerRow) {
  auto model = tiny_model();
  std::vector<std::vector<int64_t>> rows = {{1, 2, 3, 4}, {9, 8}};
  auto batch = pad_batch(rows, 0, PaddingSide::kLeft);
  SamplingParams greedy;
  greedy.max_new_tokens = 12;
  auto a = generate(model, {batch.input_ids, batch.attention_mask, {}, {}}, {greedy}, {}, 0);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].tokens.size(), 12u);
  // Stop on a token the second row produces after its first step: that row ends there, the other goes on.
  const int64_t stop = a[1].tokens[1] != a[1].tokens[0] ? a[1].tokens[1] : a[1].tokens[0];
  auto b = generate(model, {batch.input_ids, batch.attention_mask, {}, {}}, {greedy}, {stop}, 0);
  auto until_stop = [&](const std::vector<int64_t>& tokens) {
    auto it = std::find(tokens.begin(), tokens.end(), stop);
    return std::vector<int64_t>(tokens.begin(), it == tokens.end() ? it : it + 1);
  };
  EXPECT_TRUE(b[1].stopped);
  EXPECT_LE(b[1].tokens.size(), 2u);
  EXPECT_EQ(b[1].tokens, until_stop(a[1].tokens));
  EXPECT_EQ(b[0].tokens, until_stop(a[0].tokens));
}

TEST(Generate, SamplingIsSeededPerRequest) {
  auto model = tiny_model();
  auto batch = pad_batch({{1, 2, 3}, {1, 2, 3}}, 0, PaddingSide::kLeft);
  SamplingParams s1;
  s1.greedy = false;
  s1.temperature = 1.5;
  s1.top_k = 50;
  s1.top_p = 0.9;
  s1.seed = 42;
  s1.max_new_tokens = 16;
  SamplingParams s2 = s1;
  s2.seed = 43;
  auto same = generate(model, {batch.input_ids, batch.attention_mask, {}, {}}, {s1, s1}, {}, 0);
  EXPECT_EQ(same[0].tokens, same[1].tokens);
  auto different = generate(model, {batch.input_ids, batch.attention_mask, {}, {}}, {s1, s2}, {}, 0);
  EXPECT_EQ(different[0].tokens, same[0].tokens);  // row 0 does not depend on its neighbour
  EXPECT_NE(different[1].tokens, same[1].tokens);
}

TEST(Weights, SaveLoadSaveIsIdentical) {
  auto model = tiny_model(3);
  auto dir1 = test_support::scratch_dir("save1"), dir2 = test_support::scratch_dir("save2");
  save_checkpoint(*model, dir1.string());
  auto reloaded = Qwen2_5_VLModel(tiny_config(), torch::TensorOptions().dtype(torch::kFloat32));
  auto report = load_checkpoint(*reloaded, dir1.string(), false);
  EXPECT_EQ(report.loaded, model->named_parameters().size());
  save_checkpoint(*reloaded, dir2.string());
  EXPECT_EQ(read_file((dir1 / "model.safetensors").string()), read_file((dir2 / "model.safetensors").string()));
}

TEST(Weights, ShardedSaveLoadsBackAndBf16ConvertsToFp32) {
  auto model = tiny_model(5);
  auto dir = test_support::scratch_dir("sharded");
  save_checkpoint(*model, dir.string(), 200000);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  auto reloaded = Qwen2_5_VLModel(tiny_config(), torch::TensorOptions().dtype(torch::kFloat32));
  load_checkpoint(*reloaded, dir.string(), false);
  for (auto& p : model->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), reloaded->named_parameters()[p.key()])) << p.key();

  // bf16 checkpoint in the new (model.language_model.*) layout into an fp32 model.
  std::vector<std::pair<std::string, torch::Tensor>> renamed;
  for (auto& p : model->named_parameters()) {
    std::string name = p.key();
    if (name.rfind("visual.", 0) == 0) name = "model." + name;
    else if (name.rfind("model.", 0) == 0) name = "model.language_model." + name.substr(6);
    renamed.emplace_back(name, p.value().to(torch::kBFloat16));
  }
  auto bf16_dir = test_support::scratch_dir("bf16");
  write_safetensors((bf16_dir / "model.safetensors").string(), renamed);
  load_checkpoint(*reloaded, bf16_dir.string(), false);
  for (auto& p : model->named_parameters())
    EXPECT_TRUE(torch::equal(p.value().to(torch::kBFloat16).to(torch::kFloat32), reloaded->named_parameters()[p.key()]))
        << p.key();
}

namespace {
// Writes the model's tensors after `edit`, then expects load_checkpoint to fail with `needle` in the message.
void expect_load_error(const std::string& name,
                       const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit,
                       const std::string& needle) {
  auto model = tiny_model(1);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& p : model->named_parameters()) tensors.emplace_back(p.key(), p.value().detach());
  edit(tensors);
  auto dir = test_support::scratch_dir(name);
  write_safetensors((dir / "model.safetensors").string(), tensors);
  auto target = Qwen2_5_VLModel(tiny_config(), torch::TensorOptions().dtype(torch::kFloat32));
  try {
    load_checkpoint(*target, dir.string(), false);
    FAIL() << name << ": expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << name << ": " << e.what();
  }
}
}  // namespace

TEST(Weights, LoaderErrorsNameTheTensor) {
  using Tensors = std::vector<std::pair<std::string, torch::Tensor>>;
  expect_load_error("missing", [](Tensors& t) { t.erase(t.begin() + 3); }, "missing keys (1)");
  expect_load_error("missing_name", [](Tensors& t) {
    t.erase(std::remove_if(t.begin(), t.end(), [](auto& p) { return p.first == "model.norm.weight"; }), t.end());
  }, "model.norm.weight");
  expect_load_error("extra", [](Tensors& t) { t.emplace_back("model.layers.9.mlp.up_proj.weight", torch::zeros({2})); },
                    "unexpected keys (1): model.layers.9.mlp.up_proj.weight");
  expect_load_error("shape", [](Tensors& t) {
    for (auto& p : t)
      if (p.first == "visual.merger.mlp.2.bias") p.second = torch::zeros({63});
  }, "visual.merger.mlp.2.bias (checkpoint [63], model [64])");
  expect_load_error("dtype", [](Tensors& t) {
    for (auto& p : t)
      if (p.first == "model.norm.weight") p.second = torch::zeros({64}, torch::kInt64);
  }, "model.norm.weight (I64)");
}

TEST(Weights, TruncatedShardIsNamed) {
  auto model = tiny_model(2);
  auto dir = test_support::scratch_dir("truncated");
  save_checkpoint(*model, dir.string(), 200000);
  fs::path shard;
  for (auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("model-00002-of-", 0) == 0) shard = entry.path();
  ASSERT_FALSE(shard.empty()) << "expected several shards";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  auto target = Qwen2_5_VLModel(tiny_config(), torch::TensorOptions().dtype(torch::kFloat32));
  try {
    load_checkpoint(*target, dir.string(), false);
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(shard.filename().string()), std::string::npos) << e.what();
  }
}

TEST(Model, SevenBillionConfigBuildsOnMetaWithoutMemory) {
  auto config = Qwen2_5_VLConfig::load(kFixtures + "/config/hub_7b.json");
  Qwen2_5_VLModel model(config, torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kMeta));
  int64_t count = 0;
  for (auto& p : model->named_parameters()) {
    EXPECT_TRUE(p.value().is_meta());
    count += p.value().numel();
  }
  // Recomputed from the shapes in the spec (qwen2_5_vl.md §1.3); the transformers count is checked in the
  // parity test.
  EXPECT_GT(count, 8'000'000'000);
  EXPECT_EQ(model->named_parameters()["model.embed_tokens.weight"].sizes(), (std::vector<int64_t>{152064, 3584}));
  EXPECT_EQ(model->named_parameters()["visual.merger.mlp.0.weight"].sizes(), (std::vector<int64_t>{5120, 5120}));
}
