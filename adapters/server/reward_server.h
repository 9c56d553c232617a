#pragma once
// reward-serve: any RewardBackend behind HTTP/1.1 JSON (POST /v1/score, /get_reward, /classify; GET /healthz,
// /metrics) and the length-prefixed Protobuf protocol of reward_service.proto, sharing one dynamic batcher.
// See adapters/server/README.md for the routes, the limits and the chat-template rule.
#include <cstdint>
#include <memory>

#include "adapters/server/metrics.h"
#include "adapters/server/config.h"
#include "plugin/reward.h"

namespace vlreward {

struct ServerContext;

class RewardServer {
 public:
  // The backend must outlive the server; it is only ever called from the batcher's one worker thread.
  RewardServer(ServerConfig config, RewardBackend& backend);
  ~RewardServer();  // stop() and wait()
  RewardServer(const RewardServer&) = delete;
  RewardServer& operator=(const RewardServer&) = delete;

  // Binds the listeners (port 0: any free port) and starts the I/O threads. Throws InputError when a port
  // cannot be bound or the image root is not a directory.
  void start();
  uint16_t http_port() const;    // the bound port (0 when HTTP is off)
  uint16_t binary_port() const;  // the bound port (0 when the binary protocol is off)

  // Stops on SIGTERM / SIGINT (call before start()'s threads are needed; main uses it).
  void stop_on_signals();

  // Graceful shutdown, from any thread: stop accepting, close idle connections, finish every request already
  // received (its response is sent, then the connection closes). Returns at once; wait() blocks until done.
  void stop();
  void wait();

  const ServerMetrics& metrics() const;

 private:
  std::unique_ptr<ServerContext> context_;
};

// Equal-length-independent comparison whose time depends only on expected.size().
bool constant_time_equal(const std::string& expected, const std::string& given);

}  // namespace vlreward
