// The hand-off from the host into the durable outbox. submit() copies the event into a bounded
// in-memory buffer (async) or waits until the event is durable (sync). One writer thread,
// "sb-writer", validates each event and turns it into outbox rows (pending, parked for a missing
// customer, or dead with its reason); it commits whatever has accumulated at once: group commit.
//   async: the writer stores the rows in the outbox every commit interval (or 8,192 events).
//   sync:  the writer appends the rows to the journal (journal.h) and syncs it, then the callers
//          return; "sb-ingest" stores them in the outbox in large transactions behind it. The
//          writer starts the next commit as soon as the last one is done, with every caller that
//          has come back meanwhile (it waits a moment for the callers it has just woken), so one
//          sync serves every caller waiting; callers wait without a lock (commit_signal.h).
//
// submit() never does I/O and never throws. The writer never waits on the network. stop() is
// bounded by its deadline: what is not durable by then is counted as lost; what the journal holds
// is stored at the next start.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "billing_tables.h"
#include "charge_by.h"
#include "commit_signal.h"
#include "journal.h"
#include "metrics.h"
#include "outbox.h"
#include "stripe_billing/config.h"
#include "stripe_billing/stripe_logger.h"
#include "stripe_billing/usage_event.h"
#include "usage_record.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

// What the writer needs of a host event, copied on the host's thread: three strings and some
// numbers, not the whole UsageEvent (its other ids and metadata are never stored).
struct HandedEvent {
  std::string call_id;
  std::string model;
  std::string customer_key;  // by the configured charge-by; "" when the event has none
  RequestUserRefusal refused = RequestUserRefusal::kNone;  // why the request's user was not used
  bool derived_call_id = false;  // the event had no call id: this one is derived from its content
  TokenCounts tokens;
  std::optional<double> response_cost;
  std::optional<TimePoint> end_time;
  // Token details, read only when the configuration bills token types or priced calls.
  std::optional<std::int64_t> cache_read;
  std::optional<std::int64_t> cache_write;
  std::optional<std::int64_t> reasoning;  // never billed on its own: checked (not negative)
  std::string provider;
  std::string call_type;
  bool cache_hit = false;
  // The writer's: why Stripe would refuse this call's meter events (reasons.h), or null.
  const char* meter_refusal = nullptr;
};

// The hand-off buffer: events in chunks of kChunk, so a burst takes the memory of what it holds
// (not twice that in a vector's growth slack), and handing a group to the writer moves pointers.
// A chunk holds a whole commit group, so a steady stream takes turns with two chunks.
// Not thread-safe: the intake's mutex guards it.
class EventBuffer {
 public:
  static constexpr std::size_t kChunk = 8192;
  using Chunk = std::vector<HandedEvent>;

  void push(HandedEvent&& event, std::vector<std::unique_ptr<Chunk>>& spares);
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  void swap(EventBuffer& other) noexcept;
  template <typename Visit>
  void for_each(Visit visit) {
    for (auto& chunk : chunks_) {
      for (HandedEvent& event : *chunk) visit(event);
    }
  }
  // Destroys the events (it is then empty), keeping the chunks.
  void destroy_events();
  // Frees every chunk after the first `keep` (its events must be destroyed already).
  void trim(std::size_t keep);
  // Empties it: chunks go to `spares` while it holds fewer than `keep`; the rest are returned,
  // for the caller to free where it likes.
  [[nodiscard]] std::vector<std::unique_ptr<Chunk>> recycle(
      std::vector<std::unique_ptr<Chunk>>& spares, std::size_t keep);

 private:
  std::vector<std::unique_ptr<Chunk>> chunks_;
  std::size_t size_ = 0;
};

class Intake {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  Intake(const FinalizedConfig& config, Outbox& outbox, Metrics& metrics,
         std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock,
         std::function<void()> on_commit, std::shared_ptr<BillingTables> tables = nullptr);
  ~Intake();  // stop() with a 5 s deadline
  Intake(const Intake&) = delete;
  Intake& operator=(const Intake&) = delete;

  void submit(const UsageEvent& event) noexcept;
  // True once everything submitted before the call is committed (or counted as lost).
  bool flush(SteadyTime deadline) noexcept;
  // Stops intake (later submits count as dropped_shutdown), commits what is buffered, joins.
  void stop(SteadyTime deadline) noexcept;

  // The outbox's counts and the events in memory whose rows they do not include, read so that no
  // event is counted in both: an event whose rows are being inserted is in `in_memory` only while
  // `outbox` does not include its insert (OutboxCounts::inserts). Exact on SQLite; on PostgreSQL
  // an insert whose commit is not visible yet may be missing from both, never in both.
  struct Counts {
    OutboxCounts outbox;
    std::size_t in_memory = 0;
  };
  Expected<Counts> counts() const;

 private:
  void run();
  void ingest();
  // Turns events into rows, in slices handed to `sink` (async: stored; sync: journaled).
  template <typename Sink>
  void write(EventBuffer& events, Sink sink);
  bool store(std::vector<NewEvent>& rows);  // false: the outbox refused the write
  // store() of the rows of `events` events in memory, which leave memory (in_memory_) as the
  // insert ends (counts()).
  bool store_events(std::vector<NewEvent>& rows, std::size_t events);
  void begin_storing(std::size_t events);
  void end_storing(std::size_t events);
  bool insert(std::vector<NewEvent>& rows);       // the same, counting nothing as lost
  bool store_again(std::vector<NewEvent>& rows);  // a shared store: held until it answers
  void journal(std::vector<NewEvent>& rows, std::uint64_t sequence, std::size_t events);
  void recover_journal();
  void count_lost(std::size_t rows, Reason reason, const std::string& why);
  void add_rows(HandedEvent& event, std::int64_t now_ms, std::vector<NewEvent>& rows);
  // Whether the call bills at all (STRIPE_CACHE_HIT, STRIPE_SKIP_CALL_TYPES); counts it if not.
  bool billed_at_all(const HandedEvent& event);
  void reload_tables(const BillingTables::Reload& reload);  // logs what a reload did
  // The rows of each non-zero token type (and their refusals), or of the priced amount.
  void add_token_rows(HandedEvent& event, const NewEvent& common, std::vector<NewEvent>& rows);
  void push_row(NewEvent row, const HandedEvent& event, std::vector<NewEvent>& rows);
  bool abandoned() const;
  bool may_warn();  // writer thread only

  const FinalizedConfig& config_;
  Outbox& outbox_;
  Metrics& metrics_;
  std::shared_ptr<BillingTables> tables_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;
  std::function<void()> on_commit_;
  const std::vector<Sink> sinks_;     // where each billed quantity goes, by the billing mode
  const bool by_token_type_;          // STRIPE_QUANTITY=token_types or priced
  std::unique_ptr<Journal> journal_;  // sync mode only (null: the outbox syncs each commit)

  mutable std::mutex mutex_;  // the buffer; held by callers only to hand over
  std::condition_variable wake_writer_;
  EventBuffer buffer_;
  std::vector<std::unique_ptr<EventBuffer::Chunk>> spare_chunks_;  // under mutex_
  // Events in memory: in buffer_, in the writer's group, and journaled but not yet stored. The
  // cap applies to this.
  std::size_t in_memory_ = 0;
  // The events of in_memory_ whose rows are being inserted (0: none), and the number of the
  // insert() trying to store them (0: none yet, or the last failed) (Outbox::next_insert()).
  std::size_t storing_events_ = 0;
  std::uint64_t storing_insert_ = 0;
  // The number of the last insert() begun for events that have left in_memory_ since.
  std::uint64_t left_after_insert_ = 0;
  std::uint64_t last_insert_ = 0;  // the number of the last insert() begun (under mutex_)
  std::uint64_t submitted_ = 0;    // sequence number of the last buffered event
  bool accepting_ = true;
  bool stopping_ = false;
  bool flush_requested_ = false;
  bool writer_waiting_ = false;
  std::size_t wanted_ = 1;  // sync: the size of the last commit, which the next one waits for
  std::chrono::steady_clock::duration commit_delay_{};
  // Every event up to durable_.published() is durable (journal or outbox) or counted lost: sync
  // callers wait for it. Every event up to stored_.published() is in the outbox or counted lost:
  // flush() waits for it. Both are waited on without a lock.
  CommitSignal durable_;
  CommitSignal stored_;
  std::atomic<bool> abandon_{false};  // the stop deadline passed: count the rest as lost

  // Sync: rows journaled, waiting for "sb-ingest".
  std::mutex ingest_mutex_;
  std::condition_variable ingest_wake_;
  std::condition_variable ingest_room_;
  struct Journaled {
    std::vector<NewEvent> rows;
    std::uint64_t sequence = 0;  // the last event they belong to
    std::size_t events = 0;
  };
  std::deque<Journaled> ingest_queue_;
  std::size_t ingest_backlog_ = 0;    // events in ingest_queue_ and being stored
  std::uint64_t journaled_rows_ = 0;  // rows in the journal since it was last emptied
  std::uint64_t ingested_rows_ = 0;   // of those, rows the outbox holds
  bool ingest_stopping_ = false;

  std::chrono::steady_clock::time_point last_storage_alarm_{};
  std::chrono::steady_clock::time_point warning_window_{};  // writer thread only
  int warnings_in_window_ = 0;
  std::uint64_t suppressed_warnings_ = 0;
  std::thread writer_;
  std::thread ingester_;
};

std::vector<Sink> sinks_for(BillingMode mode);

// A call id fit to be a key: itself when short and UTF-8, otherwise a stable hash of it.
std::string stable_call_key(const std::string& call_id);

// The call id of an event that came without one: derived from what identifies the call (the
// customer key, model, start and end times to the nanosecond, token counts and cost), so a second
// report of the same call is still billed once. nullopt without an end time: nothing identifies
// the call then.
std::optional<std::string> derived_call_id(const UsageEvent& event, std::string_view customer_key);

}  // namespace stripe_billing
