#pragma once
// Qwen2.5-VL processor: chat template + image processor + tokenizer, from a checkpoint directory.
// Turns a conversation with images into model input ids (image pads expanded per grid) and pixel values.
// Torch-free; the model layer wraps the result in tensors.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/hf/chat_template.h"
#include "adapters/hf/tokenizer.h"
#include "adapters/image/qwen2_vl_image_processor.h"

namespace vlreward {

struct ProcessorOptions {
  std::optional<int64_t> min_pixels;  // override preprocessor_config.json
  std::optional<int64_t> max_pixels;
};

struct ProcessedInput {
  std::vector<int64_t> input_ids;
  ImageFeatures images;  // pixel values + grid per image, in order of appearance
};

class Qwen2_5_VLProcessor {
 public:
  // Reads tokenizer.json / tokenizer_config.json, preprocessor_config.json and checks the chat template.
  static Qwen2_5_VLProcessor from_directory(const std::string& dir, const ProcessorOptions& options = {});

  // messages: image parts are placeholders, filled in order from `images` (counts must match).
  ProcessedInput process(const std::vector<ChatMessage>& messages, const std::vector<RgbImage>& images,
                         const ChatTemplateOptions& options, const std::string& source) const;
  // Tokenizes text that already holds expanded pads (or none).
  std::vector<int64_t> encode(const std::string& text) const;

  const Tokenizer& tokenizer() const { return tokenizer_; }
  const Qwen2VLImageProcessor& image_processor() const { return image_processor_; }
  int64_t pad_token_id() const { return pad_token_id_; }

 private:
  Qwen2_5_VLProcessor(Tokenizer tokenizer, Qwen2VLImageProcessor image_processor, int64_t pad_token_id)
      : tokenizer_(std::move(tokenizer)), image_processor_(std::move(image_processor)), pad_token_id_(pad_token_id) {}

  Tokenizer tokenizer_;
  Qwen2VLImageProcessor image_processor_;
  int64_t pad_token_id_;
};

}  // namespace vlreward
