#include "retry_policy.h"

#include <algorithm>

#include "meter_event.h"
#include "reasons.h"

namespace stripe_billing {
namespace {

bool is_meter(RequestKind kind) {
  return kind == RequestKind::kMeterEvent || kind == RequestKind::kMeterStream;
}

Classification local(const Error& error) {
  switch (error.code) {
    case ErrorCode::kNetwork:
      return {Outcome::kRetry, "network"};
    case ErrorCode::kTimeout:
      return {Outcome::kRetry, "timeout"};
    case ErrorCode::kAborted:
      return {Outcome::kRetry, "aborted", false};
    case ErrorCode::kInvalidResponse:
      return {Outcome::kRetry, "invalid_response"};
    case ErrorCode::kStorage:
      return {Outcome::kRetry, "storage"};
    // A batch made under a configuration that metered it (the mode or meter changed since): it
    // waits, and goes once a configuration that meters it runs again.
    case ErrorCode::kInvalidConfig:
      return {Outcome::kRetry, "meters_not_in_mode"};
    default:
      return {Outcome::kDead, to_string(error.code)};
  }
}

}  // namespace

Throttle throttle_kind(int status, std::string_view code, std::string_view rate_limited_reason) {
  if (status != 429) return Throttle::kNone;
  if (code == "lock_timeout" || rate_limited_reason == "resource-specific")
    return Throttle::kObject;
  return Throttle::kRate;
}

bool is_permission_error(const StripeError& error) {
  return error.http_status == 403 &&
         error.message.find("does not have the required permissions") != std::string::npos;
}

Classification classify(RequestKind kind, const Expected<StripeResponse>& result) {
  if (result) return {Outcome::kDelivered, "ok"};
  const Error& error = result.error();
  if (error.code != ErrorCode::kStripe || !error.stripe) return local(error);
  const StripeError& stripe = *error.stripe;
  const int status = stripe.http_status;
  Classification verdict{Outcome::kDead, stripe_reason(stripe)};
  if (stripe.retry_after_seconds)
    verdict.retry_after = std::chrono::seconds(*stripe.retry_after_seconds);
  verdict.throttle = throttle_kind(status, stripe.code, stripe.rate_limited_reason);
  if (is_meter(kind) && is_already_recorded(error))
    return {Outcome::kDelivered, "already_recorded"};
  if (status == 403 && kind == RequestKind::kLookup && is_permission_error(stripe)) {
    // A restricted key that may write meter events but not read customers: that lookup backs
    // off (its rows wait, visibly), the rest keeps being billed.
    verdict.outcome = Outcome::kRetry;
    verdict.reason = "stripe_permission_denied";
    return verdict;
  }
  if (status == 401 || status == 403) {
    // The stream's token is not the secret key: a token refused even after a fresh session is
    // that batch's problem, retried; the key itself is fine (it just minted the session).
    verdict.outcome = kind == RequestKind::kMeterStream ? Outcome::kRetry : Outcome::kPause;
    if (kind == RequestKind::kMeterStream) verdict.reason = "stream_session_refused";
    return verdict;
  }
  if (status == 404 && stripe.code == "resource_missing") {
    verdict.outcome = kind == RequestKind::kUsageRecord ? Outcome::kItemMissing : Outcome::kDead;
    return verdict;
  }
  if (status == 429) {
    verdict.outcome = Outcome::kRetry;
    return verdict;
  }
  if (stripe.should_retry.has_value()) {
    verdict.outcome = *stripe.should_retry ? Outcome::kRetry : Outcome::kDead;
    return verdict;
  }
  if (status == 409 || status >= 500) verdict.outcome = Outcome::kRetry;
  return verdict;
}

std::chrono::milliseconds RetryPolicy::backoff(int attempt, double jitter) const {
  std::chrono::milliseconds delay = initial_backoff;
  for (int i = 1; i < attempt && delay < max_backoff; ++i) delay *= 2;
  delay = std::min(delay, max_backoff);
  jitter = std::clamp(jitter, 0.5, 1.0);
  return std::chrono::milliseconds(
      static_cast<std::int64_t>(static_cast<double>(delay.count()) * jitter));
}

std::chrono::milliseconds RetryPolicy::retry_delay(int attempt, double jitter,
                                                   const Classification& verdict) const {
  const std::chrono::milliseconds delay = backoff(attempt, jitter);
  if (!verdict.retry_after) return delay;
  const std::chrono::milliseconds asked = std::min(*verdict.retry_after, max_retry_after);
  return std::max(delay, asked);
}

}  // namespace stripe_billing
