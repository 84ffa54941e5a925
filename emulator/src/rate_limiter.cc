#include "rate_limiter.h"

#include <algorithm>

namespace stripe_emulator {

void RateLimiter::set_rate(double requests_per_second) {
  std::lock_guard lock(mutex_);
  rate_ = std::max(0.0, requests_per_second);
  tokens_ = std::max(1.0, rate_);
  refilled_at_ = Clock::now();
}

bool RateLimiter::try_acquire() {
  std::lock_guard lock(mutex_);
  if (rate_ <= 0) return true;
  const auto now = Clock::now();
  const std::chrono::duration<double> elapsed = now - refilled_at_;
  tokens_ = std::min(std::max(1.0, rate_), tokens_ + elapsed.count() * rate_);
  refilled_at_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

}  // namespace stripe_emulator
