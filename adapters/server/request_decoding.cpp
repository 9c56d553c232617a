#include "adapters/server/request_decoding.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <new>
#include <set>

#include <fmt/format.h>

#include "plugin/wire/base64.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/hf/byte_level.h"
#include "adapters/image/decode.h"
#include "adapters/image/reference.h"
#include "adapters/server/chatml.h"
#include "adapters/server/error.h"
#include "reward_service.pb.h"

namespace vlreward {
namespace fs = std::filesystem;
namespace {

constexpr int kMaxJsonDepth = 64;
constexpr int64_t kTokensPerTurnOverhead = 16;
constexpr int64_t kMinImageTokens = 4;
constexpr int64_t kMaxImageTokens = 16384;
constexpr int64_t kMergedPatchPixels = 28;

[[noreturn]] void bad(const std::string& message) { throw ServeError(ServeErrorKind::kBadRequest, message); }
[[noreturn]] void too_large(const std::string& message) { throw ServeError(ServeErrorKind::kTooLarge, message); }

// At most ~60 bytes of client text in a message, as valid UTF-8 (messages travel in proto3 strings).
std::string shorten(const std::string& text) { return message_excerpt(text, 60); }

// Depth of bracket nesting outside strings; stops early once over the limit.
bool nesting_within(const std::string& text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

const nlohmann::json* find_key(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const nlohmann::json& obj, const char* key, const std::string& where, bool required) {
  const auto* v = find_key(obj, key);
  if (v == nullptr) {
    if (required) bad(fmt::format("{}: missing \"{}\"", where, key));
    return {};
  }
  if (!v->is_string()) bad(fmt::format("{}.{}: must be a string (got {})", where, key, v->type_name()));
  return v->get<std::string>();
}

std::vector<std::string> string_list(const nlohmann::json& value, const std::string& where) {
  if (value.is_string()) return {value.get<std::string>()};
  if (!value.is_array()) bad(fmt::format("{}: must be a list of strings (got {})", where, value.type_name()));
  std::vector<std::string> out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) bad(fmt::format("{}[{}]: must be a string (got {})", where, i, value[i].type_name()));
    out.push_back(value[i].get<std::string>());
  }
  return out;
}

int64_t image_tokens(int64_t width, int64_t height) {
  const int64_t w = (width + kMergedPatchPixels - 1) / kMergedPatchPixels;
  const int64_t h = (height + kMergedPatchPixels - 1) / kMergedPatchPixels;
  // width and height are capped by the pixel limit before this, so the product cannot overflow.
  return std::clamp(w * h, kMinImageTokens, kMaxImageTokens);
}

}  // namespace

ServeError decoding_failure(const std::string& where, std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const ServeError& e) {
    return e;
  } catch (const nlohmann::json::exception& e) {
    // A type or range error from reading a value of the wrong shape: the client's data, not the server.
    return ServeError(ServeErrorKind::kBadRequest, fmt::format("{}: {}", where, utf8_decode_lossy(e.what())));
  } catch (const std::bad_alloc&) {
    return ServeError(ServeErrorKind::kTooLarge, fmt::format("{}: too large to decode", where));
  } catch (const ImageTooLargeError& e) {
    return ServeError(ServeErrorKind::kTooLarge, utf8_decode_lossy(e.what()));
  } catch (const InputError& e) {
    return ServeError(ServeErrorKind::kBadRequest, utf8_decode_lossy(e.what()));
  } catch (const std::exception& e) {
    return ServeError(ServeErrorKind::kBadRequest, fmt::format("{}: {}", where, utf8_decode_lossy(e.what())));
  } catch (...) {
    return ServeError(ServeErrorKind::kBadRequest, fmt::format("{}: could not be decoded", where));
  }
}

RequestDecoder::RequestDecoder(const ServerConfig& config) : limits_(config.limits) {
  if (!config.prompts.empty()) prompts_ = PromptImages::load(config.prompts);
  image_rules_.paths = ImageReferenceRules::Paths::kUnderRoot;
  image_rules_.max_image_bytes = limits_.max_image_bytes;
  if (!config.image_root.empty()) {
    std::error_code ec;
    const fs::path root = fs::canonical(config.image_root, ec);
    if (ec || !fs::is_directory(root, ec))
      throw InputError(config.image_root, "image_root is not an existing directory");
    image_rules_.image_root = root.string();
  }
}

nlohmann::json RequestDecoder::parse_json_body(const std::string& body) const {
  if (!nesting_within(body, kMaxJsonDepth))
    bad(fmt::format("body: JSON nested deeper than {} levels", kMaxJsonDepth));
  return decoding("body", [&] {
    try {
      return nlohmann::json::parse(body);
    } catch (const nlohmann::json::exception& e) {
      std::string path;
      const std::string message = describe_json_failure(body, e, "invalid JSON", &path);
      bad(message.rfind(path, 0) == 0 && !path.empty() ? message : "body: " + message);
    }
  });
}

RewardImage RequestDecoder::image_from_path(const std::string& path, const std::string& where) const {
  return read_path_image(resolve_image_path(path, where, image_rules_), where);
}

RewardImage RequestDecoder::image_from_string(const std::string& text, const std::string& where) const {
  return read_path_image(parse_image_reference(text, where, image_rules_), where);
}

PromptImageLookup RequestDecoder::prompt_lookup(const std::string& where) const {
  if (prompts_.empty()) return {};
  return [this, where](std::string_view user_turn) {
    // The operator's prompt file names its own files: any local path, not only those under image_root.
    ImageReferenceRules rules;
    rules.paths = ImageReferenceRules::Paths::kLocal;
    rules.max_image_bytes = limits_.max_image_bytes;
    std::vector<RewardImage> images;
    for (const auto& image : prompts_.find(normalized_prompt_key(user_turn), where))
      images.push_back(read_path_image(parse_image_reference(image, where + " (its prompt's image)", rules), where));
    return images;
  };
}

RewardImage RequestDecoder::read_path_image(RewardImage image, const std::string& where) const {
  if (image.path.empty()) return image;
  return RewardImage::from_bytes(read_image_file(image.path, limits_.max_image_bytes, where));
}

SampleCost RequestDecoder::check_sample(const RewardRequest& request, const std::string& where) const {
  SampleCost cost;
  uint64_t text_bytes = request.response.size();
  if (request.system_prompt) text_bytes += request.system_prompt->size();
  if (request.reference) text_bytes += request.reference->size();
  int64_t images = 0;
  int64_t tokens = kTokensPerTurnOverhead * static_cast<int64_t>(request.turns.size() + 1);
  for (size_t t = 0; t < request.turns.size(); ++t) {
    const auto& turn = request.turns[t];
    if (turn.role != "user" && turn.role != "assistant")
      bad(fmt::format("{}.turns[{}].role: must be \"user\" or \"assistant\" (got \"{}\")", where, t, shorten(turn.role)));
    for (size_t p = 0; p < turn.content.size(); ++p) {
      const auto& part = turn.content[p];
      if (part.kind == RewardContent::Kind::kText) {
        text_bytes += part.text.size();
        continue;
      }
      const std::string image_where = fmt::format("{}.turns[{}].content[{}]", where, t, p);
      if (++images > limits_.max_images_per_sample)
        too_large(fmt::format("{}: more than {} images in one sample", where, limits_.max_images_per_sample));
      if (!part.image.path.empty()) bad(image_where + ": unresolved image path");  // decoders resolve paths first
      if (part.image.bytes.size() > limits_.max_image_bytes)
        too_large(fmt::format("{}: image of {} bytes exceeds the limit of {} bytes", image_where,
                              part.image.bytes.size(), limits_.max_image_bytes));
      ImageHeader header;
      try {
        header = probe_image(part.image.bytes, image_where);
      } catch (const InputError& e) {
        bad(e.what());
      }
      if (header.width <= 0 || header.height <= 0) bad(image_where + ": image header declares an empty image");
      const uint64_t pixels = static_cast<uint64_t>(header.width) * static_cast<uint64_t>(header.height);
      if (pixels > limits_.max_image_pixels)
        too_large(fmt::format("{}: image of {}x{} = {} pixels exceeds the limit of {} pixels", image_where,
                              header.width, header.height, pixels, limits_.max_image_pixels));
      tokens += image_tokens(header.width, header.height);
      cost.pixels += pixels;
      cost.bytes += part.image.bytes.size();
    }
  }
  if (text_bytes > limits_.max_text_bytes)
    too_large(fmt::format("{}: {} bytes of text exceed the limit of {} bytes", where, text_bytes, limits_.max_text_bytes));
  if (request.turns.empty()) bad(where + ": no turns (a sample needs at least one user turn)");
  cost.tokens = tokens + static_cast<int64_t>((text_bytes + 3) / 4);
  cost.bytes += text_bytes;
  return cost;
}

void RequestDecoder::check_request(const std::vector<DecodedSample>& samples, const std::string& where) const {
  uint64_t pixels = 0;
  uint64_t tokens = 0;
  for (const auto& sample : samples) {
    pixels += sample.cost.pixels;
    tokens += static_cast<uint64_t>(sample.cost.tokens);
  }
  if (pixels > limits_.max_request_pixels)
    too_large(fmt::format("{}: the images decode to {} pixels in all, over the budget of {} pixels per request "
                          "(limits.max_request_pixels); send fewer or smaller images per request",
                          where, pixels, limits_.max_request_pixels));
  if (tokens > limits_.max_request_tokens)
    too_large(fmt::format("{}: about {} tokens in all, over the budget of {} tokens per request "
                          "(limits.max_request_tokens); split the request",
                          where, tokens, limits_.max_request_tokens));
}

DecodedSample RequestDecoder::finish_sample(RewardRequest request, const std::string& where) const {
  DecodedSample out;
  out.cost = check_sample(request, where);
  out.request = std::move(request);
  return out;
}

void RequestDecoder::check_sample_count(size_t n, const std::string& where) const {
  if (n == 0) bad(where + ": no samples");
  if (n > static_cast<uint64_t>(limits_.max_samples_per_request))
    too_large(fmt::format("{}: {} samples exceed the limit of {} per request", where, n, limits_.max_samples_per_request));
}

std::vector<RewardImage> RequestDecoder::image_list(const nlohmann::json& value, const std::string& where) const {
  if (value.is_null()) return {};
  if (!value.is_array()) bad(fmt::format("{}: must be a list of images (got {})", where, value.type_name()));
  if (value.size() > static_cast<uint64_t>(limits_.max_images_per_sample))
    too_large(fmt::format("{}: {} images exceed the limit of {} per sample", where, value.size(), limits_.max_images_per_sample));
  std::vector<RewardImage> images;
  for (size_t i = 0; i < value.size(); ++i) {
    const std::string item = fmt::format("{}[{}]", where, i);
    if (!value[i].is_string()) bad(fmt::format("{}: must be a string (base64, data URI or path)", item));
    images.push_back(image_from_string(value[i].get<std::string>(), item));
  }
  return images;
}

namespace {

std::string sample_id(const nlohmann::json& sample, size_t index, const std::string& where) {
  const auto* id = find_key(sample, "id");
  if (id == nullptr) return std::to_string(index);
  if (id->is_string()) return id->get<std::string>();
  if (id->is_number_integer()) return id->dump();
  bad(where + ".id: must be a string or an integer");
}

}  // namespace

std::vector<DecodedSample> RequestDecoder::decode_score(const nlohmann::json& body, int64_t* deadline_ms) const {
  return decoding("body", [&] { return decode_score_unguarded(body, deadline_ms); });
}

std::vector<DecodedSample> RequestDecoder::decode_score_unguarded(const nlohmann::json& body, int64_t* deadline_ms) const {
  if (!body.is_object()) bad("body: must be a JSON object {\"samples\": [...]}");
  static const std::set<std::string> known_body = {"samples", "deadline_ms"};
  for (const auto& [key, _] : body.items())
    if (!known_body.count(key)) bad(fmt::format("body: unknown key \"{}\"", shorten(key)));
  *deadline_ms = 0;
  if (const auto* d = find_key(body, "deadline_ms")) {
    if (!d->is_number_integer() || d->get<int64_t>() <= 0) bad("body.deadline_ms: must be a positive integer");
    *deadline_ms = d->get<int64_t>();
  }
  const auto* samples = find_key(body, "samples");
  if (samples == nullptr || !samples->is_array()) bad("body.samples: required, a list of samples");
  check_sample_count(samples->size(), "body.samples");
  static const std::set<std::string> known_sample = {"id", "system", "messages", "question", "images", "image",
                                                     "response", "reference", "metadata"};
  std::vector<DecodedSample> out;
  out.reserve(samples->size());
  for (size_t i = 0; i < samples->size(); ++i) {
    const auto& s = (*samples)[i];
    const std::string where = fmt::format("samples[{}]", i);
    if (!s.is_object()) bad(where + ": must be an object");
    for (const auto& [key, _] : s.items())
      if (!known_sample.count(key)) bad(fmt::format("{}: unknown key \"{}\"", where, shorten(key)));
    RewardRequest r;
    r.id = sample_id(s, i, where);
    if (find_key(s, "system")) r.system_prompt = get_string(s, "system", where, true);
    r.response = get_string(s, "response", where, true);
    if (find_key(s, "reference")) r.reference = get_string(s, "reference", where, true);
    if (const auto* meta = find_key(s, "metadata")) {
      if (!meta->is_object()) bad(where + ".metadata: must be an object of strings");
      for (const auto& [key, value] : meta->items()) {
        if (!value.is_string()) bad(fmt::format("{}.metadata.{}: must be a string", where, shorten(key)));
        r.metadata[key] = value.get<std::string>();
      }
    }
    const auto* messages = find_key(s, "messages");
    if (messages != nullptr) {
      if (find_key(s, "question") || find_key(s, "images") || find_key(s, "image"))
        bad(where + ": give \"messages\" or \"question\"/\"images\", not both");
      if (!messages->is_array()) bad(where + ".messages: must be a list of {role, content}");
      for (size_t m = 0; m < messages->size(); ++m) {
        const auto& msg = (*messages)[m];
        const std::string mw = fmt::format("{}.messages[{}]", where, m);
        if (!msg.is_object()) bad(mw + ": must be an object {role, content}");
        const std::string role = get_string(msg, "role", mw, true);
        const auto* content = find_key(msg, "content");
        if (content == nullptr) bad(mw + ": missing \"content\"");
        if (role == "system") {
          if (m != 0 || r.system_prompt) bad(mw + ": a system message may only come first (and not with \"system\")");
          if (!content->is_string()) bad(mw + ".content: a system message's content must be a string");
          r.system_prompt = content->get<std::string>();
          continue;
        }
        RewardTurn turn{role, {}};
        if (content->is_string()) {
          turn.content.push_back(RewardContent::text_part(content->get<std::string>()));
        } else if (content->is_array()) {
          for (size_t p = 0; p < content->size(); ++p) {
            const auto& part = (*content)[p];
            const std::string pw = fmt::format("{}.content[{}]", mw, p);
            if (!part.is_object()) bad(pw + ": must be an object {\"type\": \"text\" | \"image\", ...}");
            const std::string type = get_string(part, "type", pw, true);
            if (type == "text") {
              turn.content.push_back(RewardContent::text_part(get_string(part, "text", pw, true)));
            } else if (type == "image") {
              if (const auto* image = find_key(part, "image")) {
                if (!image->is_string()) bad(pw + ".image: must be a string (base64, data URI or path)");
                turn.content.push_back(RewardContent::image_part(image_from_string(image->get<std::string>(), pw + ".image")));
              } else if (find_key(part, "data")) {
                const std::string data = get_string(part, "data", pw, true);
                if (data.size() / 4 * 3 > limits_.max_image_bytes + 3)
                  too_large(fmt::format("{}.data: image exceeds the limit of {} bytes", pw, limits_.max_image_bytes));
                auto bytes = base64_decode(data);
                if (!bytes) bad(pw + ".data: invalid base64");
                turn.content.push_back(RewardContent::image_part(
                    RewardImage::from_bytes(std::move(*bytes), get_string(part, "mime_type", pw, false))));
              } else if (find_key(part, "path")) {
                turn.content.push_back(RewardContent::image_part(image_from_path(get_string(part, "path", pw, true), pw + ".path")));
              } else {
                bad(pw + ": an image part needs \"image\", \"data\" or \"path\"");
              }
            } else if (type == "image_url") {
              // OpenAI's part: {"image_url": {"url": ...}} (or the url as a string).
              const auto* value = find_key(part, "image_url");
              const nlohmann::json* url = value != nullptr && value->is_object() ? find_key(*value, "url") : value;
              if (url == nullptr || !url->is_string())
                bad(pw + ".image_url: must be {\"url\": a data URI or a path under image_root}");
              turn.content.push_back(RewardContent::image_part(image_from_string(url->get<std::string>(), pw + ".image_url.url")));
            } else {
              bad(fmt::format("{}.type: must be \"text\", \"image\" or \"image_url\" (got \"{}\")", pw, shorten(type)));
            }
          }
        } else {
          bad(mw + ".content: must be a string or a list of parts");
        }
        r.turns.push_back(std::move(turn));
      }
    } else {
      std::vector<RewardImage> images;
      if (const auto* list = find_key(s, "images")) images = image_list(*list, where + ".images");
      if (const auto* one = find_key(s, "image")) {
        if (!one->is_string()) bad(where + ".image: must be a string (base64, data URI or path)");
        images.push_back(image_from_string(one->get<std::string>(), where + ".image"));
      }
      r = [&] {
        auto single = RewardRequest::single_turn(r.id, std::move(images), get_string(s, "question", where, true),
                                                 std::move(r.response), std::move(r.reference));
        single.system_prompt = std::move(r.system_prompt);
        single.metadata = std::move(r.metadata);
        return single;
      }();
    }
    out.push_back(finish_sample(std::move(r), where));
  }
  check_request(out, "body.samples");
  return out;
}

GetRewardRequest RequestDecoder::decode_get_reward(const nlohmann::json& body) const {
  return decoding("body", [&] { return decode_get_reward_unguarded(body); });
}

GetRewardRequest RequestDecoder::decode_get_reward_unguarded(const nlohmann::json& body) const {
  if (!body.is_object()) bad("body: must be a JSON object {\"query\": [...], \"prompts\": [...], \"labels\": [...]}");
  const auto* query = find_key(body, "query");
  if (query == nullptr) bad("body: missing \"query\"");
  const auto queries = string_list(*query, "query");
  check_sample_count(queries.size(), "query");
  std::vector<std::string> prompts;
  std::vector<std::optional<std::string>> labels;  // OpenRLHF sends null for rows without a label
  if (const auto* p = find_key(body, "prompts")) prompts = string_list(*p, "prompts");
  if (const auto* l = find_key(body, "labels")) {
    if (!l->is_array()) bad(fmt::format("labels: must be a list of strings or nulls (got {})", l->type_name()));
    for (size_t i = 0; i < l->size(); ++i) {
      const auto& label = (*l)[i];
      if (!label.is_string() && !label.is_null())
        bad(fmt::format("labels[{}]: must be a string or null (got {})", i, label.type_name()));
      labels.push_back(label.is_null() ? std::nullopt : std::optional<std::string>(label.get<std::string>()));
    }
  }
  if (!prompts.empty() && prompts.size() != queries.size())
    bad(fmt::format("prompts: {} prompts for {} queries", prompts.size(), queries.size()));
  if (!labels.empty() && labels.size() != queries.size())
    bad(fmt::format("labels: {} labels for {} queries", labels.size(), queries.size()));
  const nlohmann::json* images = find_key(body, "images");
  if (images != nullptr) {
    if (!images->is_array()) bad("images: must be a list (one list of images per query)");
    if (images->size() != queries.size())
      bad(fmt::format("images: {} image lists for {} queries", images->size(), queries.size()));
  }
  GetRewardRequest out;
  for (size_t i = 0; i < queries.size(); ++i) {
    const std::string where = fmt::format("query[{}]", i);
    if (queries[i].size() > limits_.max_text_bytes)
      too_large(fmt::format("{}: {} bytes of text exceed the limit of {} bytes", where, queries[i].size(), limits_.max_text_bytes));
    std::vector<RewardImage> sample_images;
    if (images != nullptr) sample_images = image_list((*images)[i], fmt::format("images[{}]", i));
    std::optional<std::string_view> prompt;
    if (!prompts.empty()) prompt = prompts[i];
    auto parsed = request_from_policy_text(queries[i], prompt, std::move(sample_images), where, prompt_lookup(where));
    parsed.request.id = std::to_string(i);
    if (!labels.empty()) parsed.request.reference = labels[i];
    out.samples.push_back(finish_sample(std::move(parsed.request), where));
  }
  check_request(out.samples, "query");
  return out;
}

ClassifyRequest RequestDecoder::decode_classify(const nlohmann::json& body) const {
  return decoding("body", [&] { return decode_classify_unguarded(body); });
}

ClassifyRequest RequestDecoder::decode_classify_unguarded(const nlohmann::json& body) const {
  if (!body.is_object()) bad("body: must be a JSON object {\"model\", \"input\", \"activation\"}");
  const auto* input = find_key(body, "input");
  if (input == nullptr) bad("body: missing \"input\"");
  const auto inputs = string_list(*input, "input");
  check_sample_count(inputs.size(), "input");
  ClassifyRequest out;
  if (const auto* activation = find_key(body, "activation")) {
    if (!activation->is_boolean()) bad("activation: must be true or false");
    out.activation = activation->get<bool>();
  }
  const nlohmann::json* images = find_key(body, "images");
  if (images != nullptr && !images->is_array()) bad("images: must be a list");
  // One input may carry a flat list of images; several inputs carry one list each.
  const bool flat = images != nullptr && inputs.size() == 1 && (images->empty() || (*images)[0].is_string());
  if (images != nullptr && !flat && images->size() != inputs.size())
    bad(fmt::format("images: {} image lists for {} inputs", images->size(), inputs.size()));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string where = fmt::format("input[{}]", i);
    if (inputs[i].size() > limits_.max_text_bytes)
      too_large(fmt::format("{}: {} bytes of text exceed the limit of {} bytes", where, inputs[i].size(), limits_.max_text_bytes));
    std::vector<RewardImage> sample_images;
    if (images != nullptr) sample_images = flat ? image_list(*images, "images") : image_list((*images)[i], fmt::format("images[{}]", i));
    auto parsed = request_from_policy_text(inputs[i], std::nullopt, std::move(sample_images), where, prompt_lookup(where));
    parsed.request.id = std::to_string(i);
    out.samples.push_back(finish_sample(std::move(parsed.request), where));
  }
  check_request(out.samples, "input");
  return out;
}

std::vector<DecodedSample> RequestDecoder::decode_proto(const serve::ScoreRequest& request) const {
  return decoding("request", [&] { return decode_proto_unguarded(request); });
}

std::vector<DecodedSample> RequestDecoder::decode_proto_unguarded(const serve::ScoreRequest& request) const {
  check_sample_count(static_cast<size_t>(request.samples_size()), "samples");
  std::vector<DecodedSample> out;
  out.reserve(static_cast<size_t>(request.samples_size()));
  for (int i = 0; i < request.samples_size(); ++i) {
    const auto& s = request.samples(i);
    const std::string where = fmt::format("samples[{}]", i);
    RewardRequest r;
    r.id = s.id().empty() ? std::to_string(i) : s.id();
    if (s.has_system_prompt()) r.system_prompt = s.system_prompt();
    if (s.has_reference()) r.reference = s.reference();
    r.response = s.response();
    for (const auto& [key, value] : s.metadata()) r.metadata[key] = value;
    for (int t = 0; t < s.turns_size(); ++t) {
      const auto& turn = s.turns(t);
      RewardTurn out_turn{turn.role(), {}};
      for (int p = 0; p < turn.content_size(); ++p) {
        const auto& part = turn.content(p);
        const std::string pw = fmt::format("{}.turns[{}].content[{}]", where, t, p);
        if (part.has_image()) {
          const auto& image = part.image();
          if (!image.data().empty() && !image.path().empty()) bad(pw + ": an image has data or a path, not both");
          if (!image.data().empty())
            out_turn.content.push_back(RewardContent::image_part(RewardImage::from_bytes(image.data(), image.mime_type())));
          else if (!image.path().empty())
            out_turn.content.push_back(RewardContent::image_part(image_from_path(image.path(), pw + ".path")));
          else
            bad(pw + ": an image needs data or a path");
        } else if (part.part_case() == serve::Content::kText) {
          out_turn.content.push_back(RewardContent::text_part(part.text()));
        } else {
          bad(pw + ": empty content part (neither text nor image)");
        }
      }
      r.turns.push_back(std::move(out_turn));
    }
    out.push_back(finish_sample(std::move(r), where));
  }
  check_request(out, "samples");
  return out;
}

}  // namespace vlreward
