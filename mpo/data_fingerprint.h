#pragma once
// What a checkpoint records of its training data, so a resumed run can refuse other data.
#include <cstdint>
#include <string>

namespace vlreward::mpo {

// A fingerprint of the data for checkpoints: a resumed run must see the same pairs in the same order.
struct DataFingerprint {
  int64_t num_examples = 0;
  uint32_t crc32c = 0;  // over the file's bytes
  std::string path;     // the file (for messages and the checkpoint's record); empty = data.train
};
DataFingerprint fingerprint_file(const std::string& path, int64_t num_examples);

}  // namespace vlreward::mpo
