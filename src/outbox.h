// The durable outbox: every accepted usage event, every batch sent to Stripe, and the delivered
// rows that form the local usage ledger, in one SQLite database (WAL). A batch is written with its
// idempotency key before its first attempt, so any retry — after a timeout, a 500, or a crash and
// restart — sends the same key with the same parameters and cannot bill twice.
//
// Thread-safe: one connection guarded by a mutex; every call is one short transaction.
#pragma once

#include <cstdint>
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

// An event as the writer stores it.
struct NewEvent {
  std::string call_id;
  std::string dimension;     // what is billed: total_tokens, prompt_tokens, ...
  std::string customer_key;  // the charge-by value ("" when missing)
  std::int64_t quantity = 0;
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
  std::string customer_key;
  std::int64_t quantity = 0;
  std::int64_t event_time = 0;
  std::int64_t accepted_at_ms = 0;
};

struct Batch {
  std::int64_t id = 0;
  std::string idempotency_key;
  std::string target;       // the subscription item
  std::string customer_id;
  std::string customer_key;
  std::int64_t quantity = 0;
  std::int64_t timestamp = 0;
  int attempts = 0;
  std::int64_t created_ms = 0;
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

class Outbox {
 public:
  // Creates the file (mode 0600) and schema when missing. `full_sync`: fsync every commit.
  static Expected<std::unique_ptr<Outbox>> open(const std::string& path, bool full_sync);
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

  // Persists a batch over `event_ids` (state batched) with its idempotency key; one transaction.
  Expected<Batch> create_batch(const std::string& target, const std::string& customer_id,
                               const std::string& customer_key, std::int64_t quantity,
                               std::int64_t timestamp, const std::vector<std::int64_t>& event_ids,
                               std::int64_t now_ms);
  // Batches not yet delivered whose next attempt is due, oldest first.
  Expected<std::vector<Batch>> due_batches(std::int64_t now_ms, int limit);
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
  // Targets that have a batch not yet delivered (for resuming after a restart).
  Expected<std::vector<std::string>> open_targets();
  Expected<std::int64_t> prune_delivered(std::int64_t older_than_ms);
  // Parked and dead events back to pending (operator action), optionally by reason/customer.
  Expected<std::int64_t> requeue(const std::string& reason, const std::string& customer_key);

 private:
  Outbox(sqlite3* db, std::string instance_id);

  std::mutex mutex_;
  sqlite3* db_;
  std::string instance_id_;
};

}  // namespace stripe_billing
