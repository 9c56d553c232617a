// One binary-protocol connection: frames in, one response frame per request frame, in order.
#include <algorithm>
#include <array>
#include <cstdint>

#include <fmt/format.h>

#include "adapters/hf/byte_level.h"
#include "adapters/server/connection_session.h"
#include "adapters/server/frame_codec.h"
#include "reward_service.pb.h"

namespace vlreward {
namespace {


class BinarySession : public ConnectionSession<BinarySession> {
 public:
  using ConnectionSession::ConnectionSession;

 private:
  friend class ConnectionSession<BinarySession>;

  void read_header() {
    if (context_.stopping.load()) return close();
    state_ = State::kReading;
    arm_timer(context_.config.read_timeout_ms);  // covers the header and the payload together
    asio::async_read(socket_, asio::buffer(header_),
                     [self = self()](const boost::system::error_code& ec, size_t n) { self->on_header(ec, n); });
  }

  void on_header(const boost::system::error_code& ec, size_t n) {
    if (ec) return on_read_error(n > 0);
    const uint32_t length = decode_frame_length(header_.data());
    try {
      check_frame_length(length, context_.config.limits.max_frame_bytes);
    } catch (const ServeError& e) {
      // The rest of the stream cannot be trusted: answer, then close.
      return send_error(0, e, /*close_after=*/true);
    }
    expected_ = length;
    payload_.clear();
    read_payload();
  }

  // Reads the payload as it arrives: the buffer grows with the bytes actually received (plus at most one read
  // chunk), so a header announcing max_frame_bytes costs nothing until those bytes are sent.
  void read_payload() {
    const size_t have = payload_.size();
    if (have == expected_) return on_payload({});
    const size_t want = std::min<size_t>(kReadChunkBytes, expected_ - have);
    payload_.resize(have + want);
    socket_.async_read_some(asio::buffer(payload_.data() + have, want),
                            [self = self(), have](const boost::system::error_code& ec, size_t n) {
                              self->payload_.resize(have + n);
                              if (ec) return self->on_payload(ec);
                              self->read_payload();
                            });
  }

  void on_payload(const boost::system::error_code& ec) {
    if (ec) return on_read_error(true);
    disarm_timer();
    state_ = State::kProcessing;
    received_ = std::chrono::steady_clock::now();
    context_.metrics.count_request("binary");
    try {
      handle_request();
    } catch (const std::exception& e) {
      // Decoding only throws ServeError; anything else is the server's own failure, answered, never propagated.
      send_error(0, ServeError(ServeErrorKind::kInternal, fmt::format("request: {}", e.what())), false);
    }
  }

  void handle_request() {
    serve::ScoreRequest request;
    const bool parsed = request.ParseFromString(payload_);
    payload_.clear();
    payload_.shrink_to_fit();
    if (!parsed)
      return send_error(0, ServeError(ServeErrorKind::kBadRequest, "frame: payload is not a valid ScoreRequest protobuf"),
                        false);
    const uint64_t request_id = request.request_id();
    if (!context_.authorized(trusted_, request.auth_token()))
      return send_error(request_id,
                        ServeError(ServeErrorKind::kUnauthorized,
                                   context_.config.auth_token.empty() ? "the client's address is not in allow_networks"
                                   : request.auth_token().empty()     ? "missing auth_token"
                                                                      : "invalid auth_token"),
                        false);
    std::vector<DecodedSample> samples;
    try {
      samples = context_.decoder.decode_proto(request);
    } catch (const ServeError& e) {
      return send_error(request_id, e, false);
    }
    std::vector<std::string> ids;
    for (const auto& s : samples) ids.push_back(s.request.id);
    dispatch(context_, socket_.get_executor(), std::move(samples), request.deadline_ms(),
             [self = self(), request_id, ids = std::move(ids)](DispatchResult result) {
               if (result.error) return self->send_error(request_id, *result.error, false);
               if (auto error = request_level_error(result.outcomes)) return self->send_error(request_id, *error, false);
               self->send_results(request_id, ids, result.outcomes);
             });
  }

  void on_read_error(bool partial) {
    disarm_timer();
    if (timed_out_ && partial)
      return send_error(0,
                        ServeError(ServeErrorKind::kTimeout,
                                   fmt::format("frame not received within the read timeout of {} ms",
                                               context_.config.read_timeout_ms)),
                        true);
    close();  // idle timeout, client closed (possibly mid-frame: nothing to answer), shutdown
  }

  void send_results(uint64_t request_id, const std::vector<std::string>& ids, const std::vector<SampleOutcome>& outcomes) {
    serve::ScoreResponse response;
    response.set_request_id(request_id);
    int64_t failed = 0;
    for (size_t i = 0; i < outcomes.size(); ++i) {
      const auto& o = outcomes[i];
      auto* r = response.add_results();
      r->set_id(ids[i]);
      if (o.result.ok()) {
        r->set_score(*o.result.score);
        for (const auto& [name, value] : o.result.components) (*r->mutable_components())[utf8_decode_lossy(name)] = value;
      } else {
        r->set_error(utf8_decode_lossy(o.result.error));  // proto3 strings must be UTF-8
        ++failed;
      }
      auto* t = r->mutable_timing();
      t->set_tokens(static_cast<uint64_t>(o.tokens));
      t->set_queue_time_ns(static_cast<uint64_t>(o.queue_ns));
      t->set_compute_time_ns(static_cast<uint64_t>(o.compute_ns));
      t->set_batch_size(static_cast<uint32_t>(o.batch_size));
    }
    context_.metrics.count_samples(static_cast<int64_t>(outcomes.size()) - failed, failed);
    send(response, false);
  }

  void send_error(uint64_t request_id, const ServeError& error, bool close_after) {
    context_.metrics.count_error(error.kind());
    serve::ScoreResponse response;
    response.set_request_id(request_id);
    auto* e = response.mutable_error();
    e->set_code(static_cast<serve::ErrorCode>(proto_error_code(error.kind())));
    e->set_message(utf8_decode_lossy(error.what()));
    if (error.kind() == ServeErrorKind::kOverloaded)
      e->set_retry_after_ms(static_cast<uint32_t>(context_.config.retry_after_s * 1000));
    send(response, close_after);
  }

  void send(serve::ScoreResponse& response, bool close_after) {
    if (state_ == State::kProcessing) {
      const auto elapsed = std::chrono::steady_clock::now() - received_;
      response.set_total_time_ns(
          static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()));
      context_.metrics.observe_latency("binary", std::chrono::duration<double>(elapsed).count());
    }
    out_ = encode_frame(response.SerializeAsString());
    state_ = State::kWriting;
    arm_timer(context_.config.write_timeout_ms);
    asio::async_write(socket_, asio::buffer(out_),
                      [self = self(), close_after](const boost::system::error_code& ec, size_t) {
                        self->disarm_timer();
                        if (ec) return self->close();
                        if (close_after || self->context_.stopping.load()) return self->linger_close();
                        self->read_header();
                      });
  }

  static constexpr size_t kReadChunkBytes = 64 * 1024;

  std::array<unsigned char, kFrameHeaderBytes> header_{};
  size_t expected_ = 0;  // the payload length the header announced
  std::string payload_;
  std::string out_;
  std::chrono::steady_clock::time_point received_;
};

}  // namespace

void start_binary_session(ServerContext& context, tcp::socket socket) {
  std::make_shared<BinarySession>(context, std::move(socket))->start();
}

}  // namespace vlreward
