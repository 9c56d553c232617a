#pragma once
// Text that arrives already chat-templated by the policy (OpenRLHF's "query" = prompt + response decoded with the
// policy's special tokens; verl's /classify "input") is turned back into a RewardRequest, so the reward model
// renders it with its OWN chat template (as verl's input_tokenizer switch does).
//
// The rule (also in README.md):
//  * Recognised format: ChatML as Qwen renders it: optional leading "<|endoftext|>" padding, then one or more
//    "<|im_start|>{role}\n{content}<|im_end|>" blocks (separated by optional whitespace), roles system / user /
//    assistant, an optional system block first, the last block an assistant turn whose "<|im_end|>" may be
//    missing (a truncated response), trailing "<|endoftext|>" padding ignored. The last assistant block is the
//    response; the blocks before it are the turns and must end with a user turn.
//    "<|vision_start|><|image_pad|>...<|vision_end|>" inside a turn is an image placeholder: the k-th
//    placeholder takes the k-th sent image. Sent images and placeholders must agree in number, except that
//    images sent for text without placeholders go at the start of the first user turn (the Skywork-VL model
//    card's layout). Placeholders with no images sent take the images of the matching training prompt when the
//    server has them (reward-serve --prompts), and are an error otherwise (scoring a multimodal conversation
//    without its images would be silently wrong); video placeholders are an error (not supported).
//  * Anything else is scored as given: when `prompt` is a prefix of the text, the prompt is the user turn and the
//    rest is the response; otherwise the user turn is empty and the whole text is the response. Sent images go
//    at the start of the user turn.
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/reward.h"

namespace vlreward {

struct PolicyTextResult {
  RewardRequest request;
  bool recognised_chatml = false;
};

// The images of a prompt, found by its user turn (the raw content of the last user block): for clients that send
// placeholders without images (PromptImages). Throws ServeError when there is no such prompt.
using PromptImageLookup = std::function<std::vector<RewardImage>(std::string_view user_turn)>;

// `where` names the input in errors (ServeError kBadRequest), e.g. "query[3]". `lookup`, when set, supplies the
// images of ChatML text with placeholders that came without images.
PolicyTextResult request_from_policy_text(std::string_view text, std::optional<std::string_view> prompt,
                                          std::vector<RewardImage> images, const std::string& where,
                                          const PromptImageLookup& lookup = {});

}  // namespace vlreward
