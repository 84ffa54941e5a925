// Counters shared by the intake, the dispatcher and StripeLogger::stats(). Lock-free for the
// counters; the per-reason map takes a mutex (reasons are counted off the host's thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace stripe_billing {

struct Metrics {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> failure_events{0};
  std::atomic<std::uint64_t> accepted{0};       // stored in the outbox
  std::atomic<std::uint64_t> deduplicated{0};   // (call id, dimension) already stored
  std::atomic<std::uint64_t> skipped_zero{0};
  std::atomic<std::uint64_t> lost{0};           // could not be kept: memory cap or storage failure
  std::atomic<std::uint64_t> dropped_shutdown{0};
  std::atomic<std::uint64_t> delivered_events{0};
  std::atomic<std::uint64_t> delivered_requests{0};
  std::atomic<std::uint64_t> quantity_delivered{0};
  std::atomic<std::uint64_t> failed_events{0};  // dead after reaching Stripe or its limits
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> stripe_requests{0};

  void count_reason(const std::string& reason, std::uint64_t n = 1) {
    std::lock_guard lock(mutex_);
    reasons_[reason] += n;
  }
  std::map<std::string, std::uint64_t> reasons() const {
    std::lock_guard lock(mutex_);
    return reasons_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> reasons_;
};

}  // namespace stripe_billing
