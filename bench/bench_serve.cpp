// reward-serve load generator: N concurrent clients, each on its own keep-alive connection, send single-sample
// requests (HTTP POST /v1/score or binary ScoreRequest frames) built from a JSONL file of samples with images, and
// check every answer against its request: the id must be the one sent and the score the sample's expected score.
// Driven by bench_serve.py, which starts reward-serve (batched, then max_batch_size 1) on loopback.
//
//   bench_serve --port P --input items.jsonl --expected expected.json [--protocol http|binary] [--clients 16]
//               [--requests 10000] [--warmup 200] [--seconds S] [--hostile-every N --binary-port B]
//
// Request k carries sample k % n (images read once, sent as bytes / base64) with the unique id "r<k>". Lost: no
// answer, a closed connection or a non-200 / error answer. Mismatched: an answer for another id, or a score off
// the expected one by more than 1e-4 relative.
// --seconds runs the timed phase for that long instead of a number of requests (the soak). --hostile-every N makes
// every N-th request a hostile one instead, each on a fresh connection to the HTTP or binary port: malformed and
// out-of-range JSON, nesting bombs, invalid UTF-8, base64 garbage, image bombs, header floods, Content-Length lies,
// truncated bodies, smuggling attempts, oversized and garbage frames. A hostile request must get a 4xx (an error
// frame on the binary port) or have its connection closed; anything else (a 5xx, a 200, a hang past 30 s) counts
// as hostile_unexpected. Prints one JSON line:
//   {"protocol", "clients", "requests", "seconds", "requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
//    "lost", "mismatched", "hostile_sent", "hostile_unexpected", "unexpected_examples"}
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/crc.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/cli.h"
#include "adapters/common/mapped_file.h"
#include "plugin/wire/base64.h"
#include "plugin/wire/frame_codec.h"
#include "reward_service.pb.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace po = boost::program_options;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Sample {
  std::string id, question, response;
  std::vector<std::string> images;  // encoded bytes
  double expected = 0;
};

std::vector<Sample> load_samples(const std::string& input, const std::string& expected_file) {
  std::map<std::string, double> expected;
  const json reference = json::parse(vlreward::read_file(expected_file));
  for (const auto& item : reference["items"]) expected[item["id"].get<std::string>()] = item["score"].get<double>();
  std::vector<Sample> samples;
  std::ifstream in(input);
  const auto root = std::filesystem::path(input).parent_path();
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const json j = json::parse(line);
    Sample s{j["id"].get<std::string>(), j["question"].get<std::string>(), j["response"].get<std::string>(), {}, 0};
    for (const auto& path : j.value("images", json::array())) s.images.push_back(vlreward::read_file((root / path.get<std::string>()).string()));
    if (!expected.count(s.id)) throw std::runtime_error("no expected score for " + s.id);
    s.expected = expected[s.id];
    samples.push_back(std::move(s));
  }
  if (samples.empty()) throw std::runtime_error("no samples in " + input);
  return samples;
}

// A request's bytes with the id spliced in (everything else is encoded once).
struct Template {
  std::string before_id, after_id;
};

Template http_template(const Sample& s) {
  json content = json::array();
  for (const auto& image : s.images) content.push_back({{"type", "image"}, {"data", vlreward::base64_encode(image)}});
  content.push_back({{"type", "text"}, {"text", s.question}});
  const json body = {{"samples", {{{"id", "@ID@"},
                                   {"messages", {{{"role", "user"}, {"content", content}}}},
                                   {"response", s.response}}}}};
  const std::string text = body.dump();
  const auto at = text.find("@ID@");
  return {text.substr(0, at), text.substr(at + 4)};
}

std::string binary_frame(const Sample& s, const std::string& id, uint64_t request_id) {
  vlreward::serve::ScoreRequest request;
  request.set_request_id(request_id);
  auto* sample = request.add_samples();
  sample->set_id(id);
  auto* turn = sample->add_turns();
  turn->set_role("user");
  for (const auto& image : s.images) turn->add_content()->mutable_image()->set_data(image);
  turn->add_content()->set_text(s.question);
  sample->set_response(s.response);
  return vlreward::encode_frame(request.SerializeAsString());
}

// A PNG signature and IHDR chunk (valid CRC) declaring width x height, then an IDAT of garbage: the size alone must
// refuse it.
std::string png_declaring(uint32_t width, uint32_t height) {
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  std::string ihdr = "IHDR" + be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5);
  boost::crc_32_type crc;
  crc.process_bytes(ihdr.data(), ihdr.size());
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + be32(crc.checksum()) + be32(16) + "IDAT" +
         std::string(16, 'x') + be32(0);
}

struct HostileCase {
  std::string name;
  bool binary_port = false;
  std::string bytes;
  bool half_close = false;  // shut down the sending side after the bytes (a body that ends early)
};

std::string http_post(const std::string& body, const std::string& extra_headers = "") {
  return fmt::format("POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: {}\r\n{}\r\n{}",
                     body.size(), extra_headers, body);
}

std::vector<HostileCase> hostile_cases(const Sample& sample) {
  const json good = {{"samples", {{{"id", "h"}, {"question", sample.question}, {"response", sample.response}}}}};
  auto with_image = [&](const std::string& image) {
    json body = good;
    body["samples"][0]["images"] = {image};
    return body.dump();
  };
  std::string many_headers;
  for (int i = 0; i < 3000; ++i) many_headers += fmt::format("X-H{}: v\r\n", i);
  std::vector<HostileCase> cases = {
      {"truncated JSON", false, http_post("{\"samples\": [")},
      {"number beyond a double", false, http_post("{\"samples\": [1e400]}")},
      {"nesting bomb", false, http_post(std::string(20000, '[') + std::string(20000, ']'))},
      {"invalid UTF-8", false, http_post("{\"samples\": [{\"question\": \"q\", \"response\": \"\xff\xfe\"}]}")},
      {"unknown key", false, http_post("{\"samples\": [], \"sampels\": 1}")},
      {"base64 garbage", false, http_post(with_image("@@@@not base64@@@@"))},
      {"data URI garbage", false, http_post(with_image("data:image/png;base64,%%%"))},
      {"image bomb", false, http_post(with_image(vlreward::base64_encode(png_declaring(100000, 100000))))},
      {"path escape", false, http_post(with_image("../../../etc/passwd"))},
      {"text of 2 MB", false, http_post(json{{"samples", {{{"question", "q"}, {"response", std::string(2 << 20, 'r')}}}}}.dump())},
      {"header flood", false, http_post("{}", many_headers)},
      {"Content-Length shorter than the body", false,
       "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + good.dump()},
      {"Content-Length and chunked", false,
       "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
      {"non-chunked transfer coding", false,
       "POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + http_post(good.dump())},
      {"truncated body", false, "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"samples\"", true},
      {"garbage request line", false, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"},
      {"frame announcing 64 MiB, then nothing", true, std::string("\x04\x00\x00\x00", 4), true},
      {"frame over the limit", true, std::string("\x7f\xff\xff\xff", 4) + "xx"},
      {"garbage frame", true, std::string("\x00\x00\x00\x10", 4) + std::string(16, '\xff')},
      {"empty request frame", true, std::string(4, '\0')},
  };
  return cases;
}

// Sends one hostile case on a fresh connection; true when the server answered as it must (a 4xx, an error frame,
// or a closed connection).
bool send_hostile(const HostileCase& c, const tcp::endpoint& endpoint) {
  asio::io_context io;
  tcp::socket socket(io);
  beast::error_code ec;
  socket.connect(endpoint, ec);
  if (ec) return false;
  asio::write(socket, asio::buffer(c.bytes), ec);
  if (c.half_close) socket.shutdown(tcp::socket::shutdown_send, ec);
  // Blocking reads bounded by a receive timeout: a server that neither answers nor closes fails the case.
  struct timeval limit {30, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  if (c.binary_port) {
    unsigned char header[4];
    asio::read(socket, asio::buffer(header), ec);
    if (ec == asio::error::eof || ec == asio::error::connection_reset) return true;
    if (ec) return false;
    std::string payload(vlreward::decode_frame_length(header), '\0');
    asio::read(socket, asio::buffer(payload), ec);
    vlreward::serve::ScoreResponse response;
    return !ec && response.ParseFromString(payload) && response.has_error() &&
           response.error().code() != vlreward::serve::ERROR_NONE;
  }
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response, ec);
  if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset)
    return true;
  if (ec) return false;
  return response.result_int() >= 400 && response.result_int() < 500;
}

struct Outcome {
  bool lost = false, mismatched = false;
};

bool score_matches(double got, double want) { return std::abs(got - want) <= 1e-4 * std::max(1.0, std::abs(want)); }

class HttpClient {
 public:
  HttpClient(asio::io_context& io, const tcp::endpoint& endpoint) : socket_(io) { reconnect(endpoint); }
  Outcome call(const std::string& body, const std::string& id, double expected, const tcp::endpoint& endpoint) {
    http::request<http::string_body> request{http::verb::post, "/v1/score", 11};
    request.set(http::field::host, "127.0.0.1");
    request.set(http::field::content_type, "application/json");
    request.keep_alive(true);
    request.body() = body;
    request.prepare_payload();
    beast::error_code ec;
    http::write(socket_, request, ec);
    http::response<http::string_body> response;
    if (!ec) http::read(socket_, buffer_, response, ec);
    if (ec || response.result_int() != 200) {
      if (ec || !response.keep_alive()) reconnect(endpoint);
      return {true, false};
    }
    const json answer = json::parse(response.body(), nullptr, false);
    if (!answer.is_object() || !answer.contains("results") || answer["results"].size() != 1) return {false, true};
    const auto& r = answer["results"][0];
    if (r.value("id", "") != id || !r.contains("score")) return {false, true};
    return {false, !score_matches(r["score"].get<double>(), expected)};
  }

 private:
  void reconnect(const tcp::endpoint& endpoint) {
    beast::error_code ec;
    socket_.close(ec);
    buffer_.clear();
    socket_.connect(endpoint, ec);
    socket_.set_option(tcp::no_delay(true), ec);
  }
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

class BinaryClient {
 public:
  BinaryClient(asio::io_context& io, const tcp::endpoint& endpoint) : socket_(io) { reconnect(endpoint); }
  Outcome call(const std::string& frame, const std::string& id, uint64_t request_id, double expected,
               const tcp::endpoint& endpoint) {
    beast::error_code ec;
    asio::write(socket_, asio::buffer(frame), ec);
    unsigned char header[4];
    if (!ec) asio::read(socket_, asio::buffer(header), ec);
    std::string payload;
    if (!ec) {
      payload.resize(vlreward::decode_frame_length(header));
      asio::read(socket_, asio::buffer(payload), ec);
    }
    vlreward::serve::ScoreResponse response;
    if (ec || !response.ParseFromString(payload)) {
      reconnect(endpoint);
      return {true, false};
    }
    if (response.has_error() && response.error().code() != vlreward::serve::ERROR_NONE) return {true, false};
    if (response.request_id() != request_id || response.results_size() != 1 || response.results(0).id() != id ||
        response.results(0).outcome_case() != vlreward::serve::SampleResult::kScore)
      return {false, true};
    return {false, !score_matches(response.results(0).score(), expected)};
  }

 private:
  void reconnect(const tcp::endpoint& endpoint) {
    beast::error_code ec;
    socket_.close(ec);
    socket_.connect(endpoint, ec);
    socket_.set_option(tcp::no_delay(true), ec);
  }
  tcp::socket socket_;
};

double percentile(std::vector<double> sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t k = std::min(sorted.size() - 1, static_cast<size_t>(std::ceil(p / 100.0 * sorted.size())) - 1);
  return sorted[k];
}

}  // namespace

int bench_serve(int argc, char** argv) {
  po::options_description options("bench_serve options");
  options.add_options()("help,h", "show this help")
      ("port", po::value<int>()->required(), "reward-serve port on 127.0.0.1 (HTTP, or binary with --protocol binary)")
      ("input", po::value<std::string>()->required(), "samples, JSONL {id, images, question, response}")
      ("expected", po::value<std::string>()->required(), "expected scores, JSON {items: [{id, score}]}")
      ("protocol", po::value<std::string>()->default_value("http"), "http or binary")
      ("clients", po::value<int>()->default_value(16), "concurrent connections")
      ("requests", po::value<int64_t>()->default_value(10000), "timed requests, all clients together")
      ("warmup", po::value<int64_t>()->default_value(200), "untimed requests first")
      ("seconds", po::value<double>()->default_value(0), "run the timed phase this long instead (soak)")
      ("hostile-every", po::value<int64_t>()->default_value(0), "every N-th timed request is a hostile one (0: none)")
      ("binary-port", po::value<int>()->default_value(0), "reward-serve's binary port, for hostile frames");
  po::variables_map vm;
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;
  const bool binary = vm["protocol"].as<std::string>() == "binary";
  const int clients = vm["clients"].as<int>();
  const int64_t warmup = vm["warmup"].as<int64_t>();
  const double soak_seconds = vm["seconds"].as<double>();
  const int64_t requests = soak_seconds > 0 ? INT64_MAX : vm["requests"].as<int64_t>();
  const int64_t hostile_every = vm["hostile-every"].as<int64_t>();
  const auto samples = load_samples(vm["input"].as<std::string>(), vm["expected"].as<std::string>());
  std::vector<Template> templates;
  for (const auto& s : samples) templates.push_back(http_template(s));
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(vm["port"].as<int>()));
  const tcp::endpoint binary_endpoint(asio::ip::make_address("127.0.0.1"),
                                      static_cast<uint16_t>(vm["binary-port"].as<int>()));
  std::vector<HostileCase> hostile;
  for (auto& c : hostile_cases(samples[0]))
    if (!c.binary_port || binary_endpoint.port() != 0) hostile.push_back(std::move(c));
  std::atomic<int64_t> hostile_sent{0}, hostile_unexpected{0};
  std::map<std::string, int64_t> unexpected_by_case;

  std::atomic<int64_t> next{0}, lost{0}, mismatched{0};
  std::mutex latency_mutex;
  std::vector<double> latencies_ms;
  if (soak_seconds <= 0) latencies_ms.reserve(static_cast<size_t>(requests));
  Clock::time_point timed_start;
  Clock::time_point deadline = Clock::time_point::max();

  auto run_client = [&](int64_t total, bool record) {
    asio::io_context io;
    HttpClient http_client(io, endpoint);
    std::unique_ptr<BinaryClient> binary_client;
    if (binary) binary_client = std::make_unique<BinaryClient>(io, endpoint);
    std::vector<double> mine;
    for (int64_t k; (k = next++) < total && Clock::now() < deadline;) {
      if (record && hostile_every > 0 && k % hostile_every == hostile_every - 1) {
        const HostileCase& c = hostile[static_cast<size_t>(k / hostile_every) % hostile.size()];
        ++hostile_sent;
        if (!send_hostile(c, c.binary_port ? binary_endpoint : endpoint)) {
          ++hostile_unexpected;
          std::lock_guard<std::mutex> lock(latency_mutex);
          ++unexpected_by_case[c.name];
        }
        continue;
      }
      const Sample& s = samples[static_cast<size_t>(k) % samples.size()];
      const std::string id = fmt::format("r{}", k);
      std::string payload;
      if (binary) {
        payload = binary_frame(s, id, static_cast<uint64_t>(k) + 1);
      } else {
        const auto& t = templates[static_cast<size_t>(k) % samples.size()];
        payload = t.before_id + id + t.after_id;
      }
      const auto start = Clock::now();
      const Outcome outcome = binary ? binary_client->call(payload, id, static_cast<uint64_t>(k) + 1, s.expected, endpoint)
                                     : http_client.call(payload, id, s.expected, endpoint);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (record) {
        mine.push_back(ms);
        lost += outcome.lost ? 1 : 0;
        mismatched += outcome.mismatched ? 1 : 0;
      }
    }
    std::lock_guard<std::mutex> lock(latency_mutex);
    latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
  };
  auto run_all = [&](int64_t total, bool record) {
    next = 0;
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) threads.emplace_back(run_client, total, record);
    for (auto& t : threads) t.join();
  };

  run_all(warmup, false);
  timed_start = Clock::now();
  if (soak_seconds > 0)
    deadline = timed_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(soak_seconds));
  run_all(requests, true);
  const double seconds = std::chrono::duration<double>(Clock::now() - timed_start).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const auto answered = static_cast<int64_t>(latencies_ms.size());
  const json result = {{"protocol", binary ? "binary" : "http"},
                       {"clients", clients},
                       {"requests", answered},
                       {"answered", static_cast<int64_t>(latencies_ms.size())},
                       {"seconds", seconds},
                       {"requests_per_s", static_cast<double>(answered) / seconds},
                       {"p50_ms", percentile(latencies_ms, 50)},
                       {"p90_ms", percentile(latencies_ms, 90)},
                       {"p99_ms", percentile(latencies_ms, 99)},
                       {"max_ms", latencies_ms.empty() ? 0.0 : latencies_ms.back()},
                       {"lost", lost.load()},
                       {"mismatched", mismatched.load()},
                       {"hostile_sent", hostile_sent.load()},
                       {"hostile_unexpected", hostile_unexpected.load()},
                       {"unexpected_examples", unexpected_by_case}};
  std::cout << result.dump() << std::endl;
  return lost == 0 && mismatched == 0 && hostile_unexpected == 0 ? 0 : 1;
}

int main(int argc, char** argv) { return vlreward::run_cli("bench_serve", argc, argv, bench_serve); }
