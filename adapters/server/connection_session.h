#pragma once
// What every connection (HTTP or binary protocol) shares: registration with the server for shutdown, a read
// timer that cancels the socket, a lingering close that drains the client's unread bytes, and the state that
// decides whether shutdown may close it now. `Derived` supplies read_header(), the start of its request loop.
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>

#include "adapters/server/context.h"

namespace vlreward {

template <typename Derived>
class ConnectionSession : public Session {
 public:
  ConnectionSession(ServerContext& context, tcp::socket socket)
      : context_(context),
        socket_(std::move(socket)),
        trusted_(context_.trusted(socket_)),
        timer_(socket_.get_executor()) {}

  ~ConnectionSession() override {
    context_.remove_session(id_);
    context_.metrics.connection_closed();
    context_.release_connection();
  }

  void start() {
    id_ = context_.add_session(shared_from_this());
    context_.metrics.connection_opened();
    derived().read_header();
  }

  void on_shutdown() override {
    asio::post(socket_.get_executor(), [self = self()] {
      if (self->state_ == State::kReading) self->close();
    });
  }

 protected:
  enum class State { kReading, kProcessing, kWriting, kClosed };
  static constexpr auto kLingerTime = std::chrono::milliseconds(500);
  static constexpr size_t kLingerBytes = 4u << 20;

  Derived& derived() { return static_cast<Derived&>(*this); }
  std::shared_ptr<Derived> self() { return std::static_pointer_cast<Derived>(shared_from_this()); }

  // The timer cancels the socket's pending operation; the generation guards against a stale expiry.
  void arm_timer(int64_t ms) {
    const uint64_t generation = ++timer_generation_;
    timed_out_ = false;
    timer_.expires_after(std::chrono::milliseconds(ms));
    timer_.async_wait([self = self(), generation](const boost::system::error_code& ec) {
      if (ec || generation != self->timer_generation_) return;
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->socket_.cancel(ignored);
    });
  }
  void disarm_timer() {
    ++timer_generation_;
    timer_.cancel();
  }

  // Half-close, then read and drop what the client still sends (bounded in time and bytes), so an error
  // response is not lost to a reset.
  void linger_close() {
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    state_ = State::kClosed;
    arm_timer(std::chrono::duration_cast<std::chrono::milliseconds>(kLingerTime).count());
    drain();
  }
  void drain() {
    socket_.async_read_some(asio::buffer(scratch_), [self = self()](const boost::system::error_code& ec, size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ > kLingerBytes) return self->close();
      self->drain();
    });
  }

  void close() {
    disarm_timer();
    state_ = State::kClosed;
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  ServerContext& context_;
  tcp::socket socket_;
  const bool trusted_;  // the client's address lies in allow_networks
  asio::steady_timer timer_;
  uint64_t timer_generation_ = 0;
  bool timed_out_ = false;
  uint64_t id_ = 0;
  State state_ = State::kReading;

 private:
  std::array<char, 16384> scratch_{};
  size_t drained_ = 0;
};

}  // namespace vlreward
