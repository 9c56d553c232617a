#pragma once
// For plugin AUTHORS: adapts a C++ RewardBackend subclass to the C ABI of plugin/plugin_abi.h. Header-only
// (plus the header-only nlohmann/json), so a plugin links nothing from vlreward:
//
//   #include "plugin/plugin_sdk.h"
//   class MyReward : public vlreward::RewardBackend {
//    public:
//     explicit MyReward(const nlohmann::json& config);  // throw std::exception to refuse the config
//     std::string name() const override;
//     vlreward::RewardCapabilities capabilities() const override;
//     std::vector<vlreward::RewardResult> score(const std::vector<vlreward::RewardRequest>& batch) override;
//   };
//   VLREWARD_PLUGIN(MyReward)
//
// Build it as a MODULE library with hidden visibility (only the ABI functions are exported), e.g.
//   add_library(my_reward MODULE my_reward.cpp)
//   set_target_properties(my_reward PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
// Exceptions thrown by score() fail the whole batch with their message; they never cross into the host.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/plugin_abi.h"
#include "plugin/reward.h"

// The instance behind the ABI's opaque handle.
struct vlreward_plugin_instance {
  std::unique_ptr<vlreward::RewardBackend> backend;
  std::string name;  // kept here so vlreward_plugin_name can return a stable pointer
};

namespace vlreward::plugin_sdk {

// Copies `message` into a host buffer of `size` bytes, truncated to fit, always NUL-terminated.
inline void write_message(char* buffer, size_t size, const std::string& message) {
  if (buffer == nullptr || size == 0) return;
  const size_t n = std::min(message.size(), size - 1);
  std::memcpy(buffer, message.data(), n);
  buffer[n] = '\0';
}

inline std::string to_string(const vlreward_str& s) { return s.data == nullptr ? std::string() : std::string(s.data, s.size); }

inline RewardRequest to_request(const vlreward_request& in) {
  RewardRequest out;
  out.id = to_string(in.id);
  if (in.system_prompt.data != nullptr) out.system_prompt = to_string(in.system_prompt);
  for (size_t t = 0; t < in.turn_count; ++t) {
    const vlreward_turn& turn = in.turns[t];
    RewardTurn converted{to_string(turn.role), {}};
    for (size_t p = 0; p < turn.part_count; ++p) {
      const vlreward_part& part = turn.parts[p];
      if (part.kind == VLREWARD_PART_IMAGE) {
        RewardImage image;
        if (part.image_bytes != nullptr) image.bytes.assign(reinterpret_cast<const char*>(part.image_bytes), part.image_size);
        image.path = to_string(part.image_path);
        image.mime_type = to_string(part.mime_type);
        converted.content.push_back(RewardContent::image_part(std::move(image)));
      } else {
        converted.content.push_back(RewardContent::text_part(to_string(part.text)));
      }
    }
    out.turns.push_back(std::move(converted));
  }
  out.response = to_string(in.response);
  if (in.reference.data != nullptr) out.reference = to_string(in.reference);
  for (size_t m = 0; m < in.metadata_count; ++m)
    out.metadata[to_string(in.metadata[m].key)] = to_string(in.metadata[m].value);
  return out;
}

inline uint32_t capability_bits(const RewardCapabilities& caps) {
  return (caps.images ? VLREWARD_CAP_IMAGES : 0u) | (caps.needs_reference ? VLREWARD_CAP_NEEDS_REFERENCE : 0u) |
         (caps.batched ? VLREWARD_CAP_BATCHED : 0u);
}

template <typename Backend>
vlreward_plugin_instance* create(const char* config_json, char* error_buf, size_t error_size) {
  try {
    const nlohmann::json config = nlohmann::json::parse(config_json == nullptr ? "{}" : config_json);
    auto instance = std::make_unique<vlreward_plugin_instance>();
    instance->backend = std::make_unique<Backend>(config);
    instance->name = instance->backend->name();
    return instance.release();
  } catch (const std::exception& e) {
    write_message(error_buf, error_size, e.what());
  } catch (...) {
    write_message(error_buf, error_size, "unknown exception while creating the plugin");
  }
  return nullptr;
}

inline int32_t score(vlreward_plugin_instance* instance, const vlreward_request* requests, size_t n,
                     vlreward_result* results) {
  if (n == 0) return VLREWARD_STATUS_OK;
  try {
    std::vector<RewardRequest> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) batch.push_back(to_request(requests[i]));
    const std::vector<RewardResult> scored = instance->backend->score(batch);
    if (scored.size() != n) {
      write_message(results[0].error, VLREWARD_ERROR_SIZE,
                    "backend returned " + std::to_string(scored.size()) + " results for " + std::to_string(n) +
                        " requests");
      return 1;
    }
    for (size_t i = 0; i < n; ++i) {
      results[i].ok = scored[i].ok() ? 1 : 0;
      results[i].score = scored[i].ok() ? *scored[i].score : 0.0;
      write_message(results[i].error, VLREWARD_ERROR_SIZE, scored[i].error);
    }
    return VLREWARD_STATUS_OK;
  } catch (const std::exception& e) {
    write_message(results[0].error, VLREWARD_ERROR_SIZE, e.what());
  } catch (...) {
    write_message(results[0].error, VLREWARD_ERROR_SIZE, "unknown exception while scoring");
  }
  return 1;
}

}  // namespace vlreward::plugin_sdk

// Defines the six exported ABI functions for `BackendClass`.
#define VLREWARD_PLUGIN(BackendClass)                                                                           \
  extern "C" {                                                                                                  \
  VLREWARD_PLUGIN_EXPORT uint32_t vlreward_plugin_abi_version(void) { return VLREWARD_PLUGIN_ABI_VERSION; }    \
  VLREWARD_PLUGIN_EXPORT vlreward_plugin_instance* vlreward_plugin_create(const char* config_json,             \
                                                                          char* error_buf, size_t error_size) { \
    return ::vlreward::plugin_sdk::create<BackendClass>(config_json, error_buf, error_size);                    \
  }                                                                                                             \
  VLREWARD_PLUGIN_EXPORT void vlreward_plugin_destroy(vlreward_plugin_instance* instance) { delete instance; }  \
  VLREWARD_PLUGIN_EXPORT const char* vlreward_plugin_name(vlreward_plugin_instance* instance) {                 \
    return instance->name.c_str();                                                                              \
  }                                                                                                             \
  VLREWARD_PLUGIN_EXPORT uint32_t vlreward_plugin_capabilities(vlreward_plugin_instance* instance) {            \
    try {                                                                                                       \
      return ::vlreward::plugin_sdk::capability_bits(instance->backend->capabilities());                        \
    } catch (...) {                                                                                             \
      return 0u;                                                                                                \
    }                                                                                                           \
  }                                                                                                             \
  VLREWARD_PLUGIN_EXPORT int32_t vlreward_plugin_score(vlreward_plugin_instance* instance,                      \
                                                       const vlreward_request* requests, size_t n,              \
                                                       vlreward_result* results) {                              \
    return ::vlreward::plugin_sdk::score(instance, requests, n, results);                                       \
  }                                                                                                             \
  }
