#include "plugin/remote/replica_address.h"

#include <fmt/format.h>

#include "plugin/error.h"

namespace vlreward::remote {

ReplicaAddress parse_replica_url(const std::string& url, RemoteProtocol protocol, const std::string& where) {
  auto bad = [&](const std::string& problem) -> ReplicaAddress {
    throw ConfigError(fmt::format("{}: \"{}\" {}", where, url, problem));
  };
  ReplicaAddress a;
  a.url = url;
  std::string rest = url;
  const auto scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme_end != std::string::npos) rest = url.substr(scheme_end + 3);
  if (protocol == RemoteProtocol::kHttp) {
    if (scheme == "https") return bad("is HTTPS, which the remote backend does not speak (use a local TLS proxy)");
    if (scheme != "http") return bad("must start with http:// (protocol \"http\")");
  } else if (!scheme.empty() && scheme != "tcp") {
    return bad("must be tcp://host:port or host:port (protocol \"binary\")");
  }
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  if (protocol == RemoteProtocol::kBinary && !path.empty() && path != "/") return bad("has a path; binary URLs are host:port");
  if (path.find_first_of("?# ") != std::string::npos) return bad("has a query, fragment or space in its path");
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    const auto close = authority.find(']');
    if (close == std::string::npos) return bad("has an unclosed [IPv6] address");
    a.host = authority.substr(1, close - 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("has junk after the [IPv6] address");
      port = after.substr(1);
    }
  } else {
    const auto colon = authority.find(':');
    if (colon != std::string::npos && authority.find(':', colon + 1) != std::string::npos)
      return bad("has several ':' (write IPv6 addresses in brackets)");
    a.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (a.host.empty()) return bad("has no host");
  if (port.empty()) {
    if (protocol == RemoteProtocol::kBinary) return bad("has no port");
    port = "80";
  }
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535)
    return bad("has an invalid port \"" + port + "\"");
  a.port = port;
  a.host_header = (a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host) + ":" + port;
  while (!path.empty() && path.back() == '/') path.pop_back();
  const std::string route = "/v1/score";
  a.target = path.size() >= route.size() && path.compare(path.size() - route.size(), route.size(), route) == 0
                 ? path
                 : path + route;
  return a;
}

}  // namespace vlreward::remote
