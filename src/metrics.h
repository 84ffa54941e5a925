// Counters shared by the intake, the dispatcher, the transport and StripeLogger::stats().
// Lock-free for the plain counters and the latency histogram; the per-reason, per-request and
// per-model maps take a mutex (they are counted off the host's thread).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {

class Metrics {
 public:
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> failure_events{0};
  std::atomic<std::uint64_t> accepted{0};      // stored in the outbox
  std::atomic<std::uint64_t> deduplicated{0};  // (call id, dimension, sink) already stored
  std::atomic<std::uint64_t> skipped_zero{0};
  std::atomic<std::uint64_t> lost{0};  // could not be kept: memory cap or storage failure
  std::atomic<std::uint64_t> dropped_shutdown{0};
  std::atomic<std::uint64_t> delivered_events{0};
  std::atomic<std::uint64_t> delivered_requests{0};
  std::atomic<std::uint64_t> quantity_delivered{0};
  std::atomic<std::uint64_t> failed_events{0};  // dead after reaching Stripe or its limits
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> stripe_requests{0};
  std::atomic<std::uint64_t> outbox_commits{0};  // the writer's transactions

  void count_reason(const std::string& reason, std::uint64_t n = 1);
  std::map<std::string, std::uint64_t> reasons() const;

  // One request to Stripe: its endpoint label, status class and network time.
  void count_request(const std::string& endpoint, const char* status_class,
                     std::chrono::nanoseconds latency);
  std::vector<RequestCount> requests() const;
  LatencyHistogram latency() const;

  void count_quantity(const std::string& model, std::uint64_t quantity);
  std::map<std::string, std::uint64_t> quantity_by_model() const;

 private:
  static constexpr std::size_t kMaxModels = 100;
  static constexpr std::size_t kBuckets = 12;  // LatencyHistogram::bounds() and +Inf

  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> reasons_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> requests_;
  std::map<std::string, std::uint64_t> quantity_by_model_;
  std::array<std::atomic<std::uint64_t>, kBuckets> latency_buckets_{};
  std::atomic<std::uint64_t> latency_count_{0};
  std::atomic<std::uint64_t> latency_sum_ns_{0};
};

}  // namespace stripe_billing
