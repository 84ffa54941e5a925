// The planner: which pending outbox rows become which batches, which wait, and which are parked
// or die. Pure functions of the rows, what is known of their customers, and the time: no
// threads, no I/O, no store. The dispatcher reads the rows, asks, and writes the plan.
//
// For each group of rows with one (sink, dimension, customer key), in order:
//   dimension not billed by this configuration  -> parked dimension_not_configured
//   sink not sent by this billing mode          -> parked usage_records_not_in_mode /
//   meters_not_in_mode customer not looked up yet, or failing      -> waits; the lookup is asked
//   for (never done here) the item's cached period ended before a row -> waits; a fresh lookup is
//   asked for no such customer or item in Stripe          -> parked customer_not_found /
//                                                  subscription_item_not_found, retried later
//   a key no Stripe metadata value can equal    -> dead invalid_customer_key
//   usage records: one batch per item and aggregation window (never two open for one item),
//                  split by billing period and so no batch sums more than kMaxBatchQuantity
//   meter events, model slugs on: a model no slug names -> parked unmapped_model, retried later
//   v1 and v2 meter events: older than Stripe's 35 days -> parked meter_timestamp_too_old;
//                  otherwise one batch per row
//   the v2 stream: rows of every customer, 100 to a batch; a partial batch waits out the window
// and the next wake-up: when the earliest waiting window or lookup retry is due.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "batch.h"
#include "customer_resolver.h"
#include "model_slug.h"
#include "outbox.h"
#include "stripe_billing/config.h"

namespace stripe_billing {

// The most one usage record sums: rows stop joining a batch before it would pass this, so sums
// never overflow (every row is at most STRIPE_MAX_QUANTITY, itself at most this).
inline constexpr std::int64_t kMaxBatchQuantity = 999'999'999'999'999;

// What is known of one (customer key, price) without asking Stripe.
struct Lookup {
  enum class Status {
    kFound,
    kNotFound,    // Stripe has no such customer (or item on the price): `not_found` says which
    kInvalidKey,  // no Stripe metadata value can equal the key
    kWaiting,     // not known yet, or the lookup is failing and backs off until `retry_at_ms`
  };
  Status status = Status::kWaiting;
  BillingTarget target;
  ErrorCode not_found = ErrorCode::kCustomerNotFound;
  std::string message;
  std::int64_t fetched_ms = 0;   // kFound: when Stripe said so (wall clock, ms)
  std::int64_t retry_at_ms = 0;  // kWaiting: 0 when the lookup has simply not been done yet
};

using LookupFn =
    std::function<Lookup(const std::string& customer_key, const std::string& price_id)>;

struct LookupRequest {
  std::string customer_key;
  std::string price_id;  // "" for meters: the customer only
  bool refresh = false;  // forget what is cached first (the item's period has ended)
};

struct PlanInput {
  const FinalizedConfig& config;
  std::int64_t now_ms = 0;
  bool force = false;                       // a drain: do not wait out aggregation windows
  const std::set<std::string>& busy_items;  // items with an undelivered usage-record batch
  const LookupFn& lookup;
  // STRIPE_MODEL_SLUGS: the model of each meter event as its `provider/model` slug; a row whose
  // model maps to nothing is parked unmapped_model (retried every STRIPE_PARK_RETRY_S).
  const ModelSlugs* slugs = nullptr;
};

// Rows parked or killed, for the log and the metrics.
struct PlanNotice {
  Reason reason;
  Sink sink = Sink::kUsageRecord;
  std::string customer_key;
  std::size_t rows = 0;
};

struct Plan {
  PlanWrites writes;
  std::vector<PlanNotice> notices;
  std::vector<LookupRequest> lookups;
  std::int64_t next_wake_ms = 0;  // 0: nothing here waits on time
};

// Rows must be in id order (as the outbox reads them). Batches of window > 0 usage records are
// at most one per item; the caller adds their items to `busy_items` once they are stored.
Plan plan(std::vector<StoredEvent> rows, const PlanInput& input);

// The meter events of a meter batch's rows under `config` (for batches read back from the
// outbox): kInvalidConfig when a row's dimension has no meter in this configuration (it was made
// under another; it waits for one that meters it).
Expected<std::vector<MeterEvent>> meter_events_for(const std::vector<StoredEvent>& rows,
                                                   const FinalizedConfig& config,
                                                   const ModelSlugs* slugs = nullptr);

}  // namespace stripe_billing
