// Qwen2-VL chat template rendering and image-pad expansion against transformers 4.57.6's apply_chat_template
// output (tests/fixtures/tokenizer/chat_cases.json, written by gen_tokenizer.py).
#include <cstdint>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"
#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/chat_template.h"
#include "adapters/hf/tokenizer.h"

namespace vlreward {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const fs::path kFixtures = fs::path(VLREWARD_FIXTURES_DIR) / "tokenizer";
const fs::path kCheckpoint = kFixtures / "qwen2_tiny";

Json load_json(const fs::path& path) { return Json::parse(read_file(path.string())); }

std::vector<GridThw> grids_of(const Json& j) {
  std::vector<GridThw> grids;
  for (const auto& g : j) grids.push_back(GridThw{g[0].get<int64_t>(), g[1].get<int64_t>(), g[2].get<int64_t>()});
  return grids;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + needle.size())) ++n;
  return n;
}

using test_support::TempDir;

TEST(ChatTemplate, RendersEveryFixtureConversationExactly) {
  const Json cases = load_json(kFixtures / "chat_cases.json");
  ASSERT_GE(cases.size(), 10u);
  size_t with_images = 0, without_system = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Json& c = cases[i];
    ChatTemplateOptions options;
    options.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    options.add_vision_id = c["add_vision_id"].get<bool>();
    const auto messages = parse_chat_messages(c["messages"], "messages");
    EXPECT_EQ(render_qwen2_vl_chat(messages, options), c["rendered"].get<std::string>()) << "conversation " << i;
    with_images += c["image_grid_thw"].size() > 1;
    without_system += c["messages"][0]["role"] != "system";
  }
  EXPECT_GE(with_images, 3u);
  EXPECT_GE(without_system, 5u);
}

TEST(ChatTemplate, FinalIdsAfterImagePadExpansionMatchTheProcessor) {
  const Tokenizer tok = Tokenizer::from_directory(kCheckpoint.string());
  const int32_t pad = tok.token_to_id("<|image_pad|>").value();
  for (const Json& c : load_json(kFixtures / "chat_cases.json")) {
    const auto grids = grids_of(c["image_grid_thw"]);
    const std::string expanded = expand_image_pads(c["rendered"].get<std::string>(), grids, c["merge_size"]);
    const auto ids = tok.encode(expanded);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << c["rendered"].dump();
    int64_t expected_pads = 0;
    for (const auto& g : grids) expected_pads += g.t * g.h * g.w / 4;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), pad), expected_pads);
  }
}

TEST(ChatTemplate, DefaultSystemPromptAndGenerationPrompt) {
  const auto rendered = render_qwen2_vl_chat(
      {ChatMessage::from_parts("user", {ChatContentPart::image(), ChatContentPart::make_text("Describe.")}),
       ChatMessage::from_text("assistant", "A cat.")});
  EXPECT_EQ(rendered,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
            "<|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n");
  ChatTemplateOptions gen;
  gen.add_generation_prompt = true;
  EXPECT_EQ(render_qwen2_vl_chat({ChatMessage::from_text("system", "S")}, gen),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_qwen2_vl_chat({}, gen), "<|im_start|>assistant\n");
}

TEST(ChatTemplate, VideoPadsExpandWithTheirOwnGrids) {
  ChatTemplateOptions options;
  options.add_vision_id = true;
  const std::string text = render_qwen2_vl_chat(
      {ChatMessage::from_parts("user", {ChatContentPart::video(), ChatContentPart::image(), ChatContentPart::video()})},
      options);
  EXPECT_NE(text.find("Video 1: <|vision_start|><|video_pad|>"), std::string::npos);
  EXPECT_NE(text.find("Picture 1: <|vision_start|><|image_pad|>"), std::string::npos);
  EXPECT_NE(text.find("Video 2: "), std::string::npos);
  const std::string out = expand_video_pads(expand_image_pads(text, {{1, 2, 4}}), {{2, 4, 4}, {4, 2, 2}});
  EXPECT_EQ(count(out, "<|image_pad|>"), 2u);
  EXPECT_EQ(count(out, "<|video_pad|>"), 8u + 4u);
}

TEST(ChatTemplate, PadAndGridCountMismatchIsAnError) {
  const std::string text = "<|image_pad|>a<|image_pad|>";
  try {
    expand_image_pads(text, {{1, 4, 4}});
    FAIL();
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("2 <|image_pad|> tokens but 1 image grids"), std::string::npos) << what;
  }
  EXPECT_THROW(expand_image_pads("no pads", {{1, 4, 4}}), InputError);
  EXPECT_THROW(expand_image_pads("<|image_pad|>", {{1, 0, 4}}), InputError);
  EXPECT_THROW(expand_video_pads("<|video_pad|>", {}), InputError);
  EXPECT_EQ(expand_image_pads("no pads", {}), "no pads");
}

TEST(ChatTemplate, ParseRejectsMalformedMessages) {
  EXPECT_THROW(parse_chat_messages(Json::object(), "req.messages"), InputError);
  EXPECT_THROW(parse_chat_messages(Json::parse(R"([{"content": "x"}])"), "req.messages"), InputError);
  EXPECT_THROW(parse_chat_messages(Json::parse(R"([{"role": "user"}])"), "req.messages"), InputError);
  EXPECT_THROW(parse_chat_messages(Json::parse(R"([{"role": "user", "content": 3}])"), "req.messages"), InputError);
  try {
    parse_chat_messages(Json::parse(R"([{"role": "user", "content": [{"type": "text", "text": 5}]}])"), "req.messages");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("req.messages[0].content[0]"), std::string::npos) << e.what();
  }
  // Items the template ignores render nothing.
  const auto parsed = parse_chat_messages(Json::parse(R"([{"role": "user", "content": [{"type": "audio"}]}])"), "m");
  EXPECT_TRUE(parsed[0].parts.empty());
}

TEST(ChatTemplateCheck, KnownTemplateIsTheFixtureCheckpointTemplate) {
  // chat_template.jinja was written by transformers' save_pretrained from the official template text.
  EXPECT_EQ(read_file((kCheckpoint / "chat_template.jinja").string()), qwen2_vl_chat_template());
  std::string found;
  read_checkpoint_chat_template(kCheckpoint.string(), &found);
  EXPECT_EQ(fs::path(found).filename(), "chat_template.jinja");
  EXPECT_NO_THROW(check_chat_template(kCheckpoint.string()));
}

TEST(ChatTemplateCheck, LegacyJsonAndTokenizerConfigLocationsAreRead) {
  TempDir legacy;
  legacy.write("chat_template.json", Json{{"chat_template", qwen2_vl_chat_template()}}.dump());
  EXPECT_NO_THROW(check_chat_template(legacy.str()));
  TempDir in_config;
  in_config.write("tokenizer_config.json", Json{{"chat_template", qwen2_vl_chat_template()}}.dump());
  EXPECT_NO_THROW(check_chat_template(in_config.str()));
}

TEST(ChatTemplateCheck, DifferentTemplateIsRejected) {
  TempDir dir;
  std::string changed = qwen2_vl_chat_template();
  changed.replace(changed.find("You are a helpful assistant."), 28, "You are a reward model.");
  dir.write("chat_template.jinja", changed);
  try {
    check_chat_template(dir.str());
    FAIL();
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(e.source().find("chat_template.jinja"), std::string::npos) << what;
    EXPECT_NE(what.find("differs from the official Qwen2-VL template"), std::string::npos) << what;
  }
  // The legacy chat_template.json wins over chat_template.jinja, as in transformers' processor loading.
  dir.write("chat_template.json", Json{{"chat_template", qwen2_vl_chat_template()}}.dump());
  EXPECT_NO_THROW(check_chat_template(dir.str()));
}

TEST(ChatTemplateCheck, MissingTemplateIsAnError) {
  TempDir dir;
  dir.write("tokenizer_config.json", "{\"eos_token\": \"<|im_end|>\"}");
  EXPECT_THROW(check_chat_template(dir.str()), InputError);
  dir.write("chat_template.json", "{not json");
  EXPECT_THROW(check_chat_template(dir.str()), InputError);
  dir.write("chat_template.json", "{\"chat_template\": 1e400}");
  try {
    check_chat_template(dir.str());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("chat_template: number out of range"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vlreward
