#include "adapters/server/reward_server.h"

#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/server/frame_codec.h"
#include "adapters/server/context.h"
#include "reward_service.pb.h"

namespace vlreward {

bool constant_time_equal(const std::string& expected, const std::string& given) {
  unsigned char diff = expected.size() == given.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(static_cast<unsigned char>(expected[i]) ^ g);
  }
  return diff == 0;
}

uint64_t ServerContext::add_session(const std::shared_ptr<Session>& session) {
  std::lock_guard<std::mutex> lock(sessions_mutex);
  const uint64_t id = next_session_id++;
  sessions[id] = session;
  return id;
}

void ServerContext::remove_session(uint64_t id) {
  std::lock_guard<std::mutex> lock(sessions_mutex);
  sessions.erase(id);
}

std::optional<ServeError> request_level_error(const std::vector<SampleOutcome>& outcomes) {
  for (const auto& o : outcomes)
    if (!o.result.ok() && (o.error_kind == ServeErrorKind::kInternal || o.error_kind == ServeErrorKind::kDeadline))
      return ServeError(o.error_kind, o.result.error);
  return std::nullopt;
}

void dispatch(ServerContext& context, const asio::any_io_executor& executor, std::vector<DecodedSample> samples,
              int64_t deadline_ms, std::function<void(DispatchResult)> done) {
  const int64_t cap = context.config.request_deadline_ms;
  const int64_t ms = deadline_ms > 0 && deadline_ms < cap ? deadline_ms : cap;
  const auto deadline = Batcher::Clock::now() + std::chrono::milliseconds(ms);
  auto timer = std::make_shared<asio::steady_timer>(executor);
  timer->expires_at(deadline);
  auto shared_done = std::make_shared<std::function<void(DispatchResult)>>(std::move(done));
  std::shared_ptr<BatchJob> job;
  const auto status = context.batcher.submit(
      std::move(samples), deadline,
      [executor, timer, shared_done](std::vector<SampleOutcome> outcomes) {
        asio::post(executor, [timer, shared_done, outcomes = std::move(outcomes)]() mutable {
          timer->cancel();
          (*shared_done)(DispatchResult{std::nullopt, std::move(outcomes)});
        });
      },
      &job);
  if (status != SubmitStatus::kAccepted) {
    ServeError error = status == SubmitStatus::kOverloaded
                           ? ServeError(ServeErrorKind::kOverloaded,
                                        fmt::format("server overloaded: the queue holds {} samples at most; retry later",
                                                    context.config.batching.max_queue))
                           : ServeError(ServeErrorKind::kShuttingDown, "server is shutting down");
    asio::post(executor, [shared_done, error] { (*shared_done)(DispatchResult{error, {}}); });
    return;
  }
  // The pending timer also keeps the I/O threads alive while the batcher works on this request.
  timer->async_wait([job, timer, shared_done, ms](const boost::system::error_code& ec) {
    if (ec || !job->claim()) return;
    (*shared_done)(DispatchResult{
        ServeError(ServeErrorKind::kDeadline, fmt::format("request not scored within its deadline of {} ms", ms)), {}});
  });
}

namespace {

// Backoff between failed accepts: from the first delay, doubling up to the most.
constexpr int64_t kFirstAcceptRetryMs = 10;
constexpr int64_t kMaxAcceptRetryMs = 100;

void accept_loop(ServerContext& context, Listener& listener) {
  listener.acceptor->async_accept(asio::make_strand(context.ioc), [&context, &listener](
                                                                      const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !listener.acceptor->is_open()) return;
    if (ec) {
      // Out of file descriptors (EMFILE / ENFILE), out of memory, ...: the pending connection stays in the
      // backlog, so accepting again at once fails again at once. Wait, longer each time, for sessions to close.
      context.metrics.accept_failed();
      listener.retry_ms = listener.retry_ms == 0 ? kFirstAcceptRetryMs : std::min(listener.retry_ms * 2, kMaxAcceptRetryMs);
      if (listener.retry_ms == kFirstAcceptRetryMs)
        std::fprintf(stderr, "reward-serve: cannot accept %s connections (%s); retrying with backoff\n",
                     listener.binary ? "binary-protocol" : "HTTP", ec.message().c_str());
      listener.retry_timer->expires_after(std::chrono::milliseconds(listener.retry_ms));
      listener.retry_timer->async_wait([&context, &listener](const boost::system::error_code& wait_ec) {
        if (wait_ec || !listener.acceptor->is_open()) return;
        accept_loop(context, listener);
      });
      return;
    }
    listener.retry_ms = 0;
    if (!context.stopping.load()) {
      if (!context.admit_connection())
        refuse_connection(context, std::move(socket), listener.binary);
      else if (listener.binary)
        start_binary_session(context, std::move(socket));
      else
        start_http_session(context, std::move(socket));
    }
    accept_loop(context, listener);
  });
}

// A connection over the limit: one short answer, then close. Not a session (it holds no slot); it lives for
// at most kRefusalLinger after its answer, draining what the client already sent so the answer is not lost to
// a reset.
class RefusedConnection : public std::enable_shared_from_this<RefusedConnection> {
 public:
  RefusedConnection(tcp::socket socket, std::string answer)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), answer_(std::move(answer)) {}

  void start() {
    timer_.expires_after(kRefusalLinger);
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec) self->close();
    });
    asio::async_write(socket_, asio::buffer(answer_),
                      [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                        if (ec) return self->close();
                        boost::system::error_code ignored;
                        self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
                        self->drain();
                      });
  }

 private:
  static constexpr auto kRefusalLinger = std::chrono::milliseconds(200);
  static constexpr size_t kDrainBytes = 64 * 1024;

  void drain() {
    socket_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ > kDrainBytes) return self->close();
      self->drain();
    });
  }
  void close() {
    timer_.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  std::string answer_;
  std::array<char, 4096> scratch_{};
  size_t drained_ = 0;
};

// Sessions answer every failure of a request themselves; should a handler still throw, the one connection it
// served is lost (its handler's references are dropped), but the I/O thread keeps serving everyone else.
void run_io_thread(ServerContext& context) {
  for (;;) {
    try {
      context.ioc.run();
      return;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "reward-serve: a connection handler failed: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "reward-serve: a connection handler failed\n");
    }
  }
}

}  // namespace

void refuse_connection(ServerContext& context, tcp::socket socket, bool binary) {
  context.metrics.connection_refused();
  const std::string message =
      fmt::format("server overloaded: {} connections are open, the most it accepts (limits.max_connections); retry later",
                  context.config.limits.max_connections);
  std::string answer;
  if (binary) {
    serve::ScoreResponse response;
    auto* e = response.mutable_error();
    e->set_code(serve::OVERLOADED);
    e->set_message(message);
    e->set_retry_after_ms(static_cast<uint32_t>(context.config.retry_after_s * 1000));
    answer = encode_frame(response.SerializeAsString());
  } else {
    const std::string body =
        nlohmann::json{{"error", {{"type", metric_label(ServeErrorKind::kOverloaded)}, {"message", message}}}}.dump();
    answer = fmt::format(
        "HTTP/1.1 503 Service Unavailable\r\nServer: reward-serve\r\nContent-Type: application/json\r\n"
        "Retry-After: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        context.config.retry_after_s, body.size(), body);
  }
  std::make_shared<RefusedConnection>(std::move(socket), std::move(answer))->start();
}

namespace {

uint16_t open_acceptor(ServerContext& context, Listener& listener, int port, const char* what) {
  listener.retry_timer.emplace(context.ioc);
  auto& acceptor = listener.acceptor;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(context.config.host, ec);
  if (ec) throw InputError("host", fmt::format("\"{}\" is not an IP address", context.config.host));
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  acceptor.emplace(context.ioc);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw InputError(fmt::format("{}:{}", context.config.host, port),
                     fmt::format("cannot listen for {}: {}", what, ec.message()));
  return acceptor->local_endpoint().port();
}

}  // namespace

RewardServer::RewardServer(ServerConfig config, RewardBackend& backend) {
  validate_server_config(config);
  context_ = std::make_unique<ServerContext>(std::move(config), backend);
}

RewardServer::~RewardServer() {
  stop();
  wait();
}

void RewardServer::start() {
  auto& c = *context_;
  if (c.config.http_port >= 0) {
    open_acceptor(c, c.http, c.config.http_port, "HTTP");
    accept_loop(c, c.http);
  }
  if (c.config.binary_port >= 0) {
    open_acceptor(c, c.binary, c.config.binary_port, "the binary protocol");
    accept_loop(c, c.binary);
  }
  for (int i = 0; i < c.config.io_threads; ++i) c.threads.emplace_back([&c] { run_io_thread(c); });
}

uint16_t RewardServer::http_port() const {
  return context_->http.acceptor ? context_->http.acceptor->local_endpoint().port() : 0;
}

uint16_t RewardServer::binary_port() const {
  return context_->binary.acceptor ? context_->binary.acceptor->local_endpoint().port() : 0;
}

void RewardServer::stop_on_signals() {
  auto& c = *context_;
  c.signals.emplace(c.ioc, SIGTERM, SIGINT);
  c.signals->async_wait([this](const boost::system::error_code& ec, int) {
    if (!ec) stop();
  });
}

void RewardServer::stop() {
  auto& c = *context_;
  if (c.stopping.exchange(true)) return;
  asio::post(c.ioc, [&c] {
    boost::system::error_code ignored;
    for (Listener* listener : {&c.http, &c.binary}) {
      if (listener->acceptor) listener->acceptor->close(ignored);
      if (listener->retry_timer) listener->retry_timer->cancel();
    }
    if (c.signals) c.signals->cancel(ignored);
    std::vector<std::shared_ptr<Session>> live;
    {
      std::lock_guard<std::mutex> lock(c.sessions_mutex);
      for (auto& [id, weak] : c.sessions)
        if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    for (auto& s : live) s->on_shutdown();
  });
}

void RewardServer::wait() {
  auto& c = *context_;
  for (auto& t : c.threads)
    if (t.joinable()) t.join();
  c.threads.clear();
  c.batcher.stop();  // every received request has been answered; nothing is queued any more
}

const ServerMetrics& RewardServer::metrics() const { return context_->metrics; }

}  // namespace vlreward
