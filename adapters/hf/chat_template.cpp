#include "adapters/hf/chat_template.h"

#include <cstdint>
#include <filesystem>
#include <optional>

#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"

namespace vlreward {
namespace {

constexpr std::string_view kImagePad = "<|image_pad|>";
constexpr std::string_view kVideoPad = "<|video_pad|>";

size_t count_occurrences(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != text.npos; pos = text.find(needle, pos + needle.size())) ++n;
  return n;
}

int64_t pads_for_grid(const GridThw& g, int64_t merge_size, const char* what, size_t index) {
  if (g.t <= 0 || g.h <= 0 || g.w <= 0 || g.t > (1 << 20) || g.h > (1 << 20) || g.w > (1 << 20))
    throw_input_error(fmt::format("{}_grid_thw[{}]", what, index), "grid [{}, {}, {}] must be positive (and sane)",
                      g.t, g.h, g.w);
  return g.t * g.h * g.w / (merge_size * merge_size);  // floor division, as the processor does
}

// Replaces each occurrence of `pad` in order with the number of pads its grid asks for.
std::string expand_one_kind(std::string_view text, std::string_view pad, const std::vector<GridThw>& grids,
                            int64_t merge_size, const char* what) {
  const size_t pads = count_occurrences(text, pad);
  if (pads != grids.size())
    throw_input_error(fmt::format("{}_grid_thw", what), "the text has {} {} tokens but {} {} grids were given",
                      pads, pad, grids.size(), what);
  std::string out;
  size_t pos = 0, k = 0;
  for (size_t hit = text.find(pad); hit != text.npos; hit = text.find(pad, pos)) {
    out.append(text.substr(pos, hit - pos));
    const int64_t copies = pads_for_grid(grids[k], merge_size, what, k);
    for (int64_t c = 0; c < copies; ++c) out.append(pad);
    pos = hit + pad.size();
    ++k;
  }
  out.append(text.substr(pos));
  return out;
}

std::string json_string_at(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) throw_input_error(where, "\"{}\" must be a string", key);
  return it->get<std::string>();
}

}  // namespace

const std::string& qwen2_vl_chat_template() {
  static const std::string text =
      "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
      "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
      "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ "
      "message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == "
      "'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 "
      "%}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end"
      "|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + "
      "1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end"
      "|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor "
      "%}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
  return text;
}

std::string render_qwen2_vl_chat(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& options) {
  std::string out;
  int image_count = 0, video_count = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (i == 0 && m.role != "system") out += "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
    out += "<|im_start|>";
    out += m.role;
    out += '\n';
    if (m.content_is_string) {
      out += m.content;
    } else {
      for (const ChatContentPart& part : m.parts) {
        switch (part.kind) {
          case ChatContentPart::Kind::image:
            ++image_count;
            if (options.add_vision_id) out += fmt::format("Picture {}: ", image_count);
            out += "<|vision_start|><|image_pad|><|vision_end|>";
            break;
          case ChatContentPart::Kind::video:
            ++video_count;
            if (options.add_vision_id) out += fmt::format("Video {}: ", video_count);
            out += "<|vision_start|><|video_pad|><|vision_end|>";
            break;
          case ChatContentPart::Kind::text:
            out += part.text;
            break;
        }
      }
    }
    out += "<|im_end|>\n";
  }
  if (options.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& messages, const std::string& source) {
  if (!messages.is_array()) throw_input_error(source, "messages must be an array");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string where = fmt::format("{}[{}]", source, i);
    const auto& m = messages[i];
    if (!m.is_object()) throw_input_error(where, "a message must be an object");
    ChatMessage message;
    message.role = json_string_at(m, "role", where);
    const auto content = m.find("content");
    if (content == m.end()) throw_input_error(where, "\"content\" is missing");
    if (content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content->is_array()) {
      message.content_is_string = false;
      for (size_t k = 0; k < content->size(); ++k) {
        const std::string item_where = fmt::format("{}.content[{}]", where, k);
        const auto& item = (*content)[k];
        if (!item.is_object()) throw_input_error(item_where, "a content item must be an object");
        const auto type_it = item.find("type");
        const std::string type = type_it != item.end() && type_it->is_string() ? type_it->get<std::string>() : "";
        if (type == "image" || item.contains("image") || item.contains("image_url")) {
          message.parts.push_back(ChatContentPart::image());
        } else if (type == "video" || item.contains("video")) {
          message.parts.push_back(ChatContentPart::video());
        } else if (item.contains("text")) {
          message.parts.push_back(ChatContentPart::make_text(json_string_at(item, "text", item_where)));
        }  // anything else renders nothing, as in the template
      }
    } else {
      throw_input_error(where, "\"content\" must be a string or an array of content items");
    }
    out.push_back(std::move(message));
  }
  return out;
}

std::string expand_image_pads(std::string_view text, const std::vector<GridThw>& image_grids, int64_t merge_size) {
  if (merge_size <= 0) throw_input_error("merge_size", "must be positive, got {}", merge_size);
  return expand_one_kind(text, kImagePad, image_grids, merge_size, "image");
}

std::string expand_video_pads(std::string_view text, const std::vector<GridThw>& video_grids, int64_t merge_size) {
  if (merge_size <= 0) throw_input_error("merge_size", "must be positive, got {}", merge_size);
  return expand_one_kind(text, kVideoPad, video_grids, merge_size, "video");
}

std::string read_checkpoint_chat_template(const std::string& dir, std::string* found_in) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  const auto from_json_key = [](const fs::path& path) -> std::optional<std::string> {
    if (!fs::exists(path)) return std::nullopt;
    const nlohmann::json j = read_json_file(path.string());
    if (!j.is_object() || !j.contains("chat_template") || j["chat_template"].is_null()) return std::nullopt;
    const auto& t = j["chat_template"];
    if (t.is_string()) return t.get<std::string>();
    // a list of named templates: the "default" one is used
    if (t.is_array()) {
      for (const auto& entry : t)
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
            entry["template"].is_string())
          return entry["template"].get<std::string>();
    }
    throw_input_error(path.string(), "\"chat_template\" must be a string or a list with a \"default\" template");
  };
  const fs::path legacy = root / "chat_template.json", jinja = root / "chat_template.jinja";
  std::optional<std::string> text;
  fs::path where;
  if ((text = from_json_key(legacy))) {
    where = legacy;
  } else if (fs::exists(jinja)) {
    text = read_file(jinja.string());
    where = jinja;
  } else if ((text = from_json_key(root / "processor_config.json"))) {
    where = root / "processor_config.json";
  } else if ((text = from_json_key(root / "tokenizer_config.json"))) {
    where = root / "tokenizer_config.json";
  } else {
    throw_input_error(dir, "no chat template found (looked for chat_template.json, chat_template.jinja and a "
                           "\"chat_template\" key in processor_config.json / tokenizer_config.json)");
  }
  if (found_in) *found_in = where.string();
  return *text;
}

void check_chat_template(const std::string& dir) {
  std::string where;
  const std::string text = read_checkpoint_chat_template(dir, &where);
  if (text == qwen2_vl_chat_template()) return;
  size_t at = 0;
  const std::string& known = qwen2_vl_chat_template();
  while (at < text.size() && at < known.size() && text[at] == known[at]) ++at;
  throw_input_error(where,
                    "chat template differs from the official Qwen2-VL template at character {} (found \"{}\", "
                    "expected \"{}\"); only that template is rendered natively, Jinja templates are not interpreted",
                    at, text.substr(at, 40), known.substr(at, 40));
}

}  // namespace vlreward
