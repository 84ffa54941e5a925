// Client-side rate limiting for every request to Stripe, lookups included. A token bucket at the
// configured rate; a throttling 429 (one carrying Stripe-Rate-Limited-Reason) halves the rate,
// which then recovers by 10 % every 5 s without another throttle, up to the configured rate.
// It sits at the transport seam (RateLimitedTransport), so no caller can bypass it.
//
// Thread-safe. acquire() blocks the calling sender thread, never the host.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "stripe_billing/http_transport.h"

namespace stripe_billing {

class RateLimiter {
 public:
  explicit RateLimiter(double requests_per_second);

  // Waits for a token. False when interrupted (shutdown): the caller must not send.
  bool acquire();
  void on_throttled();
  void interrupt();  // wakes every waiter; later acquire() calls fail at once

  double current_rate() const;
  std::uint64_t waits() const;  // acquisitions that had to wait

 private:
  using Clock = std::chrono::steady_clock;
  void refill(Clock::time_point now);

  const double configured_rate_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  double rate_;
  double tokens_;
  Clock::time_point last_refill_;
  Clock::time_point last_throttle_;
  Clock::time_point last_recovery_;
  bool interrupted_ = false;
  std::uint64_t waits_ = 0;
};

// Meter event requests (v1 meter_events, the v2 stream) go through `meter_limiter` when there is
// one: live mode gives them their own limit. Without one they share the general bucket, as test
// mode counts them toward its 25/s.
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

bool is_meter_event_request(const std::string& url);

}  // namespace stripe_billing
