// The durable outbox: every accepted usage event, every batch sent to Stripe, and the delivered
// rows that form the local usage ledger, in one SQLite database (WAL). A batch is written with its
// idempotency key before its first attempt, so any retry — after a timeout, a 500, or a crash and
// restart — sends the same key with the same parameters and cannot bill twice.
//
// Which batch is being sent lives in the store: a claim sets the batch's lease owner and raises its
// lease token (a fencing token); an outcome is recorded only while the token still matches, and a
// batch is never marked done before Stripe's answer. The store does no billing arithmetic beyond
// the cost carry of insert() (sums for reports only).
//
// One process runs the engine on a file: open_engine() takes an exclusive lock beside it
// (`<file>.lock`) and refuses a second process. Operators' tools open() it too; a requeue they
// ask for while an engine runs is handed to that engine (requeue_requests), so the engine's
// counts stay exact.
//
// Thread-safe. Two connections: the intake's writer inserts on its own, so the engine's reads and
// writes never hold it up (WAL); every other call uses the engine connection. Each call is one
// short transaction; no call scans the ledger under a lock the writer needs.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "batch.h"
#include "reasons.h"
#include "stripe_billing/error.h"

struct sqlite3;

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

class Outbox {
 public:
  // Creates the file (mode 0600) and schema when missing, tightens an existing file's mode to
  // 0600, migrates older formats in place. `full_sync`: fsync every commit. For operators' tools
  // and tests: does not take the engine lock.
  static Expected<std::unique_ptr<Outbox>> open(const std::string& path, bool full_sync);
  // The same, for the one engine of a file: fails (kStorage) while another process runs one.
  // Leases left by an earlier run are released.
  static Expected<std::unique_ptr<Outbox>> open_engine(const std::string& path, bool full_sync);
  // An existing outbox, read-only (reports, reconciliation): never creates or migrates a file.
  static Expected<std::unique_ptr<Outbox>> open_for_reading(const std::string& path);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  const std::string& instance_id() const noexcept { return instance_id_; }
  // What open() did that an operator should hear of (a mode tightened, a format migrated).
  const std::vector<std::string>& notes() const noexcept { return notes_; }

  // The intake's writer. One transaction; a row whose (call_id, dimension, sink) is stored
  // already is a duplicate, counted; any other failure fails the whole call (nothing vanishes).
  Expected<InsertResult> insert(const std::vector<NewEvent>& events);
  // From now on no call waits for a lock another connection holds: it fails at once (a shutdown
  // past its deadline).
  void interrupt_writes();
  // Sync mode with a journal: the writer's commits need not sync (the journal made the rows
  // durable already); sync_writes() makes everything they committed durable, before the journal
  // is emptied. The engine's own commits (batches before they are sent) still sync.
  Expected<void> relax_writer_sync();
  Expected<void> sync_writes();

  // Pending rows, and parked ones whose next attempt is due (they come back as pending), oldest
  // first.
  Expected<std::vector<StoredEvent>> due_events(std::int64_t now_ms, int limit);
  // Pending rows with an id above `after_id` (what was committed since a planner's last read).
  Expected<std::vector<StoredEvent>> new_events(std::int64_t after_id, int limit);
  // Parks, kills and new batches of one planning round, in one transaction. The batches are
  // persisted with their idempotency keys; the first `lease` of them are claimed by this process
  // at once (the rest wait in the store for claim_due_batches()). Returns the stored batches in
  // order; only the claimed ones carry a lease.
  Expected<std::vector<Batch>> apply(PlanWrites writes, std::int64_t now_ms, std::size_t lease);
  // Claims up to `limit` unclaimed batches whose next attempt is due, oldest first.
  Expected<std::vector<ClaimedBatch>> claim_due_batches(std::int64_t now_ms, int limit);

  // Outcomes, each recorded only under the batch's lease; false: the lease is no longer held (the
  // store kept whatever another claimer recorded).
  Expected<bool> batch_delivered(const Batch& batch, const std::string& request_id,
                                 std::int64_t now_ms);
  Expected<bool> batch_retry_later(const Batch& batch, int attempts, std::int64_t next_attempt_ms,
                                   const std::string& last_error);
  Expected<bool> batch_dead(const Batch& batch, const std::string& reason,
                            const std::string& request_id, std::int64_t now_ms);
  // The batch's rows go back to pending (their target changed); the batch is kept, dissolved,
  // so its key is never handed out again. Only for a batch Stripe has certainly not recorded.
  Expected<bool> dissolve_batch(const Batch& batch);
  // Gives a claimed batch back unattempted (shutdown): due again as it was.
  Expected<bool> release(const Batch& batch);

  // Items with a usage-record batch not yet delivered (for resuming after a restart).
  Expected<std::vector<std::string>> open_targets();
  // Looks at the next `max_rows` delivered rows (by id) and deletes those delivered before
  // `older_than_ms`, with batches left empty, in one short transaction; the caller calls again
  // until done, so the ledger is never held for long.
  Expected<PruneStep> prune_delivered(std::int64_t older_than_ms, int max_rows);
  // The file at the path is the open database (kSame), was deleted or replaced and has been
  // recreated from the open database (kRecreated: nothing committed is lost), or cannot be
  // recreated (kMissing: the open database is still used; the caller says so and asks again).
  Expected<FileCheck> check_file();
  // The wall clock jumped by `delta_ms`: every scheduled retry (batches, parked rows) moves with
  // it, so it stays due at the same moment in real time.
  Expected<void> shift_schedule(std::int64_t delta_ms);
  // Lets SQLite copy the WAL into the database without ever blocking the writer.
  void checkpoint();

  // pending/batched/parked/dead, kept as rows change (O(1)); the oldest pending row is two index
  // lookups. A read-only outbox counts with a query.
  Expected<OutboxCounts> counts();
  // True while any event is pending or in an undelivered batch (parked and dead do not count).
  Expected<bool> has_outstanding();

  // Parked and dead events back to pending (operator action), optionally by reason/customer; an
  // empty reason moves every reason. With an engine running on the file (another process), the
  // request is handed to it and waited for up to `wait`.
  Expected<RequeueResult> requeue(const std::string& reason, const std::string& customer_key,
                                  std::chrono::milliseconds wait = std::chrono::seconds(10));
  // The engine: requeues operators asked for through the file; returns how many rows moved.
  Expected<std::int64_t> apply_requeue_requests(std::int64_t now_ms);

  // Reports for operators (the stripe-billing CLI); read-only.
  Expected<std::vector<ReasonCount>> reason_counts();
  Expected<std::optional<BatchFailure>> latest_batch_failure();
  // Delivered rows whose event time lies in [since, until) (unix seconds), summed / by event time.
  Expected<std::vector<LedgerTotal>> ledger_totals(std::int64_t since, std::int64_t until);
  Expected<std::vector<LedgerRow>> ledger_rows(std::int64_t since, std::int64_t until);

 private:
  struct Connections;
  enum class Mode { kMaintenance, kEngine, kReadOnly };

  static Expected<std::unique_ptr<Outbox>> open_writable(const std::string& path, bool full_sync,
                                                         Mode mode);
  Outbox(std::string path, std::unique_ptr<Connections> connections, std::string instance_id,
         Mode mode, bool full_sync);
  // The carried remainder for cost rows, read from the carries table on first use.
  Expected<std::int64_t> carry(const std::string& key);
  Expected<std::int64_t> move_requeued(const std::string& reason, const std::string& customer_key);
  Expected<OutboxCounts> count_by_query();
  Expected<void> load_counts();
  void add_count(EventState state, std::int64_t delta);
  Expected<bool> finish_batch(const Batch& batch, int batch_state, EventState event_state,
                              const std::string& reason, const std::string& request_id,
                              std::int64_t now_ms, const char* what);

  const std::string path_;
  std::unique_ptr<Connections> db_;
  std::string instance_id_;
  const Mode mode_;
  const bool full_sync_;
  std::string lease_owner_;  // this process's run of the engine
  std::vector<std::string> notes_;
  std::map<std::string, std::int64_t> carries_;  // committed remainders (writer connection)
  std::int64_t prune_cursor_ = 0;                // engine connection
  bool writer_relaxed_ = false;                  // the writer commits without syncing
  std::atomic<std::int64_t> counts_[5] = {};     // by EventState
};

}  // namespace stripe_billing
