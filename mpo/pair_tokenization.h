#pragma once
// Preference pairs as MPO trains on them: a preference record (images, question, chosen, rejected) turned into the
// token rows TRL 0.28's DPOTrainer builds for a vision-language model (chat-templated prompt with expanded image
// pads, then each completion), plus the prompt's pixel values.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/hf/qwen2_5_vl_processor.h"
#include "mpo/logprobs.h"
#include "plugin/reward.h"
#include "reward/preference_data.h"

namespace vlreward::mpo {

struct TokenizedPair {
  PreferencePairTokens tokens;
  ImageFeatures images;  // the prompt's images (used once per pair; build_concatenated_batch repeats them)
};

// The prompt alone, as tokenize_pair renders it (chat template with the generation prompt, pads expanded): what
// a policy is sampled from in online rounds.
struct TokenizedPrompt {
  std::vector<int64_t> ids;
  ImageFeatures images;
};
TokenizedPrompt tokenize_prompt(const Qwen2_5_VLProcessor& processor, const std::vector<RewardImage>& images,
                                const std::optional<std::string>& system_prompt, const std::string& question,
                                const std::string& source);

// Throws InputError naming `source` (e.g. "pairs.jsonl:12") for an undecodable image or empty completion.
TokenizedPair tokenize_pair(const Qwen2_5_VLProcessor& processor, const PreferenceRecord& example,
                            const std::string& source);

// SFT (loss_type [sft] alone): the prompt and the chosen completion only, tokenized exactly as tokenize_pair
// tokenizes them (tokens.rejected stays empty; example.rejected is not used).
TokenizedPair tokenize_sft(const Qwen2_5_VLProcessor& processor, const PreferenceRecord& example,
                           const std::string& source);

}  // namespace vlreward::mpo
