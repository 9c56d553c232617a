#pragma once
// One failed attempt of the remote backend on one replica: why, and whether trying again can help.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace vlreward::remote {

class AttemptFailure : public std::runtime_error {
 public:
  AttemptFailure(bool retryable, const std::string& message, int64_t retry_after_ms = -1, bool replica_unwell = false)
      : std::runtime_error(message), retryable_(retryable), retry_after_ms_(retry_after_ms), replica_unwell_(replica_unwell) {}
  bool retryable() const { return retryable_; }
  int64_t retry_after_ms() const { return retry_after_ms_; }  // -1: none given
  // Unreachable, overloaded or draining: other requests avoid the replica for a while (its Retry-After, else
  // replica_cooldown_ms).
  bool replica_unwell() const { return replica_unwell_; }

 private:
  bool retryable_;
  int64_t retry_after_ms_;
  bool replica_unwell_;
};

}  // namespace vlreward::remote
