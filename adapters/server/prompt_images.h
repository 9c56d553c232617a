#pragma once
// The training prompts with their images, for RL engines whose reward clients send the chat-templated text but
// never the pixels (stock OpenRLHF's /get_reward, verl's /classify and /v1/embeddings). `reward-serve --prompts
// FILE` reads the JSONL the engine trains on; a request whose text has image placeholders but no images gets the
// images of the prompt with the same normalized user turn, in order.
//
// A line: {"prompt": str | [messages], "images": [image, ...] | "image": image, ...} — or "messages" instead of
// "prompt", or "question" (plain text). Messages are {"role", "content": str | [{"type": "text", "text"} |
// {"type": "image" | "image_url", ...}]}; the last user message is the key. An image is a path (relative to the
// file's directory, or absolute), a data URI or base64, or {"path": ...}. Other fields are ignored, so a verl or
// OpenRLHF dataset exported to JSONL works as it is (README: the one-line parquet conversion).
//
// Normalized user turn: the text of the last user turn with the chat template removed; every image placeholder —
// "<|vision_start|>…<|vision_end|>" (any number of pads), a run of "<|image_pad|>", "<image>" or an image part —
// becomes one "<image>"; whitespace runs become one space, none next to "<image>", none at the ends.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vlreward {

std::string normalized_prompt_key(std::string_view user_turn);

class PromptImages {
 public:
  PromptImages() = default;
  // Throws InputError naming "path:line" for a malformed line or an image it cannot resolve (a missing file).
  static PromptImages load(const std::string& path);

  bool empty() const { return prompts_.empty(); }
  size_t size() const { return prompts_.size(); }
  // The images (paths, data URIs or base64, as stored) of the prompt with this key. Throws ServeError (400) naming
  // `where` when no prompt has it, or when two prompts with different images do.
  const std::vector<std::string>& find(const std::string& key, const std::string& where) const;

 private:
  struct Prompt {
    std::vector<std::string> images;
    std::string source;              // "path:line"
    std::string conflicting_source;  // set when another prompt with the same key has other images
  };
  std::unordered_map<std::string, Prompt> prompts_;
};

}  // namespace vlreward
