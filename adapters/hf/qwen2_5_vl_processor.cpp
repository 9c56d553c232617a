#include "adapters/hf/qwen2_5_vl_processor.h"

#include <cstdint>
#include <filesystem>

#include "adapters/common/error.h"

namespace vlreward {

Qwen2_5_VLProcessor Qwen2_5_VLProcessor::from_directory(const std::string& dir, const ProcessorOptions& options) {
  check_chat_template(dir);
  Tokenizer tokenizer = Tokenizer::from_directory(dir);
  const auto preprocessor = std::filesystem::path(dir) / "preprocessor_config.json";
  Qwen2VLImageProcessorConfig config = std::filesystem::exists(preprocessor)
                                           ? Qwen2VLImageProcessorConfig::from_file(preprocessor.string())
                                           : Qwen2VLImageProcessorConfig{};
  if (options.min_pixels) config.min_pixels = *options.min_pixels;
  if (options.max_pixels) config.max_pixels = *options.max_pixels;
  if (config.min_pixels <= 0 || config.max_pixels < config.min_pixels)
    throw_input_error(dir, "min_pixels ({}) must be positive and <= max_pixels ({})", config.min_pixels,
                      config.max_pixels);
  auto pad = tokenizer.pad_token_id();
  if (!pad) throw_input_error(dir, "tokenizer_config.json has no pad_token; batching needs one");
  return Qwen2_5_VLProcessor(std::move(tokenizer), Qwen2VLImageProcessor(config), *pad);
}

std::vector<int64_t> Qwen2_5_VLProcessor::encode(const std::string& text) const {
  auto ids = tokenizer_.encode(text);
  return {ids.begin(), ids.end()};
}

ProcessedInput Qwen2_5_VLProcessor::process(const std::vector<ChatMessage>& messages,
                                            const std::vector<RgbImage>& images, const ChatTemplateOptions& options,
                                            const std::string& source) const {
  ProcessedInput out;
  std::vector<std::string> sources;
  for (size_t i = 0; i < images.size(); ++i) sources.push_back(fmt::format("{}: image {}", source, i + 1));
  if (!images.empty()) out.images = image_processor_.preprocess(images, sources);
  std::vector<GridThw> grids;
  for (const auto& g : out.images.grid_thw) grids.push_back({g[0], g[1], g[2]});
  const std::string text = expand_image_pads(render_qwen2_vl_chat(messages, options), grids,
                                             image_processor_.config().merge_size);
  out.input_ids = encode(text);
  return out;
}

}  // namespace vlreward
