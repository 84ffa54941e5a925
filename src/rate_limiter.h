// Client-side rate limiting for every request to Stripe, lookups included: a token bucket whose
// rate adapts to Stripe's answers (additive increase, proportional decrease).
//   - A throttling 429 (retry_policy.h) lowers the rate at most once per interval, in proportion to
//     the share of answers throttled over the last interval (which estimates how far over the
//     account's limit the client is), by at least 5 % and at most half, never below a floor that
//     is a fraction of the configured rate. One burst of 429s from senders in flight is one
//     reaction (the burst's later answers can only deepen it to their share), not one per answer.
//   - Without throttles the rate climbs back additively, a fraction of the configured rate per
//     second (from half the rate to all of it in about ten seconds by default).
//   - Retry-After on a throttling 429 holds every request until it has passed (capped).
//   - A 429 about one object (lock_timeout, resource-specific) changes nothing here: only that
//     batch waits (its retry is scheduled by the dispatcher).
// It sits at the transport seam (RateLimitedTransport), so no caller can bypass it, and takes the
// library's Clock, so tests move time instead of waiting.
//
// Thread-safe. acquire() blocks the calling sender or lookup thread, never the host.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "retry_policy.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {

struct RateLimitPolicy {
  double rate = 25;  // configured requests per second
  // The bucket holds this many seconds of the rate (at least one request): after a quiet spell
  // the client sends at most rate × (1 + this) in any second, so an account's limit per second
  // holds over every 1 s window (within 5 %), not only on average.
  double burst_seconds = 0.05;
  double floor_fraction = 0.1;  // the rate never goes below rate × this (nor below 0.5/s)
  std::chrono::milliseconds interval{1000};  // at most one decrease per interval
  double max_decrease = 0.5;          // one decrease takes off at most this share of the rate
  double min_decrease = 0.05;         // and at least this share
  double recovery_per_second = 0.05;  // additive: rate × this is added back every second
  std::chrono::seconds max_retry_after{60};
};

class RateLimiter {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  explicit RateLimiter(RateLimitPolicy policy, std::shared_ptr<const Clock> clock = nullptr);

  // Takes a token if one is there: zero. Otherwise how long until one may be (nothing is taken).
  std::chrono::nanoseconds try_acquire();
  // Waits for a token. False when interrupted (shutdown): the caller must not send.
  bool acquire();
  // What Stripe answered to a request that had a token.
  void on_answer(Throttle throttle, std::optional<std::chrono::seconds> retry_after = {});
  void interrupt();  // wakes every waiter; later acquire() calls fail at once

  double current_rate() const;
  std::uint64_t waits() const;      // acquisitions that had to wait
  std::uint64_t decreases() const;  // times a throttle lowered the rate

 private:
  // Answers over the last interval, in ten slots, for the share that was throttled.
  struct Slot {
    std::int64_t index = -1;  // which tenth of an interval since the epoch it counts
    std::uint32_t answers = 0;
    std::uint32_t throttled = 0;
    std::uint32_t granted = 0;
  };
  static constexpr int kSlots = 10;

  void advance(SteadyTime now);  // recovery and refill up to `now`
  Slot& slot(SteadyTime now);
  double window_share_throttled(SteadyTime now) const;
  double window_granted_rate(SteadyTime now) const;
  double floor() const;

  const RateLimitPolicy policy_;
  const std::shared_ptr<const Clock> clock_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  double rate_;
  double tokens_;
  SteadyTime updated_;
  std::optional<SteadyTime> last_decrease_;
  double rate_before_decrease_ = 0;
  SteadyTime blocked_until_{};
  std::array<Slot, kSlots> slots_{};
  bool interrupted_ = false;
  std::uint64_t waits_ = 0;
  std::uint64_t decreases_ = 0;
};

// Meter event requests (v1 meter_events, the v2 stream) go through `meter_limiter` when there is
// one: live mode gives them their own limit. Without one they share the general bucket, as test
// mode counts them toward its 25/s. The request's Endpoint says which it is.
class RateLimitedTransport final : public HttpTransport {
 public:
  RateLimitedTransport(std::shared_ptr<HttpTransport> inner, std::shared_ptr<RateLimiter> limiter,
                       std::shared_ptr<RateLimiter> meter_limiter = nullptr);
  Expected<HttpResponse> send(const HttpRequest& request) override;
  void abort_in_flight() override;

 private:
  RateLimiter& limiter_for(const HttpRequest& request) const;

  std::shared_ptr<HttpTransport> inner_;
  std::shared_ptr<RateLimiter> limiter_;
  std::shared_ptr<RateLimiter> meter_limiter_;
};

bool is_meter_event_endpoint(Endpoint endpoint) noexcept;

}  // namespace stripe_billing
