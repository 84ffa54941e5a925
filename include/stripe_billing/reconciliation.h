// Reconciliation: what the local ledger (the outbox's delivered rows) says was billed, against
// what Stripe reports, per customer, for a time range. Usage records are compared per
// subscription item and billing period (Stripe's usage_record_summaries cover whole periods);
// meters per customer and meter over the range, rounded out to whole minutes as Stripe's
// event_summaries require. Token types compare per type where each type has its own price or
// meter; types sharing one meter compare as their sum (Stripe's summaries are per meter). Stripe's
// meter summaries are eventually consistent: a difference that vanishes on a second run minutes
// later was Stripe still counting.
//
// Only what the configuration bills is compared (usage records in modes that send them, meters
// in modes that meter). Blocking: it reads the outbox file (read-only; it must exist) and calls
// Stripe on the caller's thread. It never writes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "stripe_billing/config.h"
#include "stripe_billing/error.h"
#include "stripe_billing/http_transport.h"

namespace stripe_billing {

struct ReconciliationRow {
  std::string kind;          // "usage_record" or "meter"
  std::string customer_key;  // the charge-by value
  std::string customer_id;   // cus_…
  std::string target;        // si_… or the meter's event name
  // What the row compares when its price or meter bills one quantity ("input" of token types,
  // "total_tokens", ...); "" when several share it (token types on one meter: their sum).
  std::string dimension;
  std::int64_t start = 0;  // the compared range, unix seconds [start, end)
  std::int64_t end = 0;
  double local = 0;   // delivered according to the ledger
  double stripe = 0;  // what Stripe reports
  double difference() const { return stripe - local; }
};

struct ReconciliationReport {
  std::int64_t since = 0;
  std::int64_t until = 0;
  std::vector<ReconciliationRow> rows;
  // True when every row's |difference| is at most `tolerance` (an absolute quantity).
  bool matches(double tolerance = 0) const;
};

struct ReconcileOptions {
  std::shared_ptr<HttpTransport> transport;  // null: libcurl with the config's timeouts
};

// Reads the ledger in config.outbox_path() for events whose time lies in [since, until) and asks
// Stripe for the same. Errors: kStorage (the outbox), the first Stripe/network error, or
// kInvalidResponse naming the request and the field when an answer is not shaped as Stripe
// documents (a list without `data`, a count that is not a whole number from 0 to INT64_MAX, a
// meter sum that is not a number from 0 to 2^53, a list whose pages never end). Never throws.
Expected<ReconciliationReport> reconcile(const FinalizedConfig& config, std::int64_t since,
                                         std::int64_t until, ReconcileOptions options = {});

}  // namespace stripe_billing
