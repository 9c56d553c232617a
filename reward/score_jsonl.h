#pragma once
// reward-score's work: JSONL requests in, JSONL scores out, crash-safe and resumable.
//   in:  {"id": ..., "images": [path | base64 | data URI, ...], "question": "...", "response": "...",
//         "reference": "..." (optional), "system": "..." (optional)}
//   out: {"id": ..., "score": 1.25}  or  {"id": ..., "error": "..."}   (one line per input line, in order)
// Every output line is valid JSON. A line that cannot be read (invalid JSON or UTF-8, a bad field, a missing or
// oversized image) gets an error record of its own, with id "line N" when its id cannot be read; every other line
// is scored.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "adapters/image/decode.h"
#include "plugin/reward.h"

namespace vlreward {

struct ScoreJsonlOptions {
  std::string input_path;
  std::string output_path;
  std::string image_root;  // relative image paths resolve here; default: the input file's directory
  int64_t batch_size = 8;  // requests handed to the backend at once
  bool resume = false;     // keep an existing output and skip the ids already in it
  bool overwrite = false;  // replace an existing output
  bool progress = true;
  uint64_t max_image_bytes = kDefaultMaxImageFileBytes;  // an image file's size, checked before it is read
};

struct ScoreJsonlSummary {
  int64_t scored = 0;
  int64_t failed = 0;
  int64_t skipped = 0;         // already in the output (resume)
  int64_t skipped_failed = 0;  // of those, error records
  // Lines whose record is an error, from this run or (resume) an earlier one.
  int64_t all_failed() const { return failed + skipped_failed; }
};

// The run stopped before every input line had a record (e.g. the output could not be written). The records
// written are complete; --resume continues from them.
class ScoreRunIncomplete : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws InputError for problems with the files themselves before anything is written (unreadable input,
// existing output without resume/overwrite), ScoreRunIncomplete when the run stops part-way; per-line problems
// become error records.
ScoreJsonlSummary score_jsonl(RewardBackend& backend, const ScoreJsonlOptions& options);

// One input line → request. Throws InputError("line N", ...) naming the field.
RewardRequest parse_score_line(const std::string& line, int64_t line_number, const std::string& image_root,
                               uint64_t max_image_bytes = kDefaultMaxImageFileBytes);

}  // namespace vlreward
