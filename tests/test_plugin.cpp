// Shared-library reward plugins (plugin/plugin_abi.h, plugin/shared_library_backend.cpp) and registry errors.
// Plugin paths come from the build: KEYWORD_PLUGIN_PATH (examples/keyword_reward) and the test-only plugins
// in tests/plugins/.
#include <dlfcn.h>

#include <gtest/gtest.h>

#include <functional>

#include "plugin/config_reader.h"
#include "plugin/plugin_abi.h"
#include "plugin/registry.h"

namespace vlreward {
namespace {

using nlohmann::json;

// The ConfigError message of creating `config`, or "" if it was created.
std::string config_error(const json& config, const std::string& where = "reward") {
  try {
    RewardRegistry().create(config, where);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

RewardRequest text_request(std::string id, std::string response) {
  return RewardRequest::single_turn(std::move(id), {}, "question?", std::move(response));
}

json keyword_config(json plugin_config) {
  return {{"type", "plugin"}, {"path", KEYWORD_PLUGIN_PATH}, {"config", std::move(plugin_config)}};
}

TEST(KeywordPlugin, ScoresWeightedKeywordsCaseInsensitiveByDefault) {
  auto backend = RewardRegistry().create(keyword_config({{"keywords", {{"cat", 1.0}, {"dog", 0.5}, {"Bird", 2}}}}));
  EXPECT_EQ(backend->name(), "keyword_reward");
  EXPECT_FALSE(backend->capabilities().images);
  auto results = backend->score({text_request("a", "A Cat and a DOG and another cat"), text_request("b", "birds!"),
                                 text_request("c", "nothing here"), text_request("d", "")});
  ASSERT_EQ(results.size(), 4u);
  ASSERT_TRUE(results[0].ok()) << results[0].error;
  EXPECT_DOUBLE_EQ(*results[0].score, 1.5);  // each keyword counts once
  ASSERT_TRUE(results[1].ok());
  EXPECT_DOUBLE_EQ(*results[1].score, 2.0);
  ASSERT_TRUE(results[2].ok());
  EXPECT_DOUBLE_EQ(*results[2].score, 0.0);
  EXPECT_FALSE(results[3].ok());
  EXPECT_EQ(results[3].error, "request \"d\": empty response");
}

TEST(KeywordPlugin, CaseSensitiveOption) {
  auto backend = RewardRegistry().create(keyword_config({{"keywords", {{"Cat", 3.0}}}, {"case_sensitive", true}}));
  auto results = backend->score({text_request("a", "a cat"), text_request("b", "a Cat")});
  ASSERT_TRUE(results[0].ok() && results[1].ok());
  EXPECT_DOUBLE_EQ(*results[0].score, 0.0);
  EXPECT_DOUBLE_EQ(*results[1].score, 3.0);
}

TEST(KeywordPlugin, RefusedConfigNamesLibraryAndPluginMessage) {
  EXPECT_EQ(config_error(keyword_config({{"keywords", {{"cat", 1}}}, {"colour", "red"}})),
            std::string("reward.config: plugin \"") + KEYWORD_PLUGIN_PATH +
                "\" refused its config: unknown key \"colour\" (known: keywords, case_sensitive)");
  EXPECT_EQ(config_error(keyword_config(json::object())),
            std::string("reward.config: plugin \"") + KEYWORD_PLUGIN_PATH +
                "\" refused its config: \"keywords\" must be a non-empty object {keyword: weight}");
  // No "config" at all: the plugin gets {} and refuses it the same way.
  EXPECT_NE(config_error({{"type", "plugin"}, {"path", KEYWORD_PLUGIN_PATH}}).find("refused its config"),
            std::string::npos);
}

TEST(PluginLoading, WrongAbiVersion) {
  EXPECT_EQ(config_error({{"type", "plugin"}, {"path", WRONG_ABI_PLUGIN_PATH}}),
            std::string("reward: plugin \"") + WRONG_ABI_PLUGIN_PATH + "\" has ABI version 2, expected 1");
}

TEST(PluginLoading, MissingSymbol) {
  EXPECT_EQ(config_error({{"type", "plugin"}, {"path", MISSING_SYMBOL_PLUGIN_PATH}}, "cfg.reward"),
            std::string("cfg.reward: plugin \"") + MISSING_SYMBOL_PLUGIN_PATH +
                "\" is missing symbol vlreward_plugin_score");
}

TEST(PluginLoading, CannotOpenMissingFile) {
  const std::string error = config_error({{"type", "plugin"}, {"path", "/nonexistent/libnope.so"}});
  EXPECT_EQ(error.rfind("reward.path: cannot open plugin \"/nonexistent/libnope.so\": ", 0), 0u) << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;  // dlerror's text
}

TEST(PluginLoading, CannotOpenNonLibrary) {
  const std::string path = std::string(VLREWARD_FIXTURES_DIR) + "/../test_plugin.cpp";
  const std::string error = config_error({{"type", "plugin"}, {"path", path}});
  EXPECT_EQ(error.rfind("reward.path: cannot open plugin \"" + path + "\": ", 0), 0u) << error;
  EXPECT_NE(error.find("test_plugin.cpp:"), std::string::npos) << error;  // dlerror names the file and why
}

TEST(PluginLoading, ConfigKeysAreChecked) {
  EXPECT_EQ(config_error({{"type", "plugin"}}), "reward.path: is required");
  EXPECT_EQ(config_error({{"type", "plugin"}, {"path", 3}}), "reward.path: must be a string, got number 3");
  EXPECT_EQ(config_error({{"type", "plugin"}, {"path", ""}}), "reward.path: must not be empty");
  EXPECT_EQ(config_error({{"type", "plugin"}, {"path", KEYWORD_PLUGIN_PATH}, {"pth", "x"}}),
            "reward: unknown key(s): pth");
  EXPECT_EQ(config_error({{"type", "plugin"}, {"path", KEYWORD_PLUGIN_PATH}, {"config", json::array()}}),
            "reward.config: must be an object, got array");
}

TEST(PluginLoading, PluginRefusalMessageComesThrough) {
  EXPECT_EQ(config_error({{"type", "plugin"}, {"path", MISBEHAVING_PLUGIN_PATH}, {"config", {{"mode", "refuse"}}}}),
            std::string("reward.config: plugin \"") + MISBEHAVING_PLUGIN_PATH +
                "\" refused its config: told to refuse (config {\"mode\":\"refuse\"})");
}

std::unique_ptr<RewardBackend> misbehaving(const std::string& mode) {
  return RewardRegistry().create(
      {{"type", "plugin"}, {"path", MISBEHAVING_PLUGIN_PATH}, {"config", {{"mode", mode}}}});
}

TEST(PluginScoring, RequestTranslatedCompletely) {
  auto backend = misbehaving("inspect");
  EXPECT_EQ(backend->name(), "inspect");
  const RewardCapabilities caps = backend->capabilities();
  EXPECT_TRUE(caps.images);
  EXPECT_TRUE(caps.batched);
  EXPECT_FALSE(caps.needs_reference);

  RewardRequest full = RewardRequest::single_turn(
      "full", {RewardImage::from_bytes(std::string(1000, '\0'), "image/png"), RewardImage::from_path("/tmp/x.png")},
      "what?", std::string("resp\0onse", 9), "ref");
  full.system_prompt = "be brief";
  full.metadata = {{"k1", "v1"}, {"k2", "v2"}};
  full.turns.push_back({"assistant", {RewardContent::text_part("earlier")}});
  RewardRequest bare;
  bare.id = "bare";
  RewardRequest bad = text_request("bad", "oops");

  auto results = backend->score({full, bare, bad});
  ASSERT_EQ(results.size(), 3u);
  ASSERT_TRUE(results[0].ok()) << results[0].error;
  // 2 images (1000 + 0.001*1000 bytes + 1000), 2 text parts, 2 metadata entries, system prompt, reference.
  EXPECT_DOUBLE_EQ(*results[0].score, 2001.0 + 200.0 + 20.0 + 1.0 + 2.0);
  ASSERT_TRUE(results[1].ok()) << results[1].error;
  EXPECT_DOUBLE_EQ(*results[1].score, 0.0);
  EXPECT_FALSE(results[2].ok());
  EXPECT_EQ(results[2].error, "bad item: oops");
  EXPECT_TRUE(backend->score({}).empty());
}

TEST(PluginScoring, BadBatchStatusFailsEveryItem) {
  auto backend = misbehaving("batch_status");
  auto results = backend->score({text_request("a", "x"), text_request("b", "y")});
  ASSERT_EQ(results.size(), 2u);
  const std::string expected = std::string("plugin batch_status (") + MISBEHAVING_PLUGIN_PATH +
                               "): score() failed for the whole batch with status 7: the GPU caught fire";
  for (const auto& r : results) {
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.error, expected);
  }
}

TEST(PluginScoring, NonFiniteScoreIsAnItemFailure) {
  auto results = misbehaving("nan")->score({text_request("a", "x")});
  ASSERT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error,
            std::string("plugin nan (") + MISBEHAVING_PLUGIN_PATH + "): returned a non-finite score");
}

TEST(PluginScoring, UnterminatedErrorBufferIsBounded) {
  auto results = misbehaving("unterminated")->score({text_request("a", "x")});
  ASSERT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error, std::string(VLREWARD_ERROR_SIZE, 'x'));
}

TEST(PluginScoring, InstancesOfOneLibraryAreIndependent) {
  auto failing = misbehaving("batch_status");
  auto inspecting = misbehaving("inspect");
  EXPECT_FALSE(failing->score({text_request("a", "x")})[0].ok());
  auto ok = inspecting->score({text_request("a", "x")});
  ASSERT_TRUE(ok[0].ok()) << ok[0].error;
  EXPECT_DOUBLE_EQ(*ok[0].score, 100.0);
}

TEST(PluginLoading, LibraryUnloadedWithLastBackend) {
  auto loaded = [] {
    void* handle = dlopen(MISBEHAVING_PLUGIN_PATH, RTLD_NOW | RTLD_NOLOAD);
    if (handle != nullptr) dlclose(handle);
    return handle != nullptr;
  };
  ASSERT_FALSE(loaded());
  {
    auto a = misbehaving("inspect");
    auto b = misbehaving("nan");
    EXPECT_TRUE(loaded());
    a.reset();
    EXPECT_TRUE(loaded());  // b still uses it
  }
  EXPECT_FALSE(loaded());
}

TEST(Registry, UnknownTypeListsKnownOnes) {
  EXPECT_EQ(config_error({{"type", "nope"}}, "trainer.reward"),
            "trainer.reward.type: unknown reward backend \"nope\" (known: plugin, remote)");
}

TEST(Registry, MissingOrBadType) {
  EXPECT_EQ(config_error({{"path", "x"}}), "reward.type: is required (a string)");
  EXPECT_EQ(config_error({{"type", 1}}), "reward.type: is required (a string)");
  EXPECT_EQ(config_error(json::array()), "reward: must be an object with a \"type\"");
}

TEST(Registry, DuplicateTypeRejected) {
  RewardRegistry registry;
  try {
    registry.add("plugin", [](const json&, const std::string&, const RewardRegistry&) {
      return std::unique_ptr<RewardBackend>();
    });
    FAIL() << "duplicate accepted";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "reward backend type \"plugin\" is registered twice");
  }
}

// Integers in configs: only whole numbers the target type holds. The JSON library would convert 4e53 to an int64
// (undefined behaviour) and -1 to a huge unsigned value.
TEST(ConfigReader, IntegersMustFitTheirType) {
  const nlohmann::json config = {{"huge", 4.11111e53}, {"fraction", 2.5}, {"whole_float", 16.0}, {"negative", -1},
                                 {"big_unsigned", 18446744073709551615ull}, {"ok", 7}, {"nan_text", "7"}};
  auto error = [&](const std::function<void(ConfigReader&)>& read) {
    ConfigReader reader(config, "cfg");
    try {
      read(reader);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error([](ConfigReader& r) { r.required<int64_t>("huge"); }).find("cfg.huge: must be an integer in"),
            std::string::npos);
  EXPECT_NE(error([](ConfigReader& r) { r.required<int64_t>("fraction"); }).find("got 2.5"), std::string::npos);
  EXPECT_NE(error([](ConfigReader& r) { r.required<uint64_t>("negative"); }).find("cfg.negative: must be an integer"),
            std::string::npos);
  EXPECT_NE(error([](ConfigReader& r) { r.required<int64_t>("big_unsigned"); }).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error([](ConfigReader& r) { r.required<int>("big_unsigned"); }).find("must be an integer"), std::string::npos);
  EXPECT_NE(error([](ConfigReader& r) { r.required<int64_t>("nan_text"); }).find("cfg.nan_text: must be an integer, got string \"7\""), std::string::npos);
  ConfigReader reader(config, "cfg");
  EXPECT_EQ(reader.required<int64_t>("whole_float"), 16);
  EXPECT_EQ(reader.required<int>("ok"), 7);
  EXPECT_EQ(reader.required<int64_t>("negative"), -1);
  EXPECT_EQ(reader.required<uint64_t>("big_unsigned"), 18446744073709551615ull);
  EXPECT_EQ(reader.required<double>("fraction"), 2.5);
}

}  // namespace
}  // namespace vlreward
