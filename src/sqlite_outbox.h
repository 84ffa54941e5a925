// The outbox in one SQLite database (WAL): the embedded store of a single gateway process.
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
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "outbox.h"

namespace stripe_billing {

class SqliteOutbox final : public Outbox {
 public:
  static Expected<std::unique_ptr<Outbox>> open_file(const std::string& path, bool full_sync,
                                                     StoreMode mode);
  ~SqliteOutbox() override;

  Expected<InsertResult> insert(const std::vector<NewEvent>& events,
                                const CarryRule& carry_rule) override;
  using Outbox::insert;
  void interrupt_writes() override;
  Expected<void> relax_writer_sync() override;
  Expected<void> sync_writes() override;
  Expected<std::vector<StoredEvent>> due_events(std::int64_t now_ms, int limit) override;
  Expected<std::vector<StoredEvent>> new_events(std::int64_t after_id, int limit) override;
  Expected<std::vector<Batch>> apply(PlanWrites writes, std::int64_t now_ms,
                                     std::size_t lease) override;
  Expected<std::vector<ClaimedBatch>> claim_due_batches(std::int64_t now_ms, int limit) override;
  Expected<bool> batch_retry_later(const Batch& batch, int attempts, std::int64_t next_attempt_ms,
                                   const std::string& last_error) override;
  Expected<bool> dissolve_batch(const Batch& batch) override;
  Expected<bool> release(const Batch& batch) override;
  Expected<std::vector<std::string>> open_targets() override;
  Expected<PruneStep> prune_delivered(std::int64_t older_than_ms, int max_rows) override;
  Expected<FileCheck> check_file() override;
  Expected<void> shift_schedule(std::int64_t delta_ms) override;
  void checkpoint() override;
  // pending/batched/parked/dead, kept as rows change (O(1)); the oldest pending row is two index
  // lookups. A read-only outbox counts with a query.
  Expected<OutboxCounts> counts() override;
  Expected<bool> has_outstanding() override;
  Expected<RequeueResult> requeue(const std::string& reason, const std::string& customer_key,
                                  std::chrono::milliseconds wait) override;
  Expected<std::int64_t> apply_requeue_requests(std::int64_t now_ms) override;
  Expected<std::int64_t> reject_delivered(
      const std::vector<std::pair<std::string, std::string>>& call_dimensions,
      const std::string& reason, std::int64_t now_ms) override;
  Expected<std::vector<ReasonCount>> reason_counts() override;
  Expected<std::optional<BatchFailure>> latest_batch_failure() override;
  Expected<std::vector<LedgerTotal>> ledger_totals(std::int64_t since, std::int64_t until) override;
  Expected<std::vector<LedgerRow>> ledger_rows(std::int64_t since, std::int64_t until) override;

 private:
  struct Connections;
  using Mode = StoreMode;

  SqliteOutbox(std::string path, std::unique_ptr<Connections> connections, std::string instance_id,
               Mode mode, bool full_sync);
  // The carried remainder for cost rows, read from the carries table on first use.
  Expected<std::int64_t> carry(const std::string& key);
  Expected<std::int64_t> move_requeued(const std::string& reason, const std::string& customer_key);
  Expected<OutboxCounts> count_by_query();
  Expected<void> load_counts();
  void add_counts(std::initializer_list<std::pair<EventState, std::int64_t>> moves);
  std::int64_t count_of(EventState state);
  Expected<bool> finish_batch(const Batch& batch, BatchState batch_state, EventState event_state,
                              const std::string& reason, const std::string& request_id,
                              std::int64_t now_ms, const char* what) override;
  static Expected<std::unique_ptr<Outbox>> open_read_only(const std::string& path);

  const std::string path_;
  std::unique_ptr<Connections> db_;
  const Mode mode_;
  const bool full_sync_;
  std::string lease_owner_;                      // this process's run of the engine
  std::map<std::string, std::int64_t> carries_;  // committed remainders (writer connection)
  std::int64_t prune_cursor_ = 0;                // engine connection
  bool writer_relaxed_ = false;                  // the writer commits without syncing
  std::mutex counts_mutex_;                      // counts_ and inserts_finished_
  std::int64_t counts_[5] = {};                  // by EventState
  std::uint64_t inserts_finished_ = 0;           // the number of the last insert() that ended
};

}  // namespace stripe_billing
