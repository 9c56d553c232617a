#include "adapters/server/frame_codec.h"

#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "adapters/server/serve_error.h"

namespace vlreward {

std::string encode_frame(std::string_view payload) {
  if (payload.size() > std::numeric_limits<uint32_t>::max())
    throw std::length_error(fmt::format("frame payload of {} bytes does not fit a u32 length", payload.size()));
  const auto n = static_cast<uint32_t>(payload.size());
  std::string frame;
  frame.reserve(kFrameHeaderBytes + payload.size());
  frame.push_back(static_cast<char>((n >> 24) & 0xff));
  frame.push_back(static_cast<char>((n >> 16) & 0xff));
  frame.push_back(static_cast<char>((n >> 8) & 0xff));
  frame.push_back(static_cast<char>(n & 0xff));
  frame.append(payload.data(), payload.size());
  return frame;
}

uint32_t decode_frame_length(const unsigned char* header) {
  return (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) | uint32_t{header[3]};
}

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
