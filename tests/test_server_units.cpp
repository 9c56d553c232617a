// reward-serve's parts without a server: frames, the config, chat-template recognition, request decoding and its
// budgets, token comparison.
#include <gtest/gtest.h>

#include "tests/server_test_support.h"

namespace vlreward::server_test {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Units: frames, config, chat-template recognition.

TEST(FrameCodec, RoundTripsAndRefusesOversizedHeadersBeforeBuffering) {
  const std::string frame = encode_frame("hello");
  ASSERT_EQ(frame.size(), 9u);
  EXPECT_EQ(frame.substr(0, 4), std::string("\0\0\0\5", 4));
  FrameReader reader(16);
  reader.append(frame.substr(0, 6));
  EXPECT_FALSE(reader.next().has_value());
  reader.append(frame.substr(6) + encode_frame(""));
  EXPECT_EQ(reader.next().value(), "hello");
  EXPECT_EQ(reader.next().value(), "");
  EXPECT_EQ(reader.buffered(), 0u);
  FrameReader strict(16);
  strict.append(std::string("\xff\xff\xff\xff", 4));  // only the header: the payload never arrives
  try {
    strict.next();
    FAIL() << "expected a too-large error";
  } catch (const ServeError& e) {
    EXPECT_EQ(e.kind(), ServeErrorKind::kTooLarge);
    EXPECT_NE(std::string(e.what()).find("4294967295"), std::string::npos) << e.what();
  }
}

TEST(ServerConfigTest, ReadsStrictlyAndValidates) {
  auto c = parse_server_config(json::parse(R"({"host": "0.0.0.0", "http_port": 9000, "binary_port": 9001,
      "limits": {"max_samples_per_request": 4}, "batching": {"max_batch_size": 2, "max_wait_ms": 0}})"));
  EXPECT_EQ(c.host, "0.0.0.0");
  EXPECT_EQ(c.http_port, 9000);
  EXPECT_EQ(c.binary_port, 9001);
  EXPECT_EQ(c.limits.max_samples_per_request, 4);
  EXPECT_EQ(c.batching.max_batch_size, 2);
  EXPECT_EQ(c.batching.max_wait_ms, 0);
  EXPECT_EQ(ServerConfig().host, "127.0.0.1");  // loopback unless told otherwise
  auto expect_error = [](const char* text, const char* needle) {
    try {
      parse_server_config(json::parse(text));
      ADD_FAILURE() << "accepted " << text;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"hots": "x"})", "hots");
  expect_error(R"({"limits": {"max_body": 1}})", "max_body");
  expect_error(R"({"batching": {"max_batch_size": 0}})", "batching.max_batch_size");
  expect_error(R"({"http_port": 70000})", "http_port");
  expect_error(R"({"http_port": "80"})", "http_port");
  auto budgets = parse_server_config(json::parse(R"({"limits": {"max_request_pixels": 1000, "max_request_tokens": 20},
      "batching": {"max_queue_bytes": 4096}})"));
  EXPECT_EQ(budgets.limits.max_request_pixels, 1000u);
  EXPECT_EQ(budgets.limits.max_request_tokens, 20u);
  EXPECT_EQ(budgets.batching.max_queue_bytes, 4096u);
  expect_error(R"({"limits": {"max_request_pixels": 0}})", "limits.max_request_pixels");
  expect_error(R"({"batching": {"max_queue_bytes": 0}})", "batching.max_queue_bytes");
}

TEST(PolicyText, QwenChatMlBecomesTurnsAndResponse) {
  const std::string text =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>"
      "<|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n<|endoftext|><|endoftext|>";
  auto parsed = request_from_policy_text(text, std::nullopt, {RewardImage::from_bytes("IMG")}, "q");
  ASSERT_TRUE(parsed.recognised_chatml);
  const auto& r = parsed.request;
  EXPECT_EQ(r.system_prompt.value(), "Be brief.");
  ASSERT_EQ(r.turns.size(), 1u);
  EXPECT_EQ(r.turns[0].role, "user");
  ASSERT_EQ(r.turns[0].content.size(), 2u);
  EXPECT_EQ(r.turns[0].content[0].kind, RewardContent::Kind::kImage);
  EXPECT_EQ(r.turns[0].content[0].image.bytes, "IMG");
  EXPECT_EQ(r.turns[0].content[1].text, "What is this?");
  EXPECT_EQ(r.response, "A cat.");
}

TEST(PolicyText, MultiTurnTruncatedResponseAndLeftPadding) {
  const std::string text =
      "<|endoftext|><|endoftext|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
      "<|im_start|>user\nDescribe it.<|im_end|>\n<|im_start|>assistant\nIt is a long";
  auto parsed = request_from_policy_text(text, std::nullopt, {}, "q");
  ASSERT_TRUE(parsed.recognised_chatml);
  const auto& r = parsed.request;
  EXPECT_FALSE(r.system_prompt.has_value());
  ASSERT_EQ(r.turns.size(), 3u);
  EXPECT_EQ(r.turns[1].role, "assistant");
  EXPECT_EQ(r.turns[1].content[0].text, "Hello!");
  EXPECT_EQ(r.turns[2].content[0].text, "Describe it.");
  EXPECT_EQ(r.response, "It is a long");
}

TEST(PolicyText, ImagesWithoutPlaceholdersGoFirstAndMismatchesAreErrors) {
  auto parsed = request_from_policy_text("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>",
                                         std::nullopt, {RewardImage::from_bytes("1"), RewardImage::from_bytes("2")}, "q");
  ASSERT_EQ(parsed.request.turns[0].content.size(), 3u);
  EXPECT_EQ(parsed.request.turns[0].content[1].image.bytes, "2");
  EXPECT_EQ(parsed.request.turns[0].content[2].text, "Q");
  const std::string with_pad =
      "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\nA";
  for (size_t n : {0u, 2u}) {
    try {
      request_from_policy_text(with_pad, std::nullopt, std::vector<RewardImage>(n, RewardImage::from_bytes("x")), "query[0]");
      ADD_FAILURE() << n;
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kBadRequest);
      EXPECT_NE(std::string(e.what()).find(fmt::format("1 image placeholder(s) but {} image(s)", n)), std::string::npos)
          << e.what();
    }
  }
}

TEST(PolicyText, UnrecognisedTextIsScoredAsGiven) {
  auto with_prompt = request_from_policy_text("Question? Answer.", std::string_view("Question? "), {}, "q");
  EXPECT_FALSE(with_prompt.recognised_chatml);
  EXPECT_EQ(with_prompt.request.turns[0].content[0].text, "Question? ");
  EXPECT_EQ(with_prompt.request.response, "Answer.");
  auto plain = request_from_policy_text("just text", std::nullopt, {}, "q");
  EXPECT_EQ(plain.request.turns[0].content[0].text, "");
  EXPECT_EQ(plain.request.response, "just text");
  // Broken ChatML (unknown role, or no final assistant turn) is not guessed at.
  EXPECT_FALSE(request_from_policy_text("<|im_start|>tool\nx<|im_end|><|im_start|>assistant\ny", std::nullopt, {}, "q")
                   .recognised_chatml);
  EXPECT_FALSE(request_from_policy_text("<|im_start|>user\nx<|im_end|>", std::nullopt, {}, "q").recognised_chatml);
}

TEST(RequestDecoding, EveryParserFailureIsABadRequestNamingWhere) {
  RequestDecoder decoder(test_config());
  auto expect_bad = [&](const std::string& body, const std::string& needle) {
    try {
      decoder.parse_json_body(body);
      ADD_FAILURE() << "accepted " << body;
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kBadRequest) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(find_invalid_utf8(e.what()), std::string(e.what()).size()) << "messages travel as UTF-8";
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a ServeError for " << body << ": " << e.what();
    }
  };
  expect_bad("{\"samples\": [1e400]}", "samples[0]: number out of range (number overflow parsing '1e400')");
  expect_bad("[0, 1, -1e309]", "[2]: number out of range");
  expect_bad("{\"a\": {\"b\": [[], [1, 2, 9e9999]]}}", "a.b[1][2]: number out of range");
  expect_bad("{\"a\": 1, \"b\": }", "invalid JSON at b:");
  expect_bad("{\"a\": \"\xff\xfe\"}", "invalid JSON at a:");
  expect_bad("[1, 2", "invalid JSON at [2]:");
  // Whatever a decoding step throws becomes a ServeError naming the field.
  for (const auto& thrower : std::vector<std::function<void()>>{
           [] { throw std::out_of_range("vector::at"); }, [] { json(1).get<std::string>(); },
           [] { throw InputError("samples[3].image", "corrupt PNG"); }, [] { throw 42; }}) {
    try {
      decoding("samples[3]", [&] { thrower(); });
      ADD_FAILURE() << "nothing thrown";
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kBadRequest);
      EXPECT_EQ(std::string(e.what()).rfind("samples[3]", 0), 0u) << e.what();
    }
  }
}

TEST(RequestDecoding, RequestBudgetsBoundTheWorkOfOneRequestBeforeItIsQueued) {
  auto config = test_config();
  config.limits.max_request_pixels = 3 * 64 * 64;
  config.limits.max_request_tokens = 1000;
  RequestDecoder decoder(config);
  const std::string image = base64_encode(png_with_size(64, 64));
  auto body_of = [](std::vector<json> samples) { return json{{"samples", samples}}; };
  int64_t deadline = 0;
  // At the budgets: accepted, with each sample's cost.
  auto ok = decoder.decode_score(body_of({score_sample("a", "r", {image, image}), score_sample("b", "r", {image})}), &deadline);
  ASSERT_EQ(ok.size(), 2u);
  EXPECT_EQ(ok[0].cost.pixels, 2u * 64 * 64);
  EXPECT_EQ(ok[1].cost.pixels, 64u * 64);
  EXPECT_EQ(ok[0].cost.tokens, 2 * 16 + 2 * 9 + 6);  // two turns' overhead, two images of 3x3 merged patches, 24 text bytes
  EXPECT_GT(ok[0].cost.bytes, 2 * base64_decode(image)->size());
  auto expect_too_large = [&](const json& body, const std::string& needle) {
    try {
      decoder.decode_score(body, &deadline);
      ADD_FAILURE() << "accepted";
    } catch (const ServeError& e) {
      EXPECT_EQ(e.kind(), ServeErrorKind::kTooLarge) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_too_large(body_of({score_sample("a", "r", {image, image}), score_sample("b", "r", {image, image})}),
                   "16384 pixels in all, over the budget of 12288 pixels per request (limits.max_request_pixels)");
  expect_too_large(body_of({score_sample("a", std::string(2000, 'x')), score_sample("b", std::string(2000, 'y'))}),
                   "over the budget of 1000 tokens per request (limits.max_request_tokens)");
  // The same budgets hold for the OpenRLHF shape.
  try {
    decoder.decode_get_reward(json{{"query", {std::string(4000, 'q'), "short"}}});
    ADD_FAILURE() << "accepted";
  } catch (const ServeError& e) {
    EXPECT_NE(std::string(e.what()).find("query: about"), std::string::npos) << e.what();
  }
}

TEST(ConstantTime, ComparesWholeTokens) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
  EXPECT_FALSE(constant_time_equal("abc", "abcd"));
  EXPECT_FALSE(constant_time_equal("abc", ""));
}

// ---------------------------------------------------------------------------------------------------------------
// Prompt images, client networks, --set routing.

TEST(PromptImagesTest, KeysIgnoreTheTemplateThePadCountAndWhitespace) {
  const std::string expanded = "<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>\nHow many  apples?";
  EXPECT_EQ(normalized_prompt_key(expanded), "<image>How many apples?");
  EXPECT_EQ(normalized_prompt_key("<|vision_start|><|image_pad|><|vision_end|>How many apples?"), "<image>How many apples?");
  EXPECT_EQ(normalized_prompt_key("<image>\nHow many apples? "), "<image>How many apples?");
  EXPECT_EQ(normalized_prompt_key("  Compare <image> and\t<image>:  which?"), "Compare<image>and<image>: which?");
  EXPECT_EQ(normalized_prompt_key("<|image_pad|><|image_pad|>x"), "<image>x");
}

TEST(PromptImagesTest, LoadsEngineDatasetsAndNamesMissesAndAmbiguities) {
  vlreward::test_support::TempDir dir("vlreward_prompts");
  std::ofstream(dir / "a.png", std::ios::binary) << tiny_png();
  std::ofstream(dir / "b.png", std::ios::binary) << tiny_png() << "x";
  const std::string file = dir.write("prompts.jsonl",
      // verl: messages with "<image>" in the text, images as paths
      R"({"prompt": [{"role": "user", "content": "<image>How many apples?"}], "images": ["a.png"]})" "\n"
      // OpenRLHF: a chat-templated prompt string, one image object
      R"({"prompt": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which color?<|im_end|>\n<|im_start|>assistant\n", "images": [{"path": "b.png"}]})" "\n"
      // content parts, and a duplicate of the first with the same image (not ambiguous)
      R"({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count them."}]}], "image": "a.png"})" "\n"
      R"({"prompt": [{"role": "user", "content": "<image>How many apples?"}], "images": ["a.png"]})" "\n"
      // two prompts with one text and different images
      R"({"question": "<image>Same text", "images": ["a.png"]})" "\n"
      R"({"question": "<image>Same text", "images": ["b.png"]})" "\n"
      // text-only prompts are not indexed
      R"({"question": "No image here"})" "\n");
  const auto prompts = PromptImages::load(file);
  EXPECT_EQ(prompts.size(), 4u);
  EXPECT_EQ(prompts.find("<image>How many apples?", "q").at(0), (fs::path(dir.path()) / "a.png").string());
  EXPECT_EQ(prompts.find("<image>Which color?", "q").at(0), (fs::path(dir.path()) / "b.png").string());
  EXPECT_EQ(prompts.find("<image>Count them.", "q").size(), 1u);
  try {
    prompts.find("<image>Unknown", "query[7]");
    ADD_FAILURE() << "no throw";
  } catch (const ServeError& e) {
    EXPECT_EQ(e.kind(), ServeErrorKind::kBadRequest);
    EXPECT_NE(std::string(e.what()).find("query[7]: has image placeholders but no images"), std::string::npos) << e.what();
  }
  try {
    prompts.find("<image>Same text", "query[1]");
    ADD_FAILURE() << "no throw";
  } catch (const ServeError& e) {
    EXPECT_NE(std::string(e.what()).find("prompts.jsonl:5 and"), std::string::npos) << e.what();
  }
  // A missing image file is named with its line.
  const std::string bad = dir.write("bad.jsonl", R"({"question": "<image>q", "images": ["missing.png"]})" "\n");
  try {
    PromptImages::load(bad);
    ADD_FAILURE() << "no throw";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:1"), std::string::npos) << e.what();
  }
}

TEST(PolicyText, PlaceholdersWithoutImagesTakeTheirPromptsImages) {
  const std::string text =
      "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>How many apples?<|im_end|>\n"
      "<|im_start|>assistant\nThree.<|im_end|>";
  std::string seen_turn;
  auto parsed = request_from_policy_text(text, std::nullopt, {}, "query[0]", [&](std::string_view turn) {
    seen_turn = std::string(turn);
    return std::vector<RewardImage>{RewardImage::from_bytes("IMG")};
  });
  EXPECT_EQ(normalized_prompt_key(seen_turn), "<image>How many apples?");
  ASSERT_EQ(parsed.request.turns.size(), 1u);
  EXPECT_EQ(parsed.request.turns[0].content[0].image.bytes, "IMG");
  EXPECT_EQ(parsed.request.response, "Three.");
  // Without a lookup it stays an error that says how to fix it.
  try {
    request_from_policy_text(text, std::nullopt, {}, "query[0]");
    ADD_FAILURE() << "no throw";
  } catch (const ServeError& e) {
    EXPECT_NE(std::string(e.what()).find("--prompts"), std::string::npos) << e.what();
  }
}

TEST(ClientNetworksTest, CidrBlocksMatchV4V6AndMappedAddresses) {
  const auto networks = ClientNetworks::parse({"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1/128"}, "allow_networks");
  auto addr = [](const char* text) { return boost::asio::ip::make_address(text); };
  EXPECT_TRUE(networks.contains(addr("10.200.3.4")));
  EXPECT_FALSE(networks.contains(addr("11.0.0.1")));
  EXPECT_TRUE(networks.contains(addr("192.168.1.7")));
  EXPECT_FALSE(networks.contains(addr("192.168.1.8")));
  EXPECT_TRUE(networks.contains(addr("::ffff:10.1.2.3")));
  EXPECT_TRUE(networks.contains(addr("fd12::1")));
  EXPECT_TRUE(networks.contains(addr("::1")));
  EXPECT_FALSE(networks.contains(addr("127.0.0.1")));
  for (const char* bad : {"10.0.0.0/33", "nonsense", "10.0.0.0/", "::1/129", "10.0.0.0/8x"}) {
    try {
      ClientNetworks::parse({"10.0.0.0/8", bad}, "allow_networks");
      ADD_FAILURE() << bad;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("allow_networks[1]"), std::string::npos) << e.what();
    }
  }
}

TEST(ServerConfigTest, SetKeysGoToTheServerOrTheBackend) {
  EXPECT_TRUE(is_server_config_key("limits.max_samples_per_request=4096"));
  EXPECT_TRUE(is_server_config_key("batching.max_batch_size=1"));
  EXPECT_TRUE(is_server_config_key("allow_networks=[10.0.0.0/8]"));
  EXPECT_FALSE(is_server_config_key("value_head=/x"));
  EXPECT_FALSE(is_server_config_key("components.0.weight=2"));
  // Defaults sized for GRPO: a step's completions fit one request.
  EXPECT_GE(ServerConfig{}.limits.max_samples_per_request, 4096);
}

}  // namespace
}  // namespace vlreward::server_test
