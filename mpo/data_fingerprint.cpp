#include "mpo/data_fingerprint.h"

#include "adapters/common/crc32c.h"

namespace vlreward::mpo {

DataFingerprint fingerprint_file(const std::string& path, int64_t num_examples) {
  return {num_examples, crc32c_of_file(path), path};
}

}  // namespace vlreward::mpo
