// The hand-off from the host into the durable outbox. submit() copies the event into a bounded
// in-memory buffer (async) or waits until the writer has committed it (sync). One writer thread,
// "sb-writer", validates each event, turns it into an outbox row (pending, parked for a missing
// customer, or dead with its reason) and commits whatever has accumulated in one transaction:
// group commit. In sync mode the writer starts the next commit as soon as the last one is done,
// with every event that arrived meanwhile, so a commit carries as many events as there are
// callers waiting, and callers wait on their own condition, never on the writer's lock.
//
// submit() never does I/O and never throws. The writer never waits on the network. stop() is
// bounded by its deadline: what the writer cannot store by then is counted as lost.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "charge_by.h"
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
  TokenCounts tokens;
  std::optional<double> response_cost;
  std::optional<TimePoint> start_time;
  std::optional<TimePoint> end_time;
};

class Intake {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  Intake(const FinalizedConfig& config, Outbox& outbox, Metrics& metrics,
         std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock,
         std::function<void()> on_commit);
  ~Intake();  // stop() with a 5 s deadline
  Intake(const Intake&) = delete;
  Intake& operator=(const Intake&) = delete;

  void submit(const UsageEvent& event) noexcept;
  // True once everything submitted before the call is committed (or counted as lost).
  bool flush(SteadyTime deadline) noexcept;
  // Stops intake (later submits count as dropped_shutdown), commits what is buffered, joins.
  void stop(SteadyTime deadline) noexcept;

  std::size_t buffered() const;

 private:
  void run();
  void write(std::vector<HandedEvent>& events);
  void store(std::vector<NewEvent>& rows);
  void add_rows(HandedEvent& event, std::int64_t now_ms, std::vector<NewEvent>& rows);
  void publish(std::uint64_t sequence);
  bool abandoned() const;
  bool may_warn();  // writer thread only

  const FinalizedConfig& config_;
  Outbox& outbox_;
  Metrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;
  std::function<void()> on_commit_;
  const std::vector<Sink> sinks_;  // where each billed quantity goes, by the billing mode

  mutable std::mutex mutex_;  // the buffer; held by callers only to hand over
  std::condition_variable wake_writer_;
  std::vector<HandedEvent> buffer_;
  // Events in memory: in buffer_ plus the group the writer is storing. The cap applies to this.
  std::size_t in_memory_ = 0;
  std::uint64_t submitted_ = 0;  // sequence number of the last buffered event
  bool accepting_ = true;
  bool stopping_ = false;
  bool flush_requested_ = false;
  bool writer_waiting_ = false;
  // Every event up to written_ is committed or counted lost. Callers wait for it on commit_mutex_,
  // so a crowd of waiting callers never holds up the next hand-over to the writer.
  std::mutex commit_mutex_;
  std::condition_variable committed_;
  std::atomic<std::uint64_t> written_{0};
  std::atomic<bool> abandon_{false};  // the stop deadline passed: count the rest as lost
  std::chrono::steady_clock::time_point last_storage_alarm_{};
  std::chrono::steady_clock::time_point warning_window_{};  // writer thread only
  int warnings_in_window_ = 0;
  std::uint64_t suppressed_warnings_ = 0;
  std::thread writer_;
};

std::vector<Sink> sinks_for(BillingMode mode);

// A call id fit to be a key: itself when short and UTF-8, otherwise a stable hash of it.
std::string stable_call_key(const std::string& call_id);

// The call id of an event that came without one: derived from what identifies the call (the
// customer key, model, start and end times to the nanosecond, token counts and cost), so a second
// report of the same call is still billed once. nullopt without an end time: nothing identifies
// the call then.
std::optional<std::string> derived_call_id(const HandedEvent& event);

}  // namespace stripe_billing
