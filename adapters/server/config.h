#pragma once
// reward-serve's settings, read strictly (unknown keys are errors) from the server config file's JSON/YAML tree;
// command-line flags override them. Every limit protects the process from one request: see README.md.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlreward {

struct ServerLimits {
  uint64_t max_body_bytes = 64ull << 20;      // HTTP request body
  uint64_t max_frame_bytes = 64ull << 20;     // binary protocol frame payload
  int64_t max_connections = 1024;             // open client connections, both protocols; beyond: refused
  int64_t max_samples_per_request = 4096;     // a GRPO step's completions in one call
  int64_t max_images_per_sample = 16;
  uint64_t max_image_pixels = 16ull << 20;    // width*height from the image header, before decoding
  uint64_t max_image_bytes = 32ull << 20;     // one encoded image (inline or file)
  uint64_t max_text_bytes = 1ull << 20;       // all text of one sample (turns + response + system + reference)
  // Budgets over one request's samples, so one request within every per-sample limit cannot monopolise the
  // scoring worker: decoded pixels of all its images (16 images at the per-image limit) and estimated tokens.
  uint64_t max_request_pixels = 4ull << 30;   // 4096 samples with a 1-megapixel image each
  uint64_t max_request_tokens = 8ull << 20;   // 4096 samples of 2048 tokens
};

struct BatchingOptions {
  int64_t max_batch_size = 8;       // samples per backend call
  int64_t max_batch_tokens = 65536;  // estimated tokens per backend call (a bigger single sample runs alone)
  int64_t max_wait_ms = 5;           // how long the oldest queued sample waits for company
  // A burst is held, not refused: real RL clients ignore Retry-After. Queued samples wait up to their deadline
  // (request_deadline_ms); the queue is bounded by memory (max_queue_bytes) and, far above any burst, a count.
  int64_t max_queue = 1 << 20;       // queued samples; beyond it requests are refused (503 + Retry-After)
  uint64_t max_queue_bytes = 1ull << 30;  // text + encoded image bytes held by queued samples; beyond: refused too
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int http_port = 8000;                  // 0: any free port; -1: no HTTP listener
  int binary_port = -1;                  // 0: any free port; -1: no binary listener
  int io_threads = 2;
  std::string auth_token;                // empty: no authentication
  // Client networks (CIDR) that need no token, for engines whose reward clients send no headers. With no
  // auth_token, only these networks are served.
  std::vector<std::string> allow_networks;
  std::string prompts;                   // training prompts with their images (prompt_images.h); empty: none
  std::string image_root;                // empty: path images are refused
  std::string model_name = "vlreward";   // reported by /classify and /healthz
  int64_t read_timeout_ms = 10000;       // a request (headers + body, or a frame) must arrive within this
  int64_t write_timeout_ms = 10000;
  int64_t request_deadline_ms = 60000;   // default and cap for a request's time in the server
  int64_t retry_after_s = 1;             // Retry-After on 503
  ServerLimits limits;
  BatchingOptions batching;
};

// Reads `config` (an object) into a ServerConfig, starting from the defaults. Keys: host, http_port, binary_port,
// io_threads, auth_token, auth_token_file, allow_networks, prompts, image_root, model_name, read_timeout_ms,
// write_timeout_ms, request_deadline_ms, retry_after_s, limits{...}, batching{...}. Throws ConfigError naming the key path.
ServerConfig parse_server_config(const nlohmann::json& config, const std::string& where = "server");

// Throws ConfigError when values are out of range (non-positive limits, bad ports).
void validate_server_config(const ServerConfig& config);

// True when a "--set key.path=value" key names a server setting (its first segment is one of the keys above);
// reward-serve sends the others to the backend config.
bool is_server_config_key(const std::string& key_path);

// Reads a token file: its content without surrounding whitespace. Throws InputError when unreadable or empty.
std::string read_token_file(const std::string& path);

}  // namespace vlreward
