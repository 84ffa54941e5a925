#include "rate_limiter.h"

#include <algorithm>

namespace stripe_emulator {

void RateLimiter::set_rate(double requests_per_second,
                           std::optional<std::chrono::seconds> retry_after) {
  std::lock_guard lock(mutex_);
  rate_ = std::max(0.0, requests_per_second);
  tokens_ = std::max(1.0, rate_);
  refilled_at_ = Clock::now();
  retry_after_ = retry_after;
}

std::optional<RateLimiter::Limited> RateLimiter::over_limit() {
  std::lock_guard lock(mutex_);
  if (rate_ <= 0) return std::nullopt;
  const auto now = Clock::now();
  const std::chrono::duration<double> elapsed = now - refilled_at_;
  tokens_ = std::min(std::max(1.0, rate_), tokens_ + elapsed.count() * rate_);
  refilled_at_ = now;
  if (tokens_ < 1.0) return Limited{retry_after_};
  tokens_ -= 1.0;
  return std::nullopt;
}

}  // namespace stripe_emulator
