// reward-score's JSONL runner: per-line errors become records, output survives interruption and resumes.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "plugin/wire/base64.h"
#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "adapters/image/decode.h"
#include "plugin/registry.h"
#include "reward/backends.h"
#include "reward/batch_scoring.h"
#include "reward/batch_scoring.h"
#include "reward/score_jsonl.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace vlreward;

namespace {

void write(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

std::vector<nlohmann::json> records(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::unique_ptr<RewardBackend> exact_match() {
  RewardRegistry registry;
  register_reward_backends(registry);
  return registry.create({{"type", "exact_match"}, {"case_fold", true}});
}

// Counts calls so tests can see batching and resume skipping.
class CountingBackend : public RewardBackend {
 public:
  explicit CountingBackend(std::unique_ptr<RewardBackend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "counting"; }
  RewardCapabilities capabilities() const override { return inner_->capabilities(); }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    scored += static_cast<int>(batch.size());
    return inner_->score(batch);
  }
  int scored = 0;

 private:
  std::unique_ptr<RewardBackend> inner_;
};

const char* kInput =
    R"({"id": "a", "question": "2+2?", "response": "4", "reference": "4"}
{"id": "b", "question": "Capital?", "response": "paris", "reference": "Paris"}
not json at all
{"id": "d", "question": "q", "response": "x", "images": ["missing.png"]}
{"id": "e", "question": "q"}
{"id": 6, "question": "q", "response": "no", "reference": "yes"}
{"id": "g", "question": "q", "response": "z", "images": ["data:image/png;base64,@@@"]}
)";

}  // namespace

TEST(RewardScore, ScoresGoodLinesAndRecordsErrorsForBadOnes) {
  auto dir = test_support::scratch_dir("basic");
  write(dir / "in.jsonl", kInput);
  auto backend = exact_match();
  ScoreJsonlOptions o{(dir / "in.jsonl").string(), (dir / "out.jsonl").string(), {}, 2, false, false, false};
  auto summary = score_jsonl(*backend, o);
  EXPECT_EQ(summary.scored, 3);
  EXPECT_EQ(summary.failed, 4);
  auto out = records(dir / "out.jsonl");
  ASSERT_EQ(out.size(), 7u);
  EXPECT_EQ(out[0], (nlohmann::json{{"id", "a"}, {"score", 1.0}}));
  EXPECT_EQ(out[1], (nlohmann::json{{"id", "b"}, {"score", 1.0}}));  // case_fold
  EXPECT_EQ(out[2]["id"], "line 3");
  EXPECT_NE(out[2]["error"].get<std::string>().find("invalid JSON"), std::string::npos);
  EXPECT_EQ(out[3]["id"], "d");
  EXPECT_NE(out[3]["error"].get<std::string>().find("images[0]"), std::string::npos) << out[3];
  EXPECT_NE(out[4]["error"].get<std::string>().find("missing \"response\""), std::string::npos) << out[4];
  EXPECT_EQ(out[5], (nlohmann::json{{"id", 6}, {"score", 0.0}}));
  EXPECT_NE(out[6]["error"].get<std::string>().find("malformed data URI"), std::string::npos) << out[6];
}

TEST(RewardScore, NumbersOutOfRangeAreErrorsOfTheirLineOnly) {
  auto dir = test_support::scratch_dir("out_of_range");
  write(dir / "in.jsonl", R"({"id": "a", "question": "q", "response": "4", "reference": "4"}
{"id": "b", "question": "q", "response": "r", "reference": 1e400}
{"id": "c", "question": "q", "response": "5", "reference": "5", "extra": [-1e309]}
{"id": "d", "question": "q", "response": "x", "reference": "x"}
)");
  auto backend = exact_match();
  ScoreJsonlOptions o{(dir / "in.jsonl").string(), (dir / "out.jsonl").string(), {}, 8, false, false, false};
  auto summary = score_jsonl(*backend, o);
  EXPECT_EQ(summary.scored, 2);
  EXPECT_EQ(summary.failed, 2);
  auto out = records(dir / "out.jsonl");
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0], (nlohmann::json{{"id", "a"}, {"score", 1.0}}));
  EXPECT_NE(out[1]["error"].get<std::string>().find("line 2: reference: number out of range"), std::string::npos) << out[1];
  EXPECT_NE(out[2]["error"].get<std::string>().find("line 3: extra[0]: number out of range"), std::string::npos) << out[2];
  EXPECT_EQ(out[3], (nlohmann::json{{"id", "d"}, {"score", 1.0}}));
}

// Fails every request whose response starts with "fail:", echoing the response's bytes in the error.
class EchoingFailures : public RewardBackend {
 public:
  std::string name() const override { return "echoing"; }
  RewardCapabilities capabilities() const override { return {}; }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    std::vector<RewardResult> out;
    for (const auto& r : batch)
      out.push_back(r.response.rfind("fail:", 0) == 0 ? RewardResult::failure("cannot score " + r.response + "\xff\xfe")
                                                      : RewardResult::success(static_cast<double>(r.response.size())));
    return out;
  }
};

TEST(RewardScore, InvalidUtf8FailsOnlyItsLineAndRecordsStayValidJson) {
  auto dir = test_support::scratch_dir("utf8");
  write(dir / "in.jsonl", std::string(R"({"id": "a", "question": "q", "response": "one"})") + "\n" +
                              R"({"id": "b", "question": "q", "response": "t)" + "\xff" + R"(o"})" + "\n" +
                              R"({"id": "c", "question": "q", "response": "fail:three"})" + "\n" +
                              R"({"id": "d", "question": "q\u00e9", "response": "four"})" + "\n");
  EchoingFailures backend;
  ScoreJsonlOptions o{(dir / "in.jsonl").string(), (dir / "out.jsonl").string(), {}, 8, false, false, false};
  auto summary = score_jsonl(backend, o);
  EXPECT_EQ(summary.scored, 2);
  EXPECT_EQ(summary.failed, 2);
  auto out = records(dir / "out.jsonl");  // every line parses
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0], (nlohmann::json{{"id", "a"}, {"score", 3.0}}));
  EXPECT_EQ(out[1]["id"], "line 2");
  EXPECT_EQ(out[1]["error"], "line 2: not valid UTF-8 (byte 0xFF at column 44); the line is not scored") << out[1];
  EXPECT_EQ(out[2]["id"], "c");
  EXPECT_EQ(out[2]["error"], "cannot score fail:three\uFFFD\uFFFD") << out[2];
  EXPECT_EQ(out[3], (nlohmann::json{{"id", "d"}, {"score", 4.0}}));
}

// Hostile lines, each between good ones: every one becomes its own error record and the good lines score.
TEST(RewardScore, HostileLinesFailAloneAndEveryGoodLineScores) {
  auto dir = test_support::scratch_dir("hostile");
  auto good = [](size_t i) {
    return R"({"id": "ok)" + std::to_string(i) + R"(", "question": "q", "response": "x", "reference": "x"})";
  };
  const std::vector<std::pair<std::string, std::string>> hostile = {
      {std::string(200000, '[') + std::string(200000, ']'), "line 2: must be a JSON object"},
      {"{\"id\": \"n\", \"question\": \"q\", \"response\": \"a" + std::string("\0b", 2) + "\"}", "line 4: invalid JSON at response"},
      {std::string("\x89PNG\0\0\0\rIHDR\xff\xfe\x80", 16), "line 6: not valid UTF-8 (byte 0x89 at column 1)"},  // binary bytes, no newline
      {R"([{"id": "arr", "question": "q", "response": "x"}])", "line 8: must be a JSON object"},
      {R"({"id": "big", "question": "q", "response": ")" + std::string(4 << 20, 'r') + R"(", "reference": 7})",
       "line 10: \"reference\" must be a string"},
      {R"({"id": "esc", "question": "q", "response": "x", "images": ["data:image/png;base64,)" +
           std::string(1000, '=') + R"("]})",
       "line 12: images[0]: malformed data URI"},
  };
  std::string input = good(0) + "\n";
  for (size_t i = 0; i < hostile.size(); ++i) input += hostile[i].first + "\n" + good(i + 1) + "\n";
  input += R"({"id": "tail", "question": "q", "response": "x", "reference": "x"})";  // no final newline
  write(dir / "in.jsonl", input);
  CountingBackend backend(exact_match());
  ScoreJsonlOptions o{(dir / "in.jsonl").string(), (dir / "out.jsonl").string(), {}, 4, false, false, false};
  auto summary = score_jsonl(backend, o);
  EXPECT_EQ(summary.failed, static_cast<int64_t>(hostile.size()));
  EXPECT_EQ(summary.scored, static_cast<int64_t>(hostile.size()) + 2);
  auto out = records(dir / "out.jsonl");  // every record parses
  ASSERT_EQ(out.size(), 2 * hostile.size() + 2);
  for (size_t i = 0; i < hostile.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(out[2 * i], (nlohmann::json{{"id", "ok" + std::to_string(i)}, {"score", 1.0}}));
    ASSERT_TRUE(out[2 * i + 1].contains("error")) << out[2 * i + 1].dump().substr(0, 200);
    EXPECT_NE(out[2 * i + 1]["error"].get<std::string>().find(hostile[i].second), std::string::npos)
        << out[2 * i + 1]["error"];
  }
  EXPECT_EQ(out[2 * hostile.size()], (nlohmann::json{{"id", "ok" + std::to_string(hostile.size())}, {"score", 1.0}}));
  EXPECT_EQ(out.back(), (nlohmann::json{{"id", "tail"}, {"score", 1.0}}));
}

TEST(RewardScore, OversizedImageFilesAreRefusedBeforeReading) {
  auto dir = test_support::scratch_dir("big_images");
  write(dir / "small.png", "\x89PNG\r\n\x1a\n" + std::string(192, 'x'));
  write(dir / "big.png", "\x89PNG\r\n\x1a\n");
  fs::resize_file(dir / "big.png", 1ull << 30);  // sparse: costs no disk, and must cost no memory either
  write(dir / "in.jsonl", R"({"id": "a", "question": "q", "response": "x", "reference": "x"}
{"id": "b", "question": "q", "response": "x", "reference": "x", "images": ["big.png"]}
{"id": "c", "question": "q", "response": "x", "reference": "x", "image": "small.png"}
{"id": "d", "question": "q", "response": "x", "reference": "x"}
)");
  CountingBackend backend(exact_match());
  ScoreJsonlOptions o{(dir / "in.jsonl").string(), (dir / "out.jsonl").string(), {}, 8, false, false, false};
  auto summary = score_jsonl(backend, o);
  EXPECT_EQ(summary.scored, 3);
  EXPECT_EQ(summary.failed, 1);
  EXPECT_EQ(backend.scored, 3);
  auto out = records(dir / "out.jsonl");
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[1]["id"], "b");
  EXPECT_EQ(out[1]["error"], "line 2: images[0]: image big.png is 1073741824 bytes, over the 33554432-byte limit");
  EXPECT_EQ(out[3], (nlohmann::json{{"id", "d"}, {"score", 1.0}}));

  // The limit is an option.
  o.overwrite = true;
  o.max_image_bytes = 100;
  summary = score_jsonl(backend, o);
  EXPECT_EQ(summary.failed, 2);
  out = records(dir / "out.jsonl");
  EXPECT_EQ(out[2]["error"], "line 3: image: image small.png is 200 bytes, over the 100-byte limit");
  EXPECT_EQ(out[3], (nlohmann::json{{"id", "d"}, {"score", 1.0}}));

  // Whatever reads an image path checks its size first.
  try {
    decode_image_file((dir / "big.png").string());
    ADD_FAILURE() << "read a 1 GiB image";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("is 1073741824 bytes, over the 268435456-byte limit"), std::string::npos)
        << e.what();
  }
}

TEST(RewardScore, RefusesToClobberAndResumesAfterATornLine) {
  auto dir = test_support::scratch_dir("resume");
  write(dir / "in.jsonl", kInput);
  ScoreJsonlOptions o{(dir / "in.jsonl").string(), (dir / "out.jsonl").string(), {}, 1, false, false, false};
  // Simulate a run killed mid-write: two complete records and half of a third.
  write(dir / "out.jsonl", "{\"id\":\"a\",\"score\":1.0}\n{\"id\":\"b\",\"score\":1.0}\n{\"id\":\"line 3\",\"err");
  CountingBackend backend(exact_match());
  EXPECT_THROW(score_jsonl(backend, o), InputError);  // neither --resume nor --overwrite
  o.resume = true;
  auto summary = score_jsonl(backend, o);
  EXPECT_EQ(summary.skipped, 2);
  EXPECT_EQ(backend.scored, 1);  // only "6" reached the backend; the rest are errors or done
  auto out = records(dir / "out.jsonl");
  ASSERT_EQ(out.size(), 7u);
  std::vector<std::string> ids;
  for (auto& r : out) ids.push_back(r["id"].is_string() ? r["id"].get<std::string>() : r["id"].dump());
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "line 3", "d", "e", "6", "g"}));
  // Resuming a finished run does nothing.
  auto again = score_jsonl(backend, o);
  EXPECT_EQ(again.skipped, 7);
  EXPECT_EQ(again.skipped_failed, 4) << "the error records already in the output still count";
  EXPECT_EQ(again.all_failed(), 4);
  EXPECT_EQ(records(dir / "out.jsonl").size(), 7u);
}

TEST(RewardScore, AnOutputThatCannotBeWrittenStopsTheRunAsIncomplete) {
  auto dir = test_support::scratch_dir("incomplete");
  write(dir / "in.jsonl", kInput);
  auto backend = exact_match();
  ScoreJsonlOptions o{(dir / "in.jsonl").string(), (dir / "out.jsonl").string(), {}, 1, false, false, false};
  // Files of this process may not grow past 40 bytes: the second record cannot be written whole.
  auto* previous = std::signal(SIGXFSZ, SIG_IGN);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 40;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    score_jsonl(*backend, o);
  } catch (const ScoreRunIncomplete& e) {
    message = e.what();
  } catch (const std::exception& e) {
    message = std::string("not ScoreRunIncomplete: ") + e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, previous);
  EXPECT_NE(message.find("stopped with 1 of 7 lines recorded"), std::string::npos) << message;
  EXPECT_NE(message.find("--resume"), std::string::npos) << message;
  o.resume = true;
  auto summary = score_jsonl(*backend, o);
  EXPECT_EQ(summary.skipped, 1);
  EXPECT_EQ(summary.scored + summary.failed, 6);
  EXPECT_EQ(records(dir / "out.jsonl").size(), 7u);
}

TEST(RewardScore, ImagesResolveAsPathsBase64AndDataUris) {
  auto dir = test_support::scratch_dir("images");
  const std::string png = "\x89PNG\r\n\x1a\n-not-a-real-png";
  write(dir / "pic.png", png);
  const std::string b64 = base64_encode(png);
  const std::string line = nlohmann::json{{"id", "x"},
                                          {"question", "q"},
                                          {"response", "r"},
                                          {"images", {"pic.png", b64, "data:image/png;base64," + b64}}}
                               .dump();
  auto request = parse_score_line(line, 1, dir.string());
  ASSERT_EQ(request.image_count(), 3u);
  const auto& parts = request.turns.at(0).content;
  EXPECT_EQ(parts[0].image.path, (dir / "pic.png").string());
  EXPECT_EQ(parts[1].image.bytes, png);
  EXPECT_EQ(parts[2].image.bytes, png);
  EXPECT_EQ(parts[2].image.mime_type, "image/png");
  EXPECT_EQ(parts[3].text, "q");  // images first, then the question, as the model card orders them
  EXPECT_THROW(parse_score_line(R"({"id": 1, "question": "q", "response": "r", "images": "pic.png"})", 1, dir.string()),
               InputError);
}

namespace {

// Answers by the response text: "throw" throws for its whole batch, "drop" is left out of the results, "nan" scores
// NaN, "fail" fails with a message, "silent" fails without one; anything else scores its length.
class PolicyProbe : public RewardBackend {
 public:
  std::string name() const override { return "probe"; }
  RewardCapabilities capabilities() const override { return {}; }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    ++calls;
    std::vector<RewardResult> out;
    for (const auto& r : batch) {
      if (r.response == "throw") throw std::runtime_error("exploded");
      if (r.response == "drop") continue;
      if (r.response == "nan") out.push_back(RewardResult::success(std::nan("")));
      else if (r.response == "silent") out.push_back(RewardResult::failure(""));
      else if (r.response == "fail") out.push_back(RewardResult::failure("cannot"));
      else out.push_back(RewardResult::success(static_cast<double>(r.response.size())));
    }
    return out;
  }
  int calls = 0;
};

}  // namespace

// The one failure policy of every caller of a backend: per-item failures and non-finite scores are errors of their
// item, an exception is an error of its batch's items, a result count that does not match is the backend's bug.
TEST(BatchScoring, OneFailurePolicyForEveryCaller) {
  PolicyProbe backend;
  const std::vector<std::string> responses = {"a", "bb", "nan", "fail", "silent", "ccc", "throw", "dddd", "e"};
  std::vector<std::string> made;
  std::vector<size_t> batch_sizes;
  const auto results = score_in_batches(
      backend, responses.size(), 3,
      [&](size_t i) {
        made.push_back(responses[i]);
        RewardRequest r;
        r.id = std::to_string(i);
        r.response = responses[i];
        return r;
      },
      [&](const std::vector<RewardResult>& batch) { batch_sizes.push_back(batch.size()); });
  EXPECT_EQ(made, responses);
  EXPECT_EQ(batch_sizes, (std::vector<size_t>{3, 3, 3}));
  EXPECT_EQ(backend.calls, 3);
  ASSERT_EQ(results.size(), responses.size());
  EXPECT_EQ(results[0].score, 1.0);
  EXPECT_EQ(results[1].score, 2.0);
  EXPECT_FALSE(results[2].ok());
  EXPECT_EQ(results[2].error, "reward backend \"probe\" returned a non-finite score (nan)");
  EXPECT_EQ(results[3].error, "cannot");
  EXPECT_EQ(results[4].error, "reward backend \"probe\" failed without saying why");
  EXPECT_EQ(results[5].score, 3.0);
  for (size_t i = 6; i < 9; ++i) {  // the whole third batch: an exception fails its items, not the run
    EXPECT_FALSE(results[i].ok());
    EXPECT_EQ(results[i].error, "reward backend \"probe\" failed on this batch of 3: exploded") << i;
  }
  RewardRequest drop;
  drop.response = "drop";
  EXPECT_THROW(score_batch(backend, {drop}), std::runtime_error);  // 0 results for 1 request: the backend's bug
  EXPECT_TRUE(score_batch(backend, {}).empty());
  EXPECT_THROW(score_in_batches(backend, 1, 0, [&](size_t) { return drop; }), std::invalid_argument);
}
