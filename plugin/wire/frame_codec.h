#pragma once
// The framing both ends of reward-serve's binary protocol share (plugin/wire/reward_service.proto): a u32
// big-endian payload length, then the payload (one serialized protobuf message). The server's limit checks and
// incremental reader live in adapters/server/frame_codec.h; the remote backend (plugin/remote/remote_backend.h) uses
// these pieces directly.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vlreward {

constexpr size_t kFrameHeaderBytes = 4;

// header + payload. Throws std::length_error when the payload does not fit a u32.
std::string encode_frame(std::string_view payload);

// The payload length in a 4-byte header.
uint32_t decode_frame_length(const unsigned char* header);

}  // namespace vlreward
