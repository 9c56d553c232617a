#include "adapters/server/frame_codec.h"

#include <cstdint>
#include <fmt/format.h>

#include "adapters/server/error.h"

namespace vlreward {

void check_frame_length(uint64_t length, uint64_t max_frame_bytes) {
  if (length > max_frame_bytes)
    throw ServeError(ServeErrorKind::kTooLarge,
                     fmt::format("frame: declared length {} bytes exceeds the limit of {} bytes", length, max_frame_bytes));
}

std::optional<std::string> FrameReader::next() {
  if (buffer_.size() < kFrameHeaderBytes) return std::nullopt;
  const uint32_t length = decode_frame_length(reinterpret_cast<const unsigned char*>(buffer_.data()));
  check_frame_length(length, max_frame_bytes_);
  if (buffer_.size() - kFrameHeaderBytes < length) return std::nullopt;
  std::string payload = buffer_.substr(kFrameHeaderBytes, length);
  buffer_.erase(0, kFrameHeaderBytes + length);
  return payload;
}

}  // namespace vlreward
