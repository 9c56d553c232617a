#pragma once
// vlreward's reward interface: the one public, torch-free header a training loop needs to ask
// "how good is this response to this image and question?". Backends (Skywork-VL, rules, composites, shared
// library plugins, remote servers) all implement RewardBackend and are created by name from a JSON config
// through the registry (plugin/registry.h).
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "plugin/error.h"  // ConfigError: a backend config that cannot be used

namespace vlreward {

// An image as the caller has it: encoded bytes (JPEG/PNG) or a path to a file. Exactly one is set.
struct RewardImage {
  std::string bytes;      // encoded file contents
  std::string path;       // or a file path
  std::string mime_type;  // optional hint ("image/png"); decoders sniff the bytes anyway

  static RewardImage from_bytes(std::string data, std::string mime = {}) { return {std::move(data), {}, std::move(mime)}; }
  static RewardImage from_path(std::string file) { return {{}, std::move(file), {}}; }
};

// One piece of a turn: text or an image, in the order the user gave them.
struct RewardContent {
  enum class Kind { kText, kImage };
  Kind kind = Kind::kText;
  std::string text;
  RewardImage image;

  static RewardContent text_part(std::string t) { return {Kind::kText, std::move(t), {}}; }
  static RewardContent image_part(RewardImage i) { return {Kind::kImage, {}, std::move(i)}; }
};

struct RewardTurn {
  std::string role;  // "user" or "assistant"
  std::vector<RewardContent> content;
};

// A conversation to judge: optional system prompt, the turns so far (ending with a user turn), and the
// assistant response being scored.
struct RewardRequest {
  std::string id;
  std::optional<std::string> system_prompt;  // none → the reward model's default (Qwen: "You are a helpful assistant.")
  std::vector<RewardTurn> turns;
  std::string response;
  std::optional<std::string> reference;  // reference / ground-truth answer, for rule rewards
  std::map<std::string, std::string> metadata;

  // The common case: one user turn [images..., question] (as the Skywork-VL model card scores) and a response.
  static RewardRequest single_turn(std::string id, std::vector<RewardImage> images, std::string question,
                                   std::string response, std::optional<std::string> reference = std::nullopt);
  size_t image_count() const;
};

// Inline so the header stays self-contained for plugins built against it alone (plugin/plugin_sdk.h).
inline RewardRequest RewardRequest::single_turn(std::string id, std::vector<RewardImage> images,
                                                std::string question, std::string response,
                                                std::optional<std::string> reference) {
  RewardRequest r;
  r.id = std::move(id);
  RewardTurn user{"user", {}};
  for (auto& image : images) user.content.push_back(RewardContent::image_part(std::move(image)));
  user.content.push_back(RewardContent::text_part(std::move(question)));
  r.turns.push_back(std::move(user));
  r.response = std::move(response);
  r.reference = std::move(reference);
  return r;
}

inline size_t RewardRequest::image_count() const {
  size_t n = 0;
  for (const auto& turn : turns)
    for (const auto& part : turn.content) n += part.kind == RewardContent::Kind::kImage ? 1 : 0;
  return n;
}

// A score, or an error for this item alone (the rest of the batch is unaffected).
struct RewardResult {
  std::optional<double> score;
  std::string error;                          // set iff !score
  std::map<std::string, double> components;  // named parts (composite backends), for logging

  bool ok() const { return score.has_value(); }
  static RewardResult success(double s) { return {s, {}, {}}; }
  static RewardResult failure(std::string message) { return {std::nullopt, std::move(message), {}}; }
};

struct RewardCapabilities {
  bool images = false;          // uses images (text-only backends ignore them)
  bool needs_reference = false;  // fails items without `reference`
  bool batched = false;          // benefits from large batches
};

class RewardBackend {
 public:
  virtual ~RewardBackend() = default;
  virtual std::string name() const = 0;
  virtual RewardCapabilities capabilities() const = 0;
  // One result per request, in order. Must not throw for bad items; may throw for backend failures.
  virtual std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) = 0;
};

}  // namespace vlreward
