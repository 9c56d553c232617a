#include "mpo/pair_tokenization.h"

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>

#include "adapters/common/error.h"
#include "adapters/hf/chat_template.h"
#include "adapters/image/decode.h"

namespace vlreward::mpo {

// The rows TRL 0.28's DPOTrainer builds for a vision-language model from a conversational preference example
//   {"images": [...], "prompt": [system?, {"role": "user", "content": [{"type": "image"} x n, {"type": "text"}]}],
//    "chosen": [{"role": "assistant", "content": chosen}], "rejected": [...]}
// (trl/data_utils.py maybe_apply_chat_template, dpo_trainer.py process_row; verified by tests/fixtures/mpo_step):
//   1. prompt text  = template(prompt, add_generation_prompt=True); the Qwen2-VL template adds the default system
//      turn when the example has none.
//   2. completion   = template(prompt + [assistant turn], add_generation_prompt=False) minus the longest common
//      prefix with the prompt text (taken against chosen first, then rejected, as TRL does; with the Qwen2-VL
//      template that prefix is the whole prompt), i.e. "<chosen><|im_end|>\n": the end-of-turn token AND the
//      newline after it are trained. For conversational data TRL appends no eos of its own.
//   3. prompt ids   = processor(images, prompt text, add_special_tokens=False): each <|image_pad|> expanded to
//      grid_t*grid_h*grid_w / merge_size^2 copies; completion ids = tokenizer(completion, add_special_tokens=False),
//      tokenized SEPARATELY from the prompt (not as one string).
//   4. No truncation here. TRL 0.28 never truncates a VLM prompt (max_prompt_length is ignored for vision models)
//      and max_completion_length defaults to None; its max_length (default 1024, truncation_mode "keep_end") acts
//      on the concatenated row inside the forward and would cut image tokens, so long pairs are the caller's
//      (the trainer's) to filter.
// Where we deliberately differ from TRL 0.28: every image's patches and grid are kept (process_row keeps only
// pixel_values[0], the first patch row, and never passes image_grid_thw, so Qwen2.5-VL fails or — with the default
// remove_unused_columns — trains on the image pad embeddings without the images; huggingface/trl#2660), and a
// text-only pair (no images) is allowed (TRL's process_row needs pixel_values).
namespace {

RgbImage decode_reward_image(const RewardImage& image, const std::string& where) {
  try {
    if (!image.bytes.empty()) return decode_image(image.bytes, where);
    if (!image.path.empty()) return decode_image_file(image.path);
  } catch (const InputError& e) {
    if (!image.path.empty()) throw InputError(where, e.what());  // name the pair as well as the file
    throw;
  }
  throw InputError(where, "has neither bytes nor a path");
}

size_t common_prefix_length(const std::string& a, const std::string& b) {
  return static_cast<size_t>(std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(std::min(a.size(), b.size())),
                                           b.begin())
                                 .first -
                             a.begin());
}

std::vector<int64_t> encode_completion(const Qwen2_5_VLProcessor& processor, const std::string& text,
                                       const std::string& source, const char* field) {
  std::vector<int64_t> ids = processor.encode(text);
  if (ids.empty()) throw_input_error(source, "{} has no tokens", field);
  return ids;
}

}  // namespace

namespace {

std::vector<ChatMessage> prompt_messages(const std::optional<std::string>& system_prompt, size_t num_images,
                                         const std::string& question) {
  std::vector<ChatMessage> prompt;
  if (system_prompt) prompt.push_back(ChatMessage::from_text("system", *system_prompt));
  std::vector<ChatContentPart> user(num_images, ChatContentPart::image());
  user.push_back(ChatContentPart::make_text(question));
  prompt.push_back(ChatMessage::from_parts("user", std::move(user)));
  return prompt;
}

// Decodes and preprocesses the images, expands their pads in `prompt_text` and tokenizes it.
TokenizedPrompt finish_prompt(const Qwen2_5_VLProcessor& processor, std::string prompt_text,
                              const std::vector<RewardImage>& reward_images, const std::string& source) {
  TokenizedPrompt out;
  if (!reward_images.empty()) {
    std::vector<RgbImage> images;
    std::vector<std::string> sources;
    images.reserve(reward_images.size());
    for (size_t i = 0; i < reward_images.size(); ++i) {
      sources.push_back(fmt::format("{}: images[{}]", source, i));
      images.push_back(decode_reward_image(reward_images[i], sources.back()));
    }
    out.images = processor.image_processor().preprocess(images, sources);
    std::vector<GridThw> grids;
    for (const auto& g : out.images.grid_thw) grids.push_back({g[0], g[1], g[2]});
    try {
      prompt_text = expand_image_pads(prompt_text, grids, processor.image_processor().config().merge_size);
    } catch (const InputError& e) {  // e.g. a question that itself contains "<|image_pad|>"
      throw InputError(source, e.what());
    }
  }
  out.ids = processor.encode(prompt_text);
  return out;
}

ChatTemplateOptions with_generation_prompt() {
  ChatTemplateOptions options;
  options.add_generation_prompt = true;
  return options;
}

}  // namespace

TokenizedPrompt tokenize_prompt(const Qwen2_5_VLProcessor& processor, const std::vector<RewardImage>& images,
                                const std::optional<std::string>& system_prompt, const std::string& question,
                                const std::string& source) {
  const auto prompt = prompt_messages(system_prompt, images.size(), question);
  return finish_prompt(processor, render_qwen2_vl_chat(prompt, with_generation_prompt()), images, source);
}

namespace {

// tokenize_pair and tokenize_sft: `with_rejected` false skips the rejected completion. With the Qwen2-VL
// template the prompt prefix is the whole prompt either way, so the chosen tokens do not depend on it.
TokenizedPair tokenize(const Qwen2_5_VLProcessor& processor, const PreferenceRecord& example,
                       const std::string& source, bool with_rejected) {
  if (example.chosen.empty()) throw_input_error(source, "\"chosen\" is empty");
  if (with_rejected && example.rejected.empty()) throw_input_error(source, "\"rejected\" is empty");

  const auto prompt = prompt_messages(example.system_prompt, example.images.size(), example.question);
  std::string prompt_text = render_qwen2_vl_chat(prompt, with_generation_prompt());
  auto with_answer = [&](const std::string& answer) {
    std::vector<ChatMessage> messages = prompt;
    messages.push_back(ChatMessage::from_text("assistant", answer));
    return render_qwen2_vl_chat(messages);
  };
  const std::string prompt_chosen = with_answer(example.chosen);
  prompt_text.resize(common_prefix_length(prompt_text, prompt_chosen));
  const std::string chosen_text = prompt_chosen.substr(prompt_text.size());
  std::string rejected_text;
  if (with_rejected) {
    const std::string prompt_rejected = with_answer(example.rejected);
    prompt_text.resize(common_prefix_length(prompt_text, prompt_rejected));
    rejected_text = prompt_rejected.substr(prompt_text.size());
  }

  TokenizedPrompt prompt_tokens = finish_prompt(processor, std::move(prompt_text), example.images, source);
  TokenizedPair out;
  out.images = std::move(prompt_tokens.images);
  out.tokens.prompt = std::move(prompt_tokens.ids);
  out.tokens.chosen = encode_completion(processor, chosen_text, source, "chosen");
  if (with_rejected) out.tokens.rejected = encode_completion(processor, rejected_text, source, "rejected");
  return out;
}

}  // namespace

TokenizedPair tokenize_pair(const Qwen2_5_VLProcessor& processor, const PreferenceRecord& example,
                            const std::string& source) {
  return tokenize(processor, example, source, true);
}

TokenizedPair tokenize_sft(const Qwen2_5_VLProcessor& processor, const PreferenceRecord& example,
                           const std::string& source) {
  return tokenize(processor, example, source, false);
}

}  // namespace vlreward::mpo
