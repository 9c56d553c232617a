#pragma once
// Preference pairs for reward-model training: JSONL, one pair per line (the shape mpo-train reads):
//   {"id": "q1", "images": ["img.png" | base64 | data URI, ...] (or "image": ...), "question": "...",
//    "chosen": "...", "rejected": "...", "system": "..." (optional)}
// "images" may be absent or empty: text-only pairs (Skywork-VL's stage 2 mixes them in). Other keys are ignored
// (datasets carry extra metadata); blank lines are skipped.
#include <optional>
#include <string>
#include <vector>

#include "plugin/reward.h"

namespace vlreward {

struct PreferencePair {
  std::string id;
  std::vector<RewardImage> images;
  std::optional<std::string> system_prompt;
  std::string question;
  std::string chosen;
  std::string rejected;
  std::string source;  // "path:line", for errors raised later (image decoding, tokenization)

  // The reward requests that score each side: one user turn [images..., question] and the completion.
  RewardRequest chosen_request() const;
  RewardRequest rejected_request() const;
};

// Parses one line. Throws InputError naming `source` ("path:line") and the field: malformed JSON, a missing or
// non-string question/chosen/rejected, an empty completion, an image that is neither an existing file nor
// base64 / data URI. Relative image paths are resolved against image_root.
PreferencePair parse_preference_pair(const std::string& line, const std::string& source, const std::string& image_root);

// Every pair of a file, in file order. Also throws for a missing or empty file and for a duplicate id (lines
// without an id get their line number). Relative image paths: image_root, or the JSONL's directory when empty.
std::vector<PreferencePair> read_preference_pairs(const std::string& path, const std::string& image_root = {});

}  // namespace vlreward
