#include "adapters/server/prompt_images.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/server/error.h"
#include "plugin/error.h"

namespace vlreward {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kVisionStart = "<|vision_start|>";
constexpr std::string_view kVisionEnd = "<|vision_end|>";
constexpr std::string_view kImagePad = "<|image_pad|>";
constexpr std::string_view kImageMarker = "<image>";
constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";

bool at(std::string_view s, size_t i, std::string_view token) { return s.compare(i, token.size(), token) == 0; }

// The content of the last "<|im_start|>user\n…" block of chat-templated text, or the text itself.
std::string_view last_user_block(std::string_view text) {
  const std::string opener = std::string(kImStart) + "user\n";
  const auto start = text.rfind(opener);
  if (start == std::string_view::npos) return text;
  std::string_view rest = text.substr(start + opener.size());
  return rest.substr(0, rest.find(kImEnd));
}

std::string message_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw InputError(where, "content: must be a string or a list of parts");
  std::string out;
  for (const auto& part : content) {
    const std::string type = part.is_object() ? part.value("type", "") : "";
    if (type == "text") out += part.value("text", "");
    else if (type == "image" || type == "image_url") out += kImageMarker;
    else throw InputError(where, "content: parts must be {\"type\": \"text\" | \"image\" | \"image_url\", ...}");
  }
  return out;
}

// The last user message of a message list, as text with "<image>" for image parts.
std::string last_user_message(const json& messages, const std::string& where) {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it)
    if (it->is_object() && it->value("role", "") == "user" && it->contains("content"))
      return message_text(it->at("content"), where);
  throw InputError(where, "no user message");
}

std::string image_string(const json& image, const fs::path& dir, const std::string& where) {
  std::string text;
  if (image.is_string()) text = image.get<std::string>();
  else if (image.is_object() && image.contains("path") && image.at("path").is_string()) text = image.at("path").get<std::string>();
  else throw InputError(where, "an image must be a path, a data URI, base64 or {\"path\": ...}");
  if (text.rfind("data:", 0) == 0 || text.size() > 4096) return text;  // inline bytes
  const fs::path path = fs::path(text).is_absolute() ? fs::path(text) : dir / text;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path.string();
  if (text.find('/') == std::string::npos && text.find('.') == std::string::npos) return text;  // base64
  throw InputError(where, fmt::format("image file {} does not exist", path.string()));
}

}  // namespace

std::string normalized_prompt_key(std::string_view text) {
  std::string out;
  bool pending_space = false;
  auto put_image = [&] {
    out += kImageMarker;
    pending_space = false;
  };
  for (size_t i = 0; i < text.size();) {
    if (at(text, i, kVisionStart)) {
      const auto end = text.find(kVisionEnd, i);
      i = end == std::string_view::npos ? text.size() : end + kVisionEnd.size();
      put_image();
      continue;
    }
    if (at(text, i, kImagePad)) {
      while (at(text, i, kImagePad)) i += kImagePad.size();
      put_image();
      continue;
    }
    if (at(text, i, kImageMarker)) {
      i += kImageMarker.size();
      put_image();
      continue;
    }
    const char c = text[i++];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      pending_space = true;
      continue;
    }
    const bool after_image = out.size() >= kImageMarker.size() &&
                             out.compare(out.size() - kImageMarker.size(), kImageMarker.size(), kImageMarker) == 0;
    if (pending_space && !out.empty() && !after_image) out += ' ';
    pending_space = false;
    out += c;
  }
  return out;
}

PromptImages PromptImages::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path, "cannot read the prompts file");
  const fs::path dir = fs::path(path).parent_path();
  PromptImages out;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, number);
    json record;
    try {
      record = json::parse(line);
    } catch (const json::exception& e) {
      throw InputError(where, fmt::format("not JSON: {}", e.what()));
    }
    if (!record.is_object()) throw InputError(where, "must be a JSON object");
    std::string user;
    if (record.contains("prompt") && record.at("prompt").is_string())
      user = std::string(last_user_block(record.at("prompt").get<std::string>()));
    else if (record.contains("prompt") && record.at("prompt").is_array())
      user = last_user_message(record.at("prompt"), where);
    else if (record.contains("messages") && record.at("messages").is_array())
      user = last_user_message(record.at("messages"), where);
    else if (record.contains("question") && record.at("question").is_string())
      user = record.at("question").get<std::string>();
    else
      throw InputError(where, "needs \"prompt\" (text or messages), \"messages\" or \"question\"");
    std::vector<std::string> images;
    if (record.contains("images") && record.at("images").is_array()) {
      for (const auto& image : record.at("images")) images.push_back(image_string(image, dir, where));
    } else if (record.contains("image") && !record.at("image").is_null()) {
      images.push_back(image_string(record.at("image"), dir, where));
    }
    if (images.empty()) continue;  // a text-only prompt needs no images from here
    const std::string key = normalized_prompt_key(user);
    auto [it, inserted] = out.prompts_.try_emplace(key, Prompt{images, where, {}});
    if (!inserted && it->second.images != images && it->second.conflicting_source.empty())
      it->second.conflicting_source = where;
  }
  return out;
}

const std::vector<std::string>& PromptImages::find(const std::string& key, const std::string& where) const {
  const auto it = prompts_.find(key);
  auto shown = key.size() > 80 ? key.substr(0, 77) + "..." : key;
  if (it == prompts_.end())
    throw ServeError(ServeErrorKind::kBadRequest,
                     fmt::format("{}: has image placeholders but no images, and no prompt of --prompts has its user "
                                 "turn \"{}\"", where, shown));
  if (!it->second.conflicting_source.empty())
    throw ServeError(ServeErrorKind::kBadRequest,
                     fmt::format("{}: has image placeholders but no images, and the prompts at {} and {} share its "
                                 "user turn \"{}\" with different images", where, it->second.source,
                                 it->second.conflicting_source, shown));
  return it->second.images;
}

}  // namespace vlreward
