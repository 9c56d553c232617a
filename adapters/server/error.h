#pragma once
// Why a request to reward-serve failed, as one kind that maps to an HTTP status, a binary-protocol error code
// and a metrics label. Every failure carries a message naming the field and the problem.
#include <stdexcept>
#include <string>

namespace vlreward {

enum class ServeErrorKind {
  kBadRequest,        // 400 malformed JSON / protobuf / HTTP, bad base64, bad fields
  kUnauthorized,      // 401 missing or wrong bearer token
  kNotFound,          // 404 unknown route
  kMethodNotAllowed,  // 405
  kTimeout,           // 408 the request did not arrive within the read timeout
  kTooLarge,          // 413 body, frame, samples, images, pixels, text over the limits
  kUnprocessable,     // 422 well-formed but the backend could not score it
  kInternal,          // 500 the backend threw
  kOverloaded,        // 503 + Retry-After: queue full
  kShuttingDown,      // 503 draining on SIGTERM
  kDeadline,          // 504 not scored before the request's deadline
};

int http_status(ServeErrorKind kind);
const char* metric_label(ServeErrorKind kind);  // "bad_request", "too_large", ...
int proto_error_code(ServeErrorKind kind);     // vlreward.serve.ErrorCode value

class ServeError : public std::runtime_error {
 public:
  ServeError(ServeErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ServeErrorKind kind() const noexcept { return kind_; }

 private:
  ServeErrorKind kind_;
};

}  // namespace vlreward
