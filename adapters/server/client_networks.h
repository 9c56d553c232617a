#pragma once
// An allow-list of client networks in CIDR notation ("10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1/128") for RL
// engines whose reward clients cannot send an Authorization header: a client whose address lies in a listed
// network needs no token. IPv4-mapped IPv6 addresses (::ffff:10.1.2.3) match IPv4 networks.
#include <boost/asio/ip/address.hpp>

#include <string>
#include <vector>

namespace vlreward {

class ClientNetworks {
 public:
  ClientNetworks() = default;
  // Throws ConfigError naming `where`[i] and the entry for anything that is not an address with an optional prefix
  // length within the address's bits.
  static ClientNetworks parse(const std::vector<std::string>& cidrs, const std::string& where);
  bool empty() const { return networks_.empty(); }
  bool contains(const boost::asio::ip::address& address) const;

 private:
  struct Network {
    boost::asio::ip::address base;
    int prefix = 0;
  };
  std::vector<Network> networks_;
};

}  // namespace vlreward
