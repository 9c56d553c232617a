#pragma once
// A replica URL of the remote backend, taken apart: http://host[:port][/path] for the HTTP protocol,
// [tcp://]host:port for the binary one; IPv6 hosts in brackets.
#include <string>

#include "plugin/remote/remote_backend.h"

namespace vlreward::remote {

struct ReplicaAddress {
  std::string url;     // as configured, for messages
  std::string host;    // without IPv6 brackets
  std::string port;
  std::string target;  // HTTP: the /v1/score path
  std::string host_header;
};

// Throws ConfigError naming `where` and the URL for one the backend cannot use.
ReplicaAddress parse_replica_url(const std::string& url, RemoteProtocol protocol, const std::string& where);

}  // namespace vlreward::remote
