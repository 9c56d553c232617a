#include "mpo/data_fingerprint.h"

#include "adapters/common/mapped_file.h"
#include "adapters/common/crc32c.h"

namespace vlreward::mpo {

DataFingerprint fingerprint_file(const std::string& path, int64_t num_examples) {
  const std::string content = read_file(path);
  return {num_examples, crc32c(content), path};
}

}  // namespace vlreward::mpo
