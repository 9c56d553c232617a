#pragma once
// GPT-2 byte-level alphabet (bytes_to_unicode) and UTF-8 helpers shared by the tokenizer's encoder and decoder.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vlreward {
namespace byte_level {

// Code point that byte b is written as in byte-level tokens: printable '!'..'~', U+00A1..U+00AC and
// U+00AE..U+00FF stand for themselves, the other 68 bytes map to U+0100.. in byte order.
const std::array<uint32_t, 256>& byte_to_code_point();

// The byte a code point stands for, or -1 if it is not part of the byte-level alphabet.
int code_point_to_byte(uint32_t code_point);

// UTF-8 text of the byte-level symbols for `bytes` (what the ByteLevel pre-tokenizer produces).
std::string bytes_to_symbols(std::string_view bytes);

// Appends the bytes a byte-level token stands for. Returns false (appending nothing) when the token holds a
// character outside the alphabet; the HF ByteLevel decoder then keeps the token's own UTF-8 bytes.
bool symbols_to_bytes(std::string_view token, std::string& out);

}  // namespace byte_level

// Appends the UTF-8 encoding of a code point (which must be <= 0x10FFFF).
void append_utf8(uint32_t code_point, std::string& out);

// Returns bytes.size() when `bytes` is well-formed UTF-8, else the offset of the first ill-formed sequence.
size_t find_invalid_utf8(std::string_view bytes);

// Decodes bytes as UTF-8, replacing each maximal ill-formed subpart with U+FFFD: the same output as Python's
// bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy.
std::string utf8_decode_lossy(std::string_view bytes);

}  // namespace vlreward
