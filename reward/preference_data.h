#pragma once
// Preference data: JSONL, one pair per line (MMPR / RLAIF-V style), read by mpo-train, reward-train and the online
// loop alike:
//   {"id": "q1", "images": ["img.png" | base64 | data URI, ...] (or "image": ...), "question": "...",
//    "chosen": "...", "rejected": "...", "system": "..." (optional),
//    "ref_chosen_logp": -12.3, "ref_rejected_logp": -15.0 (optional, both or neither: precomputed reference)}
// Other keys are ignored (datasets carry extra metadata). Blank lines are skipped.
//
// SFT data (loss_type [sft] alone, read with require_rejected = false): the completion is "chosen", or "answer"
// when there is no "chosen"; "rejected" may be present (a pair file trains as SFT on its chosen side) or absent.
//
// Prompt files (online MPO rounds, ab-compare) hold the same prompt part without completions:
//   {"id": "q1", "images": [...] (or "image"), "question": "...", "system": "..." (optional),
//    "reference": "..." (optional ground-truth answer; "answer" is accepted as its alias)}
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "plugin/reward.h"

namespace vlreward {

// The prompt part shared by every record kind: id, images, system prompt, question (+ optional reference).
struct PromptRecord {
  std::string id;
  std::vector<RewardImage> images;
  std::vector<std::string> image_references;  // the strings as given (path, base64, data URI), one per image
  std::optional<std::string> system_prompt;
  std::string question;
  std::optional<std::string> reference;
  std::string source;  // "path:line"
};

// One preference pair (or SFT example) of either trainer.
struct PreferenceRecord {
  std::string id;
  std::vector<RewardImage> images;
  std::optional<std::string> system_prompt;
  std::string question;
  std::string chosen;
  std::string rejected;  // empty for SFT-only records
  std::optional<double> ref_chosen_logp;
  std::optional<double> ref_rejected_logp;
  std::string source;  // "path:line", for errors raised later (image decoding, tokenization)

  // The reward requests that score each side: one user turn [images..., question] and the completion.
  RewardRequest chosen_request() const;
  RewardRequest rejected_request() const;
};

// Throws InputError naming "path:line" and the field for malformed JSON, a missing or non-string field, an
// empty completion, an image that is neither an existing file nor base64/data URI, a lone or non-finite
// reference log-prob, a duplicate id; and for an unreadable or empty file. Relative image paths are resolved
// against image_root, or the JSONL's directory when image_root is empty.
// require_rejected = false reads SFT data (see above); a line without "rejected" when it is true is an error
// naming path:line.
std::vector<PreferenceRecord> read_preference_jsonl(const std::string& path, const std::string& image_root = {},
                                                    bool require_rejected = true);

// Parses one line (exposed for tests and for online rounds that build pairs in memory).
PreferenceRecord parse_preference_line(const std::string& line, const std::string& source, const std::string& image_root,
                                       bool require_rejected = true);

// Prompt files (see above). Same errors as read_preference_jsonl; ids must be unique.
std::vector<PromptRecord> read_prompt_jsonl(const std::string& path, const std::string& image_root = {});

// The directory relative image references of `path` are resolved against: image_root, or the file's directory.
std::string jsonl_image_root(const std::string& path, const std::string& image_root = {});

}  // namespace vlreward
