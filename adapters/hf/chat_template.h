#pragma once
// The Qwen2-VL chat template rendered natively (no Jinja), and the processor step that expands vision pads.
// Only the official Qwen2-VL / Qwen2.5-VL template is supported; check_chat_template() refuses checkpoints
// that ship a different one, because we would silently render the wrong prompt.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlreward {

// One item of a list-valued message content.
struct ChatContentPart {
  enum class Kind { text, image, video };
  Kind kind = Kind::text;
  std::string text;  // for Kind::text

  static ChatContentPart make_text(std::string text) { return {Kind::text, std::move(text)}; }
  static ChatContentPart image() { return {Kind::image, {}}; }
  static ChatContentPart video() { return {Kind::video, {}}; }
};

struct ChatMessage {
  std::string role;
  // Content is either one string (content_is_string) or a list of parts.
  bool content_is_string = true;
  std::string content;
  std::vector<ChatContentPart> parts;

  static ChatMessage from_text(std::string role, std::string text) {
    return {std::move(role), true, std::move(text), {}};
  }
  static ChatMessage from_parts(std::string role, std::vector<ChatContentPart> parts) {
    return {std::move(role), false, {}, std::move(parts)};
  }
};

struct ChatTemplateOptions {
  bool add_generation_prompt = false;  // append "<|im_start|>assistant\n"
  bool add_vision_id = false;          // "Picture k: " / "Video k: " before each image / video
};

// The exact text of the official Qwen2-VL chat template (as in the hub's chat_template.json).
const std::string& qwen2_vl_chat_template();

// Renders what transformers' apply_chat_template produces with that template: a default system turn when the
// first message is not "system", then "<|im_start|>{role}\n{content}<|im_end|>\n" per message.
std::string render_qwen2_vl_chat(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& options = {});

// Parses OpenAI/transformers-style messages: [{"role": str, "content": str | [{"type": "text", "text": ...} |
// {"type": "image", ...} | {"type": "video", ...}]}]. Items are classified as the template does (an item with an
// "image" or "image_url" key is an image, one with a "video" key a video, else one with "text" is text, other
// items render nothing). `source` names the input in errors.
std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& messages, const std::string& source);

// Size of one image or video in patches: temporal x height x width (Qwen2-VL image_grid_thw rows).
struct GridThw {
  int64_t t = 1;
  int64_t h = 0;
  int64_t w = 0;
};

// The Qwen2-VL processor's text step for images: the k-th "<|image_pad|>" becomes t*h*w / merge_size^2 copies
// of itself (grid k, floor division as in the processor). Throws InputError when the number of pads and of grids
// differ (naming both counts) or a grid is not positive. Like the processor, call it only when images are given.
std::string expand_image_pads(std::string_view text, const std::vector<GridThw>& image_grids, int64_t merge_size = 2);
// The same for "<|video_pad|>" and video grids.
std::string expand_video_pads(std::string_view text, const std::vector<GridThw>& video_grids, int64_t merge_size = 2);

// The chat template a checkpoint directory would use with transformers 4.57 (first found of
// chat_template.json, chat_template.jinja, processor_config.json "chat_template", tokenizer_config.json
// "chat_template"); `found_in` receives the file. Throws InputError if none is present.
std::string read_checkpoint_chat_template(const std::string& dir, std::string* found_in = nullptr);

// Throws InputError naming the file unless the checkpoint's chat template is exactly qwen2_vl_chat_template().
void check_chat_template(const std::string& dir);

}  // namespace vlreward
