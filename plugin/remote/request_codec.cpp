#include "plugin/remote/request_codec.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "plugin/remote/attempt_failure.h"
#include "plugin/wire/base64.h"
#include "plugin/wire/frame_codec.h"
#include "reward_service.pb.h"

namespace vlreward::remote {
namespace {

std::string read_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read image \"{}\": {}", path, std::strerror(errno)));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error(fmt::format("cannot read image \"{}\"", path));
  return bytes;
}

// The bytes of an image as the server should get them (path images are read here).
const std::string& image_bytes(const RewardImage& image, std::string& storage) {
  if (image.path.empty()) return image.bytes;
  storage = read_image_file(image.path);
  return storage;
}

nlohmann::json sample_to_json(const RewardRequest& r) {
  nlohmann::json s = {{"id", r.id}, {"response", r.response}};
  if (r.system_prompt) s["system"] = *r.system_prompt;
  if (r.reference) s["reference"] = *r.reference;
  if (!r.metadata.empty()) s["metadata"] = r.metadata;
  nlohmann::json messages = nlohmann::json::array();
  for (const auto& turn : r.turns) {
    nlohmann::json content = nlohmann::json::array();
    for (const auto& part : turn.content) {
      if (part.kind == RewardContent::Kind::kText) {
        content.push_back({{"type", "text"}, {"text", part.text}});
      } else {
        std::string storage;
        nlohmann::json image = {{"type", "image"}, {"data", base64_encode(image_bytes(part.image, storage))}};
        if (!part.image.mime_type.empty()) image["mime_type"] = part.image.mime_type;
        content.push_back(std::move(image));
      }
    }
    messages.push_back({{"role", turn.role}, {"content", std::move(content)}});
  }
  s["messages"] = std::move(messages);
  return s;
}

void sample_to_proto(const RewardRequest& r, serve::Sample* s) {
  s->set_id(r.id);
  if (r.system_prompt) s->set_system_prompt(*r.system_prompt);
  if (r.reference) s->set_reference(*r.reference);
  for (const auto& [key, value] : r.metadata) (*s->mutable_metadata())[key] = value;
  s->set_response(r.response);
  for (const auto& turn : r.turns) {
    auto* t = s->add_turns();
    t->set_role(turn.role);
    for (const auto& part : turn.content) {
      if (part.kind == RewardContent::Kind::kText) {
        t->add_content()->set_text(part.text);
      } else {
        std::string storage;
        auto* image = t->add_content()->mutable_image();
        image->set_data(image_bytes(part.image, storage));
        if (!part.image.mime_type.empty()) image->set_mime_type(part.image.mime_type);
      }
    }
  }
}

bool retryable_binary_code(int code) {
  switch (code) {
    case serve::OVERLOADED:
    case serve::DEADLINE_EXCEEDED:
    case serve::INTERNAL:
    case serve::SHUTTING_DOWN:
    case serve::TIMEOUT:
      return true;
    default:
      return false;  // BAD_REQUEST, UNAUTHORIZED, TOO_LARGE, UNPROCESSABLE: the same request fails the same way
  }
}

std::string shorten(const std::string& text, size_t limit = 300) {
  return text.size() <= limit ? text : text.substr(0, limit) + "...";
}

}  // namespace

PreparedRequest encode_request(const std::vector<RewardRequest>& batch, const std::vector<size_t>& members,
                               const RemoteBackendOptions& options, uint64_t request_id,
                               std::vector<RewardResult>& results) {
  PreparedRequest p;
  p.request_id = request_id;
  nlohmann::json samples = nlohmann::json::array();
  serve::ScoreRequest proto;
  for (size_t index : members) {
    const RewardRequest& r = batch[index];
    try {
      if (options.protocol == RemoteProtocol::kHttp) {
        samples.push_back(sample_to_json(r));
      } else {
        serve::Sample s;
        sample_to_proto(r, &s);
        *proto.add_samples() = std::move(s);
      }
    } catch (const std::exception& e) {
      results[index] = RewardResult::failure(std::string("remote reward: ") + e.what());
      continue;
    }
    p.positions.push_back(index);
    p.ids.push_back(r.id);
  }
  if (p.positions.empty()) return p;
  if (options.protocol == RemoteProtocol::kHttp) {
    nlohmann::json body = {{"samples", std::move(samples)}, {"deadline_ms", options.timeout_ms}};
    p.payload = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    proto.set_request_id(p.request_id);
    proto.set_deadline_ms(static_cast<uint32_t>(std::min<int64_t>(options.timeout_ms, UINT32_MAX)));
    if (!options.token.empty()) proto.set_auth_token(options.token);
    p.payload = encode_frame(proto.SerializeAsString());
  }
  return p;
}

std::vector<RewardResult> decode_http_answer(const HttpAnswer& answer, const PreparedRequest& p) {
  nlohmann::json body = nlohmann::json::parse(answer.body, nullptr, false);
  if (answer.status != 200) {
    std::string message = shorten(answer.body);
    if (body.is_object() && body.contains("error") && body["error"].is_object() &&
        body["error"].value("message", nlohmann::json()).is_string())
      message = body["error"]["message"].get<std::string>();
    const bool retryable = answer.status >= 500 && answer.status != 501 && answer.status != 505;
    throw AttemptFailure(retryable, fmt::format("HTTP {}: {}", answer.status, message), answer.retry_after_ms,
                         answer.status == 503);
  }
  auto bad = [&](const std::string& problem) -> AttemptFailure {
    return AttemptFailure(false, "answered HTTP 200 with " + problem);
  };
  if (!body.is_object() || !body.contains("results") || !body["results"].is_array())
    throw bad("a body without a \"results\" list: " + shorten(answer.body));
  const auto& list = body["results"];
  if (list.size() != p.positions.size())
    throw bad(fmt::format("{} results for {} samples", list.size(), p.positions.size()));
  std::vector<RewardResult> out;
  for (size_t k = 0; k < list.size(); ++k) {
    const auto& item = list[k];
    if (!item.is_object() || !item.contains("id") || item["id"] != p.ids[k])
      throw bad(fmt::format("results[{}] not for sample id \"{}\"", k, p.ids[k]));
    RewardResult result;
    if (item.contains("score") && item["score"].is_number()) {
      result = RewardResult::success(item["score"].get<double>());
    } else if (item.contains("error") && item["error"].is_string()) {
      result = RewardResult::failure(item["error"].get<std::string>());
    } else {
      throw bad(fmt::format("results[{}] holding neither a score nor an error", k));
    }
    if (item.contains("components") && item["components"].is_object())
      for (const auto& [name, value] : item["components"].items())
        if (value.is_number()) result.components[name] = value.get<double>();
    out.push_back(std::move(result));
  }
  return out;
}

std::vector<RewardResult> decode_binary_answer(const serve::ScoreResponse& response, const PreparedRequest& p) {
  if (response.has_error() && response.error().code() != serve::ERROR_NONE) {
    const auto& e = response.error();
    throw AttemptFailure(retryable_binary_code(e.code()),
                         fmt::format("{}: {}", serve::ErrorCode_Name(e.code()), e.message()),
                         e.retry_after_ms() > 0 ? static_cast<int64_t>(e.retry_after_ms()) : -1,
                         e.code() == serve::OVERLOADED || e.code() == serve::SHUTTING_DOWN);
  }
  if (response.request_id() != p.request_id)
    throw AttemptFailure(false, fmt::format("answered request {} to request {}", response.request_id(), p.request_id));
  if (static_cast<size_t>(response.results_size()) != p.positions.size())
    throw AttemptFailure(false, fmt::format("answered {} results for {} samples", response.results_size(),
                                            p.positions.size()));
  std::vector<RewardResult> out;
  for (int k = 0; k < response.results_size(); ++k) {
    const auto& item = response.results(k);
    if (item.id() != p.ids[k])
      throw AttemptFailure(false, fmt::format("answered results[{}] for id \"{}\", not \"{}\"", k,
                                              shorten(item.id(), 60), shorten(p.ids[k], 60)));
    RewardResult result;
    if (item.outcome_case() == serve::SampleResult::kScore) {
      result = RewardResult::success(item.score());
    } else if (item.outcome_case() == serve::SampleResult::kError) {
      result = RewardResult::failure(item.error());
    } else {
      throw AttemptFailure(false, fmt::format("answered results[{}] with neither a score nor an error", k));
    }
    for (const auto& [name, value] : item.components()) result.components[name] = value;
    out.push_back(std::move(result));
  }
  return out;
}

bool is_request_error(const serve::ScoreResponse& response) {
  return response.has_error() && response.error().code() != serve::ERROR_NONE;
}

}  // namespace vlreward::remote
