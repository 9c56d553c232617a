#include "adapters/server/config.h"

#include "adapters/server/client_networks.h"

#include <cstdint>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "adapters/common/error.h"
#include "plugin/config_reader.h"

namespace vlreward {

std::string read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, "cannot read the auth token file");
  std::stringstream content;
  content << in.rdbuf();
  std::string token = content.str();
  const auto first = token.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw InputError(path, "the auth token file is empty");
  token = token.substr(first, token.find_last_not_of(" \t\r\n") - first + 1);
  return token;
}

bool is_server_config_key(const std::string& key_path) {
  static const char* const keys[] = {"host", "http_port", "binary_port", "io_threads", "auth_token", "auth_token_file",
                                     "allow_networks", "prompts", "image_root", "model_name", "read_timeout_ms",
                                     "write_timeout_ms", "request_deadline_ms", "retry_after_s", "limits", "batching"};
  const std::string first = key_path.substr(0, key_path.find_first_of(".="));
  for (const char* key : keys)
    if (first == key) return true;
  return false;
}

ServerConfig parse_server_config(const nlohmann::json& config, const std::string& where) {
  if (!config.is_object()) throw ConfigError(where + ": must be an object");
  ServerConfig c;
  ConfigReader r(config, where);
  c.host = r.optional<std::string>("host", c.host);
  c.http_port = r.optional<int>("http_port", c.http_port);
  c.binary_port = r.optional<int>("binary_port", c.binary_port);
  c.io_threads = r.optional<int>("io_threads", c.io_threads);
  c.auth_token = r.optional<std::string>("auth_token", c.auth_token);
  if (auto file = r.maybe<std::string>("auth_token_file")) {
    if (!c.auth_token.empty()) r.fail("auth_token_file", "give auth_token or auth_token_file, not both");
    c.auth_token = read_token_file(*file);
  }
  c.allow_networks = r.optional<std::vector<std::string>>("allow_networks", c.allow_networks);
  c.prompts = r.optional<std::string>("prompts", c.prompts);
  c.image_root = r.optional<std::string>("image_root", c.image_root);
  c.model_name = r.optional<std::string>("model_name", c.model_name);
  c.read_timeout_ms = r.optional<int64_t>("read_timeout_ms", c.read_timeout_ms);
  c.write_timeout_ms = r.optional<int64_t>("write_timeout_ms", c.write_timeout_ms);
  c.request_deadline_ms = r.optional<int64_t>("request_deadline_ms", c.request_deadline_ms);
  c.retry_after_s = r.optional<int64_t>("retry_after_s", c.retry_after_s);
  {
    ConfigReader l = r.section("limits");
    auto& x = c.limits;
    x.max_body_bytes = l.optional<uint64_t>("max_body_bytes", x.max_body_bytes);
    x.max_frame_bytes = l.optional<uint64_t>("max_frame_bytes", x.max_frame_bytes);
    x.max_connections = l.optional<int64_t>("max_connections", x.max_connections);
    x.max_samples_per_request = l.optional<int64_t>("max_samples_per_request", x.max_samples_per_request);
    x.max_images_per_sample = l.optional<int64_t>("max_images_per_sample", x.max_images_per_sample);
    x.max_image_pixels = l.optional<uint64_t>("max_image_pixels", x.max_image_pixels);
    x.max_image_bytes = l.optional<uint64_t>("max_image_bytes", x.max_image_bytes);
    x.max_text_bytes = l.optional<uint64_t>("max_text_bytes", x.max_text_bytes);
    x.max_request_pixels = l.optional<uint64_t>("max_request_pixels", x.max_request_pixels);
    x.max_request_tokens = l.optional<uint64_t>("max_request_tokens", x.max_request_tokens);
    l.finish();
  }
  {
    ConfigReader b = r.section("batching");
    auto& x = c.batching;
    x.max_batch_size = b.optional<int64_t>("max_batch_size", x.max_batch_size);
    x.max_batch_tokens = b.optional<int64_t>("max_batch_tokens", x.max_batch_tokens);
    x.max_wait_ms = b.optional<int64_t>("max_wait_ms", x.max_wait_ms);
    x.max_queue = b.optional<int64_t>("max_queue", x.max_queue);
    x.max_queue_bytes = b.optional<uint64_t>("max_queue_bytes", x.max_queue_bytes);
    b.finish();
  }
  r.finish();
  try {
    validate_server_config(c);
  } catch (const ConfigError& e) {
    throw ConfigError(where + "." + e.what());
  }
  return c;
}

void validate_server_config(const ServerConfig& c) {
  auto require = [](bool ok, const char* key, const std::string& problem) {
    if (!ok) throw ConfigError(fmt::format("{}: {}", key, problem));
  };
  require(!c.host.empty(), "host", "must not be empty");
  ClientNetworks::parse(c.allow_networks, "allow_networks");  // throws naming the entry
  require(c.http_port >= -1 && c.http_port <= 65535, "http_port", "must be -1 (off), 0 (any) or a port number");
  require(c.binary_port >= -1 && c.binary_port <= 65535, "binary_port", "must be -1 (off), 0 (any) or a port number");
  require(c.http_port != -1 || c.binary_port != -1, "http_port", "at least one of http_port and binary_port must be on");
  require(c.io_threads >= 1 && c.io_threads <= 256, "io_threads", "must be in [1, 256]");
  require(c.read_timeout_ms > 0, "read_timeout_ms", "must be positive");
  require(c.write_timeout_ms > 0, "write_timeout_ms", "must be positive");
  require(c.request_deadline_ms > 0, "request_deadline_ms", "must be positive");
  require(c.retry_after_s >= 0, "retry_after_s", "must not be negative");
  require(c.limits.max_body_bytes > 0, "limits.max_body_bytes", "must be positive");
  require(c.limits.max_frame_bytes > 0 && c.limits.max_frame_bytes <= 0xffffffffull, "limits.max_frame_bytes",
          "must be in [1, 2^32-1]");
  require(c.limits.max_connections > 0, "limits.max_connections", "must be positive");
  require(c.limits.max_samples_per_request > 0, "limits.max_samples_per_request", "must be positive");
  require(c.limits.max_images_per_sample >= 0, "limits.max_images_per_sample", "must not be negative");
  require(c.limits.max_image_pixels > 0, "limits.max_image_pixels", "must be positive");
  require(c.limits.max_image_bytes > 0, "limits.max_image_bytes", "must be positive");
  require(c.limits.max_text_bytes > 0, "limits.max_text_bytes", "must be positive");
  require(c.limits.max_request_pixels > 0, "limits.max_request_pixels", "must be positive");
  require(c.limits.max_request_tokens > 0, "limits.max_request_tokens", "must be positive");
  require(c.batching.max_batch_size > 0, "batching.max_batch_size", "must be positive");
  require(c.batching.max_batch_tokens > 0, "batching.max_batch_tokens", "must be positive");
  require(c.batching.max_wait_ms >= 0, "batching.max_wait_ms", "must not be negative");
  require(c.batching.max_queue > 0, "batching.max_queue", "must be positive");
  require(c.batching.max_queue_bytes > 0, "batching.max_queue_bytes", "must be positive");
}

}  // namespace vlreward
