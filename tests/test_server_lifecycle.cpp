// reward-serve under load and at its limits: concurrent clients each getting their own results, batch invariance,
// batching limits, overload (503) and deadlines (504), graceful shutdown, the connection cap and running out of file
// descriptors.
#include <gtest/gtest.h>

#include "tests/server_test_support.h"

namespace vlreward::server_test {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Concurrency and batching.

TEST(ServerConcurrency, SixteenClientsEachGetTheirOwnResults) {
  auto config = test_config();
  config.batching.max_wait_ms = 3;
  config.batching.max_batch_size = 16;
  RunningServer s(config);
  constexpr int kThreads = 16, kRequests = 50;
  std::atomic<int> mismatched{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      if (t % 4 == 3) {  // a quarter of the clients speak the binary protocol
        BinaryClient client(s.binary());
        for (int i = 0; i < kRequests; ++i) {
          serve::ScoreRequest request;
          request.set_request_id(static_cast<uint64_t>(t * 1000 + i));
          const std::string response = fmt::format("binary {} {}", t, i);
          *request.add_samples() = proto_sample(fmt::format("{}-{}", t, i), "Q", response);
          auto reply = client.call(request);
          if (!reply || reply->results_size() != 1) {
            ++failed;
            continue;
          }
          if (reply->request_id() != request.request_id() || reply->results(0).id() != fmt::format("{}-{}", t, i) ||
              reply->results(0).score() != fake_score(response))
            ++mismatched;
        }
        return;
      }
      HttpClient client(s.http());
      for (int i = 0; i < kRequests; ++i) {
        const std::string response = fmt::format("answer {} {}", t, i);
        const std::string id = fmt::format("{}-{}", t, i);
        auto reply = client.post("/v1/score", json{{"samples", {score_sample(id, response), score_sample(id + "b", response + "b")}}});
        if (reply.status != 200) {
          ++failed;
          continue;
        }
        auto results = reply.body_json()["results"];
        if (results.size() != 2 || results[0]["id"] != id || results[0]["score"].get<double>() != fake_score(response) ||
            results[1]["id"] != id + "b" || results[1]["score"].get<double>() != fake_score(response + "b"))
          ++mismatched;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(mismatched.load(), 0);
  EXPECT_GT(s.server.metrics().largest_batch(), 1) << "concurrent requests should share batches";
  EXPECT_EQ(s.server.metrics().requests("/v1/score") + s.server.metrics().requests("binary"), kThreads * kRequests);
}

TEST(ServerBurst, TwoHundredConcurrentEngineClientsAllGetRewardsWithBatchSizeOne) {
  // OpenRLHF- and verl-style clients ignore Retry-After: with the default limits a burst is held, not refused.
  auto config = test_config();
  config.batching = BatchingOptions{};
  config.limits = ServerLimits{};
  config.batching.max_batch_size = 1;
  config.request_deadline_ms = 60000;
  config.read_timeout_ms = 10000;
  config.io_threads = 4;
  RunningServer s(config);
  constexpr int kClients = 200;
  std::atomic<int> answered{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t)
    threads.emplace_back([&, t] {
      HttpClient client(s.http());
      const std::string response = fmt::format("answer {}", t);
      const std::string query = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n" + response + "<|im_end|>";
      auto reply = t % 2 == 0 ? client.post("/get_reward", json{{"query", {query}}})
                              : client.post("/classify", json{{"model", "m"}, {"input", query}});
      if (reply.status != 200) return;
      ++answered;
      const auto body = reply.body_json();
      const double score = t % 2 == 0 ? body["rewards"][0].get<double>() : body["data"][0]["probs"][0].get<double>();
      if (score != fake_score(response) && score != sigmoid(fake_score(response))) ++wrong;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(answered.load(), kClients);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(s.server.metrics().largest_batch(), 1);
}

TEST(ServerBatching, SameSampleScoresTheSameAloneAndInAnyBatch) {
  auto config = test_config();
  config.batching.max_wait_ms = 20;
  config.batching.max_batch_size = 32;
  RunningServer s(config);
  const json probe = score_sample("probe", "the probe response", {base64_encode(tiny_png())});
  HttpClient alone_client(s.http());
  auto alone = alone_client.post("/v1/score", json{{"samples", {probe}}});
  ASSERT_EQ(alone.status, 200);
  const double alone_score = alone.body_json()["results"][0]["score"].get<double>();
  EXPECT_EQ(alone.body_json()["results"][0]["timing"]["batch_size"], 1);
  // The probe inside requests of different sizes, at different positions, sent concurrently.
  std::vector<std::thread> threads;
  std::mutex m;
  std::vector<std::pair<double, int64_t>> seen;  // score, batch size
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      json samples = json::array();
      for (int k = 0; k < t * 3; ++k) samples.push_back(score_sample(fmt::format("f{}-{}", t, k), fmt::format("filler {} {}", t, k)));
      samples.insert(samples.begin() + (t % 2 ? 0 : static_cast<long>(samples.size())), probe);
      HttpClient client(s.http());
      auto reply = client.post("/v1/score", json{{"samples", samples}});
      ASSERT_EQ(reply.status, 200);
      const json parsed = reply.body_json();
      for (const auto& r : parsed["results"])
        if (r["id"] == "probe") {
          std::lock_guard<std::mutex> lock(m);
          seen.emplace_back(r["score"].get<double>(), r["timing"]["batch_size"].get<int64_t>());
        }
    });
  for (auto& t : threads) t.join();
  ASSERT_EQ(seen.size(), 6u);
  int64_t biggest = 0;
  for (const auto& [score, batch] : seen) {
    EXPECT_EQ(score, alone_score);
    biggest = std::max(biggest, batch);
  }
  EXPECT_GT(biggest, 1) << "the probe never shared a batch";
}

TEST(ServerBatching, RespectsMaxBatchSizeAndTokens) {
  auto config = test_config();
  config.batching.max_batch_size = 3;
  config.batching.max_wait_ms = 50;
  RunningServer s(config);
  HttpClient client(s.http());
  json samples = json::array();
  for (int i = 0; i < 10; ++i) samples.push_back(score_sample(std::to_string(i), "r" + std::to_string(i)));
  ASSERT_EQ(client.post("/v1/score", json{{"samples", samples}}).status, 200);
  {
    std::lock_guard<std::mutex> lock(s.backend.mutex);
    EXPECT_EQ(s.backend.batch_sizes, (std::vector<size_t>{3, 3, 3, 1}));
  }
  // A token budget smaller than two samples makes every batch a single sample.
  auto small = test_config();
  small.batching.max_batch_tokens = 40;
  small.batching.max_batch_size = 8;
  RunningServer t(small);
  HttpClient client2(t.http());
  ASSERT_EQ(client2.post("/v1/score", json{{"samples", {samples[0], samples[1], samples[2]}}}).status, 200);
  std::lock_guard<std::mutex> lock(t.backend.mutex);
  EXPECT_EQ(t.backend.batch_sizes, (std::vector<size_t>{1, 1, 1}));
}

TEST(ServerBatching, ASmallRequestBehindALargeOneWaitsForOneBatchNotAll) {
  FakeBackend backend;
  backend.delay_ms = 20;
  BatchingOptions options;
  options.max_batch_size = 2;
  options.max_wait_ms = 0;
  std::mutex mutex;
  std::condition_variable done_cv;
  int done = 0;
  {
    Batcher batcher(backend, options);
    auto submit = [&](const std::string& prefix, int n) {
      std::vector<DecodedSample> samples(n);
      for (int i = 0; i < n; ++i) {
        samples[i].request = RewardRequest::single_turn(prefix + std::to_string(i), {}, "Q?", prefix + std::to_string(i));
        samples[i].cost.tokens = 10;
      }
      std::shared_ptr<BatchJob> job;
      ASSERT_EQ(batcher.submit(std::move(samples), Batcher::Clock::now() + std::chrono::seconds(30),
                               [&](std::vector<SampleOutcome>) {
                                 std::lock_guard<std::mutex> lock(mutex);
                                 ++done;
                                 done_cv.notify_all();
                               },
                               &job),
                SubmitStatus::kAccepted);
    };
    submit("large", 12);
    submit("small", 1);
    std::unique_lock<std::mutex> lock(mutex);
    ASSERT_TRUE(done_cv.wait_for(lock, std::chrono::seconds(10), [&] { return done == 2; }));
  }
  std::lock_guard<std::mutex> lock(backend.mutex);
  ASSERT_EQ(backend.seen.size(), 13u);
  size_t small_at = 0;
  while (small_at < backend.seen.size() && backend.seen[small_at].response != "small0") ++small_at;
  // FIFO would score it 13th; round-robin takes it in the first batch it can join (the second at the latest).
  EXPECT_LT(small_at, 4u) << "the small request waited behind the large one";
  EXPECT_EQ(backend.seen.back().response, "large11");
}

TEST(ServerBatching, QueuedBytesAreBoundedToo) {
  FakeBackend backend;
  backend.delay_ms = 200;
  BatchingOptions options;
  options.max_batch_size = 1;
  options.max_wait_ms = 0;
  options.max_queue_bytes = 1000;
  Batcher batcher(backend, options);
  auto request = [](const std::string& id, uint64_t bytes) {
    std::vector<DecodedSample> samples(1);
    samples[0].request = RewardRequest::single_turn(id, {}, "Q?", id);
    samples[0].cost = {10, 0, bytes};
    return samples;
  };
  const auto deadline = Batcher::Clock::now() + std::chrono::seconds(30);
  std::shared_ptr<BatchJob> job;
  // A request larger than the whole budget still runs when the queue is empty (it could never fit otherwise).
  EXPECT_EQ(batcher.submit(request("huge", 5000), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kAccepted);
  wait_until([&] { return batcher.queue_depth() == 0; });  // taken by the worker, which now sleeps in the backend
  EXPECT_EQ(batcher.submit(request("a", 600), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kAccepted);
  EXPECT_EQ(batcher.submit(request("b", 600), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kOverloaded);
  EXPECT_EQ(batcher.submit(request("c", 300), deadline, [](std::vector<SampleOutcome>) {}, &job), SubmitStatus::kAccepted);
}

TEST(ServerBatching, FullQueueAnswers503WithRetryAfter) {
  auto config = test_config();
  config.batching.max_queue = 2;
  config.batching.max_batch_size = 1;
  config.retry_after_s = 3;
  RunningServer s(config);
  s.backend.delay_ms = 200;
  std::atomic<int> ok{0}, overloaded{0}, other{0};
  std::atomic<bool> retry_after_ok{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      HttpClient client(s.http());
      auto reply = client.post("/v1/score", json{{"samples", {score_sample(std::to_string(t), "slow")}}});
      if (reply.status == 200) ++ok;
      else if (reply.status == 503) {
        ++overloaded;
        if (reply.headers["retry-after"] != "3" || reply.error_type() != "overloaded") retry_after_ok = false;
      } else ++other;
    });
  for (auto& t : threads) t.join();
  EXPECT_GE(ok.load(), 2);
  EXPECT_GE(overloaded.load(), 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_TRUE(retry_after_ok.load());
  EXPECT_EQ(s.server.metrics().errors(ServeErrorKind::kOverloaded), overloaded.load());
  // Binary protocol: the same overload as an error code with retry_after_ms.
  s.backend.delay_ms = 300;
  std::thread filler([&] {
    HttpClient c(s.http());
    c.post("/v1/score", json{{"samples", {score_sample("a", "a"), score_sample("b", "b")}}});
  });
  const int before = s.backend.calls.load();
  wait_until([&] { return s.backend.calls.load() > before; });  // one sample computing, one queued
  BinaryClient binary(s.binary());
  serve::ScoreRequest request;
  *request.add_samples() = proto_sample("x", "q", "r");
  *request.add_samples() = proto_sample("y", "q", "r");
  auto reply = binary.call(request);
  filler.join();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error().code(), serve::OVERLOADED);
  EXPECT_EQ(reply->error().retry_after_ms(), 3000u);
}

TEST(ServerBatching, DeadlineExceededIs504AndAbandonedSamplesAreDropped) {
  RunningServer s(test_config());
  s.backend.delay_ms = 600;
  std::thread blocker([&] {
    HttpClient c(s.http());
    c.post("/v1/score", json{{"samples", {score_sample("block", "block")}}});
  });
  wait_until([&] { return s.backend.calls.load() == 1; });
  HttpClient client(s.http());
  const auto started = Clock::now();
  auto reply = client.post("/v1/score", json{{"samples", {score_sample("late", "late")}}, {"deadline_ms", 100}});
  const auto elapsed = Clock::now() - started;
  EXPECT_EQ(reply.status, 504);
  EXPECT_EQ(reply.error_type(), "deadline_exceeded");
  EXPECT_LT(elapsed, std::chrono::milliseconds(450)) << "the deadline must not wait for the backend";
  blocker.join();
  s.backend.delay_ms = 0;
  HttpClient next(s.http());  // the first connection sat idle past the read timeout meanwhile
  EXPECT_EQ(next.post("/v1/score", json{{"samples", {score_sample("next", "next")}}}).status, 200);
  std::lock_guard<std::mutex> lock(s.backend.mutex);
  for (const auto& r : s.backend.seen) EXPECT_NE(r.response, "late") << "an abandoned sample was still scored";
}

TEST(ServerShutdown, StopDrainsInFlightRequestsThenRefusesConnections) {
  auto config = test_config();
  config.batching.max_batch_size = 2;
  RunningServer s(config);
  s.backend.delay_ms = 150;
  const uint16_t port = s.http();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      HttpClient client(port);
      auto reply = client.post("/v1/score", json{{"samples", {score_sample(std::to_string(t), "drain me")}}});
      if (reply.status == 200 && reply.body_json()["results"][0]["score"].get<double>() == fake_score("drain me")) ++ok;
    });
  HttpClient idle(port);  // an idle keep-alive connection must not hold the shutdown up
  wait_until([&] { return s.server.metrics().requests("/v1/score") == 6; });  // all received, most still queued
  const auto started = Clock::now();
  s.server.stop();
  s.server.wait();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6) << "every request received before stop() is answered";
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(3));
  EXPECT_TRUE(idle.closed_by_server());
  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  EXPECT_TRUE(ec) << "still accepting after shutdown";
}

TEST(ServerShutdown, RealSigtermDrainsAndStops) {
  // The signal is delivered to this process; the server's signal_set turns it into stop().
  RunningServer s(test_config());
  s.server.stop_on_signals();
  s.backend.delay_ms = 100;
  std::atomic<int> status{0};
  std::thread client([&] {
    HttpClient c(s.http());
    status = c.post("/v1/score", json{{"samples", {score_sample("sig", "sig")}}}).status;
  });
  wait_until([&] { return s.backend.calls.load() == 1; });
  ::kill(::getpid(), SIGTERM);
  s.server.wait();
  client.join();
  EXPECT_EQ(status.load(), 200);
}


TEST(ServerHostile, ConnectionsOverTheCapAreRefusedAndCounted) {
  auto c = test_config();
  c.read_timeout_ms = 10000;
  c.limits.max_connections = 3;
  RunningServer s(c);
  std::vector<std::unique_ptr<HttpClient>> held;
  for (int i = 0; i < 3; ++i) held.push_back(std::make_unique<HttpClient>(s.http()));
  wait_until([&] { return s.server.metrics().open_connections() == 3; });

  HttpClient extra(s.http());
  auto refused = extra.send_raw("");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(refused.error_type(), "overloaded");
  EXPECT_NE(refused.error_message().find("3 connections are open"), std::string::npos) << refused.body;
  EXPECT_NE(refused.error_message().find("limits.max_connections"), std::string::npos) << refused.body;
  EXPECT_EQ(refused.headers["retry-after"], "1");
  EXPECT_TRUE(extra.closed_by_server());
  BinaryClient extra_binary(s.binary());
  auto frame = extra_binary.read_response();
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->error().code(), serve::OVERLOADED);
  EXPECT_EQ(frame->error().retry_after_ms(), 1000u);
  EXPECT_TRUE(extra_binary.closed_by_server());
  EXPECT_EQ(s.server.metrics().refused_connections(), 2);

  // The held connections still work, /metrics shows the refusals, and a freed slot admits the next client.
  auto metrics = held[0]->get("/metrics");
  EXPECT_NE(metrics.body.find("vlreward_connections_refused_total 2"), std::string::npos) << metrics.body;
  held.pop_back();
  wait_until([&] { return s.server.metrics().open_connections() == 2; });
  HttpClient next(s.http());
  EXPECT_EQ(next.post("/v1/score", json{{"samples", {score_sample("n", "next")}}}).status, 200);

  auto expect_config_error = [](const char* text) {
    EXPECT_THROW(parse_server_config(json::parse(text)), ConfigError) << text;
  };
  expect_config_error(R"({"limits": {"max_connections": 0}})");
  EXPECT_EQ(parse_server_config(json::parse(R"({"limits": {"max_connections": 7}})")).limits.max_connections, 7);
}

TEST(ServerHostile, OutOfFileDescriptorsBacksOffAndRecovers) {
#ifdef __SANITIZE_ADDRESS__
  // The sanitizer runtime checks memory through a pipe of its own (UBSan's vptr check, ASan's reports): in a
  // process with no descriptor left it reports every object as unreadable, so this state cannot be checked there.
  GTEST_SKIP() << "needs free file descriptors under the sanitizers; runs in the normal build";
#endif
  auto c = test_config();
  c.read_timeout_ms = 10000;
  RunningServer s(c);
  asio::io_context io;
  tcp::socket pending(io);
  pending.open(tcp::v4());  // the client's descriptor exists before the limit drops
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  const int lowest_free = ::dup(0);  // new descriptors take the lowest free number: forbid it and all above
  ASSERT_GE(lowest_free, 0);
  ::close(lowest_free);
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  const int64_t before = s.server.metrics().accept_errors();
  pending.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), s.http()));  // queued; accept() gets EMFILE
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int64_t failures = s.server.metrics().accept_errors() - before;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_GE(failures, 1);
  EXPECT_LE(failures, 15) << "accept() retried " << failures << " times in 500 ms instead of backing off";

  // Once descriptors are free again the waiting connection is accepted and served.
  timeval tv{5, 0};
  ::setsockopt(pending.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  asio::write(pending, asio::buffer(http_request("POST", "/v1/score",
                                                 json{{"samples", {score_sample("f", "fds")}}}.dump(), "")));
  std::string buffered;
  auto reply = read_http_reply(pending, buffered);
  EXPECT_EQ(reply.status, 200) << reply.body;
}

}  // namespace
}  // namespace vlreward::server_test
