#include "plugin/remote/connection.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <boost/beast/http/error.hpp>
#include <fmt/format.h>

#include "plugin/remote/attempt_failure.h"

namespace vlreward::remote {

namespace http = beast::http;

int64_t millis_left(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
}

bool wait_ready(int fd, short events, Clock::time_point deadline, error_code& ec) {
  for (;;) {
    const int64_t left = millis_left(deadline);
    if (left <= 0) {
      ec = asio::error::timed_out;
      return false;
    }
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) {
      ec = error_code(errno, boost::system::system_category());
      return false;
    }
  }
}

bool is_stale_connection_error(const error_code& ec) {
  return ec == asio::error::eof || ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}

std::string describe_io_error(const error_code& ec, int64_t timeout_ms) {
  if (ec == asio::error::timed_out) return fmt::format("no complete answer within timeout_ms={}", timeout_ms);
  return "connection failed: " + ec.message();
}

bool idle_connection_usable(Connection& c) {
  pollfd p{c.socket.native_handle(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

std::unique_ptr<Connection> open_connection(asio::io_context& io, const ReplicaAddress& address,
                                            Clock::time_point deadline, int64_t connect_timeout_ms) {
  const auto connect_deadline = std::min(deadline, Clock::now() + std::chrono::milliseconds(connect_timeout_ms));
  tcp::resolver resolver(io);
  error_code ec;
  const auto endpoints = resolver.resolve(address.host, address.port, ec);
  if (ec) throw AttemptFailure(true, fmt::format("cannot resolve \"{}\": {}", address.host, ec.message()), -1, true);
  std::string why = "no address";
  for (const auto& entry : endpoints) {
    const tcp::endpoint endpoint = entry.endpoint();
    auto c = std::make_unique<Connection>(io);
    c->socket.open(endpoint.protocol(), ec);
    if (!ec) c->socket.non_blocking(true, ec);
    if (ec) {
      why = ec.message();
      continue;
    }
    const int fd = c->socket.native_handle();
    int err = 0;
    if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0) {
      err = errno;
      if (err == EINPROGRESS || err == EINTR) {
        if (!wait_ready(fd, POLLOUT, connect_deadline, ec)) {
          why = ec == asio::error::timed_out ? fmt::format("no connection within connect_timeout_ms={}",
                                                           connect_timeout_ms)
                                             : ec.message();
          continue;
        }
        socklen_t len = sizeof(err);
        if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      }
    }
    if (err != 0) {
      why = std::strerror(err);
      continue;
    }
    c->socket.set_option(tcp::no_delay(true), ec);
    return c;
  }
  throw AttemptFailure(true, "cannot connect: " + why, -1, true);
}

}  // namespace vlreward::remote
