#include "adapters/server/error.h"

#include "reward_service.pb.h"

namespace vlreward {

int http_status(ServeErrorKind kind) {
  switch (kind) {
    case ServeErrorKind::kBadRequest: return 400;
    case ServeErrorKind::kUnauthorized: return 401;
    case ServeErrorKind::kNotFound: return 404;
    case ServeErrorKind::kMethodNotAllowed: return 405;
    case ServeErrorKind::kTimeout: return 408;
    case ServeErrorKind::kTooLarge: return 413;
    case ServeErrorKind::kUnprocessable: return 422;
    case ServeErrorKind::kInternal: return 500;
    case ServeErrorKind::kOverloaded: return 503;
    case ServeErrorKind::kShuttingDown: return 503;
    case ServeErrorKind::kDeadline: return 504;
  }
  return 500;
}

const char* metric_label(ServeErrorKind kind) {
  switch (kind) {
    case ServeErrorKind::kBadRequest: return "bad_request";
    case ServeErrorKind::kUnauthorized: return "unauthorized";
    case ServeErrorKind::kNotFound: return "not_found";
    case ServeErrorKind::kMethodNotAllowed: return "method_not_allowed";
    case ServeErrorKind::kTimeout: return "read_timeout";
    case ServeErrorKind::kTooLarge: return "too_large";
    case ServeErrorKind::kUnprocessable: return "unprocessable";
    case ServeErrorKind::kInternal: return "internal";
    case ServeErrorKind::kOverloaded: return "overloaded";
    case ServeErrorKind::kShuttingDown: return "shutting_down";
    case ServeErrorKind::kDeadline: return "deadline_exceeded";
  }
  return "internal";
}

int proto_error_code(ServeErrorKind kind) {
  using namespace vlreward::serve;
  switch (kind) {
    case ServeErrorKind::kBadRequest: return BAD_REQUEST;
    case ServeErrorKind::kUnauthorized: return UNAUTHORIZED;
    case ServeErrorKind::kNotFound: return BAD_REQUEST;
    case ServeErrorKind::kMethodNotAllowed: return BAD_REQUEST;
    case ServeErrorKind::kTimeout: return TIMEOUT;
    case ServeErrorKind::kTooLarge: return TOO_LARGE;
    case ServeErrorKind::kUnprocessable: return UNPROCESSABLE;
    case ServeErrorKind::kInternal: return INTERNAL;
    case ServeErrorKind::kOverloaded: return OVERLOADED;
    case ServeErrorKind::kShuttingDown: return SHUTTING_DOWN;
    case ServeErrorKind::kDeadline: return DEADLINE_EXCEEDED;
  }
  return INTERNAL;
}

}  // namespace vlreward
