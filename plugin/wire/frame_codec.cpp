#include "plugin/wire/frame_codec.h"

#include <cstdint>
#include <limits>
#include <stdexcept>

namespace vlreward {

std::string encode_frame(std::string_view payload) {
  if (payload.size() > std::numeric_limits<uint32_t>::max())
    throw std::length_error("frame payload of " + std::to_string(payload.size()) + " bytes does not fit a u32 length");
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

}  // namespace vlreward
