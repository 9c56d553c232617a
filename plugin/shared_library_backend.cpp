#include "plugin/shared_library_backend.h"

#include <cstdint>
#include <dlfcn.h>

#include <cmath>
#include <cstring>
#include <mutex>

#include "plugin/config_reader.h"
#include "plugin/plugin_abi.h"

namespace vlreward {
namespace {

using AbiVersionFn = uint32_t (*)();
using CreateFn = vlreward_plugin_instance* (*)(const char*, char*, size_t);
using DestroyFn = void (*)(vlreward_plugin_instance*);
using NameFn = const char* (*)(vlreward_plugin_instance*);
using CapabilitiesFn = uint32_t (*)(vlreward_plugin_instance*);
using ScoreFn = int32_t (*)(vlreward_plugin_instance*, const vlreward_request*, size_t, vlreward_result*);

struct LibraryCloser {
  void operator()(void* handle) const { dlclose(handle); }
};
using LibraryHandle = std::unique_ptr<void, LibraryCloser>;

vlreward_str view(const std::string& s) { return {s.c_str(), s.size()}; }
vlreward_str absent() { return {nullptr, 0}; }

// Host-side copy of a batch in ABI form. The structs point into the RewardRequests (which outlive the call)
// and into flat arrays sized up front, so no pointer is invalidated while filling them.
class AbiBatch {
 public:
  explicit AbiBatch(const std::vector<RewardRequest>& batch) {
    size_t turns = 0, parts = 0, metadata = 0;
    for (const auto& r : batch) {
      turns += r.turns.size();
      metadata += r.metadata.size();
      for (const auto& t : r.turns) parts += t.content.size();
    }
    turns_.reserve(turns);
    parts_.reserve(parts);
    metadata_.reserve(metadata);
    requests_.reserve(batch.size());
    for (const auto& r : batch) requests_.push_back(convert(r));
  }
  const vlreward_request* data() const { return requests_.data(); }

 private:
  vlreward_request convert(const RewardRequest& r) {
    vlreward_request out{};
    out.id = view(r.id);
    out.system_prompt = r.system_prompt ? view(*r.system_prompt) : absent();
    out.turns = turns_.data() + turns_.size();
    out.turn_count = r.turns.size();
    for (const auto& turn : r.turns) {
      vlreward_turn t{view(turn.role), parts_.data() + parts_.size(), turn.content.size()};
      for (const auto& part : turn.content) parts_.push_back(convert(part));
      turns_.push_back(t);
    }
    out.response = view(r.response);
    out.reference = r.reference ? view(*r.reference) : absent();
    out.metadata = metadata_.data() + metadata_.size();
    out.metadata_count = r.metadata.size();
    for (const auto& [key, value] : r.metadata) metadata_.push_back({view(key), view(value)});
    return out;
  }
  static vlreward_part convert(const RewardContent& part) {
    vlreward_part out{};
    out.text = absent();
    out.image_path = absent();
    out.mime_type = absent();
    if (part.kind == RewardContent::Kind::kImage) {
      out.kind = VLREWARD_PART_IMAGE;
      if (!part.image.path.empty()) {
        out.image_path = view(part.image.path);
      } else {
        out.image_bytes = reinterpret_cast<const unsigned char*>(part.image.bytes.data());
        out.image_size = part.image.bytes.size();
      }
      out.mime_type = view(part.image.mime_type);
    } else {
      out.kind = VLREWARD_PART_TEXT;
      out.text = view(part.text);
    }
    return out;
  }

  std::vector<vlreward_request> requests_;
  std::vector<vlreward_turn> turns_;
  std::vector<vlreward_part> parts_;
  std::vector<vlreward_metadata_entry> metadata_;
};

// A message from a host-owned buffer the plugin wrote into; never trusts it to be NUL-terminated.
std::string read_message(const char* buffer, size_t size) { return std::string(buffer, strnlen(buffer, size)); }

class SharedLibraryBackend : public RewardBackend {
 public:
  SharedLibraryBackend(std::string path, std::string name, LibraryHandle library, vlreward_plugin_instance* instance,
                       DestroyFn destroy, CapabilitiesFn capabilities, ScoreFn score)
      : path_(std::move(path)),
        name_(std::move(name)),
        library_(std::move(library)),
        instance_(instance),
        destroy_(destroy),
        capabilities_(capabilities),
        score_(score) {}
  ~SharedLibraryBackend() override {
    destroy_(instance_);  // before library_ unloads the code
  }
  SharedLibraryBackend(const SharedLibraryBackend&) = delete;
  SharedLibraryBackend& operator=(const SharedLibraryBackend&) = delete;

  std::string name() const override { return name_; }

  RewardCapabilities capabilities() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    const uint32_t bits = capabilities_(instance_);
    RewardCapabilities caps;
    caps.images = (bits & VLREWARD_CAP_IMAGES) != 0;
    caps.needs_reference = (bits & VLREWARD_CAP_NEEDS_REFERENCE) != 0;
    caps.batched = (bits & VLREWARD_CAP_BATCHED) != 0;
    return caps;
  }

  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    if (batch.empty()) return {};
    AbiBatch requests(batch);
    std::vector<vlreward_result> raw(batch.size());
    std::memset(raw.data(), 0, raw.size() * sizeof(vlreward_result));
    int32_t status;
    {
      std::lock_guard<std::mutex> lock(mutex_);  // the ABI promises one call at a time per instance
      status = score_(instance_, requests.data(), batch.size(), raw.data());
    }
    std::vector<RewardResult> results;
    results.reserve(batch.size());
    if (status != VLREWARD_STATUS_OK) {
      std::string detail = read_message(raw[0].error, VLREWARD_ERROR_SIZE);
      const std::string message = where() + ": score() failed for the whole batch with status " +
                                  std::to_string(status) + (detail.empty() ? "" : ": " + detail);
      for (size_t i = 0; i < batch.size(); ++i) results.push_back(RewardResult::failure(message));
      return results;
    }
    for (const auto& r : raw) {
      if (r.ok == 0) {
        std::string error = read_message(r.error, VLREWARD_ERROR_SIZE);
        results.push_back(RewardResult::failure(error.empty() ? where() + ": item failed without a message" : error));
      } else if (!std::isfinite(r.score)) {
        results.push_back(RewardResult::failure(where() + ": returned a non-finite score"));
      } else {
        results.push_back(RewardResult::success(r.score));
      }
    }
    return results;
  }

 private:
  std::string where() const { return "plugin " + name_ + " (" + path_ + ")"; }

  std::string path_;
  std::string name_;
  LibraryHandle library_;
  vlreward_plugin_instance* instance_;
  DestroyFn destroy_;
  CapabilitiesFn capabilities_;
  ScoreFn score_;
  mutable std::mutex mutex_;
};

template <typename Fn>
Fn lookup(void* library, const char* symbol, const std::string& where, const std::string& path) {
  dlerror();  // clear any stale error
  void* address = dlsym(library, symbol);
  if (address == nullptr)
    throw ConfigError(where + ": plugin \"" + path + "\" is missing symbol " + symbol);
  return reinterpret_cast<Fn>(address);
}

}  // namespace

std::unique_ptr<RewardBackend> make_shared_library_backend(const nlohmann::json& config, const std::string& where) {
  ConfigReader reader(config, where);
  const std::string path = reader.required<std::string>("path");
  const nlohmann::json* plugin_config = reader.raw("config");
  reader.finish();
  if (path.empty()) reader.fail("path", "must not be empty");
  if (plugin_config != nullptr && !plugin_config->is_object())
    reader.fail("config", "must be an object, got " + std::string(plugin_config->type_name()));

  dlerror();
  LibraryHandle library(dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!library) {
    const char* reason = dlerror();
    throw ConfigError(reader.path("path") + ": cannot open plugin \"" + path +
                            "\": " + (reason != nullptr ? reason : "unknown dlopen error"));
  }
  auto abi_version = lookup<AbiVersionFn>(library.get(), VLREWARD_PLUGIN_SYMBOL_ABI_VERSION, where, path);
  auto create = lookup<CreateFn>(library.get(), VLREWARD_PLUGIN_SYMBOL_CREATE, where, path);
  auto destroy = lookup<DestroyFn>(library.get(), VLREWARD_PLUGIN_SYMBOL_DESTROY, where, path);
  auto name = lookup<NameFn>(library.get(), VLREWARD_PLUGIN_SYMBOL_NAME, where, path);
  auto capabilities = lookup<CapabilitiesFn>(library.get(), VLREWARD_PLUGIN_SYMBOL_CAPABILITIES, where, path);
  auto score = lookup<ScoreFn>(library.get(), VLREWARD_PLUGIN_SYMBOL_SCORE, where, path);

  const uint32_t version = abi_version();
  if (version != VLREWARD_PLUGIN_ABI_VERSION)
    throw ConfigError(where + ": plugin \"" + path + "\" has ABI version " + std::to_string(version) +
                            ", expected " + std::to_string(VLREWARD_PLUGIN_ABI_VERSION));

  const std::string config_text = plugin_config != nullptr ? plugin_config->dump() : "{}";
  char error[VLREWARD_ERROR_SIZE] = {};
  vlreward_plugin_instance* instance = create(config_text.c_str(), error, sizeof error);
  if (instance == nullptr) {
    const std::string message = read_message(error, sizeof error);
    throw ConfigError(reader.path("config") + ": plugin \"" + path + "\" refused its config: " +
                            (message.empty() ? "(no message)" : message));
  }
  const char* plugin_name = name(instance);
  std::string backend_name = plugin_name != nullptr && *plugin_name != '\0' ? plugin_name : "plugin";
  // From here on the backend owns the instance and the library (destroyed in that order).
  return std::make_unique<SharedLibraryBackend>(path, std::move(backend_name), std::move(library), instance, destroy,
                                                capabilities, score);
}

}  // namespace vlreward
