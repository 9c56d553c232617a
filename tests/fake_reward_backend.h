#pragma once
// The in-test reward backend of the server and remote-backend tests: score = a hash of the response text;
// components describe what arrived (turns, images, and a digest of everything else that travels: system prompt,
// reference, metadata, texts, image bytes), so a test can see how a request was built or carried. "FAIL"
// responses fail alone; "THROW" makes the whole batch throw.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "plugin/reward.h"

namespace vlreward::test_support {

inline uint64_t fnv1a(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}
inline double fake_score(const std::string& response) {
  return static_cast<double>(fnv1a(response) % 2000001) / 1000.0 - 1000.0;
}
inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class FakeBackend : public RewardBackend {
 public:
  std::string name() const override { return "fake"; }
  RewardCapabilities capabilities() const override { return {true, false, true}; }
  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    ++calls;
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    {
      std::lock_guard<std::mutex> lock(mutex);
      batch_sizes.push_back(batch.size());
      for (const auto& r : batch) seen.push_back(r);
    }
    std::vector<RewardResult> out;
    for (const auto& r : batch) {
      if (r.response == "THROW") throw std::runtime_error("fake backend exploded");
      if (r.response == "FAIL") {
        out.push_back(RewardResult::failure("fake backend refuses FAIL"));
        continue;
      }
      auto result = RewardResult::success(fake_score(r.response));
      result.components["turns"] = static_cast<double>(r.turns.size());
      result.components["images"] = static_cast<double>(r.image_count());
      std::string carried = r.system_prompt.value_or("<none>") + "|" + r.reference.value_or("<none>") + "|";
      for (const auto& [k, v] : r.metadata) carried += k + "=" + v + ";";
      for (const auto& turn : r.turns) {
        carried += turn.role + ":";
        for (const auto& part : turn.content)
          carried += part.kind == RewardContent::Kind::kText
                         ? "T" + part.text
                         : "I" + std::to_string(fnv1a(part.image.path.empty() ? part.image.bytes
                                                                              : read_bytes(part.image.path)));
      }
      result.components["digest"] = static_cast<double>(fnv1a(carried) % 1000000007);
      out.push_back(result);
    }
    return out;
  }

  std::atomic<int> delay_ms{0};
  std::atomic<int> calls{0};  // score() calls started
  std::mutex mutex;
  std::vector<size_t> batch_sizes;
  std::vector<RewardRequest> seen;
};

}  // namespace vlreward::test_support
