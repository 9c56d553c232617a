#include "adapters/hf/byte_level.h"

#include <cstdint>

namespace vlreward {
namespace {

struct ByteTables {
  std::array<uint32_t, 256> to_code_point{};
  std::array<int16_t, 324> from_code_point{};  // every mapped code point is < 0x100 + 68

  ByteTables() {
    from_code_point.fill(-1);
    uint32_t next_extra = 0x100;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_code_point[b] = printable ? b : next_extra++;
      from_code_point[to_code_point[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 with *bad_length set to the length of the
// maximal ill-formed subpart (>= 1) to replace (Unicode Table 3-7).
size_t utf8_sequence_length(std::string_view s, size_t i, size_t* bad_length) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t lead = byte(i);
  if (lead < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    *bad_length = 1;
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    const size_t pos = i + k;
    const uint8_t first_lo = k == 1 ? lo : 0x80, first_hi = k == 1 ? hi : 0xBF;
    if (pos >= s.size() || byte(pos) < first_lo || byte(pos) > first_hi) {
      *bad_length = k;
      return 0;
    }
  }
  return need;
}

}  // namespace

namespace byte_level {

const std::array<uint32_t, 256>& byte_to_code_point() { return tables().to_code_point; }

int code_point_to_byte(uint32_t code_point) {
  const auto& t = tables().from_code_point;
  return code_point < t.size() ? t[code_point] : -1;
}

std::string bytes_to_symbols(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(tables().to_code_point[b], out);
  return out;
}

bool symbols_to_bytes(std::string_view token, std::string& out) {
  const size_t start = out.size();
  size_t i = 0;
  while (i < token.size()) {
    const auto c0 = static_cast<uint8_t>(token[i]);
    uint32_t cp;
    if (c0 < 0x80) {
      cp = c0;
      i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < token.size()) {
      // Every alphabet character above ASCII is < U+0800: two bytes.
      cp = ((c0 & 0x1Fu) << 6) | (static_cast<uint8_t>(token[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      out.resize(start);
      return false;
    }
    const int b = code_point_to_byte(cp);
    if (b < 0) {
      out.resize(start);
      return false;
    }
    out.push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace byte_level

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t find_invalid_utf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    if (static_cast<uint8_t>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t bad = 0;
    const size_t n = utf8_sequence_length(bytes, i, &bad);
    if (n == 0) return i;
    i += n;
  }
  return bytes.size();
}

std::string utf8_decode_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t bad = 0;
    const size_t n = utf8_sequence_length(bytes, i, &bad);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

}  // namespace vlreward
