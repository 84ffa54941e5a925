// StripeLogger: the "stripe" success callback. log_success_event() copies the event into a bounded
// in-memory queue and returns; one background thread ("stripe-billing") validates it, resolves
// the customer to a subscription item, and records the usage at Stripe. Nothing here throws into
// the host or makes the host wait on the network; every failure is logged and counted.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "stripe_billing/callback.h"
#include "stripe_billing/config.h"
#include "stripe_billing/error.h"
#include "stripe_billing/usage_event.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

class HttpTransport;

// Seconds-resolution wall clock, injectable so tests can move time (lookup cache TTLs).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  static std::shared_ptr<Clock> system();
};

struct StripeLoggerOptions {
  std::shared_ptr<HttpTransport> transport;  // null: libcurl with the config's timeouts
  std::shared_ptr<spdlog::logger> logger;    // null: a silent logger (never spdlog's global one)
  std::shared_ptr<Clock> clock;              // null: the system clock
};

// A consistent-enough snapshot of the counters (each one is read atomically).
struct StripeLoggerStats {
  std::uint64_t received = 0;            // log_success_event calls
  std::uint64_t failure_events = 0;      // log_failure_event calls (never billed)
  std::uint64_t delivered = 0;           // usage records Stripe accepted
  std::uint64_t quantity_delivered = 0;  // their summed quantity
  std::uint64_t skipped_zero = 0;        // zero quantity: nothing to bill
  std::uint64_t dropped_queue_full = 0;  // the in-memory queue was full
  std::uint64_t dropped_shutdown = 0;    // arrived after shutdown began
  std::uint64_t failed = 0;              // Stripe or the network refused it for good
  std::uint64_t stripe_requests = 0;     // every HTTP request sent to Stripe, lookups included
  std::uint64_t retries = 0;
  std::uint64_t lookup_hits = 0;
  std::uint64_t lookup_misses = 0;
  std::uint64_t pending = 0;  // accepted and not yet handled
  // Reasons an event was not billed: missing_customer, customer_not_found,
  // subscription_item_not_found, negative_quantity, quantity_too_large, missing_usage,
  // invalid_event, and stripe_<error code> / network / timeout for failures.
  std::map<std::string, std::uint64_t> rejected;
};

class StripeLogger final : public CustomLogger {
 public:
  explicit StripeLogger(FinalizedConfig config, StripeLoggerOptions options = {});
  ~StripeLogger() override;  // shutdown() with a 5 s deadline
  StripeLogger(const StripeLogger&) = delete;
  StripeLogger& operator=(const StripeLogger&) = delete;

  void log_success_event(const UsageEvent& event) noexcept override;
  void log_failure_event(const UsageEvent& event) noexcept override;
  bool flush(std::chrono::steady_clock::time_point deadline) noexcept override;
  bool shutdown(std::chrono::steady_clock::time_point deadline) noexcept override;

  StripeLoggerStats stats() const;
  const FinalizedConfig& config() const noexcept;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Builds a StripeLogger from a raw Config (finalize_config, then the constructor).
Expected<std::unique_ptr<StripeLogger>> make_stripe_logger(const Config& config,
                                                           StripeLoggerOptions options = {});

}  // namespace stripe_billing
