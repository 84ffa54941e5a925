// Moves usage from the outbox to Stripe: the threads, queues and wake-ups around the planner
// (planner.h), the lookups (lookups.h) and the sender (sender.h). Nothing here decides what a
// batch is or what an answer means; it schedules.
//
// "sb-dispatch", the planner thread, in each round:
//   housekeeping: outcomes not yet written, the file's identity, a WAL checkpoint, operators'
//                 requeues, a step of pruning the ledger
//   claim:        batches whose retry is due, or that were stored while the queue was full
//   plan:         pending rows -> planner::plan -> one write of parks, kills and new batches,
//                 each batch persisted with its idempotency key before it is queued
// "sb-send-N", the senders: take a batch from the queues (round robin over usage records, v1
//   meter events and the stream, so no kind starves another; one v1 request at a time per
//   customer and meter), refuse it when older than the maximum delivery age, send it, and record
//   the verdict: delivered, retry with backoff (or Stripe's Retry-After), dead with the reason,
//   item gone (the rows go back to pending), or key refused (sending pauses; the planner probes
//   until the key works). An outcome the outbox cannot record is kept and written again; the
//   batch is never sent twice for it.
// "sb-lookup" (Lookups) answers the planner's customer lookups.
//
// At most kMaxQueued batches are in memory; the rest wait in the outbox, claimed as room frees.
// Ages are measured on the monotonic clock from when this process first saw a batch, so a jump
// of the wall clock neither kills fresh batches nor keeps old ones.
//
// Thread-safe. Nothing here runs on the host's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "batch.h"
#include "billing_tables.h"
#include "customer_resolver.h"
#include "lookups.h"
#include "meter_event_stream.h"
#include "metrics.h"
#include "outbox.h"
#include "planner.h"
#include "retry_policy.h"
#include "sender.h"
#include "stripe_billing/config.h"
#include "stripe_billing/stripe_client.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

class Dispatcher {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;
  static constexpr std::size_t kMaxQueued = 2048;

  Dispatcher(const FinalizedConfig& config, Outbox& outbox, const StripeClient& client,
             MeterEventStream& stream, CustomerResolver& resolver, Metrics& metrics,
             std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock,
             std::shared_ptr<BillingTables> tables = nullptr);
  ~Dispatcher();  // stop()
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  void wake();  // new pending rows were committed
  // Sends everything that can go now (aggregation windows are not waited out). True when no
  // row is pending or in an undelivered batch.
  bool drain(SteadyTime deadline);
  // drain(); then, on a shared store (a fleet, whose engine may run on another replica), until
  // the store holds nothing pending or in an undelivered batch: woken by this process's progress,
  // and asking the store again every kStoreRecheck for what the other replicas deliver.
  bool wait_until_delivered(SteadyTime deadline);
  static constexpr std::chrono::milliseconds kStoreRecheck{200};
  // Stops the threads: the caller aborts in-flight requests through the transport first;
  // aborted attempts are not counted. Queued batches go back to the outbox unattempted.
  void stop();
  bool paused() const;
  std::size_t queued() const;

 private:
  // An outcome to write to the outbox, kept until the write succeeds.
  struct PendingWrite {
    enum class Kind { kDelivered, kRetry, kDead, kDissolve, kRelease };
    PendingWrite(Kind kind_, Batch batch_, int attempts_ = 0, std::int64_t next_attempt_ms_ = 0)
        : kind(kind_),
          batch(std::move(batch_)),
          attempts(attempts_),
          next_attempt_ms(next_attempt_ms_) {}
    Kind kind = Kind::kRelease;
    Batch batch;
    int attempts = 0;
    std::int64_t next_attempt_ms = 0;
    std::string reason;
    std::string request_id;
    std::string detail;
    std::int64_t now_ms = 0;
  };

  // Whether this process runs the engine now (always, on a store of its own); on a change of
  // holder the queues and the planner's memory start over.
  bool lead();
  void plan_loop();
  void send_loop(int index);
  std::chrono::milliseconds plan_round(bool full);
  void housekeeping(std::int64_t now_ms);
  void follow_clock_jump(std::int64_t now_ms);
  void claim_due(std::int64_t now_ms);
  std::int64_t plan_pending(std::int64_t now_ms, bool full, bool force);
  void enqueue(Batch batch, std::int64_t now_ms);  // mutex_ held
  bool take(Batch& batch);                         // mutex_ held
  void send(Batch batch);
  void on_delivered(const Batch& batch, const SendResult& result);
  void on_failed(const Batch& batch, const SendResult& result, const char* activity);
  void dead(const Batch& batch, const std::string& reason, const SendResult& result,
            const char* activity);
  void write(PendingWrite outcome);  // records it, or keeps it for the next round
  void store_alarm(const std::string& what, const std::string& error);
  bool apply(const PendingWrite& outcome);
  // `retry_at_ms`: the batch is due again then (0: at once); nullopt: its outcome is final.
  void finish(const Batch& batch, std::optional<std::int64_t> retry_at_ms);
  std::chrono::milliseconds age(const Batch& batch);
  void pause_for_auth(const std::string& reason);
  bool probe_auth();
  std::int64_t now_ms() const;

  const FinalizedConfig& config_;
  Outbox& outbox_;
  const StripeClient& client_;
  CustomerResolver& resolver_;
  Metrics& metrics_;
  std::shared_ptr<BillingTables> tables_;  // the model slugs meter events carry
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;
  const RetryPolicy retry_policy_;
  const Sender sender_;
  Lookups lookups_;

  mutable std::mutex mutex_;
  std::condition_variable planner_wake_;
  std::condition_variable sender_wake_;
  std::condition_variable progress_;
  std::deque<Batch> ready_[3];             // by BatchKind
  std::size_t queued_ = 0;                 // in ready_
  std::size_t in_flight_ = 0;              // taken by a sender, its outcome not yet written
  int next_kind_ = 0;                      // round robin over ready_
  std::set<std::string> busy_items_;       // items with an undelivered batch (window > 0)
  std::set<std::string> sending_targets_;  // v1 meter targets with a request in flight
  // When this process first saw each batch it holds: (monotonic time, wall age then).
  std::map<std::int64_t, std::pair<SteadyTime, std::chrono::milliseconds>> first_seen_;
  std::vector<PendingWrite> unrecorded_;  // outcomes the outbox could not write yet
  bool committed_ = false;                // new rows since the last round (read incrementally)
  bool full_round_ = true;                // something else changed: read every pending row
  bool unclaimed_ = true;  // the outbox may hold batches not queued (queue full, a restart)
  int draining_ = 0;
  bool stopping_ = false;
  bool auth_paused_ = false;
  bool leading_ = false;
  bool engine_elsewhere_ = false;  // another process holds the engine lease
  std::int64_t next_probe_ms_ = 0;
  std::int64_t batches_due_ms_ = 0;  // when a retry may be due in the outbox
  std::int64_t last_read_id_ = 0;    // the highest row id the planner has read
  std::int64_t last_claim_ms_ = 0;
  std::mt19937 random_{std::random_device{}()};
  SteadyTime last_auth_alarm_{};
  std::mutex alarm_mutex_;
  SteadyTime last_store_alarm_{};  // alarm_mutex_
  std::uint64_t store_alarms_suppressed_ = 0;
  SteadyTime last_file_check_{};
  SteadyTime last_file_alarm_{};
  SteadyTime last_prune_{};
  bool pruning_ = false;
  std::optional<std::int64_t> clock_offset_ms_;  // wall minus monotonic, to notice a jump

  std::thread planner_;
  std::vector<std::thread> senders_;
};

}  // namespace stripe_billing
