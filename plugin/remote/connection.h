#pragma once
// The remote backend's connections: non-blocking sockets whose reads and writes give up at a deadline, and how to
// tell a connection the server closed while it sat in a pool.
#include <poll.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "plugin/remote/replica_address.h"

namespace vlreward::remote {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

int64_t millis_left(Clock::time_point deadline);

// Asio's synchronous operations wait without a time limit (even with SO_RCVTIMEO they poll again), so the socket
// is non-blocking and the waiting is done here with poll(). False, with ec set (timed_out at the deadline), when
// the descriptor did not become ready for `events`.
bool wait_ready(int fd, short events, Clock::time_point deadline, error_code& ec);

// A SyncReadStream / SyncWriteStream over a non-blocking socket whose every operation ends by `deadline`.
class DeadlineStream {
 public:
  DeadlineStream(tcp::socket& socket, Clock::time_point deadline) : socket_(socket), deadline_(deadline) {}

  template <typename MutableBuffers>
  size_t read_some(const MutableBuffers& buffers, error_code& ec) {
    for (;;) {
      const size_t n = socket_.read_some(buffers, ec);
      if (ec != asio::error::would_block && ec != asio::error::try_again) {
        received_any_ = received_any_ || n > 0;
        return n;
      }
      if (!wait_ready(socket_.native_handle(), POLLIN, deadline_, ec)) return 0;
    }
  }
  template <typename MutableBuffers>
  size_t read_some(const MutableBuffers& buffers) {
    error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <typename ConstBuffers>
  size_t write_some(const ConstBuffers& buffers, error_code& ec) {
    for (;;) {
      const size_t n = socket_.write_some(buffers, ec);
      if (ec != asio::error::would_block && ec != asio::error::try_again) return n;
      if (!wait_ready(socket_.native_handle(), POLLOUT, deadline_, ec)) return 0;
    }
  }
  template <typename ConstBuffers>
  size_t write_some(const ConstBuffers& buffers) {
    error_code ec;
    const size_t n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  bool received_any() const { return received_any_; }

 private:
  tcp::socket& socket_;
  Clock::time_point deadline_;
  bool received_any_ = false;
};

// A kept-alive connection that the server closed while it sat in the pool shows up as EOF / reset before any byte
// of the answer: the request never reached a live connection, so it is resent once on a fresh one, uncounted.
bool is_stale_connection_error(const error_code& ec);

// "no complete answer within timeout_ms=..." for a timeout, else "connection failed: ...".
std::string describe_io_error(const error_code& ec, int64_t timeout_ms);

struct Connection {
  explicit Connection(asio::io_context& io) : socket(io) {}
  tcp::socket socket;
  beast::flat_buffer buffer;
  bool reused = false;
};

// A pooled connection is usable when nothing is readable on it: readable means the server closed it (EOF) or sent
// something unasked.
bool idle_connection_usable(Connection& c);

// Connects to the first of the address's resolved endpoints that accepts within connect_timeout_ms (and before
// `deadline`), non-blocking with TCP_NODELAY. Throws AttemptFailure (retryable, replica unwell) naming why not.
std::unique_ptr<Connection> open_connection(asio::io_context& io, const ReplicaAddress& address,
                                            Clock::time_point deadline, int64_t connect_timeout_ms);

}  // namespace vlreward::remote
