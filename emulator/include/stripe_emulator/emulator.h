// A Stripe-compatible HTTP server on 127.0.0.1 for tests and the demo. It accepts exactly the
// parameters Stripe's published request schemas accept (emulator/spec/*.json) and answers errors
// with Stripe's bodies and headers. It also serves billing meters: v1 meter events and, on the
// same port, the v2 meter events (one event, validated synchronously), meter event session and
// stream (JSON). Secret keys may do everything; restricted keys (rk_test_…) only what their
// permissions allow (see emulator/src/permissions.h for the names). It also keeps customers'
// billing credit grants and balances, and sends webhook events signed as Stripe signs them:
// snapshot (v1) events for credits, thin (v2) events for meter error reports, the full v2 event at
// GET /v2/core/events/{id}. Test code seeds it and reads its totals directly; the
// `stripe-emulator` binary exposes the same controls over HTTP under /_emulator/.
//
// Thread-safe: every public method may be called while requests are being served.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace stripe_emulator {

struct EmulatorOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  // Secret keys the emulator accepts as Bearer tokens. Anything else gets Stripe's 401.
  std::vector<std::string> api_keys = {"sk_test_emulator_0000000000000000"};
  // Restricted keys (rk_test_…) the emulator accepts, each with its permissions, named as Stripe
  // names them (rak_customer_read, rak_billing_meter_event_write, …; the rak_ prefix may be left
  // out; a _write permission implies its _read one). A request whose operation needs a permission
  // the key lacks gets Stripe's 403. The constructor throws std::invalid_argument for a key not
  // starting with rk_ or an unknown permission name.
  std::map<std::string, std::set<std::string>> restricted_keys;
  // Seconds since the epoch; injectable so tests can move time. Default: the system clock.
  // Webhook signatures (t=) and event times use it too.
  std::function<std::int64_t()> clock;
  // A webhook delivery answered with anything but 2xx (or not answered within 2 s) is tried again
  // after each of these delays in turn, then given up. Stripe retries for days; tests want it fast.
  std::vector<std::chrono::milliseconds> webhook_retry_delays = {std::chrono::milliseconds(100),
                                                                 std::chrono::milliseconds(200),
                                                                 std::chrono::milliseconds(400)};
  // A meter error report (v1.billing.meter.error_report_triggered, v1.billing.meter.no_meter_found)
  // carries at most this many sample_errors per error code, as Stripe only samples; each code's
  // error_count stays the true count.
  std::size_t error_report_samples = 5;
};

enum class FaultKind {
  kStatus,            // answer `status` with a Stripe error body, before doing anything
  kHang,              // hold the request for `hang` (released early by release_hangs()/stop)
  kCloseConnection,   // drop the connection before doing anything
  kCloseAfterCommit,  // do the work (and store the idempotent result), then drop the connection
};

// What a 429 says the trouble is: its error `code`.
enum class TooManyRequestsCode {
  kRateLimit,    // throttling: code rate_limit, with a Stripe-Rate-Limited-Reason header
  kLockTimeout,  // another request holds the object: code lock_timeout, no reason header
};

struct Fault {
  FaultKind kind = FaultKind::kStatus;
  int status = 500;         // for kStatus: 500, 429 (as `code` below says), 409, 401, ...
  std::string path_prefix;  // only requests whose path starts with this; empty: all API requests
  std::chrono::milliseconds hang{0};
  // For a kStatus 429 only. With kRateLimit, the Stripe-Rate-Limited-Reason header's value:
  // global-rate, global-concurrency, endpoint-rate, endpoint-concurrency or resource-specific;
  // empty: no header. The defaults answer what a plain 429 fault always answered.
  TooManyRequestsCode code = TooManyRequestsCode::kRateLimit;
  std::string rate_limited_reason = "global-rate";
  // For kStatus, any status: a Retry-After header with these seconds. Empty: none.
  std::optional<std::chrono::seconds> retry_after = std::nullopt;
};

struct RecordedRequest {
  std::string method;
  std::string path;        // decoded path as routed, e.g. /v1/subscription_items/si_1/usage_records
  std::string raw_target;  // the request target exactly as received (path + query, encoded)
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  int status = 0;  // what the emulator answered (0 when the connection was dropped)
  std::chrono::steady_clock::time_point received_at{};  // when the emulator received it
};

// Answers counted as they are given: cheap to read however many requests were served (requests()
// copies the whole log). Covers the API requests in the log: clear_requests() resets it.
struct AnswerCounts {
  std::map<int, std::size_t> by_status;  // status -> answers; 0 counts dropped connections
  // 429s by kind: the error code, then "/" and the Stripe-Rate-Limited-Reason when there is one:
  // "rate_limit/global-rate", "rate_limit/resource-specific", "lock_timeout", ...
  std::map<std::string, std::size_t> too_many_requests;
};

struct UsageRecord {
  std::string id;
  std::string subscription_item;
  std::int64_t quantity = 0;
  std::int64_t timestamp = 0;
  std::string action;  // increment | set
};

// One billing meter event as the emulator received it, over v1, the v2 stream or v2 meter events.
struct MeterEventRecord {
  std::string event_name;
  std::string identifier;
  std::map<std::string, std::string> payload;
  std::int64_t timestamp = 0;  // unix seconds
  // "v1" (POST /v1/billing/meter_events), "v2" (the v2 stream) or "v2_event"
  // (POST /v2/billing/meter_events)
  std::string source;
  bool cancelled = false;
  std::string error_code;  // empty: counted; otherwise the asynchronous error report's code
};

// One POST of an event to a webhook endpoint, once answered or failed.
struct WebhookDelivery {
  std::string event_id;
  std::string type;  // the event's type, e.g. billing.credit_grant.created
  std::string url;
  // "normal" (the first try), "retry" (a normal delivery tried again), "redelivery",
  // "forged" (signed with a wrong secret) or "stale" (signed with an old timestamp)
  std::string kind;
  int attempt = 1;  // 1 for the first try of a delivery, then 2, 3, ... for its retries
  int status = 0;   // the endpoint's answer; 0: no answer (refused, timed out)
  std::string signature_header;  // Stripe-Signature as sent: t=<unix seconds>,v1=<hex>
  std::string body;              // the raw JSON body as sent
};

struct SubscriptionIds {
  std::string subscription_id;
  std::string item_id;
};

class Emulator {
 public:
  // Listens before returning; throws std::runtime_error when host:port cannot be bound.
  explicit Emulator(EmulatorOptions options = {});
  ~Emulator();  // stop()
  Emulator(const Emulator&) = delete;
  Emulator& operator=(const Emulator&) = delete;

  int port() const;
  std::string base_url() const;  // http://127.0.0.1:<port>
  // Releases hangs, stops listening and waits for the request threads, and stops the webhook
  // delivery thread (deliveries not yet made are dropped); idempotent. A client holding an idle
  // keep-alive connection can delay it by up to one second.
  void stop();

  // Seeding, without HTTP. Ids look like Stripe's (cus_…, prod_…, price_…, sub_…, si_…).
  std::string create_customer(const std::map<std::string, std::string>& metadata,
                              const std::string& email = "");
  std::string create_product(const std::string& name);
  // A legacy metered recurring price (usage_type=metered, aggregate_usage=sum), per unit.
  std::string create_metered_price(const std::string& product_id, std::int64_t unit_amount = 1,
                                   const std::string& currency = "usd");
  // An active subscription with one item on `price_id`. The current period defaults to
  // [now - 1 day, now + 29 days).
  SubscriptionIds create_subscription(const std::string& customer_id, const std::string& price_id,
                                      std::optional<std::int64_t> period_start = std::nullopt,
                                      std::optional<std::int64_t> period_end = std::nullopt);
  void delete_subscription_item(const std::string& item_id);  // later calls get 404
  // A meter on `event_name` (formula sum|count|last); returns its id (mtr_…). Throws
  // std::invalid_argument when an active meter already has that event name.
  // `dimension_payload_keys` (Stripe's meter dimensions): payload keys every event must carry; an
  // event lacking one is accepted but not counted (error code missing_dimension_payload_keys), and
  // the meter's totals can be split by them (meter_totals_by_dimension).
  std::string create_meter(const std::string& event_name,
                           const std::string& customer_payload_key = "stripe_customer_id",
                           const std::string& value_payload_key = "value",
                           const std::string& formula = "sum",
                           const std::vector<std::string>& dimension_payload_keys = {});
  // Billing credits (Stripe's credit grants, applied to metered prices). A grant of `amount` in the
  // smallest currency unit raises the customer's available balance; returns its id
  // (credgr_test_…) and emits billing.credit_grant.created. Throws std::invalid_argument for an
  // unknown customer, an amount that is not positive or a currency other than the one of the
  // customer's earlier grants (a customer is billed in one currency).
  std::string create_credit_grant(const std::string& customer_id, std::int64_t amount,
                                  const std::string& currency = "usd");
  // An invoice applying up to `amount` of the customer's credits: the balance drops, never below
  // 0, drawing on the oldest grants first; one credit balance transaction (cbtxn_test_…, a debit)
  // per grant drawn on, each emitting billing.credit_balance_transaction.created. Nothing happens
  // when the balance is 0. Throws std::invalid_argument for an unknown customer or an amount that
  // is not positive.
  void consume_credits(const std::string& customer_id, std::int64_t amount);
  // The customer's available credit balance (0 without grants).
  std::int64_t credit_balance(const std::string& customer_id) const;

  // Webhooks. Every event emitted from now on is POSTed to `url` (http://host:port/path) with
  // Stripe-Signature computed with `secret` (whsec_…), on the emulator's delivery thread, retried
  // as EmulatorOptions::webhook_retry_delays says. Throws std::invalid_argument for a URL that is
  // not http:// or https://, or an empty secret.
  void add_webhook_endpoint(const std::string& url, const std::string& secret);
  // The emitted event again, to every endpoint, with the same body and a fresh, correct signature
  // (a duplicate, as Stripe may send), kind "redelivery"; not retried. Throws std::invalid_argument
  // for an unknown event id (also the two below).
  void redeliver_event(const std::string& event_id);
  // The event signed with a wrong secret (kind "forged"; not retried).
  void deliver_forged(const std::string& event_id);
  // The event signed correctly but with t = now - age by the emulator clock (kind "stale"; not
  // retried).
  void deliver_stale(const std::string& event_id, std::chrono::seconds age);
  // Every delivery answered or failed so far, in the order they finished.
  std::vector<WebhookDelivery> webhook_deliveries() const;
  // True once at least `count` deliveries have been answered or failed; false when `timeout`
  // passes first.
  bool wait_for_webhook_deliveries(std::size_t count, std::chrono::milliseconds timeout) const;

  // Meter error reports. Makes the counted meter event `identifier` (v1, stream or v2) fail
  // Stripe's asynchronous validation with `code` (e.g. meter_event_customer_not_found): it stops
  // counting and awaits the next error report. Throws std::invalid_argument when no counted event
  // has that identifier, or `code` is empty.
  void reject_meter_event_async(const std::string& identifier, const std::string& code);
  // Emits v1.billing.meter.error_report_triggered (a thin v2 event about the meter) for the events
  // of `event_name`'s active meter that failed validation and were in no report yet, and returns
  // its id (evt_test_…); "" when there is nothing to report. Throws std::invalid_argument when no
  // meter is active on `event_name`.
  std::string trigger_meter_error_report(const std::string& event_name);
  // Emits v1.billing.meter.no_meter_found (thin, no related object) for the events, of any name,
  // that had no active meter (code no_meter) and were in no report yet; "" when there are none.
  std::string trigger_no_meter_found();

  // Adds (or replaces) a restricted key while the emulator runs; throws std::invalid_argument as
  // EmulatorOptions::restricted_keys says.
  void add_restricted_key(const std::string& key, const std::set<std::string>& permissions);

  // Faults: the next `count` matching API requests get `fault`. Faults queue in order.
  void inject(const Fault& fault, int count = 1);
  void clear_faults();
  // Each API request that no queued fault matches gets one of these with its probability
  // (rolled in order, from a generator seeded with `seed`). An empty list turns them off.
  void set_random_faults(const std::vector<std::pair<Fault, double>>& faults, std::uint32_t seed);
  // Requests per second over all API requests; above it, 429 with
  // Stripe-Rate-Limited-Reason: global-rate, and Retry-After when `retry_after` is given. 0 turns
  // it off.
  void set_rate_limit(double requests_per_second,
                      std::optional<std::chrono::seconds> retry_after = std::nullopt);
  void release_hangs();

  // Requests currently held by a kHang fault, and a wait for them (true once `count` are held
  // at the same time, false when `timeout` passes first).
  std::size_t hung_requests() const;
  bool wait_for_hung_requests(std::size_t count, std::chrono::milliseconds timeout) const;

  // Observation.
  std::int64_t total_usage(const std::string& item_id) const;  // over all records of the item
  std::vector<UsageRecord> usage_records(const std::string& item_id) const;
  std::map<std::string, std::int64_t> totals_by_customer() const;  // customer id -> usage
  std::map<std::string, std::int64_t> totals_by_item() const;      // item id -> usage
  std::vector<RecordedRequest> requests() const;
  void clear_requests();
  AnswerCounts answer_counts() const;
  // API requests received in [from, to) and already answered with a status in [min_status,
  // max_status], without copying the log: count_answers(200, 299, t0, t1) / (t1 - t0) is the
  // accepted rate.
  std::size_t count_answers(int min_status, int max_status,
                            std::chrono::steady_clock::time_point from,
                            std::chrono::steady_clock::time_point to) const;

  // Billing meters. Every meter event received (v1 and v2), oldest first, including the ones
  // rejected asynchronously (error_code set) and the cancelled ones.
  std::vector<MeterEventRecord> meter_events() const;
  // The meter's aggregated value per customer id over all counted, non-cancelled events, or
  // only events whose payload[group_key] == group_value when group_key is not empty.
  std::map<std::string, double> meter_totals_by_customer(const std::string& event_name,
                                                         const std::string& group_key = "",
                                                         const std::string& group_value = "") const;
  // The meter's aggregated value over the counted, non-cancelled events, split by customer and by
  // the values of the payload keys `keys` (usually the meter's dimension_payload_keys; any keys
  // may be asked for, a missing one reads as ""). Each entry's key is {customer id, value of
  // keys[0], value of keys[1], …}. Only `customer_id`'s events unless it is empty. Aggregated with
  // the meter's formula (sum, count, last) within each group; nothing when no meter is active.
  std::map<std::vector<std::string>, double> meter_totals_by_dimension(
      const std::string& event_name, const std::string& customer_id,
      const std::vector<std::string>& keys) const;
  // Stripe allows one v1 meter event request at a time per customer and meter: one that arrives
  // while another for the same event_name and customer payload value is being processed gets 429
  // (rate_limit, Stripe-Rate-Limited-Reason: resource-specific). The number of those refusals
  // since the emulator started.
  std::size_t concurrent_meter_event_refusals() const;
  // Makes every v2 meter event session token expire now (the next stream call gets 401 expired).
  void expire_meter_sessions();
  std::size_t meter_sessions_created() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stripe_emulator
