// Moves usage from the outbox to Stripe. One planner thread ("sb-dispatch") turns pending events
// into batches and persists each batch with its idempotency key before anything is sent:
//   - usage records: each customer key resolves to the subscription item of the dimension's
//     price; an item's events over the aggregation window become one record, never mixing
//     billing periods;
//   - v1 meter events: one batch per event (its identifier comes from the call id), sent at most
//     one at a time per customer and meter, as Stripe allows;
//   - the v2 stream: up to 100 events of any customers per batch, once 100 are ready or the
//     oldest has waited the aggregation window.
// Sender threads ("sb-send-N") send batches through the rate-limited client and record the
// outcome: delivered (for meters also "already recorded"), retry later (exponential backoff,
// persisted, until the maximum age), dead with Stripe's reason, item gone (look it up again), or
// key refused (pause all sending and probe until the key works).
//
// Thread-safe. Nothing here runs on the host's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "customer_resolver.h"
#include "meter_event_stream.h"
#include "metrics.h"
#include "outbox.h"
#include "retry_policy.h"
#include "stripe_billing/config.h"
#include "stripe_billing/stripe_client.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

class Dispatcher {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  // `stream` sends v2 batches: those of mode meter_event_stream, and any made under it before.
  Dispatcher(const FinalizedConfig& config, Outbox& outbox, const StripeClient& client,
             MeterEventStream& stream, CustomerResolver& resolver, Metrics& metrics,
             std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock);
  ~Dispatcher();  // stop() with a 5 s deadline
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  void wake();  // new pending events were committed
  // Sends everything that can go now (the aggregation window is not waited out). True when no
  // event is pending or in an undelivered batch.
  bool drain(SteadyTime deadline);
  // drain(deadline), then stop: the caller aborts in-flight requests through the transport
  // first; aborted attempts are not counted. Joins every thread.
  void stop();
  bool paused() const;

 private:
  // One planning pass's events of one (sink, dimension, customer key).
  struct Group {
    Sink sink = Sink::kUsageRecord;
    const BilledDimension* dimension = nullptr;
    std::string customer_key;
    std::vector<StoredEvent> events;
  };
  struct Attempt {
    Expected<StripeResponse> response;
    Classification result;
    const char* activity;
  };

  void plan_loop();
  void send_loop(int index);
  std::chrono::milliseconds plan_round();
  void queue_due_batches(std::int64_t now_ms);
  std::int64_t batch_pending_events(std::int64_t now_ms, bool force);
  std::vector<Group> group_events(std::vector<StoredEvent> events);
  // False when the group's sink must wait: the key is refused (sending pauses) or Stripe is
  // failing (the sink's lookups back off).
  bool handle_lookup_failure(const Group& group, const Error& error, std::int64_t now_ms);
  void plan_usage_records(Group& group, const BillingTarget& target, std::int64_t now_ms,
                          bool force, std::int64_t& next_ready, std::vector<NewBatch>& out);
  void plan_meter_events(Group& group, const BillingTarget& target, std::int64_t now_ms,
                         std::vector<NewBatch>& out, std::vector<BatchMember>& stream,
                         std::vector<StoredEvent>& stream_events);
  void plan_stream_batches(std::vector<BatchMember>& members, std::vector<StoredEvent>& events,
                           std::int64_t now_ms, bool force, std::int64_t& next_ready,
                           std::vector<NewBatch>& out);
  void persist_and_queue(std::vector<NewBatch> batches, std::int64_t now_ms);
  std::deque<Batch>::iterator next_sendable();
  void send(const Batch& batch);
  Attempt attempt(const Batch& batch);
  Expected<StripeResponse> send_meter_events(const Batch& batch, bool stream);
  // Releases the claim; `retry_at_ms` >= 0: the batch stays in the outbox, due then.
  void finish(const Batch& batch, bool release_target, std::int64_t retry_at_ms = -1);
  void dead(const Batch& batch, const char* activity, const std::string& reason,
            const std::string& request_id, const std::string& detail);
  void pause_for_auth(const std::string& reason);
  bool probe_auth();
  std::int64_t now_ms() const;
  std::chrono::milliseconds backoff(int attempt);

  const FinalizedConfig& config_;
  Outbox& outbox_;
  const StripeClient& client_;
  MeterEventStream& stream_;
  CustomerResolver& resolver_;
  Metrics& metrics_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;
  RetryPolicy retry_policy_;

  mutable std::mutex mutex_;
  std::condition_variable planner_wake_;
  std::condition_variable sender_wake_;
  std::condition_variable progress_;
  std::deque<Batch> ready_;
  std::set<std::int64_t> claimed_;       // batch ids queued or being sent
  std::set<std::string> open_targets_;   // items with an undelivered batch (window > 0)
  std::set<std::string> sending_targets_;  // v1 meter targets with a request in flight
  bool woken_ = false;
  int draining_ = 0;
  bool stopping_ = false;
  bool auth_paused_ = false;
  std::int64_t next_probe_ms_ = 0;
  std::int64_t batches_due_ms_ = 0;  // when the outbox may hold a due batch not yet queued
  // Per sink (usage records, meter events): lookups back off on their own.
  std::int64_t lookup_retry_ms_[2] = {0, 0};
  int lookup_failures_[2] = {0, 0};
  std::int64_t last_prune_ms_ = 0;
  std::chrono::steady_clock::time_point last_auth_alarm_{};
  std::mt19937 random_{std::random_device{}()};

  std::thread planner_;
  std::vector<std::thread> senders_;
};

}  // namespace stripe_billing
