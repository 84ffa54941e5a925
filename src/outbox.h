// The durable outbox: every accepted usage event, every batch sent to Stripe, and the delivered
// rows that form the usage ledger. A batch is written with its idempotency key before its first
// attempt, so any retry — after a timeout, a 500, or a crash and restart, in this process or in
// another replica of a fleet — sends the same key with the same parameters and cannot bill twice.
//
// Which batch is being sent lives in the store: a claim sets the batch's lease owner and raises its
// lease token (a fencing token); an outcome is recorded only while the token still matches, and a
// batch is never marked done before Stripe's answer. The store does no billing arithmetic: cost
// rows are rounded by intake's CarryRule (sums for reports only).
//
// This is the seam; the backends are SqliteOutbox (sqlite_outbox.h) and PgOutbox (pg_outbox.h).
// Every implementation is thread-safe; each call is one short transaction.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "batch.h"
#include "reasons.h"
#include "stripe_billing/config.h"
#include "stripe_billing/error.h"

namespace stripe_billing {

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
  std::int64_t duplicates = 0;  // (call_id, dimension, sink) already stored
};

struct OutboxCounts {
  std::int64_t pending = 0;
  std::int64_t batched = 0;
  std::int64_t delivered = 0;
  std::int64_t parked = 0;
  std::int64_t dead = 0;
  std::int64_t oldest_pending_ms = 0;  // accepted_at of the oldest pending/batched event; 0: none
  // This process's insert() calls (Outbox::next_insert()) these counts may include: none numbered
  // after it. SQLite: those up to it have ended (their rows are in the counts or they failed).
  // PostgreSQL: those up to it had begun when the counts were read (one of them may or may not be
  // visible yet). A read-only outbox: 0.
  std::uint64_t inserts = 0;

  // The count of rows in `state` (a stored state number; others are ignored).
  void set(std::int64_t state, std::int64_t rows) noexcept;
};

// A batch's state as both stores keep it (the numbers are part of their formats).
enum BatchState : int {
  kBatchSending = 1,    // waiting for (or in) an attempt
  kBatchDelivered = 2,  // Stripe recorded it
  kBatchDead = 4,       // refused for good, or too old to send again
  kBatchDissolved = 5,  // never sent successfully; its events went back to pending
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

// Rows the planner parks or kills.
struct RowChange {
  std::vector<std::int64_t> event_ids;
  std::string reason;
  std::optional<std::int64_t> next_attempt_ms;  // parked: when to look again (none: by hand)
};

// What one planning round writes, in one transaction.
struct PlanWrites {
  std::vector<RowChange> parks;
  std::vector<RowChange> kills;
  std::vector<NewBatch> batches;
};

// A batch claimed for sending, with the rows a meter batch's request is built from.
struct ClaimedBatch {
  Batch batch;
  std::vector<StoredEvent> rows;  // meter kinds only; in id order
};

// One step of pruning the ledger.
struct PruneStep {
  std::int64_t removed = 0;  // delivered rows deleted in this step
  bool done = false;         // every delivered row has been looked at once since the first step
};

// Whether the file at the outbox's path is still the open database.
enum class FileCheck { kSame, kRecreated, kMissing };

// The answer to an operator's requeue.
struct RequeueResult {
  std::int64_t moved = 0;
  bool handed_to_engine = false;  // an engine runs on the file: it moved them (see `moved`)
  bool engine_done = true;        // false: the engine has not answered within the wait
};

// Intake's rule for a cost row (usage_record.h): given the remainder carried for the row's
// (customer key, dimension, sink), sets the row's quantity (and its state when nothing is billed
// yet) and returns the remainder to carry on. The store keeps the remainders and calls this inside
// the transaction that stores the row, so a duplicate never moves a carry and a crash never loses
// one; the arithmetic is intake's.
using CarryRule = std::function<std::int64_t(NewEvent& row, std::int64_t carried)>;

// The key a cost row's remainder is carried under: (customer key, dimension, sink).
std::string carry_key(const NewEvent& event);

// Where the outbox lives and how it is opened.
enum class StoreMode {
  kMaintenance,  // operators' tools and tests: read and write, never the engine
  kEngine,       // the library's delivery engine
  kReadOnly,     // reports and reconciliation: never creates or migrates anything
};

// The store the delivery engine runs on: SQLite (sqlite_outbox.h: one process, one file) or
// PostgreSQL (pg_outbox.h: a fleet of processes on one database). Both keep the same contract
// (tests/store_contract_test.cc runs against both).
class Outbox {
 public:
  // SQLite. Creates the file (mode 0600) and schema when missing, tightens an existing file's mode
  // to 0600, migrates older formats in place. `full_sync`: fsync every commit. For operators'
  // tools and tests: does not take the engine lock.
  static Expected<std::unique_ptr<Outbox>> open(const std::string& path, bool full_sync);
  // The same, for the one engine of a file: fails (kStorage) while another process runs one.
  // Leases left by an earlier run are released.
  static Expected<std::unique_ptr<Outbox>> open_engine(const std::string& path, bool full_sync);
  // An existing outbox, read-only (reports, reconciliation): never creates or migrates a file.
  static Expected<std::unique_ptr<Outbox>> open_for_reading(const std::string& path);

  virtual ~Outbox() = default;
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Part of every idempotency key the store hands out: unique per store (file or database schema).
  const std::string& instance_id() const noexcept { return instance_id_; }
  // What opening it did that an operator should hear of (a mode tightened, a format migrated).
  const std::vector<std::string>& notes() const noexcept { return notes_; }
  // A store shared by several processes (PostgreSQL): intake commits to it directly (no local
  // journal), holds rows in memory while it is unreachable, and the engine runs in whichever
  // process holds the engine lease (hold_engine()).
  virtual bool shared() const noexcept { return false; }
  // Whether this process may run the delivery engine now. SQLite: always (open_engine() holds the
  // file's lock). PostgreSQL: takes or renews the fleet's engine lease (and this process's batch
  // claims it still holds, `held`, with it); false while another process holds it; an error when
  // that cannot be known (the engine then stops until it is). Called by the planner every round.
  virtual Expected<bool> hold_engine(const std::vector<std::int64_t>& held) {
    (void)held;
    return true;
  }
  // Gives the engine lease up (a stopping process), so another takes over at once.
  virtual void release_engine() {}

  // The intake's writer. One transaction; a row whose (call_id, dimension, sink) is stored
  // already is a duplicate, counted; any other failure fails the whole call (nothing vanishes).
  // Cost rows (amount_micros set) go through `carry_rule`.
  virtual Expected<InsertResult> insert(const std::vector<NewEvent>& events,
                                        const CarryRule& carry_rule) = 0;
  Expected<InsertResult> insert(const std::vector<NewEvent>& events);  // with intake's rule
  // insert() calls are numbered from 1 in the order they begin; one thread of a process inserts
  // (the intake's), so the next call gets this number. OutboxCounts::inserts says which of them
  // the counts include: the intake never counts an event both in memory and in the outbox.
  std::uint64_t next_insert() const noexcept {
    return inserts_begun_.load(std::memory_order_acquire) + 1;
  }
  // From now on no call waits for a lock another connection holds: it fails at once (a shutdown
  // past its deadline).
  virtual void interrupt_writes() = 0;
  // Sync mode with a journal: the writer's commits need not sync (the journal made the rows
  // durable already); sync_writes() makes everything they committed durable, before the journal
  // is emptied. The engine's own commits (batches before they are sent) still sync.
  virtual Expected<void> relax_writer_sync() = 0;
  virtual Expected<void> sync_writes() = 0;

  // Pending rows, and parked ones whose next attempt is due (they come back as pending), oldest
  // first.
  virtual Expected<std::vector<StoredEvent>> due_events(std::int64_t now_ms, int limit) = 0;
  // Pending rows with an id above `after_id` (what was committed since a planner's last read).
  virtual Expected<std::vector<StoredEvent>> new_events(std::int64_t after_id, int limit) = 0;
  // Parks, kills and new batches of one planning round, in one transaction. The batches are
  // persisted with their idempotency keys; the first `lease` of them are claimed by this process
  // at once (the rest wait in the store for claim_due_batches()). Returns the stored batches in
  // order; only the claimed ones carry a lease. Fails, writing nothing, when a row of a batch is
  // no longer pending.
  virtual Expected<std::vector<Batch>> apply(PlanWrites writes, std::int64_t now_ms,
                                             std::size_t lease) = 0;
  // Claims up to `limit` unclaimed batches whose next attempt is due, oldest first.
  virtual Expected<std::vector<ClaimedBatch>> claim_due_batches(std::int64_t now_ms, int limit) = 0;

  // Outcomes, each recorded only under the batch's lease; false: the lease is no longer held (the
  // store kept whatever another claimer recorded).
  Expected<bool> batch_delivered(const Batch& batch, const std::string& request_id,
                                 std::int64_t now_ms);
  virtual Expected<bool> batch_retry_later(const Batch& batch, int attempts,
                                           std::int64_t next_attempt_ms,
                                           const std::string& last_error) = 0;
  Expected<bool> batch_dead(const Batch& batch, const std::string& reason,
                            const std::string& request_id, std::int64_t now_ms);
  // The batch's rows go back to pending (their target changed); the batch is kept, dissolved,
  // so its key is never handed out again. Only for a batch Stripe has certainly not recorded.
  virtual Expected<bool> dissolve_batch(const Batch& batch) = 0;
  // Gives a claimed batch back unattempted (shutdown): due again as it was.
  virtual Expected<bool> release(const Batch& batch) = 0;

  // Items with a usage-record batch not yet delivered (for resuming after a restart).
  virtual Expected<std::vector<std::string>> open_targets() = 0;
  // Looks at the next `max_rows` delivered rows (by id) and deletes those delivered before
  // `older_than_ms`, with batches left empty, in one short transaction; the caller calls again
  // until done, so the ledger is never held for long.
  virtual Expected<PruneStep> prune_delivered(std::int64_t older_than_ms, int max_rows) = 0;
  // The file at the path is the open database (kSame), was deleted or replaced and has been
  // recreated from the open database (kRecreated: nothing committed is lost), or cannot be
  // recreated (kMissing: the open database is still used; the caller says so and asks again).
  // A database server: always kSame.
  virtual Expected<FileCheck> check_file() = 0;
  // The wall clock jumped by `delta_ms`: every scheduled retry (batches, parked rows) moves with
  // it, so it stays due at the same moment in real time.
  virtual Expected<void> shift_schedule(std::int64_t delta_ms) = 0;
  // SQLite: copies the WAL into the database without ever blocking the writer.
  virtual void checkpoint() = 0;

  // pending/batched/delivered/parked/dead and the oldest waiting row.
  virtual Expected<OutboxCounts> counts() = 0;
  // True while any event is pending or in an undelivered batch (parked and dead do not count).
  virtual Expected<bool> has_outstanding() = 0;

  // Parked and dead events back to pending (operator action), optionally by reason/customer; an
  // empty reason moves every reason. With an engine running on the file (another process), the
  // request is handed to it and waited for up to `wait`.
  virtual Expected<RequeueResult> requeue(
      const std::string& reason, const std::string& customer_key,
      std::chrono::milliseconds wait = std::chrono::seconds(10)) = 0;
  // The engine: requeues operators asked for through the file; returns how many rows moved.
  virtual Expected<std::int64_t> apply_requeue_requests(std::int64_t now_ms) = 0;

  // Reports for operators (the stripe-billing CLI); read-only.
  // Stripe's asynchronous validation refused meter events it had accepted (a webhook's error
  // report): their delivered meter rows, named by (call id, dimension), become dead with
  // `reason`. Returns how many rows moved; rows not delivered (or unknown) are left alone.
  virtual Expected<std::int64_t> reject_delivered(
      const std::vector<std::pair<std::string, std::string>>& call_dimensions,
      const std::string& reason, std::int64_t now_ms) = 0;
  virtual Expected<std::vector<ReasonCount>> reason_counts() = 0;
  virtual Expected<std::optional<BatchFailure>> latest_batch_failure() = 0;
  // Delivered rows whose event time lies in [since, until) (unix seconds), summed / by event time.
  virtual Expected<std::vector<LedgerTotal>> ledger_totals(std::int64_t since,
                                                           std::int64_t until) = 0;
  virtual Expected<std::vector<LedgerRow>> ledger_rows(std::int64_t since, std::int64_t until) = 0;

 protected:
  Outbox() = default;
  // Delivered or dead, the batch and its rows together, under the batch's lease.
  virtual Expected<bool> finish_batch(const Batch& batch, BatchState batch_state,
                                      EventState event_state, const std::string& reason,
                                      const std::string& request_id, std::int64_t now_ms,
                                      const char* what) = 0;
  // Numbers an insert() call as it begins (next_insert()).
  std::uint64_t begin_insert() noexcept {
    return inserts_begun_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  std::uint64_t inserts_begun() const noexcept {
    return inserts_begun_.load(std::memory_order_acquire);
  }
  std::string instance_id_;
  std::vector<std::string> notes_;

 private:
  std::atomic<std::uint64_t> inserts_begun_{0};
};

// The outbox the configuration names: PostgreSQL when outbox_url is set, otherwise the SQLite
// file at outbox_path. `full_sync`: SQLite's fsync on every commit (PostgreSQL always commits
// durably).
Expected<std::unique_ptr<Outbox>> open_configured_outbox(const FinalizedConfig& config,
                                                         StoreMode mode, bool full_sync);

}  // namespace stripe_billing
