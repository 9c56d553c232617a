#pragma once
// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of TensorFlow record framing and of the
// checkpoint manifests. Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vlreward {

// Continues `crc` (0 for a fresh checksum) over `size` bytes; crc32c(crc32c(0, a), b) == crc32c(0, a ++ b).
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size);
inline uint32_t crc32c(std::string_view bytes) { return crc32c_extend(0, bytes.data(), bytes.size()); }

// The checksum of a whole file, read through a memory map (no copy, however large the file): how checkpoints and
// finished stages notice that their training data changed. Throws InputError naming the path when it cannot be read.
uint32_t crc32c_of_file(const std::string& path);

// TensorFlow's masked CRC (tensorflow/core/lib/hash/crc32c.h Mask): rotate right by 15, add 0xa282ead8.
inline uint32_t masked_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

}  // namespace vlreward
