// The durable outbox: every accepted usage event, every batch sent to Stripe, and the delivered
// rows that form the local usage ledger, in one SQLite database (WAL). A batch is written with its
// idempotency key before its first attempt, so any retry — after a timeout, a 500, or a crash and
// restart — sends the same key with the same parameters and cannot bill twice.
//
// Thread-safe: one connection guarded by a mutex; every call is one short transaction.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "stripe_billing/error.h"

struct sqlite3;

namespace stripe_billing {

enum class EventState { kPending, kBatched, kDelivered, kParked, kDead };
const char* to_string(EventState state) noexcept;

// Where a row is billed: a usage record on a subscription item, or a billing meter event (v1 or
// the v2 stream, whichever the configuration sends). Dual mode stores one row of each per call.
// The numbers are part of the file format.
enum class Sink { kUsageRecord = 0, kMeterEvent = 1 };
const char* to_string(Sink sink) noexcept;

// An event as the writer stores it.
struct NewEvent {
  std::string call_id;
  std::string dimension;     // what is billed: total_tokens, prompt_tokens, ...
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
  double cost = 0;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  EventState state = EventState::kPending;
  std::string reason;  // for kParked / kDead
  std::optional<std::int64_t> next_attempt_ms;  // for kParked: when to try again (none: by hand)
};

// An event the dispatcher works on.
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

// An event joining a batch, and the Stripe customer it bills (a v2 stream batch mixes customers).
struct BatchMember {
  std::int64_t event_id = 0;
  std::string customer_id;
};

struct NewBatch;

struct Batch {
  std::int64_t id = 0;
  Sink sink = Sink::kUsageRecord;
  std::string idempotency_key;
  // Usage records: the subscription item. Meter events: "<event name> <customer id>" (one event);
  // the v2 stream: kStreamTarget (up to 100 events of any customers).
  std::string target;
  std::string customer_id;
  std::string customer_key;
  std::int64_t quantity = 0;
  std::int64_t timestamp = 0;
  int attempts = 0;
  std::int64_t created_ms = 0;
  std::int64_t events = 0;
};

struct NewBatch {
  Batch batch;  // sink, target, customer_id, customer_key, quantity, timestamp
  std::vector<BatchMember> members;
};

// Delivered usage of one (sink, Stripe customer, dimension, target) in the local ledger.
struct LedgerTotal {
  Sink sink = Sink::kUsageRecord;
  std::string customer_key;
  std::string customer_id;
  std::string dimension;
  std::string target;  // usage records: the subscription item; meters: ""
  std::int64_t quantity = 0;
  std::int64_t events = 0;
};

struct InsertResult {
  std::int64_t inserted = 0;
  std::int64_t duplicates = 0;  // (call_id, dimension) already stored
};

struct OutboxCounts {
  std::int64_t pending = 0;
  std::int64_t batched = 0;
  std::int64_t delivered = 0;
  std::int64_t parked = 0;
  std::int64_t dead = 0;
  std::int64_t oldest_pending_ms = 0;  // accepted_at of the oldest pending/batched event; 0: none
};

// How many parked or dead events share a reason.
struct ReasonCount {
  EventState state = EventState::kParked;
  std::string reason;
  std::int64_t events = 0;
};

// The failure recorded on a batch: the error of its latest failed attempt (retrying), or why it
// is dead.
struct BatchFailure {
  std::int64_t batch_id = 0;
  Sink sink = Sink::kUsageRecord;
  bool dead = false;
  int attempts = 0;
  std::string last_error;
  std::string request_id;
};

// One delivered row of the local ledger, with the request that delivered it.
struct LedgerRow {
  std::string call_id;
  std::string customer_key;
  std::string customer_id;
  Sink sink = Sink::kUsageRecord;
  std::string dimension;
  std::string model;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  double cost = 0;
  std::int64_t quantity = 0;
  std::int64_t event_time = 0;    // unix seconds
  std::string request_id;         // Stripe's Request-Id of the batch; "" when carried (no batch)
  std::int64_t delivered_ms = 0;  // when the batch was delivered (or the row stored, when carried)
};

inline constexpr const char* kStreamTarget = "meter_event_stream";

class Outbox {
 public:
  // Creates the file (mode 0600) and schema when missing. `full_sync`: fsync every commit.
  static Expected<std::unique_ptr<Outbox>> open(const std::string& path, bool full_sync);
  // An existing outbox, read-only (reports, reconciliation): never creates or migrates a file.
  static Expected<std::unique_ptr<Outbox>> open_for_reading(const std::string& path);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  const std::string& instance_id() const noexcept { return instance_id_; }

  // One transaction; duplicates of (call_id, dimension) are ignored and counted.
  Expected<InsertResult> insert(const std::vector<NewEvent>& events);

  // Pending events, and parked ones whose next attempt is due, oldest first. Parked ones come
  // back as pending.
  Expected<std::vector<StoredEvent>> due_events(std::int64_t now_ms, int limit);
  Expected<void> park(const std::vector<std::int64_t>& event_ids, const std::string& reason,
                      std::optional<std::int64_t> next_attempt_ms);
  Expected<void> kill_events(const std::vector<std::int64_t>& event_ids, const std::string& reason);

  // Persists batches, each over its `members` (state batched, each with its Stripe customer),
  // with their idempotency keys; one transaction. The answer has the stored batches, in order.
  Expected<std::vector<Batch>> create_batches(std::vector<NewBatch> batches, std::int64_t now_ms);
  // One usage-record batch over `event_ids`, all billing `customer_id`.
  Expected<Batch> create_batch(const std::string& target, const std::string& customer_id,
                               const std::string& customer_key, std::int64_t quantity,
                               std::int64_t timestamp, const std::vector<std::int64_t>& event_ids,
                               std::int64_t now_ms);
  // Batches not yet delivered whose next attempt is due, oldest first.
  Expected<std::vector<Batch>> due_batches(std::int64_t now_ms, int limit);
  // The events of a batch, in id order (a meter batch sends each one).
  Expected<std::vector<StoredEvent>> batch_events(std::int64_t batch_id);
  Expected<void> batch_delivered(std::int64_t batch_id, const std::string& request_id,
                                 std::int64_t now_ms);
  Expected<void> batch_retry_later(std::int64_t batch_id, int attempts,
                                   std::int64_t next_attempt_ms, const std::string& last_error);
  Expected<void> batch_dead(std::int64_t batch_id, const std::string& reason,
                            const std::string& request_id);
  // The batch's events go back to pending (their target changed); the batch is dropped. Only
  // for a batch Stripe has certainly not recorded (e.g. it answered 404 for the item).
  Expected<void> dissolve_batch(std::int64_t batch_id);

  Expected<OutboxCounts> counts();
  // True while any event is pending or in an undelivered batch (parked and dead do not count).
  Expected<bool> has_outstanding();
  // Targets of the sink that have a batch not yet delivered (for resuming after a restart).
  Expected<std::vector<std::string>> open_targets(Sink sink);
  Expected<std::int64_t> prune_delivered(std::int64_t older_than_ms);
  // Delivered rows whose event time lies in [since, until) (unix seconds), summed.
  Expected<std::vector<LedgerTotal>> ledger_totals(std::int64_t since, std::int64_t until);
  // Parked and dead events back to pending (operator action), optionally by reason/customer.
  Expected<std::int64_t> requeue(const std::string& reason, const std::string& customer_key);

  // Reports for operators (the stripe-billing CLI); read-only.
  // Parked and dead events by state and reason, most frequent first.
  Expected<std::vector<ReasonCount>> reason_counts();
  // The batch with the most recent failure (by its next scheduled attempt); nullopt: none failed.
  Expected<std::optional<BatchFailure>> latest_batch_failure();
  // Delivered rows whose event time lies in [since, until) (unix seconds), by event time.
  Expected<std::vector<LedgerRow>> ledger_rows(std::int64_t since, std::int64_t until);

 private:
  Outbox(sqlite3* db, std::string instance_id);
  // The carried remainder for cost rows, read from the carries table on first use.
  Expected<std::int64_t> carry(const std::string& key);

  std::mutex mutex_;
  std::map<std::string, std::int64_t> carries_;  // committed remainders, by carry key
  sqlite3* db_;
  std::string instance_id_;
};

}  // namespace stripe_billing
