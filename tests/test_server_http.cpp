// reward-serve's HTTP side over real loopback sockets: every route (the vlreward, OpenRLHF and verl shapes), and
// malformed / hostile inputs, each getting its specific error and followed by a normal request that succeeds.
#include <gtest/gtest.h>

#include "tests/server_test_support.h"

namespace vlreward::server_test {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Round trips on every route and both protocols.

TEST(ServerRoutes, HealthzAndMetrics) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  auto health = client.get("/healthz");
  ASSERT_EQ(health.status, 200);
  EXPECT_EQ(health.body_json()["status"], "ok");
  ASSERT_EQ(client.post("/v1/score", json{{"samples", {score_sample("a", "x")}}}).status, 200);
  auto metrics = client.get("/metrics");  // same keep-alive connection
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.headers["content-type"].find("text/plain"), std::string::npos);
  for (const char* needle : {"vlreward_requests_total{route=\"/v1/score\"} 1", "vlreward_batch_size_bucket{le=\"1\"} 1",
                             "vlreward_request_latency_seconds_count{route=\"/v1/score\"} 1", "vlreward_queue_depth 0",
                             "vlreward_samples_total{outcome=\"scored\"} 1", "# TYPE vlreward_errors_total counter"})
    EXPECT_NE(metrics.body.find(needle), std::string::npos) << needle << "\n" << metrics.body;
}

TEST(ServerRoutes, ScoreReturnsEachSampleByIdWithTiming) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  json body = {{"samples",
                {score_sample("first", "A red square.", {base64_encode(tiny_png())}),
                 {{"id", 7},
                  {"messages",
                   {{{"role", "system"}, {"content", "Judge."}},
                    {{"role", "user"},
                     {"content", {{{"type", "image"}, {"data", base64_encode(tiny_png())}, {"mime_type", "image/png"}},
                                  {{"type", "image"}, {"image", "data:image/png;base64," + base64_encode(tiny_png())}},
                                  {{"type", "text"}, {"text", "Compare."}}}}},
                    {{"role", "assistant"}, {"content", "Earlier answer."}},
                    {{"role", "user"}, {"content", "And now?"}}}},
                  {"response", "Same."}},
                 score_sample("third", "FAIL")}}};
  auto reply = client.post("/v1/score", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  auto results = reply.body_json()["results"];
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0]["id"], "first");
  EXPECT_DOUBLE_EQ(results[0]["score"].get<double>(), fake_score("A red square."));
  EXPECT_EQ(results[0]["components"]["images"], 1.0);
  EXPECT_EQ(results[1]["id"], "7");
  EXPECT_DOUBLE_EQ(results[1]["score"].get<double>(), fake_score("Same."));
  EXPECT_EQ(results[1]["components"]["turns"], 3.0);
  EXPECT_EQ(results[1]["components"]["images"], 2.0);
  EXPECT_EQ(results[2]["id"], "third");
  EXPECT_EQ(results[2]["error"], "fake backend refuses FAIL");
  for (const auto& r : results) {
    EXPECT_GT(r["timing"]["tokens"].get<int64_t>(), 0);
    EXPECT_GE(r["timing"]["queue_ms"].get<double>(), 0.0);
    EXPECT_GE(r["timing"]["batch_size"].get<int64_t>(), 1);
  }
  // The second sample reached the backend as the conversation it was.
  std::lock_guard<std::mutex> lock(s.backend.mutex);
  const RewardRequest* second = nullptr;
  for (const auto& r : s.backend.seen)
    if (r.id == "7") second = &r;
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->system_prompt.value(), "Judge.");
  EXPECT_EQ(second->turns[0].content[0].image.bytes, tiny_png());
  EXPECT_EQ(second->turns[0].content[0].image.mime_type, "image/png");
  EXPECT_EQ(second->turns[0].content[1].image.mime_type, "image/png");
}

TEST(ServerRoutes, GetRewardInOpenRlhfShapeReRendersChatMl) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  const std::string prompt =
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
      "<|vision_end|>How many apples?<|im_end|>\n<|im_start|>assistant\n";
  json body = {{"query", {prompt + "Three apples.<|im_end|>", "Plain prompt. Plain answer."}},
               {"prompts", {prompt, "Plain prompt. "}},
               {"labels", {"3", "x"}},
               {"images", {{base64_encode(tiny_png())}, json::array()}}};
  auto reply = client.post("/get_reward", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  auto j = reply.body_json();
  ASSERT_EQ(j["rewards"].size(), 2u);
  EXPECT_DOUBLE_EQ(j["rewards"][0].get<double>(), fake_score("Three apples."));
  EXPECT_DOUBLE_EQ(j["rewards"][1].get<double>(), fake_score("Plain answer."));
  EXPECT_DOUBLE_EQ(j["scores"][0].get<double>(), sigmoid(fake_score("Three apples.")));
  EXPECT_EQ(j["extra_logs"]["images"], json({1.0, 0.0}));
  std::lock_guard<std::mutex> lock(s.backend.mutex);
  ASSERT_EQ(s.backend.seen.size(), 2u);
  const auto& first = s.backend.seen[0].id == "0" ? s.backend.seen[0] : s.backend.seen[1];
  EXPECT_EQ(first.system_prompt.value(), "You are a helpful assistant.");
  EXPECT_EQ(first.turns[0].content[0].image.bytes, tiny_png());
  EXPECT_EQ(first.turns[0].content[1].text, "How many apples?");
  EXPECT_EQ(first.reference.value(), "3");
}

TEST(ServerRoutes, StockClientsWithoutImagesGetTheirPromptsImages) {
  // OpenRLHF's /get_reward and verl's /classify send chat-templated text with image pads but no pixels; with the
  // training prompts loaded the server attaches each prompt's images.
  vlreward::test_support::TempDir dir("vlreward_prompts");
  std::ofstream(dir / "apples.png", std::ios::binary) << tiny_png();
  auto config = test_config();
  config.prompts = dir.write("train.jsonl", R"({"prompt": [{"role": "user", "content": "<image>How many apples?"}], )"
                                            R"("images": ["apples.png"], "reward_model": {"ground_truth": "3"}})" "\n");
  RunningServer s(config);
  HttpClient client(s.http());
  const std::string prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>How many "
                             "apples?<|im_end|>\n<|im_start|>assistant\n";
  auto reply = client.post("/get_reward", json{{"query", {prompt + "Three.<|im_end|>"}}, {"prompts", {prompt}}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.body_json()["extra_logs"]["images"], json({1.0}));
  reply = client.post("/classify", json{{"model", "m"}, {"input", prompt + "Four."}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  {
    std::lock_guard<std::mutex> lock(s.backend.mutex);
    ASSERT_EQ(s.backend.seen.size(), 2u);
    for (const auto& seen : s.backend.seen) EXPECT_EQ(seen.turns[0].content[0].image.bytes, tiny_png());
    s.backend.seen.clear();
  }
  // Some OpenRLHF forks send images per query, null for rows without.
  reply = client.post("/get_reward", json{{"query", {"Plain prompt. Plain answer.", prompt + "Six.<|im_end|>"}},
                                          {"images", {nullptr, {base64_encode(tiny_png())}}}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.body_json()["rewards"].size(), 2u);
  // OpenRLHF sends null labels for rows without one.
  reply = client.post("/get_reward", json{{"query", {prompt + "Five.<|im_end|>"}}, {"labels", {nullptr}}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  // A prompt the file does not have is a 400 naming the query.
  const std::string other = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Who?<|im_end|>\n"
                            "<|im_start|>assistant\nMe.";
  reply = client.post("/get_reward", json{{"query", {other}}});
  EXPECT_EQ(reply.status, 400);
  EXPECT_NE(reply.error_message().find("query[0]: has image placeholders but no images"), std::string::npos) << reply.body;
  // OpenAI-style image_url parts on /v1/score.
  json sample = {{"id", "u"}, {"response", "r"},
                 {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"},
                                                               {"image_url", {{"url", "data:image/png;base64," +
                                                                                          base64_encode(tiny_png())}}}},
                                                              {{"type", "text"}, {"text", "What?"}}}}}}}};
  reply = client.post("/v1/score", json{{"samples", {sample}}});
  ASSERT_EQ(reply.status, 200) << reply.body;
}

TEST(ServerAuth, AllowedNetworksNeedNoTokenOthersDo) {
  auto config = test_config();
  config.auth_token = "a-token-long-enough-0123";
  config.allow_networks = {"127.0.0.0/8"};
  {
    RunningServer s(config);
    HttpClient client(s.http());  // no token, from loopback: allowed
    EXPECT_EQ(client.post("/v1/score", json{{"samples", {score_sample("a", "r")}}}).status, 200);
    BinaryClient binary(s.binary());
    serve::ScoreRequest request;
    *request.add_samples() = proto_sample("b", "Q", "r");
    auto answer = binary.call(request);
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->results_size(), 1);
  }
  config.allow_networks = {"10.0.0.0/8"};
  {
    RunningServer s(config);
    HttpClient anonymous(s.http());
    EXPECT_EQ(anonymous.post("/v1/score", json{{"samples", {score_sample("a", "r")}}}).status, 401);
    HttpClient with_token(s.http(), config.auth_token);
    EXPECT_EQ(with_token.post("/v1/score", json{{"samples", {score_sample("a", "r")}}}).status, 200);
  }
  config.auth_token.clear();  // allow_networks alone: only those networks
  {
    RunningServer s(config);
    HttpClient client(s.http());
    auto reply = client.post("/v1/score", json{{"samples", {score_sample("a", "r")}}});
    EXPECT_EQ(reply.status, 401);
    EXPECT_NE(reply.error_message().find("allow_networks"), std::string::npos) << reply.body;
  }
}

TEST(ServerRoutes, ClassifyInVllmShapeAsVerlReadsIt) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  const std::string input = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nGood answer<|im_end|>\n";
  auto reply = client.post("/classify", json{{"model", "rm"}, {"input", input}, {"activation", false}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  auto output = reply.body_json();
  // verl: output["data"][-1]["probs"][-1]
  EXPECT_DOUBLE_EQ(output["data"].back()["probs"].back().get<double>(), fake_score("Good answer"));
  EXPECT_EQ(output["object"], "list");
  EXPECT_EQ(output["model"], "rm");
  EXPECT_EQ(output["data"][0]["num_classes"], 1);
  EXPECT_GT(output["usage"]["prompt_tokens"].get<int64_t>(), 0);
  auto activated = client.post("/v1/classify", json{{"input", {input, input}}, {"activation", true}});
  ASSERT_EQ(activated.status, 200) << activated.body;
  ASSERT_EQ(activated.body_json()["data"].size(), 2u);
  EXPECT_DOUBLE_EQ(activated.body_json()["data"][1]["probs"][0].get<double>(), sigmoid(fake_score("Good answer")));
  // SGLang's shape: output["data"][-1]["embedding"][-1].
  auto embedded = client.post("/v1/embeddings", json{{"model", "rm"}, {"input", input}});
  ASSERT_EQ(embedded.status, 200) << embedded.body;
  EXPECT_DOUBLE_EQ(embedded.body_json()["data"].back()["embedding"].back().get<double>(), fake_score("Good answer"));
}


TEST(ServerRoutes, ExpectContinueIsAnswered) {
  // curl sends "Expect: 100-continue" for larger bodies and waits for the interim response.
  RunningServer s(test_config());
  HttpClient client(s.http());
  const std::string body = json{{"samples", {score_sample("c", "continued")}}}.dump();
  auto interim = client.send_raw(fmt::format(
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.size()));
  EXPECT_EQ(interim.status, 100);
  auto reply = client.send_raw(body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_DOUBLE_EQ(reply.body_json()["results"][0]["score"].get<double>(), fake_score("continued"));
}

TEST(ServerRoutes, BackendExceptionIs500AndServerKeepsServing) {
  RunningServer s(test_config());
  HttpClient client(s.http());
  auto reply = client.post("/v1/score", json{{"samples", {score_sample("t", "THROW")}}});
  EXPECT_EQ(reply.status, 500);
  EXPECT_NE(reply.error_message().find("fake backend exploded"), std::string::npos) << reply.body;
  auto get_reward = client.post("/get_reward", json{{"query", {"FAIL"}}});
  EXPECT_EQ(get_reward.status, 422);
  EXPECT_NE(get_reward.error_message().find("query[0]: fake backend refuses FAIL"), std::string::npos) << get_reward.body;
  EXPECT_EQ(client.post("/v1/score", json{{"samples", {score_sample("ok", "fine")}}}).status, 200);
}


struct HttpCase {
  std::string name;
  std::string raw;      // the bytes sent
  int status;           // expected status
  std::string type;     // expected error type
  std::string message;  // expected substring of the error message
};

std::string post(const std::string& target, const std::string& body, const std::string& token = kToken) {
  return http_request("POST", target, body, token);
}
std::string score_with_sample(const json& sample) { return post("/v1/score", json{{"samples", {sample}}}.dump()); }
json sample_with_image(const std::string& image) { return score_sample("i", "r", {image}); }

std::vector<HttpCase> hostile_http_cases() {
  std::vector<HttpCase> cases;
  auto add = [&](std::string name, std::string raw, int status, std::string type, std::string message) {
    cases.push_back({std::move(name), std::move(raw), status, std::move(type), std::move(message)});
  };
  // Invalid JSON.
  const std::vector<std::string> invalid_json = {"", "{", "}", "[", "{\"samples\":", "nul", "tru", "{'samples': []}",
                                                 "{\"samples\": [}", "\xff\xfe\x00", "{\"samples\": [1,]}", "123abc",
                                                 "\"unterminated", "{\"a\" 1}", "{\"samples\": NaN}",
                                                 "{\"samples\": [{\"response\": \"\\ud800\"}]}", "{\"a\":1}}",
                                                 std::string("{\"samples\"\0:[]}", 15)};
  for (size_t i = 0; i < invalid_json.size(); ++i)
    add(fmt::format("invalid JSON #{}", i), post("/v1/score", invalid_json[i]), 400, "bad_request", "invalid JSON");
  // Numbers beyond the range of a double are well-formed JSON the parser cannot hold: still the client's error.
  const std::vector<std::tuple<std::string, std::string, std::string>> out_of_range = {
      {"/v1/score", "{\"samples\": [1e400]}", "samples[0]: number out of range"},
      {"/v1/score", "{\"samples\": [{\"question\": \"q\", \"response\": \"r\"}], \"deadline_ms\": -1e309}",
       "deadline_ms: number out of range"},
      {"/v1/score", "{\"samples\": [{\"id\": \"a\", \"metadata\": {\"k\": 2e308}}]}",
       "samples[0].metadata.k: number out of range"},
      {"/v1/score", "1e999", "body: number out of range"},
      {"/get_reward", "{\"query\": [\"q\"], \"labels\": [1e400]}", "labels[0]: number out of range"},
      {"/classify", "{\"input\": \"x\", \"activation\": -1e400}", "activation: number out of range"},
      {"/v1/embeddings", "{\"input\": [\"x\", 1E+5000]}", "input[1]: number out of range"},
  };
  for (const auto& [target, body, message] : out_of_range)
    add(fmt::format("number out of range on {}: {}", target, body.substr(0, 40)), post(target, body), 400, "bad_request",
        message);
  add("invalid UTF-8 names the path", post("/v1/score", "{\"samples\": [{\"response\": \"\xff\"}]}"), 400, "bad_request",
      "invalid JSON at samples[0].response");
  add("JSON nesting bomb", post("/v1/score", std::string(5000, '[') + std::string(5000, ']')), 400, "bad_request",
      "nested deeper than 64");
  // Wrong shapes for /v1/score.
  const std::vector<std::pair<json, std::string>> bad_scores = {
      {json::array(), "must be a JSON object"},
      {json::object(), "body.samples: required"},
      {{{"samples", "x"}}, "body.samples: required"},
      {{{"samples", json::array()}}, "no samples"},
      {{{"samples", {1}}}, "samples[0]: must be an object"},
      {{{"samples", {{{"question", "q"}}}}}, "samples[0]: missing \"response\""},
      {{{"samples", {{{"question", "q"}, {"response", 5}}}}}, "samples[0].response: must be a string"},
      {{{"samples", {score_sample("a", "b")}}, {"extra", 1}}, "unknown key \"extra\""},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"respones", "r"}}}}}, "unknown key \"respones\""},
      {{{"samples", {{{"response", "r"}, {"messages", "hi"}}}}}, "messages: must be a list"},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"content", "hi"}}}}}}}}, "missing \"role\""},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", 3}}}}}}}}, "must be a string or a list"},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "video"}}}}}}}}}}},
       "must be \"text\", \"image\" or \"image_url\""},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image"}}}}}}}}}}},
       "needs \"image\", \"data\" or \"path\""},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "user"}, {"content", "q"}}, {{"role", "system"}, {"content", "s"}}}}}}}},
       "system message may only come first"},
      {{{"samples", {{{"response", "r"}, {"messages", {{{"role", "tool"}, {"content", "q"}}}}}}}}, "must be \"user\" or \"assistant\""},
      {{{"samples", {{{"response", "r"}, {"messages", json::array()}}}}}, "no turns"},
      {{{"samples", {{{"id", 1.5}, {"question", "q"}, {"response", "r"}}}}}, "id: must be a string or an integer"},
      {{{"samples", {score_sample("a", "b")}}, {"deadline_ms", -5}}, "deadline_ms: must be a positive integer"},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"metadata", {{"k", 1}}}}}}}, "metadata.k: must be a string"},
      {{{"samples", {{{"response", "r"}}}}}, "missing \"question\""},
      {{{"samples", {{{"response", "r"}, {"question", "q"}, {"messages", json::array()}}}}}, "not both"},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"images", "x"}}}}}, "must be a list of images"},
      {{{"samples", {{{"question", "q"}, {"response", "r"}, {"images", {1}}}}}}, "must be a string (base64"},
  };
  for (size_t i = 0; i < bad_scores.size(); ++i)
    add(fmt::format("bad /v1/score #{}", i), post("/v1/score", bad_scores[i].first.dump()), 400, "bad_request",
        bad_scores[i].second);
  // Images.
  add("invalid base64", score_with_sample(sample_with_image("!!!not base64!!!")), 400, "bad_request",
      "invalid base64, and no such image under the image root");
  add("bad base64 data part",
      score_with_sample({{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image"}, {"data", "@@@"}}}}}}}}),
      400, "bad_request", "data: invalid base64");
  add("malformed data URI", score_with_sample(sample_with_image("data:image/png;base64,@@@@")), 400, "bad_request", "malformed data URI");
  add("data URI without base64", score_with_sample(sample_with_image("data:image/png,abc")), 400, "bad_request", "malformed data URI");
  for (const char* url : {"http://example.com/a.png", "https://example.com/a.png", "file:///etc/passwd", "s3://b/k.png"})
    add(fmt::format("URL image {}", url), score_with_sample(sample_with_image(url)), 400, "bad_request", "URLs are not fetched");
  add("base64 of text", score_with_sample(sample_with_image("data:image/png;base64," + base64_encode("hello, not an image"))), 400,
      "bad_request", "");
  add("GIF image", score_with_sample(sample_with_image("data:image/gif;base64," + base64_encode("GIF89a\x01\x00\x01\x00"))), 400,
      "bad_request", "GIF");
  std::string bad_crc = tiny_png();
  bad_crc[29] ^= 0x55;  // inside IHDR's CRC
  add("PNG with a bad header CRC", score_with_sample(sample_with_image(base64_encode(bad_crc))), 400, "bad_request", "");
  add("PNG signature only", score_with_sample(sample_with_image("data:image/png;base64," + base64_encode(tiny_png().substr(0, 8)))),
      400, "bad_request", "");
  add("PNG declaring 100000x100000", score_with_sample(sample_with_image(base64_encode(png_with_size(100000, 100000)))), 413,
      "too_large", "100000x100000 = 10000000000 pixels exceeds the limit of 16777216");
  add("PNG declaring 4097x4096", score_with_sample(sample_with_image(base64_encode(png_with_size(4097, 4096)))), 413,
      "too_large", "exceeds the limit of 16777216 pixels");
  add("PNG declaring 0x5", score_with_sample(sample_with_image(base64_encode(png_with_size(0, 5, false)))), 400, "bad_request", "");
  add("too many images", score_with_sample(score_sample("i", "r", std::vector<std::string>(5, base64_encode(tiny_png())))), 413,
      "too_large", "5 images exceed the limit of 4");
  add("image bytes over the limit", score_with_sample(sample_with_image(base64_encode(tiny_png() + std::string(1100000, 'x')))),
      413, "too_large", "exceeds the limit of 1048576 bytes");
  {  // Within every per-sample limit, but 16 samples x 4 images at the pixel limit: over the per-request budget.
    json samples = json::array();
    const std::string big = base64_encode(png_with_size(4096, 4096));
    for (int i = 0; i < 16; ++i) samples.push_back(score_sample(std::to_string(i), "r", std::vector<std::string>(4, big)));
    add("image pixels over the request budget", post("/v1/score", json{{"samples", samples}}.dump()), 413, "too_large",
        "body.samples: the images decode to 1073741824 pixels in all, over the budget of 268435456 pixels per request "
        "(limits.max_request_pixels)");
  }
  // Paths under the image root.
  add("path traversal ..", score_with_sample(sample_with_image("../secret.png")), 400, "bad_request", "\"..\" is not allowed");
  add("path traversal nested", score_with_sample(sample_with_image("a/../../secret.png")), 400, "bad_request", "\"..\" is not allowed");
  add("absolute path", score_with_sample(sample_with_image("/etc/passwd")), 400, "bad_request", "must be relative");
  add("symlink escaping the root", score_with_sample(sample_with_image("escape.png")), 400, "bad_request", "outside the image root");
  add("missing file", score_with_sample(sample_with_image("missing.png")), 400, "bad_request", "no such image");
  add("directory as image", score_with_sample(sample_with_image("dir.png")), 400, "bad_request", "not a regular file");
  add("text file as image", score_with_sample(sample_with_image("not_image.txt")), 400, "bad_request", "");
  add("explicit path part traversal",
      score_with_sample({{"response", "r"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image"}, {"path", "../../etc/passwd"}}}}}}}}),
      400, "bad_request", "\"..\" is not allowed");
  // Limits.
  json many = json::array();
  for (int i = 0; i < 17; ++i) many.push_back(score_sample(std::to_string(i), "r"));
  add("too many samples", post("/v1/score", json{{"samples", many}}.dump()), 413, "too_large", "17 samples exceed the limit of 16");
  add("huge text", score_with_sample(score_sample("h", std::string(70000, 'a'))), 413, "too_large", "exceed the limit of 65536 bytes");
  add("body over the limit (declared)",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nContent-Length: 3000000\r\n\r\n{\"samples\":",
      413, "too_large", "request body exceeds the limit of 2097152 bytes");
  add("body over the limit (chunked)",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nTransfer-Encoding: chunked\r\n\r\n300000\r\n" + std::string(0x300000, ' ') + "\r\n0\r\n\r\n",
      413, "too_large", "request body exceeds the limit");
  add("headers over the limit", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n", 413,
      "too_large", "request headers exceed");
  // /get_reward shapes.
  const std::vector<std::tuple<json, int, std::string, std::string>> bad_get_reward = {
      {json::object(), 400, "bad_request", "missing \"query\""},
      {{{"query", 5}}, 400, "bad_request", "query: must be a list of strings"},
      {{{"query", {"a", 1}}}, 400, "bad_request", "query[1]: must be a string"},
      {{{"query", json::array()}}, 400, "bad_request", "no samples"},
      {{{"query", {"a", "b"}}, {"prompts", {"a"}}}, 400, "bad_request", "1 prompts for 2 queries"},
      {{{"query", {"a"}}, {"labels", {"a", "b"}}}, 400, "bad_request", "2 labels for 1 queries"},
      {{{"query", {"a"}}, {"images", {{}, {}}}}, 400, "bad_request", "2 image lists for 1 queries"},
      {{{"query", {"a"}}, {"images", "x"}}, 400, "bad_request", "images: must be a list"},
      {{{"query", {"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\nA"}}},
       400, "bad_request", "1 image placeholder(s) but 0 image(s) were sent"},
      {{{"query", {"<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\nA"}}},
       400, "bad_request", "video placeholders are not supported"},
      {{{"query", {"<|im_start|>user\n<|vision_start|>Q<|im_end|>\n<|im_start|>assistant\nA"}}}, 400, "bad_request",
       "without a matching"},
      {{{"query", {std::string(70000, 'q')}}}, 413, "too_large", "query[0]: 70000 bytes of text exceed"},
      {{{"query", std::vector<std::string>(17, "q")}}, 413, "too_large", "17 samples exceed the limit of 16"},
      {{{"query", {"q"}}, {"images", {{"../secret.png"}}}}, 400, "bad_request", "images[0][0]: \"..\" is not allowed"},
  };
  for (size_t i = 0; i < bad_get_reward.size(); ++i) {
    const auto& [body, status, type, message] = bad_get_reward[i];
    add(fmt::format("bad /get_reward #{}", i), post("/get_reward", body.dump()), status, type, message);
  }
  // /classify shapes.
  const std::vector<std::tuple<json, int, std::string, std::string>> bad_classify = {
      {{{"model", "m"}}, 400, "bad_request", "missing \"input\""},
      {{{"input", 3}}, 400, "bad_request", "input: must be a list of strings"},
      {{{"input", "x"}, {"activation", "yes"}}, 400, "bad_request", "activation: must be true or false"},
      {{{"input", {"a", "b"}}, {"images", {{}}}}, 400, "bad_request", "1 image lists for 2 inputs"},
      {{{"input", std::vector<std::string>(17, "q")}}, 413, "too_large", "17 samples exceed"},
  };
  for (size_t i = 0; i < bad_classify.size(); ++i) {
    const auto& [body, status, type, message] = bad_classify[i];
    add(fmt::format("bad /classify #{}", i), post("/classify", body.dump()), status, type, message);
  }
  // HTTP itself.
  add("unknown route", post("/v2/nothing", "{}"), 404, "not_found", "no route /v2/nothing");
  add("GET on a POST route", http_request("GET", "/v1/score", "", kToken), 405, "method_not_allowed", "use POST");
  add("POST on /metrics", post("/metrics", "{}"), 405, "method_not_allowed", "use GET");
  add("garbage request line", "GARBAGE\r\n\r\n", 400, "bad_request", "malformed HTTP request");
  add("bad header line", "POST /v1/score HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request", "malformed HTTP request");
  add("HTTP/2 preface", std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 400, "bad_request", "malformed HTTP request");
  add("bad Content-Length", "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "bad_request",
      "malformed HTTP request");
  add("bad chunk size", "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request",
      "malformed HTTP request");
  // Header floods: one huge header, or thousands of small ones, stop at the header limit.
  add("one 20 kB header", http_request("POST", "/v1/score", "{}", kToken, "X-Pad: " + std::string(20000, 'a') + "\r\n"),
      413, "too_large", "request headers exceed the limit of 16384 bytes");
  std::string many_headers;
  for (int i = 0; i < 3000; ++i) many_headers += fmt::format("X-H{}: v\r\n", i);
  add("3000 small headers", http_request("POST", "/v1/score", "{}", kToken, many_headers), 413, "too_large",
      "request headers exceed the limit of 16384 bytes");
  add("a 20 kB request target", http_request("POST", "/v1/score?" + std::string(20000, 'q'), "{}", kToken), 413,
      "too_large", "request headers exceed the limit");
  // Content-Length lies and framing conflicts (the ways requests get smuggled past a proxy).
  const std::string good = json{{"samples", {score_sample("a", "b")}}}.dump();
  add("Content-Length shorter than the body",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
          "\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + good,
      400, "bad_request", "invalid JSON");
  add("two different Content-Lengths",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", 400,
      "bad_request", "malformed HTTP request");
  add("Content-Length and chunked together",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      400, "bad_request", "malformed HTTP request");
  add("negative Content-Length", "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
      "bad_request", "malformed HTTP request");
  add("Content-Length beyond 64 bits",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400, "bad_request",
      "malformed HTTP request");
  add("chunk size beyond 64 bits",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400,
      "bad_request", "malformed HTTP request");
  add("chunks adding up past the body limit",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n300000\r\n", 413, "too_large",
      "request body exceeds the limit of 2097152 bytes");
  add("unknown transfer coding", "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
      "bad_request", "malformed HTTP request");
  // Authentication.
  const std::string body = good;
  add("missing token", http_request("POST", "/v1/score", body, ""), 401, "unauthorized", "missing bearer token");
  add("wrong token", http_request("POST", "/v1/score", body, "wrong"), 401, "unauthorized", "invalid bearer token");
  add("token prefix", http_request("POST", "/v1/score", body, std::string(kToken).substr(0, 10)), 401, "unauthorized",
      "invalid bearer token");
  add("token plus suffix", http_request("POST", "/v1/score", body, std::string(kToken) + "x"), 401, "unauthorized",
      "invalid bearer token");
  add("Basic scheme",
      "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + std::string(kToken) + "\r\nContent-Length: 2\r\n\r\n{}",
      401, "unauthorized", "invalid bearer token");
  add("metrics without token", http_request("GET", "/metrics", "", ""), 401, "unauthorized", "missing bearer token");
  add("get_reward without token", http_request("POST", "/get_reward", "{\"query\":[\"a\"]}", ""), 401, "unauthorized",
      "missing bearer token");
  add("classify with wrong token", http_request("POST", "/classify", "{\"input\":\"a\"}", "nope"), 401, "unauthorized",
      "invalid bearer token");
  add("unknown route without token", http_request("GET", "/admin", "", ""), 401, "unauthorized", "missing bearer token");
  return cases;
}

TEST(ServerHostile, HttpInputsGetSpecificErrorsAndTheServerKeepsServing) {
  HostileServer h;
  const auto cases = hostile_http_cases();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    HttpClient client(h.server->http());
    auto reply = client.send_raw(c.raw);
    EXPECT_EQ(reply.status, c.status) << reply.body;
    EXPECT_EQ(reply.error_type(), c.type) << reply.body;
    EXPECT_NE(reply.error_message().find(c.message), std::string::npos) << reply.body;
    if (c.status == 401) {
      EXPECT_EQ(reply.headers["www-authenticate"], "Bearer");
    }
    if (c.status == 405) {
      EXPECT_FALSE(reply.headers["allow"].empty());
    }
    h.expect_normal_http_works(c.name);
  }
  RecordProperty("http_hostile_cases", static_cast<int>(cases.size()));
  EXPECT_GE(cases.size(), 100u);
  // /healthz needs no token.
  HttpClient client(h.server->http());
  EXPECT_EQ(client.get("/healthz").status, 200);
}

// Framing the server accepts: a chunked body with chunk extensions and trailers scores like the same body sent with
// a Content-Length; a body that ends early (the client half-closes) gets the connection closed, nothing else.
TEST(ServerHostile, ChunkedBodiesAndTruncatedBodies) {
  HostileServer h;
  const std::string body = json{{"samples", {score_sample("c", "chunked")}}}.dump();
  std::string chunked = "POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
                        "\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < body.size(); at += 7) {
    const auto piece = body.substr(at, 7);
    chunked += fmt::format("{:x};ext=\"{}\"\r\n{}\r\n", piece.size(), at, piece);
  }
  chunked += "0\r\nX-Trailer: t\r\n\r\n";
  HttpClient client(h.server->http());
  auto reply = client.send_raw(chunked);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_DOUBLE_EQ(reply.body_json()["results"][0]["score"].get<double>(), fake_score("chunked"));
  {
    HttpClient truncated(h.server->http());
    boost::system::error_code ec;
    asio::write(truncated.socket(),
                asio::buffer("POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
                             "\r\nContent-Length: 100\r\n\r\n{\"samples\""),
                ec);
    truncated.socket().shutdown(tcp::socket::shutdown_send, ec);
    EXPECT_TRUE(truncated.closed_by_server());
  }
  h.expect_normal_http_works("a truncated body");
}

TEST(ServerHostile, KeepAliveSurvivesRequestLevelErrors) {
  HostileServer h;
  HttpClient client(h.server->http(), kToken);
  EXPECT_EQ(client.post("/v1/score", std::string("{")).status, 400);
  EXPECT_EQ(client.post("/v1/score", json{{"samples", json::array()}}).status, 400);
  EXPECT_EQ(client.send_raw(http_request("POST", "/v1/score", "{}", "wrong")).status, 401);
  EXPECT_EQ(client.post("/v1/score", json{{"samples", {score_sample("k", "kept alive")}}}).status, 200);
}

TEST(ServerHostile, SlowClientsTimeOut) {
  HostileServer h;
  const auto started = Clock::now();
  {  // Headers never finish: 408.
    HttpClient client(h.server->http());
    auto reply = client.send_raw("POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Len");
    EXPECT_EQ(reply.status, 408);
    EXPECT_EQ(reply.error_type(), "read_timeout");
    EXPECT_TRUE(client.closed_by_server());
  }
  {  // Body never finishes: 408.
    HttpClient client(h.server->http());
    auto reply = client.send_raw("POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kToken) +
                                 "\r\nContent-Length: 100\r\n\r\n{\"samples\"");
    EXPECT_EQ(reply.status, 408);
    EXPECT_NE(reply.error_message().find("read timeout of 300 ms"), std::string::npos) << reply.body;
  }
  {  // Connects and says nothing: closed.
    HttpClient client(h.server->http());
    EXPECT_TRUE(client.closed_by_server());
  }
  {  // Binary: half a header, then silence.
    BinaryClient client(h.server->binary());
    client.send_bytes(std::string("\0\0", 2));
    auto reply = client.read_response();
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->error().code(), serve::TIMEOUT);
    EXPECT_TRUE(client.closed_by_server());
  }
  {  // Binary: a frame whose payload never completes.
    BinaryClient client(h.server->binary());
    client.send_bytes(std::string("\0\0\0\x40", 4) + "abc");
    auto reply = client.read_response();
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->error().code(), serve::TIMEOUT);
  }
  {  // Binary: idle connection is closed.
    BinaryClient client(h.server->binary());
    EXPECT_TRUE(client.closed_by_server());
  }
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(5));
  h.expect_normal_http_works("slow clients");
  h.expect_normal_binary_works("slow clients");
}


TEST(ServerHostile, PathImagesInsideTheRootAreServed) {
  HostileServer h;
  HttpClient client(h.server->http(), kToken);
  auto reply = client.post("/v1/score", json{{"samples", {score_sample("p", "from path", {"ok.png"})}}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.body_json()["results"][0]["components"]["images"], 1.0);
  std::lock_guard<std::mutex> lock(h.server->backend.mutex);
  EXPECT_EQ(h.server->backend.seen.back().turns[0].content[0].image.bytes, tiny_png()) << "the server reads the file";
}

}  // namespace
}  // namespace vlreward::server_test
