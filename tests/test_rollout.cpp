// Sampling policy responses (mpo/rollout.h) and prompt files: responses do not depend on batching, greedy
// rollouts are what generate() gives, the prompt is tokenized as the trainer tokenizes a pair's prompt.
#include <cstdint>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "adapters/common/error.h"
#include "adapters/hf/qwen2_5_vl_config.h"
#include "adapters/qwen2_5_vl/batch.h"
#include "adapters/qwen2_5_vl/generate.h"
#include "adapters/qwen2_5_vl/weights.h"
#include "adapters/qwen2_5_vl/pretrained.h"
#include "mpo/pair_tokenization.h"
#include "reward/preference_data.h"
#include "mpo/rollout.h"

namespace fs = std::filesystem;
using namespace vlreward;
using namespace vlreward::mpo;

namespace {

const std::string kFixtures = VLREWARD_FIXTURES_DIR;
const std::string kTinyModel = kFixtures + "/model/tiny";
const std::string kImages = kFixtures + "/reward/images";

qwen::Qwen2_5_VLModel& tiny_policy() {
  static qwen::Qwen2_5_VLModel model = qwen::load_pretrained(kTinyModel, torch::kFloat32, torch::kCPU).model;
  return model;
}

const Qwen2_5_VLProcessor& processor() {
  static auto p = Qwen2_5_VLProcessor::from_directory(kTinyModel, {std::nullopt, 12544});
  return p;
}

std::string write_file(const std::string& name, const std::string& text) {
  const auto path = fs::temp_directory_path() / ("vlreward_rollout_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(path) << text;
  return path.string();
}

std::vector<PromptRecord> prompts() {
  const std::string path = write_file(
      "prompts.jsonl",
      "{\"id\": \"a\", \"images\": [\"" + kImages + "/small.png\"], \"question\": \"What colour?\", \"reference\": \"red\"}\n"
      "\n"
      "{\"id\": \"b\", \"question\": \"Say something.\", \"system\": \"Be brief.\"}\n"
      "{\"image\": \"" + kImages + "/square.jpg\", \"question\": \"How many shapes?\", \"answer\": \"3\"}\n");
  return read_prompt_jsonl(path);
}

RolloutOptions sampling(int64_t batch_size) {
  RolloutOptions o;
  o.sampling.greedy = false;
  o.sampling.temperature = 1.0;
  o.sampling.top_p = 0.95;
  o.sampling.max_new_tokens = 12;
  o.sampling.seed = 7;
  o.batch_size = batch_size;
  return o;
}

}  // namespace

TEST(PromptFile, ReadsIdsImagesReferencesAndNumbersLinesWithoutIds) {
  auto p = prompts();
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].id, "a");
  EXPECT_EQ(p[0].images.size(), 1u);
  EXPECT_EQ(p[0].reference.value_or(""), "red");
  EXPECT_FALSE(p[1].reference.has_value());
  EXPECT_EQ(p[1].system_prompt.value_or(""), "Be brief.");
  EXPECT_EQ(p[2].id, "4");  // the line number (line 2 is blank)
  EXPECT_EQ(p[2].reference.value_or(""), "3");
}

TEST(PromptFile, ErrorsNameTheLineAndField) {
  auto message = [](const std::string& text) {
    try {
      read_prompt_jsonl(write_file("bad.jsonl", text));
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message("{\"question\": 3}\n").find(":1: question: must be a string"), std::string::npos);
  EXPECT_NE(message("{\"question\": \"q\"}\n{\"question\": \"q\", \"images\": [\"nope.png\"]}\n").find(":2: images[0]"),
            std::string::npos);
  EXPECT_NE(message("{\"id\": \"x\", \"question\": \"q\"}\n{\"id\": \"x\", \"question\": \"q\"}\n").find("duplicate"),
            std::string::npos);
  EXPECT_NE(message("{\"question\": \"q\", \"reference\": \"a\", \"answer\": \"a\"}\n").find("not both"),
            std::string::npos);
  EXPECT_NE(message("not json\n").find("malformed JSON"), std::string::npos);
  EXPECT_NE(message("\n").find("no prompts"), std::string::npos);
}

TEST(Rollout, PromptTokensAreThePairPromptTokens) {
  const auto p = prompts();
  PreferenceRecord example{p[0].id, p[0].images, p[0].system_prompt, p[0].question, "yes", "no", {}, {}, "test"};
  const auto pair = tokenize_pair(processor(), example, "pair");
  const auto prompt = tokenize_prompt(processor(), p[0].images, p[0].system_prompt, p[0].question, "prompt");
  EXPECT_EQ(prompt.ids, pair.tokens.prompt);
  EXPECT_EQ(prompt.images.pixel_values, pair.images.pixel_values);
}

TEST(Rollout, SamplesDoNotDependOnBatchSizeOrNeighbours) {
  const auto p = prompts();
  const auto one = sample_responses(tiny_policy(), processor(), p, 3, sampling(1));
  const auto many = sample_responses(tiny_policy(), processor(), p, 3, sampling(7));
  const auto alone = sample_responses(tiny_policy(), processor(), {p[2]}, 3, sampling(4));
  ASSERT_EQ(one.size(), 3u);
  bool any_differ = false;
  for (size_t i = 0; i < p.size(); ++i) {
    ASSERT_EQ(one[i].size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(one[i][j].tokens, many[i][j].tokens) << "prompt " << i << " sample " << j;
      EXPECT_EQ(one[i][j].text, many[i][j].text);
      EXPECT_FALSE(one[i][j].tokens.empty());
      if (j > 0 && one[i][j].tokens != one[i][0].tokens) any_differ = true;
    }
  }
  for (size_t j = 0; j < 3; ++j) EXPECT_EQ(alone[0][j].tokens, one[2][j].tokens);
  EXPECT_TRUE(any_differ) << "samples of a prompt should differ at temperature 1";
}

TEST(Rollout, GreedyRowIsGenerateOnThePromptAlone) {
  const auto p = prompts();
  RolloutOptions greedy;
  greedy.sampling.greedy = true;
  greedy.sampling.max_new_tokens = 10;
  greedy.batch_size = 3;
  const auto responses = sample_responses(tiny_policy(), processor(), p, 2, greedy);
  // Prompt a alone through generate().
  const auto prompt = tokenize_prompt(processor(), p[0].images, p[0].system_prompt, p[0].question, "a");
  auto batch = qwen::pad_batch({prompt.ids}, processor().pad_token_id(), qwen::PaddingSide::kLeft);
  qwen::ModelInput input{batch.input_ids, batch.attention_mask,
                         torch::from_blob(const_cast<float*>(prompt.images.pixel_values.data()),
                                          {prompt.images.rows, prompt.images.row_size}, torch::kFloat32)
                             .clone(),
                         prompt.images.grid_thw};
  torch::NoGradGuard no_grad;
  auto direct = qwen::generate(tiny_policy(), input, {greedy.sampling}, {2002}, processor().pad_token_id());
  EXPECT_EQ(responses[0][0].tokens, direct[0].tokens);
  EXPECT_EQ(responses[0][1].tokens, direct[0].tokens);  // greedy: every sample the same
  // Text is the decoded tokens without the stop token.
  std::vector<int32_t> ids;
  for (int64_t id : direct[0].tokens)
    if (id != 2002) ids.push_back(static_cast<int32_t>(id));
  EXPECT_EQ(responses[0][0].text, processor().tokenizer().decode(ids, true));
}

TEST(Rollout, RewardRequestCarriesImagesSystemAndReference) {
  const auto p = prompts();
  auto a = reward_request(p[0], "red", "a/0");
  EXPECT_EQ(a.id, "a/0");
  EXPECT_EQ(a.response, "red");
  EXPECT_EQ(a.reference.value_or(""), "red");
  ASSERT_EQ(a.turns.size(), 1u);
  EXPECT_EQ(a.turns[0].content.size(), 2u);  // image, question
  auto b = reward_request(p[1], "hi", "b/0");
  EXPECT_EQ(b.system_prompt.value_or(""), "Be brief.");
  EXPECT_FALSE(b.reference.has_value());
}
