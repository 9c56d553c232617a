#pragma once
// The server's side of reward-serve's length-prefixed frames (the framing itself, shared with the remote backend,
// is plugin/wire/frame_codec.h). The length is checked against the limit before any payload buffer is
// allocated, so a lying prefix costs nothing.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "plugin/wire/frame_codec.h"

namespace vlreward {

// Throws ServeError(kTooLarge) naming both numbers when `length` > max_frame_bytes.
void check_frame_length(uint64_t length, uint64_t max_frame_bytes);

// Incremental decoding for stream clients: feed received bytes, take complete frames out.
class FrameReader {
 public:
  explicit FrameReader(uint64_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}
  void append(std::string_view bytes) { buffer_.append(bytes.data(), bytes.size()); }
  // The next complete payload, or nullopt when more bytes are needed. Throws ServeError(kTooLarge) as soon as
  // a header declares more than max_frame_bytes.
  std::optional<std::string> next();
  size_t buffered() const { return buffer_.size(); }

 private:
  uint64_t max_frame_bytes_;
  std::string buffer_;
};

}  // namespace vlreward
