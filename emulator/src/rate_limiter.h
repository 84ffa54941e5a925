// A token bucket over all API requests: `requests_per_second` tokens a second, a burst of one
// second's worth (at least one). Off when the rate is 0. Thread-safe.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>

namespace stripe_emulator {

class RateLimiter {
 public:
  // What a request over the limit is answered with.
  struct Limited {
    std::optional<std::chrono::seconds> retry_after;  // a Retry-After header, if any
  };

  void set_rate(double requests_per_second, std::optional<std::chrono::seconds> retry_after);
  // Takes a token for one request: nothing when there was one; otherwise it is over the limit.
  std::optional<Limited> over_limit();

 private:
  using Clock = std::chrono::steady_clock;

  std::mutex mutex_;
  double rate_ = 0;
  double tokens_ = 0;
  Clock::time_point refilled_at_ = Clock::now();
  std::optional<std::chrono::seconds> retry_after_;
};

}  // namespace stripe_emulator
