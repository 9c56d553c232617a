#pragma once
// Turns what clients send (the /v1/score, /get_reward and /classify JSON bodies, binary ScoreRequest messages)
// into RewardRequests, enforcing the server's limits on the way. Every violation is a ServeError naming the
// field and the problem; images are checked from their headers only (format, width x height) — pixels are never
// decoded here.
//
// Token estimate (for batching by max_batch_tokens): ceil(text bytes / 4) + 16 per turn for template overhead,
// plus per image ceil(h/28) * ceil(w/28) merged patches (Qwen2.5-VL: 14-px patches merged 2x2), clamped to
// [4, 16384] as the processor's min/max pixels clamp it.
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/image/reference.h"
#include "adapters/server/error.h"
#include "adapters/server/chatml.h"
#include "adapters/server/config.h"
#include "adapters/server/prompt_images.h"
#include "plugin/reward.h"

namespace vlreward {
namespace serve {
class ScoreRequest;
}

// What scoring a sample will cost, known from the request alone (image headers, text sizes) before any work.
struct SampleCost {
  int64_t tokens = 0;   // estimate, see above
  uint64_t pixels = 0;  // decoded pixels of all its images (width x height from the headers)
  uint64_t bytes = 0;   // text and encoded image bytes it holds while queued
};

struct DecodedSample {
  RewardRequest request;
  SampleCost cost;
};

// A /classify body: the samples and whether the client asked for the activation (sigmoid) on the score.
struct ClassifyRequest {
  std::vector<DecodedSample> samples;
  bool activation = false;
};

// A /get_reward body: one sample per query.
struct GetRewardRequest {
  std::vector<DecodedSample> samples;
};

// Runs one step of decoding a request and guarantees that it fails only with a ServeError: whatever else a parser
// or a library throws while reading client data (a nlohmann::json exception, InputError from an image probe,
// std::out_of_range, std::bad_alloc, ...) becomes kBadRequest naming `where` and the problem, so one request's
// bad input can never escape into the I/O thread.
ServeError decoding_failure(const std::string& where, std::exception_ptr error);
template <typename F>
auto decoding(const std::string& where, F&& step) -> decltype(step()) {
  try {
    return step();
  } catch (const ServeError&) {
    throw;
  } catch (...) {
    throw decoding_failure(where, std::current_exception());
  }
}

class RequestDecoder {
 public:
  explicit RequestDecoder(const ServerConfig& config);

  // Every public member throws only ServeError (see decoding()).
  // Parses a JSON body (depth limited to 64 to refuse nesting bombs). kBadRequest on invalid JSON and on numbers
  // out of the double range, naming where in the body the parser stopped.
  nlohmann::json parse_json_body(const std::string& body) const;

  // POST /v1/score: {"samples": [{"id", "system"?, "messages"? | "question"+"images"?, "response",
  // (message content parts: {"type": "text"}, {"type": "image", "image" | "data" | "path"}, or OpenAI's
  // {"type": "image_url", "image_url": {"url": data URI or path under image_root}}; URLs are never fetched)
  // "reference"?, "metadata"?}], "deadline_ms"?}. `deadline_ms` (0 = none) is returned through the pointer.
  std::vector<DecodedSample> decode_score(const nlohmann::json& body, int64_t* deadline_ms) const;
  // POST /get_reward (OpenRLHF): {"query": [str], "prompts"?: [str], "labels"?: [str], "images"?: [[str]]}.
  GetRewardRequest decode_get_reward(const nlohmann::json& body) const;
  // POST /classify (vLLM, verl's reward loop): {"model"?, "input": str | [str], "activation"?: bool,
  // "images"?: [str] (single input) | [[str]]}.
  ClassifyRequest decode_classify(const nlohmann::json& body) const;
  // Binary protocol.
  std::vector<DecodedSample> decode_proto(const serve::ScoreRequest& request) const;

  // Checks the per-sample limits (text, images, pixels from the header) and returns the sample's cost.
  SampleCost check_sample(const RewardRequest& request, const std::string& where) const;
  // Checks the per-request budgets (limits.max_request_pixels, limits.max_request_tokens) over all samples, so
  // that one request within every per-sample limit still cannot hold the scoring worker for long.
  void check_request(const std::vector<DecodedSample>& samples, const std::string& where) const;

 private:
  std::vector<DecodedSample> decode_score_unguarded(const nlohmann::json& body, int64_t* deadline_ms) const;
  GetRewardRequest decode_get_reward_unguarded(const nlohmann::json& body) const;
  ClassifyRequest decode_classify_unguarded(const nlohmann::json& body) const;
  std::vector<DecodedSample> decode_proto_unguarded(const serve::ScoreRequest& request) const;
  // An image given as a string, or explicitly as a path: parse_image_reference / resolve_image_path
  // (adapters/image/reference.h) with the paths confined to image_root. The result always holds bytes (paths are
  // read here, after confinement). Their InputError / ImageTooLargeError become 400 / 413 in decoding_failure, as
  // every decoding step runs under decoding().
  RewardImage image_from_string(const std::string& text, const std::string& where) const;
  RewardImage image_from_path(const std::string& path, const std::string& where) const;
  RewardImage read_path_image(RewardImage image, const std::string& where) const;
  DecodedSample finish_sample(RewardRequest request, const std::string& where) const;
  std::vector<RewardImage> image_list(const nlohmann::json& value, const std::string& where) const;
  void check_sample_count(size_t n, const std::string& where) const;
  // The images of the --prompts prompt whose user turn this is, read within the image limits.
  PromptImageLookup prompt_lookup(const std::string& where) const;

  ServerLimits limits_;
  PromptImages prompts_;  // config.prompts, loaded once
  ImageReferenceRules image_rules_;  // kUnderRoot; image_root canonical, or empty when path images are off
};

}  // namespace vlreward
