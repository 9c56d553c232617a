#pragma once
// Standard base64 (RFC 4648, with padding) and data URIs: how images travel inline in JSON, encoded by the remote
// backend and decoded by the server and the record readers.
#include <optional>
#include <string>
#include <string_view>

namespace vlreward {

// Strict decode: only the standard alphabet, correct padding; whitespace is not allowed. nullopt if invalid.
std::optional<std::string> base64_decode(std::string_view text);
std::string base64_encode(std::string_view bytes);

// "data:image/png;base64,...." → (mime, bytes); nullopt if `text` is not a base64 data URI.
struct DataUri {
  std::string mime_type;
  std::string bytes;
};
std::optional<DataUri> parse_data_uri(std::string_view text);

}  // namespace vlreward
