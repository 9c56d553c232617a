// One HTTP/1.1 connection: keep-alive, read timeout, body limit, bearer token, routes. Runs on its own strand.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <string_view>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/server/connection_session.h"

namespace vlreward {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

constexpr uint32_t kHeaderLimit = 16 * 1024;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double ns_to_ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

json error_body(ServeErrorKind kind, const std::string& message) {
  return {{"error", {{"type", metric_label(kind)}, {"message", message}}}};
}

class HttpSession : public ConnectionSession<HttpSession> {
 public:
  using ConnectionSession::ConnectionSession;

 private:
  friend class ConnectionSession<HttpSession>;

  void read_header() {
    if (context_.stopping.load()) return close();
    state_ = State::kReading;
    parser_.emplace();
    parser_->body_limit(context_.config.limits.max_body_bytes);
    parser_->header_limit(kHeaderLimit);
    arm_timer(context_.config.read_timeout_ms);  // covers headers and body together
    http::async_read_header(socket_, buffer_, *parser_,
                            [self = self()](const boost::system::error_code& ec, size_t) { self->on_header(ec); });
  }

  void on_header(const boost::system::error_code& ec) {
    if (ec) return on_read_error(ec);
    // A transfer coding other than a final chunked leaves the body's end unknown: the parser would read no body and
    // take the body's bytes for the next request (request smuggling behind a proxy). Refuse it and close.
    const auto transfer_encoding = parser_->get()[http::field::transfer_encoding];
    if (!transfer_encoding.empty() && !parser_->chunked()) {
      disarm_timer();
      keep_alive_ = false;
      return respond_error(ServeError(
          ServeErrorKind::kBadRequest,
          fmt::format("malformed HTTP request: Transfer-Encoding \"{}\" does not end in chunked, the only one accepted",
                      std::string_view(transfer_encoding.data(), std::min<size_t>(transfer_encoding.size(), 64)))));
    }
    const auto expect = parser_->get()[http::field::expect];
    if (beast::iequals(expect, "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(socket_, asio::buffer(kContinue),
                        [self = self()](const boost::system::error_code& write_ec, size_t) {
                          if (write_ec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(socket_, buffer_, *parser_,
                     [self = self()](const boost::system::error_code& ec, size_t) { self->on_body(ec); });
  }

  void on_body(const boost::system::error_code& ec) {
    if (ec) return on_read_error(ec);
    disarm_timer();
    handle_request();
  }

  void on_read_error(const boost::system::error_code& ec) {
    disarm_timer();
    const bool partial = buffer_.size() > 0 || (parser_ && parser_->got_some());
    keep_alive_ = false;
    if (timed_out_) {
      if (!partial) return close();  // an idle keep-alive connection: just close it
      return respond_error(ServeError(ServeErrorKind::kTimeout,
                                      fmt::format("request not received within the read timeout of {} ms",
                                                  context_.config.read_timeout_ms)));
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || !partial)
      return close();
    if (ec == http::error::body_limit)
      return respond_error(ServeError(ServeErrorKind::kTooLarge,
                                      fmt::format("request body exceeds the limit of {} bytes",
                                                  context_.config.limits.max_body_bytes)));
    if (ec == http::error::header_limit)
      return respond_error(ServeError(ServeErrorKind::kTooLarge,
                                      fmt::format("request headers exceed the limit of {} bytes", kHeaderLimit)));
    if (ec == http::error::partial_message) return close();  // the client went away mid-request
    respond_error(ServeError(ServeErrorKind::kBadRequest, fmt::format("malformed HTTP request: {}", ec.message())));
  }

  std::string bearer_token(const http::request<http::string_body>& request, bool* present) const {
    const auto header = request[http::field::authorization];
    *present = !header.empty();
    if (header.size() < 7 || !beast::iequals(header.substr(0, 7), "Bearer ")) return {};
    return std::string(header.substr(7));
  }

  void handle_request() {
    state_ = State::kProcessing;
    received_ = std::chrono::steady_clock::now();
    request_ = parser_->release();
    parser_.reset();
    keep_alive_ = request_.keep_alive();
    std::string target(request_.target());
    target = target.substr(0, target.find('?'));
    const auto method = request_.method();
    try {
      if (target == "/healthz") {
        route_ = "/healthz";
        context_.metrics.count_request(route_);
        if (method != http::verb::get) throw_method_not_allowed("GET");
        const bool draining = context_.stopping.load();
        return respond(draining ? 503 : 200,
                       json{{"status", draining ? "draining" : "ok"}, {"model", context_.config.model_name}});
      }
      const bool known = target == "/metrics" || target == "/v1/score" || target == "/get_reward" ||
                         target == "/classify" || target == "/v1/classify" || target == "/v1/embeddings";
      route_ = known ? target : "other";
      context_.metrics.count_request(route_);
      if (!context_.authorized(trusted_, "")) {
        if (context_.config.auth_token.empty())
          throw ServeError(ServeErrorKind::kUnauthorized, "the client's address is not in allow_networks");
        bool present = false;
        const std::string token = bearer_token(request_, &present);
        if (!present)
          throw ServeError(ServeErrorKind::kUnauthorized, "missing bearer token (send Authorization: Bearer <token>)");
        if (!context_.authorized(trusted_, token)) throw ServeError(ServeErrorKind::kUnauthorized, "invalid bearer token");
      }
      if (!known) throw ServeError(ServeErrorKind::kNotFound, fmt::format("no route {}", target.substr(0, 100)));
      if (target == "/metrics") {
        if (method != http::verb::get) throw_method_not_allowed("GET");
        return respond_text(200, context_.metrics.render(context_.batcher.queue_depth()),
                            "text/plain; version=0.0.4; charset=utf-8");
      }
      if (method != http::verb::post) throw_method_not_allowed("POST");
      const json body = context_.decoder.parse_json_body(request_.body());
      request_.body().clear();
      request_.body().shrink_to_fit();
      if (target == "/v1/score") {
        int64_t deadline_ms = 0;
        auto samples = context_.decoder.decode_score(body, &deadline_ms);
        std::vector<std::string> ids;
        for (const auto& s : samples) ids.push_back(s.request.id);
        submit(std::move(samples), deadline_ms, [this, ids = std::move(ids)](std::vector<SampleOutcome> outcomes) {
          finish_score(ids, outcomes);
        });
      } else if (target == "/get_reward") {
        auto parsed = context_.decoder.decode_get_reward(body);
        submit(std::move(parsed.samples), 0, [this](std::vector<SampleOutcome> outcomes) { finish_get_reward(outcomes); });
      } else {
        auto parsed = context_.decoder.decode_classify(body);
        std::string model = context_.config.model_name;
        if (body.contains("model") && body["model"].is_string()) model = body["model"].get<std::string>();
        const bool embeddings = target == "/v1/embeddings";
        submit(std::move(parsed.samples), 0,
               [this, activation = parsed.activation, model, embeddings](std::vector<SampleOutcome> o) {
                 if (embeddings)
                   finish_embeddings(o, model);
                 else
                   finish_classify(o, activation, model);
               });
      }
    } catch (const ServeError& e) {
      respond_error(e);
    } catch (const std::exception& e) {
      // Decoding only throws ServeError; anything else is the server's own failure, answered, never propagated.
      respond_error(ServeError(ServeErrorKind::kInternal, fmt::format("{}: {}", route_, e.what())));
    }
  }

  [[noreturn]] void throw_method_not_allowed(const char* allow) {
    allow_ = allow;
    throw ServeError(ServeErrorKind::kMethodNotAllowed,
                     fmt::format("{} {} is not allowed (use {})", std::string(request_.method_string()),
                                 route_, allow));
  }

  void submit(std::vector<DecodedSample> samples, int64_t deadline_ms,
              std::function<void(std::vector<SampleOutcome>)> finish) {
    dispatch(context_, socket_.get_executor(), std::move(samples), deadline_ms,
             [self = self(), finish = std::move(finish)](DispatchResult result) {
               if (result.error) return self->respond_error(*result.error);
               if (auto error = request_level_error(result.outcomes)) return self->respond_error(*error);
               int64_t failed = 0;
               for (const auto& o : result.outcomes) failed += o.result.ok() ? 0 : 1;
               self->context_.metrics.count_samples(static_cast<int64_t>(result.outcomes.size()) - failed, failed);
               finish(std::move(result.outcomes));
             });
  }

  static json timing_json(const SampleOutcome& o) {
    return {{"tokens", o.tokens}, {"queue_ms", ns_to_ms(o.queue_ns)}, {"compute_ms", ns_to_ms(o.compute_ns)},
            {"batch_size", o.batch_size}};
  }

  void finish_score(const std::vector<std::string>& ids, const std::vector<SampleOutcome>& outcomes) {
    json results = json::array();
    for (size_t i = 0; i < outcomes.size(); ++i) {
      const auto& o = outcomes[i];
      json r = {{"id", ids[i]}};
      if (o.result.ok()) {
        r["score"] = *o.result.score;
        if (!o.result.components.empty()) r["components"] = o.result.components;
      } else {
        r["error"] = o.result.error;
      }
      r["timing"] = timing_json(o);
      results.push_back(std::move(r));
    }
    respond(200, json{{"model", context_.config.model_name}, {"results", std::move(results)}});
  }

  // One failed sample fails an OpenRLHF / vLLM-shaped request: those shapes have no per-sample error.
  bool fail_on_sample_error(const std::vector<SampleOutcome>& outcomes, const char* field) {
    for (size_t i = 0; i < outcomes.size(); ++i)
      if (!outcomes[i].result.ok()) {
        respond_error(ServeError(ServeErrorKind::kUnprocessable,
                                 fmt::format("{}[{}]: {}", field, i, outcomes[i].result.error)));
        return true;
      }
    return false;
  }

  void finish_get_reward(const std::vector<SampleOutcome>& outcomes) {
    if (fail_on_sample_error(outcomes, "query")) return;
    json rewards = json::array(), scores = json::array(), extra = json::object();
    for (const auto& o : outcomes) {
      rewards.push_back(*o.result.score);
      scores.push_back(sigmoid(*o.result.score));  // OpenRLHF's dynamic filtering wants scores in [0, 1]
    }
    // Components every sample has become extra_logs (a list per name, aligned with rewards).
    for (const auto& [name, _] : outcomes.front().result.components) {
      json values = json::array();
      for (const auto& o : outcomes) {
        auto it = o.result.components.find(name);
        if (it == o.result.components.end()) break;
        values.push_back(it->second);
      }
      if (values.size() == outcomes.size()) extra[name] = std::move(values);
    }
    respond(200, json{{"rewards", std::move(rewards)}, {"scores", std::move(scores)}, {"extra_logs", std::move(extra)}});
  }

  void finish_classify(const std::vector<SampleOutcome>& outcomes, bool activation, const std::string& model) {
    if (fail_on_sample_error(outcomes, "input")) return;
    json data = json::array();
    int64_t tokens = 0;
    for (size_t i = 0; i < outcomes.size(); ++i) {
      const double score = *outcomes[i].result.score;
      tokens += outcomes[i].tokens;
      data.push_back({{"index", i}, {"label", "LABEL_0"}, {"probs", {activation ? sigmoid(score) : score}},
                      {"num_classes", 1}});
    }
    respond(200, json{{"id", fmt::format("classify-{}", id_ * 1000003 + ++request_count_)},
                      {"object", "list"},
                      {"created", static_cast<int64_t>(std::time(nullptr))},
                      {"model", model},
                      {"data", std::move(data)},
                      {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}, {"completion_tokens", 0},
                                 {"prompt_tokens_details", nullptr}}}});
  }

  // SGLang's shape, which verl's reward loop reads as output["data"][-1]["embedding"][-1].
  void finish_embeddings(const std::vector<SampleOutcome>& outcomes, const std::string& model) {
    if (fail_on_sample_error(outcomes, "input")) return;
    json data = json::array();
    int64_t tokens = 0;
    for (size_t i = 0; i < outcomes.size(); ++i) {
      tokens += outcomes[i].tokens;
      data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", {*outcomes[i].result.score}}});
    }
    respond(200, json{{"object", "list"}, {"model", model}, {"data", std::move(data)},
                      {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
  }

  void respond_error(const ServeError& error) {
    context_.metrics.count_error(error.kind());
    const int status = http_status(error.kind());
    // (After a malformed or unfinished request on_read_error has already turned keep-alive off: the stream
    // position is unknown.)
    respond(status, error_body(error.kind(), error.what()));
  }

  void respond(int status, const json& body) { respond_text(status, body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json"); }

  void respond_text(int status, std::string body, const char* content_type) {
    if (!route_.empty() && state_ == State::kProcessing)
      context_.metrics.observe_latency(
          route_, std::chrono::duration<double>(std::chrono::steady_clock::now() - received_).count());
    response_ = {};
    response_.version(11);
    response_.result(static_cast<http::status>(status));
    response_.set(http::field::server, "reward-serve");
    response_.set(http::field::content_type, content_type);
    if (status == 503) response_.set(http::field::retry_after, std::to_string(context_.config.retry_after_s));
    if (status == 401) response_.set(http::field::www_authenticate, "Bearer");
    if (status == 405 && !allow_.empty()) response_.set(http::field::allow, allow_);
    allow_.clear();
    response_.keep_alive(keep_alive_ && !context_.stopping.load());
    response_.body() = std::move(body);
    response_.prepare_payload();
    state_ = State::kWriting;
    arm_timer(context_.config.write_timeout_ms);
    http::async_write(socket_, response_, [self = self()](const boost::system::error_code& ec, size_t) {
      self->disarm_timer();
      if (ec) return self->close();
      if (!self->response_.keep_alive()) return self->linger_close();
      self->read_header();
    });
  }

  // Half-close, then discard what the client still sends for a moment, so it reads our response instead of a
  // reset (closing with unread input would send RST).
  uint64_t request_count_ = 0;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  bool keep_alive_ = true;
  std::string route_;
  std::string allow_;
  std::chrono::steady_clock::time_point received_;
};

}  // namespace

void start_http_session(ServerContext& context, tcp::socket socket) {
  std::make_shared<HttpSession>(context, std::move(socket))->start();
}

}  // namespace vlreward
