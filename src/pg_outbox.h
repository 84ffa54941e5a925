// The outbox on PostgreSQL: one store shared by a fleet of gateway replicas (libpq, no ORM).
//
// Every replica writes its accepted events into the same tables (deduplicated by call id,
// dimension and sink, whichever replica a call was reported to). The delivery engine — planner,
// lookups and senders — runs in one replica at a time, the holder of the engine lease (a row of
// `engine_lease` with an owner, an expiry on the database's clock and a token that grows with
// every new holder). So the fleet plans usage records over every replica's events, looks each
// customer up once, and sends within one account-wide rate; when the holder dies, another replica
// takes the lease once it expires and resends the dead one's claimed batches with the same
// idempotency keys. A planning write is refused unless its writer still holds the lease; a batch
// outcome is recorded only under the batch's own claim token.
//
// The schema lives in a configurable schema (several gateways can share one database), is created
// and migrated by the library under an advisory lock, and carries its version in `meta`.
//
// Thread-safe. Three connections, each with its own lock: the intake's writer, the engine, and a
// reader for stats() and reports. A connection that breaks is re-established by the next call
// (at most one attempt a second); meanwhile calls fail with kStorage at once.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "outbox.h"
#include "stripe_billing/secret.h"

namespace stripe_billing {

class PgConnection;

class PgOutbox final : public Outbox {
 public:
  static constexpr int kSchemaVersion = 1;

  // Connects (a clear kStorage error naming the redacted URL when the database cannot be reached),
  // creates or migrates the schema, and reads the store's instance id. kReadOnly never creates.
  static Expected<std::unique_ptr<Outbox>> open(const Secret& conninfo, const std::string& schema,
                                                StoreMode mode, std::chrono::seconds lease);
  ~PgOutbox() override;

  bool shared() const noexcept override { return true; }
  Expected<bool> hold_engine(const std::vector<std::int64_t>& held) override;
  void release_engine() override;
  const std::string& owner() const noexcept { return owner_; }

  Expected<InsertResult> insert(const std::vector<NewEvent>& events,
                                const CarryRule& carry_rule) override;
  using Outbox::insert;
  void interrupt_writes() override;
  Expected<void> relax_writer_sync() override { return {}; }
  Expected<void> sync_writes() override { return {}; }
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
  Expected<FileCheck> check_file() override { return FileCheck::kSame; }
  Expected<void> shift_schedule(std::int64_t delta_ms) override;
  void checkpoint() override {}
  // Counted by query: every replica's rows.
  Expected<OutboxCounts> counts() override;
  Expected<bool> has_outstanding() override;
  // Moves the rows at once (whichever replica runs the engine sees them in its next full round).
  Expected<RequeueResult> requeue(const std::string& reason, const std::string& customer_key,
                                  std::chrono::milliseconds wait) override;
  Expected<std::int64_t> apply_requeue_requests(std::int64_t) override { return 0; }
  Expected<std::int64_t> reject_delivered(
      const std::vector<std::pair<std::string, std::string>>& call_dimensions,
      const std::string& reason, std::int64_t now_ms) override;
  Expected<std::vector<ReasonCount>> reason_counts() override;
  Expected<std::optional<BatchFailure>> latest_batch_failure() override;
  Expected<std::vector<LedgerTotal>> ledger_totals(std::int64_t since, std::int64_t until) override;
  Expected<std::vector<LedgerRow>> ledger_rows(std::int64_t since, std::int64_t until) override;

 private:
  PgOutbox(std::string schema, StoreMode mode, std::chrono::seconds lease);
  Expected<bool> finish_batch(const Batch& batch, BatchState batch_state, EventState event_state,
                              const std::string& reason, const std::string& request_id,
                              std::int64_t now_ms, const char* what) override;
  Expected<std::int64_t> insert_costs(PgConnection& db, const std::vector<const NewEvent*>& rows,
                                      const CarryRule& carry_rule, std::int64_t& duplicates);
  std::string table(const char* name) const { return schema_ + "." + name; }

  const std::string schema_;  // a checked identifier (config.cc)
  const StoreMode mode_;
  const std::chrono::seconds lease_;
  const std::string owner_;  // this process: host, pid and a random part
  std::unique_ptr<PgConnection> writer_;
  std::unique_ptr<PgConnection> engine_;
  std::unique_ptr<PgConnection> reader_;
  // The engine lease as this process last saw it (engine connection's lock).
  std::int64_t engine_token_ = 0;
  std::chrono::steady_clock::time_point held_until_{};
  std::chrono::steady_clock::time_point renewed_at_{};
  std::int64_t prune_cursor_ = 0;
  std::shared_ptr<std::atomic<bool>> interrupted_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace stripe_billing
