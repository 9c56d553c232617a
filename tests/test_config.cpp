// Qwen2.5-VL config.json parsing against what transformers parsed from the same files
// (tests/fixtures/config, made by gen_config.py), plus malformed configs built here.
#include "adapters/hf/qwen2_5_vl_config.h"

#include <cstdint>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "adapters/common/config_file.h"
#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace vlreward;

namespace {

const fs::path kFixtures = fs::path(VLREWARD_FIXTURES_DIR) / "config";

json load_json(const std::string& name) { return json::parse(read_file((kFixtures / name).string())); }

std::optional<int64_t> optional_id(const json& v) {
  if (v.is_null()) return std::nullopt;
  return v.get<int64_t>();
}

void expect_matches_reference(const Qwen2_5_VLConfig& c, const json& want) {
  const json& t = want.at("text");
  EXPECT_EQ(c.text.vocab_size, t.at("vocab_size").get<int64_t>());
  EXPECT_EQ(c.text.hidden_size, t.at("hidden_size").get<int64_t>());
  EXPECT_EQ(c.text.intermediate_size, t.at("intermediate_size").get<int64_t>());
  EXPECT_EQ(c.text.num_hidden_layers, t.at("num_hidden_layers").get<int64_t>());
  EXPECT_EQ(c.text.num_attention_heads, t.at("num_attention_heads").get<int64_t>());
  EXPECT_EQ(c.text.num_key_value_heads, t.at("num_key_value_heads").get<int64_t>());
  EXPECT_EQ(c.text.max_position_embeddings, t.at("max_position_embeddings").get<int64_t>());
  EXPECT_EQ(c.text.rms_norm_eps, t.at("rms_norm_eps").get<double>());
  EXPECT_EQ(c.text.rope_theta, t.at("rope_theta").get<double>());
  EXPECT_EQ(c.text.rope_type, t.at("rope_type").get<std::string>());
  EXPECT_EQ(c.text.mrope_section, t.at("mrope_section").get<std::vector<int64_t>>());
  EXPECT_EQ(c.text.hidden_act, t.at("hidden_act").get<std::string>());
  EXPECT_EQ(c.text.tie_word_embeddings, t.at("tie_word_embeddings").get<bool>());
  EXPECT_EQ(c.text.attention_dropout, t.at("attention_dropout").get<double>());
  EXPECT_EQ(c.text.head_dim(), t.at("head_dim").get<int64_t>());
  EXPECT_EQ(c.text.bos_token_id, optional_id(t.at("bos_token_id")));
  EXPECT_EQ(c.text.eos_token_ids, t.at("eos_token_ids").get<std::vector<int64_t>>());
  EXPECT_EQ(c.text.pad_token_id, optional_id(t.at("pad_token_id")));

  const json& v = want.at("vision");
  EXPECT_EQ(c.vision.depth, v.at("depth").get<int64_t>());
  EXPECT_EQ(c.vision.hidden_size, v.at("hidden_size").get<int64_t>());
  EXPECT_EQ(c.vision.intermediate_size, v.at("intermediate_size").get<int64_t>());
  EXPECT_EQ(c.vision.num_heads, v.at("num_heads").get<int64_t>());
  EXPECT_EQ(c.vision.out_hidden_size, v.at("out_hidden_size").get<int64_t>());
  EXPECT_EQ(c.vision.in_channels, v.at("in_channels").get<int64_t>());
  EXPECT_EQ(c.vision.patch_size, v.at("patch_size").get<int64_t>());
  EXPECT_EQ(c.vision.temporal_patch_size, v.at("temporal_patch_size").get<int64_t>());
  EXPECT_EQ(c.vision.spatial_merge_size, v.at("spatial_merge_size").get<int64_t>());
  EXPECT_EQ(c.vision.window_size, v.at("window_size").get<int64_t>());
  EXPECT_EQ(c.vision.fullatt_block_indexes, v.at("fullatt_block_indexes").get<std::vector<int64_t>>());
  EXPECT_EQ(c.vision.tokens_per_second, v.at("tokens_per_second").get<int64_t>());
  EXPECT_EQ(c.vision.hidden_act, v.at("hidden_act").get<std::string>());
  EXPECT_EQ(c.vision.head_dim(), v.at("head_dim").get<int64_t>());

  EXPECT_EQ(c.image_token_id, want.at("image_token_id").get<int64_t>());
  EXPECT_EQ(c.video_token_id, want.at("video_token_id").get<int64_t>());
  EXPECT_EQ(c.vision_start_token_id, want.at("vision_start_token_id").get<int64_t>());
  EXPECT_EQ(c.vision_end_token_id, want.at("vision_end_token_id").get<int64_t>());
  EXPECT_EQ(c.dtype, want.at("dtype").is_null() ? "" : want.at("dtype").get<std::string>());
}

}  // namespace

TEST(Qwen2_5_VLConfig, EveryFixtureParsesAsTransformersDid) {
  const json expected = load_json("expected.json");
  int files = 0;
  for (const auto& [name, want] : expected.items()) {
    if (name.front() == '_') continue;
    SCOPED_TRACE(name);
    expect_matches_reference(Qwen2_5_VLConfig::load((kFixtures / name).string()), want);
    ++files;
  }
  EXPECT_EQ(files, 5);
}

TEST(Qwen2_5_VLConfig, FixturesCoverEveryLayout) {
  // Guards the fixtures: each file really has the layout its test relies on.
  const json hub = load_json("hub_7b.json");
  EXPECT_FALSE(hub.contains("text_config"));
  EXPECT_EQ(hub.at("rope_scaling").at("type"), "mrope");
  EXPECT_TRUE(hub.at("vision_config").contains("in_chans"));
  EXPECT_FALSE(hub.at("vision_config").contains("in_channels"));
  const json resaved = load_json("resaved_7b.json");
  EXPECT_TRUE(resaved.contains("text_config"));
  EXPECT_TRUE(resaved.at("text_config").contains("rope_scaling"));
  const json v5 = load_json("v5_rope_parameters_7b.json");
  EXPECT_FALSE(v5.at("text_config").contains("rope_scaling"));
  EXPECT_FALSE(v5.at("text_config").contains("rope_theta"));
  EXPECT_TRUE(v5.at("text_config").at("rope_parameters").contains("rope_theta"));
  const json conflict = load_json("resaved_conflict.json");
  EXPECT_NE(conflict.at("hidden_size"), conflict.at("text_config").at("hidden_size"));
}

TEST(Qwen2_5_VLConfig, DerivedSizesOf7B) {
  const auto c = Qwen2_5_VLConfig::load((kFixtures / "hub_7b.json").string());
  EXPECT_EQ(c.text.head_dim(), 128);
  EXPECT_EQ(c.text.num_key_value_groups(), 7);
  EXPECT_EQ(c.vision.head_dim(), 80);
  EXPECT_EQ(c.vision.patch_input_size(), 3 * 2 * 14 * 14);
  EXPECT_EQ(c.vision.spatial_merge_unit(), 4);
  EXPECT_EQ(c.vision.merger_hidden_size(), 5120);
  EXPECT_EQ(c.vision.window_merge_size(), 4);
  EXPECT_TRUE(c.vision.is_full_attention_block(7));
  EXPECT_TRUE(c.vision.is_full_attention_block(31));
  EXPECT_FALSE(c.vision.is_full_attention_block(8));
}

TEST(Qwen2_5_VLConfig, LoadsFromDirectory) {
  auto dir = fs::temp_directory_path() / ("vlreward_config_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(kFixtures / "tiny.json", dir / "config.json", fs::copy_options::overwrite_existing);
  const auto c = Qwen2_5_VLConfig::load(dir.string());
  EXPECT_EQ(c.text.hidden_size, 64);
  EXPECT_EQ(c.vision.depth, 4);
  try {
    Qwen2_5_VLConfig::load((dir / "missing").string());
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Qwen2_5_VLConfig, OptionalFieldsAndVariants) {
  json hub = load_json("hub_7b.json");
  // eos as a list, explicit pad, in_channels preferred over in_chans, torch_dtype vs dtype, integer rope_theta.
  hub["eos_token_id"] = {151645, 151643};
  hub["pad_token_id"] = 151643;
  hub["vision_config"]["in_channels"] = 3;
  hub["vision_config"]["in_chans"] = 99;
  hub["rope_theta"] = 10000;
  auto c = Qwen2_5_VLConfig::parse(hub.dump(), "hub");
  EXPECT_EQ(c.text.eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_EQ(c.text.pad_token_id, 151643);
  EXPECT_EQ(c.vision.in_channels, 3);
  EXPECT_EQ(c.text.rope_theta, 10000.0);
  EXPECT_EQ(c.dtype, "bfloat16");
  // Missing optional fields take transformers' defaults.
  for (const char* key : {"image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                          "rope_theta", "attention_dropout", "tie_word_embeddings", "bos_token_id", "eos_token_id",
                          "torch_dtype", "hidden_act"})
    hub.erase(key);
  hub["vision_config"].erase("in_channels");
  hub["vision_config"].erase("in_chans");
  c = Qwen2_5_VLConfig::parse(hub.dump(), "hub");
  EXPECT_EQ(c.image_token_id, 151655);
  EXPECT_EQ(c.video_token_id, 151656);
  EXPECT_EQ(c.vision_start_token_id, 151652);
  EXPECT_EQ(c.vision_end_token_id, 151653);
  EXPECT_EQ(c.text.rope_theta, 1000000.0);
  EXPECT_FALSE(c.text.bos_token_id.has_value());
  EXPECT_TRUE(c.text.eos_token_ids.empty());
  EXPECT_EQ(c.vision.in_channels, 3);
  EXPECT_EQ(c.dtype, "");
  // rope_type spelled only as "rope_type": "mrope" (no "type") is normalized too.
  json resaved = load_json("resaved_7b.json");
  resaved["text_config"]["rope_scaling"] = {{"rope_type", "mrope"}, {"mrope_section", {16, 24, 24}}};
  EXPECT_EQ(Qwen2_5_VLConfig::parse(resaved.dump(), "r").text.rope_type, "default");
}

// ---------------------------------------------------------------- bad configs

struct BadConfig {
  const char* label;
  std::function<void(json&)> edit;  // applied to a copy of the base file
  std::string expected;             // message substring after "<source>: "
};

void run_bad_configs(const std::string& base_name, const std::vector<BadConfig>& cases) {
  const json base = load_json(base_name);
  for (const auto& c : cases) {
    json doc = base;
    c.edit(doc);
    const std::string source = "dir/" + base_name;
    try {
      Qwen2_5_VLConfig::parse(doc.dump(), source);
      ADD_FAILURE() << c.label << ": no error";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(source + ": " + c.expected), std::string::npos)
          << c.label << ": got \"" << e.what() << "\", want \"" << c.expected << "\"";
    }
  }
}

TEST(Qwen2_5_VLConfig, BadNestedConfigsNameTheKeyPath) {
  run_bad_configs("resaved_7b.json", {
      {"kv heads don't divide", [](json& d) { d["text_config"]["num_key_value_heads"] = 5; },
       "text_config.num_key_value_heads: must divide num_attention_heads (28), got 5"},
      {"missing text key", [](json& d) { d["text_config"].erase("hidden_size"); },
       "text_config.hidden_size: is required"},
      {"null text key", [](json& d) { d["text_config"]["vocab_size"] = nullptr; },
       "text_config.vocab_size: is required"},
      {"string for int", [](json& d) { d["text_config"]["num_hidden_layers"] = "28"; },
       "text_config.num_hidden_layers: must be an integer, got string \"28\""},
      {"float for int", [](json& d) { d["text_config"]["intermediate_size"] = 18944.0; },
       "text_config.intermediate_size: must be an integer, got 18944.0"},
      {"zero size", [](json& d) { d["text_config"]["num_hidden_layers"] = 0; },
       "text_config.num_hidden_layers: must be a positive integer, got 0"},
      {"negative vocab", [](json& d) { d["text_config"]["vocab_size"] = -1; },
       "text_config.vocab_size: must be a positive integer, got -1"},
      {"hidden not divisible by heads", [](json& d) { d["text_config"]["hidden_size"] = 3580; },
       "text_config.hidden_size: must be divisible by num_attention_heads (28), got 3580"},
      {"mrope sum", [](json& d) { d["text_config"]["rope_scaling"]["mrope_section"] = {16, 24, 16}; },
       "text_config.rope_scaling.mrope_section: must sum to head_dim / 2 = 64 (hidden_size 3584 / "
       "num_attention_heads 28 / 2), got [16, 24, 16] (sum 56)"},
      {"mrope arity", [](json& d) { d["text_config"]["rope_scaling"]["mrope_section"] = {32, 32}; },
       "text_config.rope_scaling.mrope_section: must have 3 entries (temporal, height, width), got [32, 32]"},
      {"mrope negative", [](json& d) { d["text_config"]["rope_scaling"]["mrope_section"] = {-8, 36, 36}; },
       "text_config.rope_scaling.mrope_section: entries must be non-negative"},
      {"mrope not ints", [](json& d) { d["text_config"]["rope_scaling"]["mrope_section"] = {16, "24", 24}; },
       "text_config.rope_scaling.mrope_section[1]: must be an integer, got string \"24\""},
      {"rope type", [](json& d) { d["text_config"]["rope_scaling"]["type"] = "yarn"; },
       "text_config.rope_scaling.type: unsupported rope type \"yarn\" (supported: default, mrope)"},
      {"no rope", [](json& d) { d["text_config"].erase("rope_scaling"); },
       "text_config.rope_scaling: missing (neither rope_scaling nor rope_parameters gives mrope_section)"},
      {"rope_scaling not an object", [](json& d) { d["text_config"]["rope_scaling"] = "mrope"; },
       "text_config.rope_scaling: must be an object, got string \"mrope\""},
      {"rope_theta zero", [](json& d) { d["text_config"]["rope_theta"] = 0; },
       "text_config.rope_theta: must be a positive number, got 0"},
      {"rms eps negative", [](json& d) { d["text_config"]["rms_norm_eps"] = -1e-6; },
       "text_config.rms_norm_eps: must be a positive number, got -1e-06"},
      {"text activation", [](json& d) { d["text_config"]["hidden_act"] = "gelu"; },
       "text_config.hidden_act: unsupported activation \"gelu\" (supported: silu)"},
      {"tie not bool", [](json& d) { d["text_config"]["tie_word_embeddings"] = 0; },
       "text_config.tie_word_embeddings: must be true or false, got number"},
      {"dropout", [](json& d) { d["text_config"]["attention_dropout"] = 1.5; },
       "text_config.attention_dropout: must be in [0, 1), got 1.5"},
      {"sliding window", [](json& d) { d["text_config"]["use_sliding_window"] = true; },
       "text_config.use_sliding_window: sliding-window attention is not supported"},
      {"layer types", [](json& d) { d["text_config"]["layer_types"][3] = "sliding_attention"; },
       "text_config.layer_types[3]: only \"full_attention\" is supported, got \"sliding_attention\""},
      {"layer types length", [](json& d) { d["text_config"]["layer_types"].erase(0); },
       "text_config.layer_types: must be a list of num_hidden_layers (28) entries"},
      {"eos type", [](json& d) { d["text_config"]["eos_token_id"] = "</s>"; },
       "text_config.eos_token_id: must be an integer or a list of integers, got string \"</s>\""},
      {"eos out of vocab", [](json& d) { d["text_config"]["eos_token_id"] = {151645, 152064}; },
       "text_config.eos_token_id[1]: must be in [0, vocab_size=152064), got 152064"},
      {"text_config not an object", [](json& d) { d["text_config"] = {1, 2}; },
       "text_config: must be an object, got array"},
      {"out_hidden_size", [](json& d) { d["vision_config"]["out_hidden_size"] = 2048; },
       "vision_config.out_hidden_size: must equal the text hidden_size (text_config.hidden_size = 3584), got 2048"},
      {"vision missing", [](json& d) { d.erase("vision_config"); }, "vision_config: is required"},
      {"vision key missing", [](json& d) { d["vision_config"].erase("tokens_per_second"); },
       "vision_config.tokens_per_second: is required"},
      {"vision heads", [](json& d) { d["vision_config"]["num_heads"] = 12; },
       "vision_config.hidden_size: must be divisible by num_heads (12), got 1280"},
      {"vision head_dim % 4", [](json& d) { d["vision_config"]["num_heads"] = 128; },
       "vision_config.num_heads: head_dim (hidden_size 1280 / num_heads 128 = 10) must be divisible by 4"},
      {"window size", [](json& d) { d["vision_config"]["window_size"] = 100; },
       "vision_config.window_size: must be a multiple of patch_size x spatial_merge_size (28), got 100"},
      {"full-attention block out of range", [](json& d) { d["vision_config"]["fullatt_block_indexes"][3] = 32; },
       "vision_config.fullatt_block_indexes[3]: must be a block index in [0, depth=32), got 32"},
      {"full-attention blocks unsorted", [](json& d) { d["vision_config"]["fullatt_block_indexes"] = {7, 7}; },
       "vision_config.fullatt_block_indexes: must be strictly increasing, got [7, 7]"},
      {"vision activation", [](json& d) { d["vision_config"]["hidden_act"] = "quick_gelu"; },
       "vision_config.hidden_act: unsupported activation \"quick_gelu\""},
      {"image token out of vocab", [](json& d) { d["image_token_id"] = 200000; },
       "image_token_id: must be in [0, vocab_size=152064), got 200000"},
      {"token id type", [](json& d) { d["video_token_id"] = true; },
       "video_token_id: must be an integer, got boolean"},
  });
}

TEST(Qwen2_5_VLConfig, BadFlatAndV5ConfigsNameTheKeyPath) {
  run_bad_configs("hub_7b.json", {
      {"flat kv heads", [](json& d) { d["num_key_value_heads"] = 5; },
       "num_key_value_heads: must divide num_attention_heads (28), got 5"},
      {"flat mrope", [](json& d) { d["rope_scaling"]["mrope_section"] = {16, 24, 25}; },
       "rope_scaling.mrope_section: must sum to head_dim / 2 = 64"},
      {"flat out_hidden_size", [](json& d) { d["hidden_size"] = 3136; d["rope_scaling"]["mrope_section"] = {16, 24, 16}; },
       "vision_config.out_hidden_size: must equal the text hidden_size (hidden_size = 3136), got 3584"},
      {"flat in_chans", [](json& d) { d["vision_config"]["in_chans"] = 0; },
       "vision_config.in_chans: must be a positive integer, got 0"},
  });
  run_bad_configs("v5_rope_parameters_7b.json", {
      {"v5 mrope", [](json& d) { d["text_config"]["rope_parameters"]["mrope_section"] = {16, 24}; },
       "text_config.rope_parameters.mrope_section: must have 3 entries"},
      {"v5 theta", [](json& d) { d["text_config"]["rope_parameters"]["rope_theta"] = -1.0; },
       "text_config.rope_parameters.rope_theta: must be a positive number, got -1"},
      {"v5 rope type", [](json& d) { d["text_config"]["rope_parameters"]["rope_type"] = "linear"; },
       "text_config.rope_parameters.rope_type: unsupported rope type \"linear\""},
  });
  for (const auto& [text, expected] : std::vector<std::pair<std::string, std::string>>{
           {"{\"vision_config\": ", "cfg.json: not valid JSON"}, {"[1]", "cfg.json: must be a JSON object, got array"}}) {
    try {
      Qwen2_5_VLConfig::parse(text, "cfg.json");
      ADD_FAILURE() << text;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
}

// YAML configs are Unicode text: ill-formed UTF-8 is refused when the file is read, naming the file and the line,
// instead of passing through into strings that later fail far from the file (found by fuzz_yaml_config).
TEST(ConfigFile, IllFormedUtf8InYamlIsAnInputErrorNamingTheLine) {
  const auto path = std::filesystem::temp_directory_path() / ("vlreward_config_utf8_" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(path) << "train:\n  lr: 1e-5\nmodel:\n  path: \"caf\xA0\"\n";
  try {
    vlreward::load_config_file(path.string());
    ADD_FAILURE() << "ill-formed UTF-8 was accepted";
  } catch (const vlreward::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ill-formed UTF-8 at byte 37 (line 4)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.filename().string()), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
  nlohmann::json config = nlohmann::json::object();
  EXPECT_THROW(vlreward::apply_override(config, "model.path=caf\xA0"), vlreward::InputError);
  vlreward::apply_override(config, "model.path=café");
  EXPECT_EQ(config["model"]["path"], "café");
}
