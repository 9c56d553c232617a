// Tokenizer parity with HF `tokenizers` 0.22.1 on the fixtures written by tests/fixtures/gen_tokenizer.py.
#include <cstdint>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/byte_level.h"
#include "adapters/hf/tokenizer.h"

namespace vlreward {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const fs::path kFixtures = fs::path(VLREWARD_FIXTURES_DIR) / "tokenizer";
const fs::path kCheckpoint = kFixtures / "qwen2_tiny";

Json load_json(const fs::path& path) { return Json::parse(read_file(path.string())); }

std::vector<int32_t> ids_of(const Json& j) { return j.get<std::vector<int32_t>>(); }

// A fresh directory per test for the malformed-file cases.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("vlreward_tok_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name, std::ios::binary) << text;
    return path_ / name;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

const Tokenizer& fixture_tokenizer() {
  static const Tokenizer tokenizer = Tokenizer::from_directory(kCheckpoint.string());
  return tokenizer;
}

// Compares every encode case, reporting the first mismatches with their text.
void expect_encodes(const Tokenizer& tok, const Json& cases, size_t* checked) {
  size_t failures = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const auto got = tok.encode(text);
    if (got != ids_of(c["ids"]) && ++failures <= 10)
      ADD_FAILURE() << "encode mismatch for " << Json(text).dump() << "\n  expected " << c["ids"].dump()
                    << "\n  got      " << Json(got).dump();
    ++*checked;
  }
  EXPECT_EQ(failures, 0u);
}

TEST(Tokenizer, EncodesEveryFixtureStringLikeTheReference) {
  const Json cases = load_json(kFixtures / "encode_cases.json");
  ASSERT_GE(cases.size(), 500u);
  size_t checked = 0;
  expect_encodes(fixture_tokenizer(), cases, &checked);
  EXPECT_EQ(checked, cases.size());
}

TEST(Tokenizer, MergesAsStringsParseToTheSameTokenizer) {
  const Json raw = load_json(kFixtures / "tokenizer_merges_as_strings.json");
  ASSERT_TRUE(raw["model"]["merges"][0].is_string());
  const Json pairs = load_json(kCheckpoint / "tokenizer.json");
  ASSERT_TRUE(pairs["model"]["merges"][0].is_array());
  const Tokenizer tok = Tokenizer::from_files((kFixtures / "tokenizer_merges_as_strings.json").string(),
                                              (kCheckpoint / "tokenizer_config.json").string());
  size_t checked = 0;
  expect_encodes(tok, load_json(kFixtures / "encode_cases.json"), &checked);
}

TEST(Tokenizer, BatchEncodeMatchesSingleEncode) {
  const Json cases = load_json(kFixtures / "encode_cases.json");
  std::vector<std::string> texts;
  for (const auto& c : cases) texts.push_back(c["text"].get<std::string>());
  for (int threads : {1, 2, 4}) {
    const auto batch = fixture_tokenizer().encode_batch(texts, threads);
    ASSERT_EQ(batch.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(batch[i], ids_of(cases[i]["ids"])) << "case " << i;
  }
  EXPECT_TRUE(fixture_tokenizer().encode_batch({}, 2).empty());
}

TEST(Tokenizer, DecodesLikeTheReferenceIncludingInvalidUtf8) {
  const Json cases = load_json(kFixtures / "decode_cases.json");
  ASSERT_GE(cases.size(), 100u);
  size_t with_replacement = 0, failures = 0;
  for (const auto& c : cases) {
    const std::string expected = c["text"].get<std::string>();
    const std::string got = fixture_tokenizer().decode(ids_of(c["ids"]), c["skip_special_tokens"].get<bool>());
    if (got != expected && ++failures <= 10)
      ADD_FAILURE() << "decode mismatch for " << c["ids"].dump() << " skip=" << c["skip_special_tokens"]
                    << "\n  expected " << Json(expected).dump() << "\n  got      " << Json(got).dump();
    if (expected.find("\xEF\xBF\xBD") != std::string::npos) ++with_replacement;
  }
  EXPECT_EQ(failures, 0u);
  EXPECT_GE(with_replacement, 30u);  // the fixture really exercises the U+FFFD repair
}

TEST(Tokenizer, AddedTokenFlagsMatchTheReference) {
  const Tokenizer tok = Tokenizer::from_files((kFixtures / "added_flags" / "tokenizer.json").string());
  const Json cases = load_json(kFixtures / "added_flags_cases.json");
  size_t checked = 0;
  expect_encodes(tok, cases["encode"], &checked);
  EXPECT_GE(checked, 30u);
  for (const auto& c : cases["decode"])
    EXPECT_EQ(tok.decode(ids_of(c["ids"]), c["skip_special_tokens"].get<bool>()), c["text"].get<std::string>())
        << c["ids"].dump();
}

TEST(Tokenizer, VocabularyRoundTripsAgainstVocabJson) {
  // vocab.json and added_tokens.json are written by transformers' save_pretrained.
  const Json vocab = load_json(kCheckpoint / "vocab.json");
  const Json added = load_json(kCheckpoint / "added_tokens.json");
  const Tokenizer& tok = fixture_tokenizer();
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    ASSERT_EQ(tok.token_to_id(it.key()), it.value().get<int32_t>()) << it.key();
    ASSERT_EQ(tok.id_to_token(it.value().get<int32_t>()), it.key());
  }
  for (auto it = added.begin(); it != added.end(); ++it) {
    EXPECT_EQ(tok.token_to_id(it.key()), it.value().get<int32_t>()) << it.key();
    EXPECT_EQ(tok.id_to_token(it.value().get<int32_t>()), it.key());
  }
  EXPECT_EQ(tok.vocab_size(), static_cast<int32_t>(vocab.size() + added.size()));
  EXPECT_FALSE(tok.token_to_id("definitely not a token"));
  EXPECT_FALSE(tok.id_to_token(-1));
  EXPECT_FALSE(tok.id_to_token(tok.vocab_size()));
}

TEST(Tokenizer, AddedTokensFollowTheBaseVocabularyInSpecOrder) {
  const Json config = load_json(kCheckpoint / "tokenizer_config.json");
  const Json& decoder = config["added_tokens_decoder"];
  const auto& added = fixture_tokenizer().added_tokens();
  ASSERT_EQ(added.size(), 22u);
  ASSERT_EQ(decoder.size(), 22u);
  for (const AddedToken& t : added) {
    const Json& entry = decoder[std::to_string(t.id)];
    EXPECT_EQ(entry["content"].get<std::string>(), t.content);
    EXPECT_EQ(entry["special"].get<bool>(), t.special) << t.content;
    EXPECT_EQ(entry["normalized"].get<bool>(), t.normalized) << t.content;
    EXPECT_FALSE(t.lstrip || t.rstrip || t.single_word);
  }
  EXPECT_EQ(added.front().content, "<|endoftext|>");
  EXPECT_EQ(added[13].content, "<|video_pad|>");
  EXPECT_TRUE(added[13].special);
  EXPECT_EQ(added[14].content, "<tool_call>");
  EXPECT_FALSE(added[14].special);
  for (size_t i = 1; i < added.size(); ++i) EXPECT_EQ(added[i].id, added[0].id + static_cast<int32_t>(i));
}

TEST(Tokenizer, SpecialTokensResolvedFromTokenizerConfig) {
  const Tokenizer& tok = fixture_tokenizer();
  ASSERT_TRUE(tok.eos_token_id());
  ASSERT_TRUE(tok.pad_token_id());
  EXPECT_EQ(tok.eos_token_id(), tok.token_to_id("<|im_end|>"));
  EXPECT_EQ(tok.pad_token_id(), tok.token_to_id("<|endoftext|>"));
  EXPECT_FALSE(tok.bos_token_id());  // null in the config
  EXPECT_FALSE(tok.unk_token_id());

  // AddedToken-dict form, as older checkpoints write it.
  TempDir dir;
  Json config = load_json(kCheckpoint / "tokenizer_config.json");
  config["eos_token"] = Json{{"__type", "AddedToken"}, {"content", "<|endoftext|>"}, {"lstrip", false}};
  config["bos_token"] = "<|im_start|>";
  const auto path = dir.write("tokenizer_config.json", config.dump());
  const Tokenizer t2 = Tokenizer::from_files((kCheckpoint / "tokenizer.json").string(), path.string());
  EXPECT_EQ(t2.eos_token_id(), tok.token_to_id("<|endoftext|>"));
  EXPECT_EQ(t2.bos_token_id(), tok.token_to_id("<|im_start|>"));

  // Without tokenizer_config.json nothing is configured.
  const Tokenizer t3 = Tokenizer::from_files((kCheckpoint / "tokenizer.json").string());
  EXPECT_FALSE(t3.eos_token_id());
}

TEST(Tokenizer, SkipSpecialTokensDropsOnlySpecialAddedTokens) {
  const Tokenizer& tok = fixture_tokenizer();
  const auto ids = tok.encode("<|im_start|>hi<tool_call><|im_end|>");
  ASSERT_EQ(ids.size(), 4u);  // "hi" is one token of the fixture vocabulary
  EXPECT_EQ(tok.decode(ids), "<|im_start|>hi<tool_call><|im_end|>");
  EXPECT_EQ(tok.decode(ids, true), "hi<tool_call>");
}

TEST(Tokenizer, RejectsInvalidUtf8Input) {
  try {
    fixture_tokenizer().encode(std::string("ok\xC3\x28", 4));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("byte 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fixture_tokenizer().encode_batch({"fine", std::string("\xFF")}, 2), InputError);
}

TEST(ByteLevel, AlphabetIsGpt2BytesToUnicode) {
  const auto& table = byte_level::byte_to_code_point();
  EXPECT_EQ(table['!'], static_cast<uint32_t>('!'));
  EXPECT_EQ(table[' '], 0x120u);   // "Ġ"
  EXPECT_EQ(table['\n'], 0x10Au);  // "Ċ"
  EXPECT_EQ(table[0xAD], 0x143u);  // soft hyphen is remapped
  EXPECT_EQ(table[0xAE], 0xAEu);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(byte_level::code_point_to_byte(table[b]), b);
  // Every byte symbol is in the fixture vocabulary (the trainer's initial alphabet).
  for (int b = 0; b < 256; ++b) {
    std::string bytes(1, static_cast<char>(b));
    EXPECT_TRUE(fixture_tokenizer().token_to_id(byte_level::bytes_to_symbols(bytes))) << b;
  }
}

TEST(ByteLevel, LossyDecodeReplacesMaximalSubparts) {
  // Cases from the Unicode standard's "U+FFFD substitution of maximal subparts" table (Python agrees).
  EXPECT_EQ(utf8_decode_lossy("\xE1\x80\xE2\xF0\x91\x92\xF1\xBF\x41"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\x41");
  EXPECT_EQ(utf8_decode_lossy("\xC0\xAF\xE0\x80\xBF\xF0\x81\x82\x41"), std::string(8 * 3, ' ').replace(0, 24,
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD") + "A");
  EXPECT_EQ(find_invalid_utf8("abc\xE4\xB8\xAD"), 6u);
  EXPECT_EQ(find_invalid_utf8("ab\xED\xA0\x80"), 2u);  // surrogate
}

// ---- malformed tokenizer.json ----

// Writes a mutated copy of the fixture tokenizer.json and expects an InputError naming the file and `needle`.
void expect_load_error(const std::function<void(Json&)>& mutate, const std::string& needle) {
  TempDir dir;
  Json j = load_json(kCheckpoint / "tokenizer.json");
  mutate(j);
  const auto path = dir.write("tokenizer.json", j.dump());
  try {
    Tokenizer::from_files(path.string());
    ADD_FAILURE() << "expected InputError mentioning " << needle;
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.source(), path.string());
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(TokenizerErrors, MissingModel) {
  expect_load_error([](Json& j) { j.erase("model"); }, "\"model\" is missing");
}

TEST(TokenizerErrors, UnsupportedModelType) {
  expect_load_error([](Json& j) { j["model"]["type"] = "WordPiece"; }, "unsupported model.type \"WordPiece\"");
}

TEST(TokenizerErrors, UnsupportedNormalizer) {
  expect_load_error([](Json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, "unsupported normalizer.type \"NFKC\"");
  expect_load_error(
      [](Json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}}}}; },
      "normalizer.normalizers[0].type \"Lowercase\"");
}

TEST(TokenizerErrors, UnsupportedPreTokenizer) {
  expect_load_error([](Json& j) { j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}}; },
                    "pre_tokenizer.pretokenizers[0].type \"Whitespace\"");
  expect_load_error([](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
                    "pre_tokenizer.pretokenizers[0].behavior");
  expect_load_error([](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; },
                    "cannot compile regex");
  expect_load_error([](Json& j) { j["pre_tokenizer"] = nullptr; }, "ByteLevel pre-tokenizer is required");
}

TEST(TokenizerErrors, MergeReferencingUnknownToken) {
  expect_load_error([](Json& j) { j["model"]["merges"][3] = {"zz_not_a_token", "a"}; },
                    "model.merges[3]: token \"zz_not_a_token\" is not in model.vocab");
  expect_load_error([](Json& j) { j["model"]["merges"][0] = "onlyonepart"; }, "model.merges[0]");
  expect_load_error([](Json& j) { j["model"]["merges"][1] = 17; }, "model.merges[1]");
}

TEST(TokenizerErrors, BadVocabAndAddedTokens) {
  expect_load_error([](Json& j) { j["model"]["vocab"]["a"] = "one"; }, "model.vocab[\"a\"]");
  expect_load_error([](Json& j) { j["model"]["vocab"]["a"] = -4; }, "out of range");
  expect_load_error([](Json& j) { j["model"].erase("vocab"); }, "model.vocab is missing");
  expect_load_error([](Json& j) { j["added_tokens"][2]["content"] = 5; }, "added_tokens[2].content");
  expect_load_error([](Json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "unsupported decoder");
  expect_load_error([](Json& j) { j["post_processor"] = {{"type", "TemplateProcessing"}}; },
                    "unsupported post_processor.type \"TemplateProcessing\"");
}

TEST(TokenizerErrors, BadJsonAndMissingFiles) {
  TempDir dir;
  const auto path = dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
  try {
    Tokenizer::from_files(path.string());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.source(), path.string());
    EXPECT_NE(std::string(e.what()).find("invalid JSON"), std::string::npos) << e.what();
  }
  // A number beyond a double is well-formed JSON the parser cannot hold: the same kind of error, naming where.
  const auto huge = dir.write("huge.json", "{\"model\": {\"dropout\": 1111.1E93003}}");
  try {
    Tokenizer::from_files(huge.string());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.source(), huge.string());
    EXPECT_NE(std::string(e.what()).find("model.dropout: number out of range"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::from_directory(dir.path().string() + "/nope"), InputError);
}

TEST(TokenizerErrors, ConfigTokenNotInVocabulary) {
  TempDir dir;
  Json config = load_json(kCheckpoint / "tokenizer_config.json");
  config["eos_token"] = "<|no_such_token|>";
  const auto path = dir.write("tokenizer_config.json", config.dump());
  try {
    Tokenizer::from_files((kCheckpoint / "tokenizer.json").string(), path.string());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.source(), path.string());
    EXPECT_NE(std::string(e.what()).find("eos_token \"<|no_such_token|>\""), std::string::npos) << e.what();
  }
  config["eos_token"] = 7;
  const auto path2 = dir.write("tokenizer_config2.json", config.dump());
  EXPECT_THROW(Tokenizer::from_files((kCheckpoint / "tokenizer.json").string(), path2.string()), InputError);
}

}  // namespace
}  // namespace vlreward
