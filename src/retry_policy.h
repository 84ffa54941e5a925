// What to do with the answer to a Stripe request: a pure function of the answer, tested by table,
// and the backoff schedule as plain data. Follows Stripe's SDKs (api-notes.md, "Retries").
#pragma once

#include <chrono>
#include <string>

#include "stripe_billing/error.h"
#include "stripe_billing/stripe_client.h"

namespace stripe_billing {

enum class Outcome {
  kDelivered,    // Stripe recorded it (or had already: an idempotent replay)
  kRetry,        // network, timeout, 409, 429, >= 500, Stripe-Should-Retry: true
  kDead,         // a 4xx Stripe will answer the same way forever, or Stripe-Should-Retry: false
  kPause,        // 401/403: the key is wrong or lacks permission; retrying now cannot help
  kItemMissing,  // 404 resource_missing: the cached subscription item is gone; look it up again
};

struct Classification {
  Outcome outcome = Outcome::kDead;
  std::string reason;  // metric label: "ok", "network", "timeout", "stripe_429", "stripe_resource_missing", ...
};

Classification classify(const Expected<StripeResponse>& result);

struct RetryPolicy {
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{5'000};

  // Backoff before retry number `attempt` (1-based): initial * 2^(attempt-1), capped, then
  // scaled by `jitter` in [0.5, 1.0] (Stripe's SDKs use 50-100 %).
  std::chrono::milliseconds backoff(int attempt, double jitter) const;
};

}  // namespace stripe_billing
