#include "reward/model_inputs.h"

#include <cstdint>
#include <fmt/format.h>

#include "adapters/common/error.h"
#include "adapters/image/decode.h"
#include "adapters/qwen2_5_vl/batch.h"

namespace vlreward {

RewardInput prepare_reward_input(const Qwen2_5_VLProcessor& processor, const RewardRequest& request,
                                 const std::string& source) {
  std::vector<ChatMessage> messages;
  if (request.system_prompt) messages.push_back(ChatMessage::from_text("system", *request.system_prompt));
  std::vector<RgbImage> images;
  for (const auto& turn : request.turns) {
    std::vector<ChatContentPart> parts;
    for (const auto& part : turn.content) {
      if (part.kind == RewardContent::Kind::kText) {
        parts.push_back(ChatContentPart::make_text(part.text));
        continue;
      }
      const auto& image = part.image;
      const std::string image_source = fmt::format("{}: image {}", source, images.size() + 1);
      if (!image.path.empty()) images.push_back(decode_image_file(image.path));
      else if (!image.bytes.empty()) images.push_back(decode_image(image.bytes, image_source));
      else throw InputError(image_source, "has neither bytes nor a path");
      parts.push_back(ChatContentPart::image());
    }
    messages.push_back(ChatMessage::from_parts(turn.role, std::move(parts)));
  }
  messages.push_back(ChatMessage::from_text("assistant", request.response));
  ProcessedInput processed = processor.process(messages, images, {}, source);
  return {std::move(processed.input_ids), std::move(processed.images)};
}

RewardBatch build_reward_batch(const std::vector<const RewardInput*>& rows, int64_t pad_id, const torch::Device& device) {
  std::vector<std::vector<int64_t>> ids;
  std::vector<float> pixels;
  std::vector<qwen::GridTHW> grids;
  int64_t patch_rows = 0, row_size = 0;
  for (const RewardInput* row : rows) {
    ids.push_back(row->input_ids);
    pixels.insert(pixels.end(), row->images.pixel_values.begin(), row->images.pixel_values.end());
    grids.insert(grids.end(), row->images.grid_thw.begin(), row->images.grid_thw.end());
    patch_rows += row->images.rows;
    if (row->images.rows > 0) row_size = row->images.row_size;
  }
  auto padded = qwen::pad_batch(ids, pad_id, qwen::PaddingSide::kRight);
  RewardBatch batch;
  batch.input = {padded.input_ids.to(device), padded.attention_mask.to(device), {}, grids};
  // clone: `pixels` dies with this call, and .to() on the same device would keep the borrowed buffer.
  if (patch_rows > 0)
    batch.input.pixel_values =
        torch::from_blob(pixels.data(), {patch_rows, row_size}, torch::kFloat32).clone().to(device);
  batch.last_index = qwen::last_token_index(padded.attention_mask).to(device);
  return batch;
}

torch::Tensor reward_values(qwen::Qwen2_5_VLModel& model, const ValueHead& head, const RewardBatch& batch) {
  qwen::ForwardOptions options;
  options.logits = false;  // the value head reads hidden states; lm_head over every position would be waste
  auto out = model->forward(batch.input, options);
  auto rows = torch::arange(batch.last_index.size(0), batch.last_index.options());
  return head->forward(out.last_hidden_state.index({rows, batch.last_index}));
}

}  // namespace vlreward
