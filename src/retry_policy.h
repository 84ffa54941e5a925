// What to do with the answer to a Stripe request: one pure function of the request's kind and its
// answer, tested by table for every kind, and the backoff schedule as plain data. Follows Stripe's
// SDKs (api-notes.md, "Retries") and tells Stripe's 429s apart:
//   - a throttling 429 (Stripe-Rate-Limited-Reason global-rate, endpoint-rate, global-concurrency,
//     endpoint-concurrency, or none) means the account is over its limit: the batch is retried and
//     the shared rate goes down (RateLimiter, once per interval);
//   - a 429 about one object (code lock_timeout, reason resource-specific: another request holds
//     the object, e.g. Stripe's one concurrent meter event per customer and meter) retries that
//     batch with backoff and leaves everyone else's rate alone.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "stripe_billing/error.h"
#include "stripe_billing/stripe_client.h"

namespace stripe_billing {

// Which request an answer belongs to.
enum class RequestKind {
  kUsageRecord,    // POST usage_records of one subscription item
  kMeterEvent,     // POST v1 meter_events, one event
  kMeterStream,    // POST the v2 stream with a session token (renewed once already on a 401)
  kStreamSession,  // minting the v2 session with the secret key
  kLookup,         // customer search, subscriptions, the key probe
};

enum class Outcome {
  kDelivered,    // Stripe recorded it (or had already: an idempotent replay, a known identifier)
  kRetry,        // network, timeout, 409, 429, >= 500, Stripe-Should-Retry: true, a local wait
  kDead,         // a 4xx Stripe will answer the same way forever, or Stripe-Should-Retry: false
  kPause,        // the secret key is refused (401/403): retrying now cannot help anyone
  kItemMissing,  // usage records, 404 resource_missing: the item is gone; look it up again
};

enum class Throttle {
  kNone,
  kRate,    // the account (or endpoint) is over its rate: slow everyone down
  kObject,  // one object is busy: retry this batch later, nobody else slows down
};

struct Classification {
  Classification() = default;
  Classification(Outcome outcome_, std::string reason_, bool attempted_ = true)
      : outcome(outcome_), reason(std::move(reason_)), attempted(attempted_) {}

  Outcome outcome = Outcome::kDead;
  // Metric label and, for kDead, the stored reason: "ok", "already_recorded", "network",
  // "timeout", "aborted", "stripe_rate_limit", "stripe_lock_timeout", "stripe_<code>", ...
  std::string reason;
  Throttle throttle = Throttle::kNone;
  std::optional<std::chrono::seconds> retry_after;  // Stripe's Retry-After, when it sent one
  // False for a transfer aborted at shutdown: it was never answered, so it is no attempt.
  bool attempted = true;
};

// A restricted key refused for a permission it lacks (403, "does not have the required
// permissions …"), not a refused key.
bool is_permission_error(const StripeError& error);

Classification classify(RequestKind kind, const Expected<StripeResponse>& result);

// The kind of a 429 from its error code and Stripe-Rate-Limited-Reason; kNone for other statuses.
Throttle throttle_kind(int status, std::string_view code, std::string_view rate_limited_reason);

struct RetryPolicy {
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{5'000};
  // The longest Retry-After honoured; a longer one is capped (a bad header must not stop billing).
  std::chrono::seconds max_retry_after{300};

  // Backoff before retry number `attempt` (1-based): initial * 2^(attempt-1), capped, then
  // scaled by `jitter` in [0.5, 1.0] (Stripe's SDKs use 50-100 %).
  std::chrono::milliseconds backoff(int attempt, double jitter) const;
  // The wait before retrying a batch after `verdict`: the backoff, or Stripe's Retry-After when
  // that is longer (capped at max_retry_after).
  std::chrono::milliseconds retry_delay(int attempt, double jitter,
                                        const Classification& verdict) const;
};

}  // namespace stripe_billing
