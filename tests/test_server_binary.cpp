// reward-serve's binary protocol (length-prefixed ScoreRequest frames) over real loopback sockets: the round trip,
// hostile frames each getting its specific error, and announced frames costing only the bytes received.
#include <gtest/gtest.h>

#include "tests/server_test_support.h"

namespace vlreward::server_test {
namespace {

TEST(ServerRoutes, BinaryProtocolRoundTrip) {
  RunningServer s(test_config());
  BinaryClient client(s.binary());
  serve::ScoreRequest request;
  request.set_request_id(42);
  *request.add_samples() = proto_sample("p", "Q?", "binary answer", {tiny_png()});
  *request.add_samples() = proto_sample("f", "Q?", "FAIL");
  auto response = client.call(request);
  ASSERT_TRUE(response);
  EXPECT_EQ(response->request_id(), 42u);
  EXPECT_FALSE(response->has_error());
  ASSERT_EQ(response->results_size(), 2);
  EXPECT_EQ(response->results(0).id(), "p");
  EXPECT_DOUBLE_EQ(response->results(0).score(), fake_score("binary answer"));
  EXPECT_EQ(response->results(0).components().at("images"), 1.0);
  EXPECT_GT(response->results(0).timing().tokens(), 0u);
  EXPECT_GT(response->results(0).timing().compute_time_ns(), 0u);
  EXPECT_GE(response->results(0).timing().batch_size(), 1u);
  EXPECT_GT(response->total_time_ns(), 0u);
  EXPECT_EQ(response->results(1).error(), "fake backend refuses FAIL");
  // A second request on the same connection.
  request.set_request_id(43);
  auto again = client.call(request);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->request_id(), 43u);
}


struct BinaryCase {
  std::string name;
  std::string bytes;        // sent as they are
  serve::ErrorCode code;    // expected error; ERROR_NONE: the server closes without answering
  std::string message;
  bool closes = false;      // the server closes the connection after answering
};

serve::ScoreRequest authed() {
  serve::ScoreRequest r;
  r.set_auth_token(kToken);
  return r;
}

std::vector<BinaryCase> hostile_binary_cases() {
  std::vector<BinaryCase> cases;
  auto add = [&](std::string name, std::string bytes, serve::ErrorCode code, std::string message, bool closes = false) {
    cases.push_back({std::move(name), std::move(bytes), code, std::move(message), closes});
  };
  add("length 0xffffffff", std::string("\xff\xff\xff\xff", 4), serve::TOO_LARGE, "declared length 4294967295", true);
  add("length limit + 1", be32((2u << 20) + 1) + "xx", serve::TOO_LARGE, "exceeds the limit of 2097152 bytes", true);
  add("truncated frame then close", be32(100) + std::string(10, 'x'), serve::ERROR_NONE, "");
  add("header only then close", be32(8), serve::ERROR_NONE, "");
  add("two header bytes then close", std::string("\0\0", 2), serve::ERROR_NONE, "");
  // Invalid protobuf payloads.
  const std::vector<std::string> invalid = {
      std::string("\xff\xff\xff\xff", 4),
      std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12),  // varint longer than 10 bytes
      std::string("\x12\x7f\x0a", 3),                                       // sample length beyond the payload
      std::string("\x0f", 1),                                               // field 1 with wire type 7
      std::string("\x12\x02\x1a\x05", 4),                                   // nested turn truncated
      std::string("\x00", 1),                                               // field number 0
      std::string("\x22\x05\xff\xfe\xfd\xfc\xfb", 7),                       // auth_token: invalid UTF-8
      std::string("\x12\x03\x0a\x01\xc3", 5),                               // sample id: invalid UTF-8
  };
  for (size_t i = 0; i < invalid.size(); ++i)
    add(fmt::format("invalid protobuf #{}", i), encode_frame(invalid[i]), serve::BAD_REQUEST, "not a valid ScoreRequest");
  std::mt19937 rng(1234);
  for (int i = 0; i < 12; ++i) {
    std::string noise(static_cast<size_t>(16 + i * 7), '\0');
    for (auto& c : noise) c = static_cast<char>(rng() & 0xff);
    noise[0] = '\x07';  // wire type 7 does not exist: never a valid message
    add(fmt::format("random bytes #{}", i), encode_frame(noise), serve::BAD_REQUEST, "not a valid ScoreRequest");
  }
  // Authentication.
  {
    serve::ScoreRequest r;
    *r.add_samples() = proto_sample("a", "q", "r");
    add("missing auth_token", frame_of_request(r), serve::UNAUTHORIZED, "missing auth_token");
    r.set_auth_token("wrong");
    add("wrong auth_token", frame_of_request(r), serve::UNAUTHORIZED, "invalid auth_token");
    r.set_auth_token(std::string(kToken) + "!");
    add("auth_token with suffix", frame_of_request(r), serve::UNAUTHORIZED, "invalid auth_token");
  }
  // Well-formed protobuf, bad content.
  add("empty frame", encode_frame(""), serve::UNAUTHORIZED, "missing auth_token");
  add("no samples", frame_of_request(authed()), serve::BAD_REQUEST, "samples: no samples");
  auto with_sample = [&](const std::string& name, const std::function<void(serve::Sample&)>& edit, serve::ErrorCode code,
                         const std::string& message) {
    auto r = authed();
    auto* s = r.add_samples();
    *s = proto_sample("s", "q", "r");
    edit(*s);
    add(name, frame_of_request(r), code, message);
  };
  with_sample("empty image", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image(); }, serve::BAD_REQUEST,
              "an image needs data or a path");
  with_sample("image with data and path",
              [](serve::Sample& s) {
                auto* i = s.mutable_turns(0)->add_content()->mutable_image();
                i->set_data(tiny_png());
                i->set_path("ok.png");
              },
              serve::BAD_REQUEST, "not both");
  with_sample("empty content part", [](serve::Sample& s) { s.mutable_turns(0)->add_content(); }, serve::BAD_REQUEST,
              "neither text nor image");
  with_sample("corrupt image", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_data("\x89PNG garbage"); },
              serve::BAD_REQUEST, "");
  with_sample("huge PNG header",
              [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_data(png_with_size(100000, 100000)); },
              serve::TOO_LARGE, "100000x100000");
  with_sample("path traversal", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_path("../secret.png"); },
              serve::BAD_REQUEST, "\"..\" is not allowed");
  with_sample("symlink escape", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_path("escape.png"); },
              serve::BAD_REQUEST, "outside the image root");
  with_sample("absolute path", [](serve::Sample& s) { s.mutable_turns(0)->add_content()->mutable_image()->set_path("/etc/hostname"); },
              serve::BAD_REQUEST, "must be relative");
  with_sample("too many images",
              [](serve::Sample& s) {
                for (int i = 0; i < 5; ++i) s.mutable_turns(0)->add_content()->mutable_image()->set_data(tiny_png());
              },
              serve::TOO_LARGE, "more than 4 images");
  with_sample("huge text", [](serve::Sample& s) { s.set_response(std::string(70000, 'x')); }, serve::TOO_LARGE,
              "exceed the limit of 65536 bytes");
  with_sample("bad role", [](serve::Sample& s) { s.mutable_turns(0)->set_role("tool"); }, serve::BAD_REQUEST,
              "must be \"user\" or \"assistant\"");
  with_sample("no turns", [](serve::Sample& s) { s.clear_turns(); }, serve::BAD_REQUEST, "no turns");
  {
    auto r = authed();
    for (int i = 0; i < 17; ++i) *r.add_samples() = proto_sample(std::to_string(i), "q", "r");
    add("too many samples", frame_of_request(r), serve::TOO_LARGE, "17 samples exceed the limit of 16");
  }
  {  // A lying prefix shorter than the message: the first frame is a fragment of protobuf.
    auto r = authed();
    *r.add_samples() = proto_sample("a", "q", "r");
    const std::string payload = r.SerializeAsString();
    add("length prefix shorter than the message", be32(5) + payload, serve::BAD_REQUEST, "not a valid ScoreRequest");
  }
  return cases;
}

TEST(ServerHostile, BinaryInputsGetSpecificErrorsAndTheServerKeepsServing) {
  HostileServer h;
  const auto cases = hostile_binary_cases();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    BinaryClient client(h.server->binary());
    client.send_bytes(c.bytes);
    if (c.code != serve::ERROR_NONE) {  // otherwise the client just goes away mid-frame
      auto reply = client.read_response();
      ASSERT_TRUE(reply) << "no answer";
      EXPECT_EQ(reply->error().code(), c.code) << reply->error().message();
      EXPECT_NE(reply->error().message().find(c.message), std::string::npos) << reply->error().message();
      EXPECT_EQ(reply->results_size(), 0);
      if (c.closes) {
        EXPECT_TRUE(client.closed_by_server());
      }
    }
    h.expect_normal_binary_works(c.name);
  }
  EXPECT_GE(cases.size(), 40u);
  h.expect_normal_http_works("binary hostile inputs");
}

TEST(ServerHostile, BinaryConnectionContinuesAfterARequestLevelError) {
  HostileServer h;
  BinaryClient client(h.server->binary());
  client.send_bytes(encode_frame("\xff\xff"));
  auto bad = client.read_response();
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->error().code(), serve::BAD_REQUEST);
  auto request = authed();
  request.set_request_id(9);
  *request.add_samples() = proto_sample("ok", "q", "same connection");
  auto good = client.call(request);
  ASSERT_TRUE(good);
  EXPECT_EQ(good->request_id(), 9u);
  EXPECT_DOUBLE_EQ(good->results(0).score(), fake_score("same connection"));
}

// Resident memory of this process (the server runs in it).
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

TEST(ServerHostile, AnnouncedFramesCostOnlyTheBytesReceived) {
  auto c = test_config();
  c.read_timeout_ms = 10000;
  c.limits.max_frame_bytes = 64u << 20;
  RunningServer s(c);
  const int64_t before = resident_bytes();
  // Each connection announces a 64 MiB frame and sends a few bytes of it (no token has been seen yet).
  std::vector<std::unique_ptr<BinaryClient>> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(std::make_unique<BinaryClient>(s.binary()));
    clients.back()->send_bytes(be32((64u << 20) - 1) + "only this much");
  }
  wait_until([&] { return s.server.metrics().open_connections() == 16; });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the server read what was sent
  const int64_t grown = resident_bytes() - before;
  EXPECT_LT(grown, 64 << 20) << "16 announced 64 MiB frames made the server hold " << (grown >> 20) << " MiB";
  clients.clear();

  // A frame arriving in pieces, and two frames in one write, are still read exactly.
  BinaryClient client(s.binary());
  serve::ScoreRequest request;
  request.set_request_id(1);
  *request.add_samples() = proto_sample("p", "q", std::string(200000, 'p'));
  const std::string frame = frame_of_request(request);
  for (size_t at = 0; at < frame.size(); at += 70001) {
    client.send_bytes(frame.substr(at, 70001));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto reply = client.read_response();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->request_id(), 1u);
  EXPECT_DOUBLE_EQ(reply->results(0).score(), fake_score(std::string(200000, 'p')));
  serve::ScoreRequest second;
  second.set_request_id(2);
  *second.add_samples() = proto_sample("s", "q", "second");
  client.send_bytes(frame_of_request(request) + frame_of_request(second));
  auto first_reply = client.read_response(), second_reply = client.read_response();
  ASSERT_TRUE(first_reply && second_reply);
  EXPECT_EQ(first_reply->request_id(), 1u);
  EXPECT_EQ(second_reply->request_id(), 2u);
  EXPECT_DOUBLE_EQ(second_reply->results(0).score(), fake_score("second"));
}

}  // namespace
}  // namespace vlreward::server_test
