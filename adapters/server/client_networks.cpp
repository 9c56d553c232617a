#include "adapters/server/client_networks.h"

#include <fmt/format.h>

#include "plugin/error.h"

namespace vlreward {
namespace {

namespace ip = boost::asio::ip;

ip::address unmapped(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

template <typename Bytes>
bool same_prefix(const Bytes& a, const Bytes& b, int prefix) {
  for (size_t i = 0; prefix > 0; ++i, prefix -= 8) {
    const int bits = prefix >= 8 ? 8 : prefix;
    const auto mask = static_cast<unsigned char>(0xFF << (8 - bits));
    if ((a[i] & mask) != (b[i] & mask)) return false;
  }
  return true;
}

}  // namespace

ClientNetworks ClientNetworks::parse(const std::vector<std::string>& cidrs, const std::string& where) {
  ClientNetworks out;
  for (size_t i = 0; i < cidrs.size(); ++i) {
    const std::string& text = cidrs[i];
    const auto slash = text.find('/');
    boost::system::error_code ec;
    Network network;
    network.base = unmapped(ip::make_address(text.substr(0, slash), ec));
    const int bits = network.base.is_v4() ? 32 : 128;
    network.prefix = bits;
    bool ok = !ec;
    if (ok && slash != std::string::npos) {
      const std::string length = text.substr(slash + 1);
      ok = !length.empty() && length.size() <= 3 && length.find_first_not_of("0123456789") == std::string::npos;
      if (ok) network.prefix = std::stoi(length);
      ok = ok && network.prefix <= bits;
    }
    if (!ok)
      throw ConfigError(fmt::format("{}[{}]: \"{}\" is not a network (an IPv4 or IPv6 address, optionally /prefix "
                                    "length, e.g. 10.0.0.0/8)", where, i, text));
    out.networks_.push_back(network);
  }
  return out;
}

bool ClientNetworks::contains(const ip::address& given) const {
  const ip::address address = unmapped(given);
  for (const auto& n : networks_) {
    if (n.base.is_v4() != address.is_v4()) continue;
    const bool match = address.is_v4() ? same_prefix(n.base.to_v4().to_bytes(), address.to_v4().to_bytes(), n.prefix)
                                       : same_prefix(n.base.to_v6().to_bytes(), address.to_v6().to_bytes(), n.prefix);
    if (match) return true;
  }
  return false;
}

}  // namespace vlreward
