#include "plugin/wire/base64.h"

#include <array>
#include <cstdint>

namespace vlreward {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> make_table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr auto kTable = make_table();

}  // namespace

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int values[4];
    int padding = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=') {
        // Padding only in the last quantum's final one or two places.
        if (i + 4 != text.size() || j < 2) return std::nullopt;
        ++padding;
        values[j] = 0;
        continue;
      }
      if (padding > 0) return std::nullopt;
      values[j] = kTable[static_cast<unsigned char>(c)];
      if (values[j] < 0) return std::nullopt;
    }
    const uint32_t n = (values[0] << 18) | (values[1] << 12) | (values[2] << 6) | values[3];
    out.push_back(static_cast<char>((n >> 16) & 0xFF));
    if (padding < 2) out.push_back(static_cast<char>((n >> 8) & 0xFF));
    if (padding < 1) out.push_back(static_cast<char>(n & 0xFF));
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t left = bytes.size() - i;
    uint32_t n = static_cast<uint8_t>(bytes[i]) << 16;
    if (left > 1) n |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (left > 2) n |= static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(left > 1 ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back(left > 2 ? kAlphabet[n & 63] : '=');
  }
  return out;
}

std::optional<DataUri> parse_data_uri(std::string_view text) {
  constexpr std::string_view kPrefix = "data:";
  if (text.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const size_t comma = text.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  std::string_view meta = text.substr(kPrefix.size(), comma - kPrefix.size());
  constexpr std::string_view kBase64 = ";base64";
  if (meta.size() < kBase64.size() || meta.substr(meta.size() - kBase64.size()) != kBase64) return std::nullopt;
  auto bytes = base64_decode(text.substr(comma + 1));
  if (!bytes) return std::nullopt;
  return DataUri{std::string(meta.substr(0, meta.size() - kBase64.size())), std::move(*bytes)};
}

}  // namespace vlreward
