// reward-serve with the real Skywork-VL backend (tiny fixture model): concurrent clients over both protocols
// get the transformers reference score for every sample, and a sample scores the same alone and inside any
// dynamically formed, padded batch.
#include <cstdint>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/mapped_file.h"
#include "adapters/server/reward_server.h"
#include "plugin/registry.h"
#include "plugin/remote/remote_backend.h"
#include "reward/backends.h"
#include "reward/score_jsonl.h"

using namespace vlreward;
using json = nlohmann::json;

namespace {

const std::string kFixtures = VLREWARD_FIXTURES_DIR;
const std::string kRewardDir = kFixtures + "/reward";

// Forwards to the real backend and remembers the batch sizes the server's batcher formed.
class RecordingBackend : public RewardBackend {
 public:
  explicit RecordingBackend(std::unique_ptr<RewardBackend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  RewardCapabilities capabilities() const override { return inner_->capabilities(); }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      largest_ = std::max(largest_, batch.size());
    }
    return inner_->score(batch);
  }
  size_t largest_batch() {
    std::lock_guard<std::mutex> lock(mutex_);
    return largest_;
  }

 private:
  std::unique_ptr<RewardBackend> inner_;
  std::mutex mutex_;
  size_t largest_ = 0;
};

std::unique_ptr<RewardBackend> skywork() {
  RewardRegistry registry;
  register_reward_backends(registry);
  // No padding budget: items of every length may share a forward, so padding is exercised.
  return registry.create({{"type", "skywork_vl"},
                          {"model", kFixtures + "/model/tiny"},
                          {"value_head", kRewardDir + "/value_head.safetensors"},
                          {"max_padding_fraction", 1e9}});
}

struct Items {
  std::vector<RewardRequest> requests;
  std::vector<double> expected;
};

Items items() {
  Items out;
  std::ifstream in(kRewardDir + "/items.jsonl");
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) out.requests.push_back(parse_score_line(line, ++n, kRewardDir));
  const auto expected = json::parse(read_file(kRewardDir + "/expected.json"));
  for (const auto& item : expected["items"]) out.expected.push_back(item["score"].get<double>());
  return out;
}

}  // namespace

TEST(ServeSkywork, ConcurrentClientsGetReferenceScoresAndBatchingChangesNothing) {
  RecordingBackend backend(skywork());
  ServerConfig config;
  config.http_port = 0;
  config.binary_port = 0;
  config.batching.max_wait_ms = 50;  // long enough for concurrent requests to meet in one batch
  config.batching.max_batch_size = 32;
  RewardServer server(config, backend);
  server.start();
  const std::string http = fmt::format("http://127.0.0.1:{}", server.http_port());
  const std::string binary = fmt::format("tcp://127.0.0.1:{}", server.binary_port());
  const Items data = items();
  ASSERT_GE(data.requests.size(), 12u);

  // Each item alone, one request at a time: batches of one.
  auto alone_client = RemoteBackend(parse_remote_backend_options({{"url", http}}, "alone"));
  std::vector<double> alone;
  for (const auto& request : data.requests) {
    auto r = alone_client.score({request});
    ASSERT_TRUE(r.at(0).ok()) << request.id << ": " << r[0].error;
    alone.push_back(*r[0].score);
  }

  // Six clients at once, over both protocols, each sending the items in a different order and grouping.
  std::vector<std::thread> threads;
  std::mutex mutex;
  std::vector<std::string> failures;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      auto client = RemoteBackend(parse_remote_backend_options(
          {{"url", t % 2 ? binary : http}, {"protocol", t % 2 ? "binary" : "http"}, {"max_samples_per_request", 2 + t}},
          "client"));
      std::vector<size_t> order(data.requests.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = (i * (2 * t + 1) + t) % order.size();
      std::vector<RewardRequest> batch;
      for (size_t i : order) batch.push_back(data.requests[i]);
      auto results = client.score(batch);
      std::lock_guard<std::mutex> lock(mutex);
      for (size_t k = 0; k < order.size(); ++k) {
        const size_t i = order[k];
        if (!results[k].ok()) {
          failures.push_back(fmt::format("client {} item {}: {}", t, data.requests[i].id, results[k].error));
          continue;
        }
        const double score = *results[k].score;
        if (std::abs(score - alone[i]) > 1e-5 * std::max(1.0, std::abs(alone[i])))
          failures.push_back(fmt::format("client {} item {}: {} batched vs {} alone", t, data.requests[i].id, score, alone[i]));
      }
    });
  for (auto& thread : threads) thread.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_GT(backend.largest_batch(), 2u) << "concurrent requests never shared a batch";
  for (size_t i = 0; i < alone.size(); ++i)
    EXPECT_LE(std::abs(alone[i] - data.expected[i]) / std::max(std::abs(data.expected[i]), 1e-12), 1e-4)
        << data.requests[i].id;
  server.stop();
  server.wait();
}
