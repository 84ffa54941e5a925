#include "retry_policy.h"

#include <algorithm>

namespace stripe_billing {

Classification classify(const Expected<StripeResponse>& result) {
  if (result) return {Outcome::kDelivered, "ok"};
  const Error& error = result.error();
  switch (error.code) {
    case ErrorCode::kNetwork: return {Outcome::kRetry, "network"};
    case ErrorCode::kTimeout: return {Outcome::kRetry, "timeout"};
    case ErrorCode::kAborted: return {Outcome::kRetry, "aborted"};
    case ErrorCode::kInvalidResponse: return {Outcome::kRetry, "invalid_response"};
    case ErrorCode::kStripe: break;
    default: return {Outcome::kDead, to_string(error.code)};
  }
  const StripeError& stripe = *error.stripe;
  const int status = stripe.http_status;
  std::string reason = "stripe_" + (stripe.code.empty() ? std::to_string(status) : stripe.code);
  if (status == 401 || status == 403) return {Outcome::kPause, reason};
  if (status == 404 && stripe.code == "resource_missing") return {Outcome::kItemMissing, reason};
  if (stripe.should_retry.has_value()) {
    return {*stripe.should_retry ? Outcome::kRetry : Outcome::kDead, reason};
  }
  if (status == 409 || status == 429 || status >= 500) return {Outcome::kRetry, reason};
  return {Outcome::kDead, reason};
}

std::chrono::milliseconds RetryPolicy::backoff(int attempt, double jitter) const {
  std::chrono::milliseconds delay = initial_backoff;
  for (int i = 1; i < attempt && delay < max_backoff; ++i) delay *= 2;
  delay = std::min(delay, max_backoff);
  jitter = std::clamp(jitter, 0.5, 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(delay.count()) * jitter));
}

}  // namespace stripe_billing
