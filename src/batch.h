// The data the delivery engine moves, from the host's event to Stripe's answer: outbox rows
// (NewEvent as stored, StoredEvent as read back) and batches (one Stripe request each). Plain
// values; the store (outbox.h), the planner, the sender and the dispatcher all speak them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "meter_event.h"
#include "retry_policy.h"

namespace stripe_billing {

// The numbers of these enums are part of the outbox file format.
enum class EventState { kPending = 0, kBatched = 1, kDelivered = 2, kParked = 3, kDead = 4 };
const char* to_string(EventState state) noexcept;

// Where a row is billed: a usage record on a subscription item, or a billing meter event (v1 or
// the v2 stream, whichever the configuration sends). Dual mode stores one row of each per call.
enum class Sink { kUsageRecord = 0, kMeterEvent = 1 };
const char* to_string(Sink sink) noexcept;

// What one batch is sent as.
enum class BatchKind {
  kUsageRecord = 0,  // one usage record: an item's rows over the aggregation window
  kMeterEvent = 1,   // one v1 meter event: one row
  kMeterStream = 2,  // one v2 stream request: up to 100 rows of any customers
};
const char* to_string(BatchKind kind) noexcept;
Sink sink_of(BatchKind kind) noexcept;
RequestKind request_kind(BatchKind kind) noexcept;

// An event as the writer stores it.
struct NewEvent {
  std::string call_id;
  std::string dimension;  // what is billed: total_tokens, prompt_tokens, ...
  Sink sink = Sink::kUsageRecord;
  std::string customer_key;  // the charge-by value ("" when missing)
  std::int64_t quantity = 0;
  // Cost billing: the exact amount in micro-units. The outbox rounds it to `quantity` with the
  // remainder carried per (customer key, dimension, sink), in the transaction that stores the
  // row, so a duplicate never moves the carry and a crash never loses it.
  std::optional<std::int64_t> amount_micros;
  std::int64_t event_time = 0;  // unix seconds: the call's end
  std::int64_t accepted_at_ms = 0;
  std::string model;
  double cost = 0;  // always finite
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  EventState state = EventState::kPending;
  std::string reason;                           // for kParked / kDead (reasons.h)
  std::optional<std::int64_t> next_attempt_ms;  // for kParked: when to try again (none: by hand)
};

// A row the engine works on.
struct StoredEvent {
  std::int64_t id = 0;
  std::string call_id;
  std::string dimension;
  Sink sink = Sink::kUsageRecord;
  std::string model;
  std::string customer_key;
  std::int64_t quantity = 0;
  std::int64_t event_time = 0;
  std::int64_t accepted_at_ms = 0;
  std::string customer_id;  // the Stripe customer, once batched
};

// A row joining a batch, and the Stripe customer it bills (a v2 stream batch mixes customers).
struct BatchMember {
  std::int64_t event_id = 0;
  std::string customer_id;
};

// One request to Stripe, with everything the sender needs to make it.
struct Batch {
  std::int64_t id = 0;
  BatchKind kind = BatchKind::kUsageRecord;
  std::string idempotency_key;
  // Usage records: the subscription item. v1 meter events: "<event name> <customer id>" (Stripe
  // takes one request at a time per pair). The stream: "".
  std::string target;
  std::string customer_id;  // "" for the stream
  std::string customer_key;
  std::int64_t quantity = 0;
  std::int64_t timestamp = 0;
  int attempts = 0;
  std::int64_t created_ms = 0;
  std::int64_t events = 0;
  // The claim under which this process holds the batch: an outcome is recorded only while the
  // store still has this token (a fencing token; it grows with every claim).
  std::int64_t lease = 0;
  std::vector<MeterEvent> meter_events;  // the meter kinds: exactly what is sent
  std::vector<std::pair<std::string, std::int64_t>> quantity_by_model;  // for the metrics

  Sink sink() const noexcept { return sink_of(kind); }
};

struct NewBatch {
  Batch batch;  // kind, target, customer_id, customer_key, quantity, timestamp, meter_events
  std::vector<BatchMember> members;
};

}  // namespace stripe_billing
