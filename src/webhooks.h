// Stripe's webhooks: handle() verifies the Stripe-Signature header (HMAC-SHA256 of "t.body" with
// the endpoint's secret, compared in constant time, within STRIPE_WEBHOOK_TOLERANCE_S of now),
// stores the event by id in the AdmissionStore (a redelivery is acknowledged, not processed
// again) and answers at once; the "sb-webhooks" thread processes it:
//   v1.billing.meter.error_report_triggered (thin): GET /v2/core/events/{id}; each sampled
//     identifier names a meter row (call id ':' dimension) that becomes dead with reason
//     stripe_<code>; every reported error is counted (the report samples, it does not list all).
//   v1.billing.meter.no_meter_found: counted and logged (the meter's event name is not known).
//   billing.credit_grant.*: data.object.customer's balance is fetched again.
//   billing.credit_balance_transaction.*: its credit grant's customer (GET the grant) likewise.
//   anything else: acknowledged and counted as unhandled.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "admission_store.h"
#include "stripe_billing/admission.h"
#include "stripe_billing/config.h"
#include "stripe_billing/secret.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/stripe_logger.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

class Admission;
class Metrics;
class Outbox;

enum class SignatureCheck { kValid, kMalformed, kMismatch, kStale };
const char* to_string(SignatureCheck check) noexcept;  // valid, malformed_signature, ...

// Stripe-Signature: "t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]". Any v1 that matches is
// enough (Stripe sends one per active secret while a secret is rolled).
SignatureCheck verify_stripe_signature(std::string_view body, std::string_view header,
                                       const Secret& secret, std::int64_t now_s,
                                       std::int64_t tolerance_s);

// (call id, dimension) of a meter event's identifier (meter_event.h), or nullopt for a hashed
// one ("sbh-…", which names no row by itself) or one without a ':'.
std::optional<std::pair<std::string, std::string>> split_meter_identifier(std::string_view id);

class Webhooks {
 public:
  Webhooks(const FinalizedConfig& config, const StripeClient& client,
           std::shared_ptr<AdmissionStore> store, Outbox& outbox, Metrics& metrics,
           Admission* admission, std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock);
  ~Webhooks();
  Webhooks(const Webhooks&) = delete;
  Webhooks& operator=(const Webhooks&) = delete;

  WebhookResponse handle(std::string_view body, std::string_view signature) noexcept;
  // Waits until every stored event has been processed (or the deadline passes).
  bool drain(std::chrono::steady_clock::time_point deadline);
  void stop();
  std::map<std::string, std::uint64_t> counters() const;  // by outcome

 private:
  void run();
  void process(const StoredWebhook& event);
  void error_report(const StoredWebhook& event, const nlohmann::json& thin);
  void credit_event(const nlohmann::json& event);
  void count(const std::string& outcome, std::uint64_t n = 1);
  std::int64_t now_ms() const;

  const FinalizedConfig& config_;
  const StripeClient& client_;
  std::shared_ptr<AdmissionStore> store_;
  Outbox& outbox_;
  Metrics& metrics_;
  Admission* admission_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;

  mutable std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable idle_;
  std::deque<StoredWebhook> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  std::map<std::string, std::uint64_t> counters_;
  std::thread thread_;
};

}  // namespace stripe_billing
