#pragma once
// The one way to turn a reward request into Skywork-VL Reward model inputs, shared by the skywork_vl backend
// (scoring) and reward-train (training), so a trained model is scored on exactly what it was trained on:
//   chat template without an explicit system message unless the request has one (the template then inserts its
//   default), the request's turns ([images..., question] for a single turn), the assistant response, no
//   generation prompt; image pads expanded per grid.
// A batch is right-padded and the value is read at each row's last real token (the '\n' after <|im_end|>).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "adapters/hf/qwen2_5_vl_processor.h"
#include "adapters/qwen2_5_vl/model.h"
#include "plugin/reward.h"
#include "reward/value_head.h"

namespace vlreward {

// One request's token ids and the pixel values of its images (in order of appearance).
struct RewardInput {
  std::vector<int64_t> input_ids;
  ImageFeatures images;
};

// Decodes the request's images and renders the conversation. Throws (InputError naming `source` and the image
// number, or the processor's error) for an undecodable image or a template/tokenizer failure.
RewardInput prepare_reward_input(const Qwen2_5_VLProcessor& processor, const RewardRequest& request,
                                 const std::string& source);

// Rows padded on the right with pad_id, every row's pixel values concatenated in row order, on `device`.
struct RewardBatch {
  qwen::ModelInput input;
  torch::Tensor last_index;  // [B] int64 on `device`: the last real token of each row
};
RewardBatch build_reward_batch(const std::vector<const RewardInput*>& rows, int64_t pad_id, const torch::Device& device);

// The value head at each row's last real token: [B] float32 (differentiable unless under no-grad/inference mode).
torch::Tensor reward_values(qwen::Qwen2_5_VLModel& model, const ValueHead& head, const RewardBatch& batch);

}  // namespace vlreward
