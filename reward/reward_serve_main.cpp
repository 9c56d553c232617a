// reward-serve: serve any reward backend over HTTP/1.1 JSON and the binary Protobuf protocol
// (adapters/server/README.md). Exit code: 0 after a graceful shutdown (SIGTERM / SIGINT), 2 usage/config error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>
#include <google/protobuf/stubs/logging.h>

#include "adapters/common/config_file.h"
#include "adapters/common/error.h"
#include "adapters/server/reward_server.h"
#include "adapters/common/cli.h"
#include "reward/backends.h"
#include "reward/cli_common.h"

namespace po = boost::program_options;

static int reward_serve(int argc, char** argv) {
  po::options_description options("reward-serve: serve a reward backend over HTTP and a binary protocol\nOptions");
  options.add_options()
      ("help,h", "show this help")
      ("config", po::value<std::string>(), "server config (YAML/JSON; keys in adapters/server/README.md; may hold "
                                           "the backend config under \"reward\")")
      ("host", po::value<std::string>(), "address to bind (default 127.0.0.1)")
      ("port", po::value<int>(), "HTTP port (0: any free port, -1: off; default 8000)")
      ("binary-port", po::value<int>(), "binary protocol port (0: any free port, -1: off; default off)")
      ("io-threads", po::value<int>(), "I/O threads (default 2)")
      ("auth-token-file", po::value<std::string>(), "require this bearer token (also: $VLREWARD_SERVE_TOKEN)")
      ("image-root", po::value<std::string>(), "allow path images under this directory")
      ("model-name", po::value<std::string>(), "model name reported by /classify and /healthz")
      ("max-batch-size", po::value<int64_t>(), "samples per backend call")
      ("max-batch-tokens", po::value<int64_t>(), "estimated tokens per backend call")
      ("max-wait-ms", po::value<int64_t>(), "how long a sample waits for a fuller batch")
      ("max-queue", po::value<int64_t>(), "queued samples before 503")
      ("prompts", po::value<std::string>(), "training prompts with their images (JSONL): requests with image "
                                            "placeholders but no images get their prompt's images")
      ("allow-network", po::value<std::vector<std::string>>()->composing(),
       "a client network (CIDR, repeatable) served without a token, for engines that send no headers");
  vlreward::add_reward_options(options);
  po::variables_map vm;
  if (!vlreward::parse_command_line(argc, argv, options, vm)) return 0;

  nlohmann::json server_json = nlohmann::json::object();
  if (vm.count("config")) server_json = vlreward::load_config_file(vm["config"].as<std::string>());
  nlohmann::json backend_json;
  if (server_json.is_object() && server_json.contains("reward")) {
    backend_json = server_json["reward"];
    server_json.erase("reward");
  }
  // --set reaches both configs: server keys (limits.*, batching.*, host, ...) the server's, the rest the backend's.
  std::vector<std::string> backend_sets;
  if (vm.count("set"))
    for (const auto& assignment : vm["set"].as<std::vector<std::string>>()) {
      if (vlreward::is_server_config_key(assignment)) vlreward::apply_override(server_json, assignment);
      else backend_sets.push_back(assignment);
    }
  if (vm.count("reward") || vm.count("model") || backend_json.is_null()) backend_json = vlreward::reward_config_from(vm, false);
  for (const auto& assignment : backend_sets) vlreward::apply_override(backend_json, assignment);
  auto config = vlreward::parse_server_config(server_json, vm.count("config") ? vm["config"].as<std::string>() : "server");
  if (vm.count("host")) config.host = vm["host"].as<std::string>();
  if (vm.count("port")) config.http_port = vm["port"].as<int>();
  if (vm.count("binary-port")) config.binary_port = vm["binary-port"].as<int>();
  if (vm.count("io-threads")) config.io_threads = vm["io-threads"].as<int>();
  if (vm.count("image-root")) config.image_root = vm["image-root"].as<std::string>();
  if (vm.count("model-name")) config.model_name = vm["model-name"].as<std::string>();
  if (vm.count("max-batch-size")) config.batching.max_batch_size = vm["max-batch-size"].as<int64_t>();
  if (vm.count("max-batch-tokens")) config.batching.max_batch_tokens = vm["max-batch-tokens"].as<int64_t>();
  if (vm.count("max-wait-ms")) config.batching.max_wait_ms = vm["max-wait-ms"].as<int64_t>();
  if (vm.count("max-queue")) config.batching.max_queue = vm["max-queue"].as<int64_t>();
  if (vm.count("prompts")) config.prompts = vm["prompts"].as<std::string>();
  if (vm.count("allow-network"))
    for (const auto& network : vm["allow-network"].as<std::vector<std::string>>()) config.allow_networks.push_back(network);
  // Tokens never travel on the command line (visible in ps): a file or the environment.
  if (vm.count("auth-token-file")) config.auth_token = vlreward::read_token_file(vm["auth-token-file"].as<std::string>());
  if (const char* env = std::getenv("VLREWARD_SERVE_TOKEN"); env != nullptr && *env != '\0' && config.auth_token.empty())
    config.auth_token = env;
  try {
    vlreward::validate_server_config(config);
  } catch (const vlreward::ConfigError& e) {
    throw po::error(e.what());
  }
  // Hostile clients must not fill the log with protobuf's parse warnings; they get an error frame instead.
  google::protobuf::SetLogHandler(nullptr);

  auto backend = vlreward::make_reward_backend(backend_json);
  vlreward::RewardServer server(config, *backend);
  server.stop_on_signals();
  server.start();
  const std::string binary =
      config.binary_port < 0 ? std::string("off") : fmt::format("{}:{}", config.host, server.binary_port());
  std::string auth = config.auth_token.empty() ? "off" : "bearer token";
  if (!config.allow_networks.empty()) auth += fmt::format(" or {} allowed network(s)", config.allow_networks.size());
  std::fprintf(stderr, "reward-serve: backend %s; HTTP %s:%u; binary %s; auth %s%s\n", backend->name().c_str(),
               config.host.c_str(), server.http_port(), binary.c_str(), auth.c_str(),
               config.prompts.empty() ? "" : ("; prompt images from " + config.prompts).c_str());
  server.wait();
  std::fprintf(stderr, "reward-serve: stopped\n");
  return 0;
}

int main(int argc, char** argv) { return vlreward::run_cli("reward-serve", argc, argv, reward_serve); }
