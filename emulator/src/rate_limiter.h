// A token bucket over all API requests: `requests_per_second` tokens a second, a burst of one
// second's worth (at least one). Off when the rate is 0. Thread-safe.
#pragma once

#include <chrono>
#include <mutex>

namespace stripe_emulator {

class RateLimiter {
 public:
  void set_rate(double requests_per_second);
  bool try_acquire();

 private:
  using Clock = std::chrono::steady_clock;

  std::mutex mutex_;
  double rate_ = 0;
  double tokens_ = 0;
  Clock::time_point refilled_at_ = Clock::now();
};

}  // namespace stripe_emulator
