#pragma once
// The remote backend's requests and answers on the wire: a batch's samples encoded once (JSON for POST /v1/score,
// a ScoreRequest frame for the binary protocol) and resent unchanged on retries; answers checked against what was
// sent (count, ids, request id) and turned into per-sample results. Images travel as bytes: path images are read
// here, on the client.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "plugin/remote/remote_backend.h"
#include "plugin/reward.h"

namespace vlreward::serve {
class ScoreResponse;
}

namespace vlreward::remote {

// One request's samples, encoded once and resent unchanged on retries.
struct PreparedRequest {
  std::vector<size_t> positions;  // batch index of each sent sample
  std::vector<std::string> ids;   // the id sent for each
  std::string payload;            // HTTP body or binary frame
  uint64_t request_id = 0;
};

// Encodes batch[members] for options.protocol. A sample that cannot be encoded (an unreadable image file) gets its
// error in `results` and is left out; nothing is sent when none remains (positions empty).
PreparedRequest encode_request(const std::vector<RewardRequest>& batch, const std::vector<size_t>& members,
                               const RemoteBackendOptions& options, uint64_t request_id,
                               std::vector<RewardResult>& results);

struct HttpAnswer {
  unsigned status = 0;
  std::string body;
  int64_t retry_after_ms = -1;  // Retry-After in whole seconds, as milliseconds; -1: none
};

// The results of an answer, in the order of p.positions; throws AttemptFailure for an error status (retryable
// for 5xx except 501/505; 503 marks the replica unwell) or an answer that does not match the request.
std::vector<RewardResult> decode_http_answer(const HttpAnswer& answer, const PreparedRequest& p);
// The same for the binary protocol (retryable codes: OVERLOADED, DEADLINE_EXCEEDED, INTERNAL, SHUTTING_DOWN,
// TIMEOUT).
std::vector<RewardResult> decode_binary_answer(const serve::ScoreResponse& response, const PreparedRequest& p);

// Whether the server may close the connection after this answer (a whole-request error).
bool is_request_error(const serve::ScoreResponse& response);

}  // namespace vlreward::remote
