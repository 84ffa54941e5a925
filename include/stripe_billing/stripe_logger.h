// StripeLogger: the "stripe" success callback. log_success_event() hands the event to the intake
// (async: a copy into a bounded buffer; sync: wait for its commit) and returns. Background
// threads store it in the durable outbox, resolve the customer (and, for usage records, its
// subscription item), and record the usage at Stripe exactly once, as usage records, meter
// events or both (STRIPE_BILLING_MODE). Nothing here throws into the host or makes the host
// wait on the network; every failure is logged and counted, and what is not delivered stays in
// the outbox for the next start.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "stripe_billing/admission.h"
#include "stripe_billing/callback.h"
#include "stripe_billing/config.h"
#include "stripe_billing/error.h"
#include "stripe_billing/usage_event.h"

namespace spdlog {
class logger;
namespace sinks {
class sink;
}
}  // namespace spdlog

namespace stripe_billing {

class HttpTransport;

// The library's clocks, injectable so tests can move time: the wall clock (event times, lookup
// cache TTLs, batch ages as stored) and a monotonic one (rate limiting, ages within a run, which a
// jump of the wall clock must not move).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  virtual std::chrono::steady_clock::time_point steady_now() const {
    return std::chrono::steady_clock::now();
  }
  static std::shared_ptr<Clock> system();
};

struct StripeLoggerOptions {
  std::shared_ptr<HttpTransport> transport;  // null: libcurl with the config's timeouts
  // The host's logger, or else its sinks for a logger named "stripe_billing"; with neither, a
  // silent logger. Never spdlog's global registry or default logger.
  std::shared_ptr<spdlog::logger> logger;
  std::shared_ptr<Clock> clock;  // null: the system clock
  std::vector<std::shared_ptr<spdlog::sinks::sink>> sinks;
};

// Request latency in fixed buckets (seconds), as Prometheus histograms count them.
struct LatencyHistogram {
  // Upper bounds of the buckets, ascending; one more bucket (+Inf) follows the last.
  static const std::vector<double>& bounds();
  std::vector<std::uint64_t> buckets;  // per bucket, not cumulative; bounds().size() + 1
  std::uint64_t count = 0;
  double sum_seconds = 0;
};

// Requests to Stripe by endpoint (usage_records, meter_events, meter_event_stream,
// meter_event_session, customer_search, subscriptions, prices, meters, summaries, other) and
// status class (2xx, 4xx, 5xx, network: no answer).
struct RequestCount {
  std::string endpoint;
  std::string status_class;
  std::uint64_t count = 0;
};

// A snapshot of the counters (each read atomically) and of the outbox. metrics.h renders it as
// JSON and as Prometheus text.
struct StripeLoggerStats {
  std::uint64_t received = 0;        // log_success_event calls
  std::uint64_t failure_events = 0;  // log_failure_event calls (never billed)
  // Counts of outbox rows: one per call, billed dimension and sink (dual mode: two per call).
  std::uint64_t accepted = 0;          // rows stored in the outbox
  std::uint64_t outbox_commits = 0;    // the writer's transactions (group commits)
  std::uint64_t deduplicated = 0;      // the same call id, dimension and sink reported again
  std::uint64_t skipped_zero = 0;      // zero quantity: nothing to bill
  std::uint64_t lost = 0;              // could not be kept (memory cap reached, outbox unwritable)
  std::uint64_t dropped_shutdown = 0;  // arrived after shutdown began
  std::uint64_t delivered = 0;         // rows Stripe recorded
  std::uint64_t delivered_requests = 0;  // requests Stripe accepted (one per batch)
  std::uint64_t quantity_delivered = 0;
  std::uint64_t failed = 0;           // rows dead after Stripe refused them for good
  std::uint64_t stripe_requests = 0;  // requests sent to Stripe, lookups included
  std::uint64_t retries = 0;
  std::uint64_t lookup_hits = 0;
  std::uint64_t lookup_misses = 0;
  std::uint64_t lookup_failures = 0;     // lookups that failed for a reason other than "not found"
  std::uint64_t rate_limited_waits = 0;  // requests that waited for the client-side rate limit
  double rate_limit = 0;                 // the current rate (lowered by throttling 429s)
  double meter_rate_limit = 0;           // live mode: the meter events' own current rate; else 0
  std::uint64_t rate_limit_decreases = 0;  // times a throttling 429 lowered a rate
  bool paused = false;                     // Stripe refuses the key: sending paused, probing
  std::uint64_t queued_batches = 0;        // batches in memory for the senders (the rest: outbox)
  // The outbox: events waiting (in memory or stored), parked, dead; the oldest waiting (ms).
  std::uint64_t pending = 0;
  std::uint64_t parked = 0;
  std::uint64_t dead = 0;
  std::int64_t oldest_pending_age_ms = 0;
  // Why rows were not billed (yet): missing_customer, customer_not_found,
  // subscription_item_not_found, negative_quantity, quantity_too_large, missing_usage,
  // invalid_customer_key, outbox_unwritable, stripe_<code>, max_delivery_age_exceeded,
  // meter_timestamp_too_old, meter_value_too_large, usage_records_not_in_mode, ... (see
  // docs/operations.md)
  std::map<std::string, std::uint64_t> rejected;
  std::vector<RequestCount> requests;  // every request sent, lookups and probes included
  LatencyHistogram request_latency;    // every request sent, network time only
  // Quantity Stripe recorded, by the model of the calls (at most 100 models; the rest "other").
  std::map<std::string, std::uint64_t> quantity_by_model;

  // Admission (STRIPE_ADMISSION, docs/admission.md).
  std::uint64_t admissions = 0;            // admit() allowed within a budget
  std::uint64_t admissions_fail_open = 0;  // allowed because the balance was unknown
  // Refused, by reason: budget_exhausted, credits_exhausted, held_by_open_calls, budget_refilling,
  // balance_unavailable, not_estimable, missing_customer, no_budget.
  std::map<std::string, std::uint64_t> admission_denials;
  std::uint64_t holds_open = 0;
  std::uint64_t holds_settled = 0;         // settled by log_success_event
  std::uint64_t holds_released = 0;        // released by log_failure_event
  std::uint64_t holds_expired = 0;         // neither within STRIPE_HOLD_TTL_S
  std::uint64_t settled_without_hold = 0;  // a success with no admitted hold: counted as used
  std::uint64_t overage = 0;  // billed units used past a budget (recorded and billed, not forgiven)
  std::uint64_t admission_store_errors = 0;
  std::uint64_t credit_balance_fetches = 0;
  std::uint64_t credit_balance_failures = 0;
  // Stripe's webhooks by outcome: received, duplicate, bad_signature, stale_timestamp,
  // malformed_signature, invalid_event, unhandled, meter_error_report, meter_rows_rejected, ...
  std::map<std::string, std::uint64_t> webhooks;
};

class StripeLogger final : public CustomLogger {
 public:
  explicit StripeLogger(FinalizedConfig config, StripeLoggerOptions options = {});
  ~StripeLogger() override;  // shutdown() with a 5 s deadline
  StripeLogger(const StripeLogger&) = delete;
  StripeLogger& operator=(const StripeLogger&) = delete;

  void log_success_event(const UsageEvent& event) noexcept override;
  void log_failure_event(const UsageEvent& event) noexcept override;

  // Before the upstream call: may this customer spend? Decided from memory (the first call for a
  // customer may wait STRIPE_ADMISSION_WAIT_MS for its state); never throws, never on the
  // network. An allowed call holds its estimate until log_success_event or log_failure_event
  // for the same call id, or STRIPE_HOLD_TTL_S. With STRIPE_ADMISSION=off: always allowed.
  AdmissionDecision admit(const AdmissionRequest& request) noexcept;
  // For the host's webhook route: the raw body and the Stripe-Signature header. Verified,
  // stored and answered at once; processed in the background (admission.h: WebhookResponse).
  WebhookResponse handle_stripe_webhook(std::string_view body,
                                        std::string_view stripe_signature) noexcept;
  bool flush(std::chrono::steady_clock::time_point deadline) noexcept override;
  // Waits until the outbox holds nothing outstanding: this process's calls are all stored and no
  // row of the store is pending or in an undelivered batch (everything delivered, or parked or
  // dead with a reason). On SQLite that is flush(). On a fleet's PostgreSQL store, where
  // flush() returns once the calls are stored (another replica may run the delivery engine), it
  // goes on waiting for the fleet's store: woken by this process's deliveries, and asking the
  // store again every 200 ms for what other replicas deliver (and for their calls too). False
  // at the deadline (Stripe refusing, no replica delivering), or after shutdown() with rows left.
  bool wait_until_delivered(std::chrono::steady_clock::time_point deadline) noexcept;
  bool shutdown(std::chrono::steady_clock::time_point deadline) noexcept override;

  StripeLoggerStats stats() const;
  const FinalizedConfig& config() const noexcept;
  // Reads STRIPE_MODEL_MAP_FILE and STRIPE_PRICE_TABLE again if they changed (as the library
  // does by itself every STRIPE_TABLE_RELOAD_S), for hosts that reload on a signal. A broken
  // file is refused (kInvalidConfig, every problem named) and the last good table stays.
  Expected<bool> reload_tables();  // true: a table was taken anew

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Builds a StripeLogger from a raw Config (finalize_config, then the constructor). Also fails
// (kStorage) when the outbox cannot be opened; the constructor instead falls back to an in-memory
// outbox and logs the problem, so a host that constructs directly still runs.
Expected<std::unique_ptr<StripeLogger>> make_stripe_logger(const Config& config,
                                                           StripeLoggerOptions options = {});

}  // namespace stripe_billing
