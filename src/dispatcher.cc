#include "dispatcher.h"

#include <pthread.h>

#include <algorithm>
#include <map>

#include <spdlog/logger.h>

#include "activity_log.h"
#include "meter_event.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr int kEventsPerRound = 10'000;
constexpr int kBatchesPerRound = 1'000;
constexpr auto kIdleRound = std::chrono::milliseconds(1000);
constexpr std::int64_t kPruneEveryMs = 3'600'000;

std::vector<std::int64_t> ids_of(const std::vector<StoredEvent>& events) {
  std::vector<std::int64_t> ids;
  ids.reserve(events.size());
  for (const auto& event : events) ids.push_back(event.id);
  return ids;
}

}  // namespace

Dispatcher::Dispatcher(const FinalizedConfig& config, Outbox& outbox, const StripeClient& client,
                       MeterEventStream& stream, CustomerResolver& resolver, Metrics& metrics,
                       std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock)
    : config_(config),
      outbox_(outbox),
      client_(client),
      stream_(stream),
      resolver_(resolver),
      metrics_(metrics),
      log_(std::move(log)),
      clock_(std::move(clock)) {
  retry_policy_.max_backoff = config_.max_backoff();
  if (config_.aggregation_window().count() > 0) {
    if (auto targets = outbox_.open_targets(Sink::kUsageRecord)) {
      open_targets_.insert(targets->begin(), targets->end());
    }
  }
  // Rows parked because an earlier configuration did not bill them are looked at again: this
  // one may (they are parked again at once if not).
  if (config_.uses_usage_records()) outbox_.requeue("usage_records_not_in_mode", "");
  if (config_.uses_meters()) outbox_.requeue("meters_not_in_mode", "");
  outbox_.requeue("dimension_not_configured", "");
  planner_ = std::thread([this] { plan_loop(); });
  for (int i = 0; i < config_.sender_threads(); ++i) {
    senders_.emplace_back([this, i] { send_loop(i); });
  }
}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::wake() {
  std::lock_guard lock(mutex_);
  woken_ = true;
  planner_wake_.notify_one();
}

bool Dispatcher::paused() const {
  std::lock_guard lock(mutex_);
  return auth_paused_;
}

bool Dispatcher::drain(SteadyTime deadline) {
  std::unique_lock lock(mutex_);
  ++draining_;
  woken_ = true;
  planner_wake_.notify_one();
  bool drained = false;
  while (!stopping_) {
    lock.unlock();
    auto outstanding = outbox_.has_outstanding();
    lock.lock();
    if (outstanding && !*outstanding) {
      drained = true;
      break;
    }
    if (progress_.wait_until(lock, deadline) == std::cv_status::timeout) break;
  }
  --draining_;
  return drained;
}

void Dispatcher::stop() {
  {
    std::lock_guard lock(mutex_);
    if (!planner_.joinable()) return;
    stopping_ = true;
    planner_wake_.notify_all();
    sender_wake_.notify_all();
    progress_.notify_all();
  }
  planner_.join();
  for (auto& sender : senders_) sender.join();
}

std::int64_t Dispatcher::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             clock_->now().time_since_epoch()).count();
}

std::chrono::milliseconds Dispatcher::backoff(int attempt) {
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  std::lock_guard lock(mutex_);
  return retry_policy_.backoff(attempt, jitter(random_));
}

void Dispatcher::plan_loop() {
  pthread_setname_np(pthread_self(), "sb-dispatch");
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    woken_ = false;
    lock.unlock();
    std::chrono::milliseconds next = kIdleRound;
    try {
      next = plan_round();
    } catch (const std::exception& e) {
      log_->error("stripe_billing planner round failed: {}", e.what());
    }
    lock.lock();
    progress_.notify_all();
    planner_wake_.wait_for(lock, next, [this] { return stopping_ || woken_; });
  }
}

std::chrono::milliseconds Dispatcher::plan_round() {
  const std::int64_t now = now_ms();
  bool force;
  {
    std::lock_guard lock(mutex_);
    force = draining_ > 0;
    if (auth_paused_ && now < next_probe_ms_) {
      return std::chrono::milliseconds(std::min<std::int64_t>(next_probe_ms_ - now, 1000));
    }
  }
  if (paused() && !probe_auth()) return kIdleRound;
  if (now - last_prune_ms_ >= kPruneEveryMs) {
    last_prune_ms_ = now;
    const auto retention_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(config_.ledger_retention()).count();
    if (auto pruned = outbox_.prune_delivered(now - retention_ms); pruned && *pruned > 0) {
      log_->info("stripe_billing pruned {} ledger rows older than the retention", *pruned);
    }
  }
  queue_due_batches(now);
  std::int64_t next_ready_ms = batch_pending_events(now, force);
  {
    std::lock_guard lock(mutex_);
    if (next_ready_ms == 0 || batches_due_ms_ < next_ready_ms) next_ready_ms = batches_due_ms_;
  }
  std::int64_t wait = kIdleRound.count();
  if (next_ready_ms > 0) wait = std::clamp<std::int64_t>(next_ready_ms - now, 1, wait);
  return std::chrono::milliseconds(wait);
}

void Dispatcher::queue_due_batches(std::int64_t now_ms) {
  // Read under the lock: a sender records a batch's outcome in the outbox before it releases
  // the claim, so a batch read as due here is either still claimed or really due. Reading
  // outside the lock could queue a batch that was delivered in between, and send it twice.
  std::lock_guard lock(mutex_);
  // Only when a retry may be due (or once a round-trip of the idle round, as a safety net):
  // batches the planner made itself are queued already, and re-reading them is what made
  // rounds expensive when each event is its own batch.
  if (now_ms < batches_due_ms_) return;
  batches_due_ms_ = now_ms + kIdleRound.count();
  auto due = outbox_.due_batches(now_ms, kBatchesPerRound);
  if (!due) {
    log_->error("stripe_billing cannot read batches: {}", due.error().message);
    return;
  }
  for (Batch& batch : *due) {
    if (!claimed_.insert(batch.id).second) continue;
    ready_.push_back(std::move(batch));
    sender_wake_.notify_one();
  }
}

// Returns when the earliest event still inside its aggregation window becomes ready (0: none).
std::int64_t Dispatcher::batch_pending_events(std::int64_t now, bool force) {
  auto events = outbox_.due_events(now, kEventsPerRound);
  if (!events) {
    log_->error("stripe_billing cannot read pending events: {}", events.error().message);
    return 0;
  }
  std::int64_t next_ready = 0;
  std::vector<NewBatch> batches;
  std::vector<BatchMember> stream_members;
  std::vector<StoredEvent> stream_events;
  const auto soonest = [&next_ready](std::int64_t at) {
    next_ready = next_ready == 0 ? at : std::min(next_ready, at);
  };
  for (Group& group : group_events(std::move(*events))) {
    // While a sink's lookups back off, its events wait; the other sink's go on.
    const std::int64_t retry_at = lookup_retry_ms_[static_cast<int>(group.sink)];
    if (!force && now < retry_at) {
      soonest(retry_at);
      continue;
    }
    if (group.dimension == nullptr) {
      // Stored under a dimension this configuration does not bill (STRIPE_QUANTITY changed):
      // kept until a start whose configuration bills it again.
      metrics_.count_reason("dimension_not_configured", group.events.size());
      outbox_.park(ids_of(group.events), "dimension_not_configured", std::nullopt);
      continue;
    }
    const bool records = group.sink == Sink::kUsageRecord;
    if (records ? group.dimension->price_id.empty() : group.dimension->meter_event_name.empty()) {
      // Stored under a mode that sent this sink (dual, say), and the mode changed since: kept
      // until a start in a mode that sends them (the constructor requeues them then).
      const char* reason = records ? "usage_records_not_in_mode" : "meters_not_in_mode";
      metrics_.count_reason(reason, group.events.size());
      outbox_.park(ids_of(group.events), reason, std::nullopt);
      log_->warn("stripe_billing parked {} {} events of customer {}: STRIPE_BILLING_MODE={} does "
                 "not send them",
                 group.events.size(), to_string(group.sink), log_safe(group.customer_key),
                 to_string(config_.billing_mode()));
      continue;
    }
    const std::string& price = records ? group.dimension->price_id : std::string();
    auto target = resolver_.resolve(group.customer_key, price);
    if (records && target && target->period_end > 0) {
      const bool stale = std::any_of(group.events.begin(), group.events.end(),
                                     [&](const StoredEvent& e) {
                                       return e.event_time >= target->period_end;
                                     });
      if (stale) {
        resolver_.invalidate(group.customer_key, price);
        target = resolver_.resolve(group.customer_key, price);
      }
    }
    if (!target) {
      if (!handle_lookup_failure(group, target.error(), now)) {
        if (paused()) break;
        soonest(lookup_retry_ms_[static_cast<int>(group.sink)]);
      }
      continue;
    }
    lookup_failures_[static_cast<int>(group.sink)] = 0;
    if (records) {
      plan_usage_records(group, *target, now, force, next_ready, batches);
    } else {
      plan_meter_events(group, *target, now, batches, stream_members, stream_events);
    }
  }
  plan_stream_batches(stream_members, stream_events, now, force, next_ready, batches);
  persist_and_queue(std::move(batches), now);
  return next_ready;
}

std::vector<Dispatcher::Group> Dispatcher::group_events(std::vector<StoredEvent> events) {
  std::vector<Group> groups;
  std::map<std::string, std::size_t> index;
  for (StoredEvent& event : events) {
    const std::string key = std::to_string(static_cast<int>(event.sink)) + '\n' + event.dimension +
                            '\n' + event.customer_key;
    auto [it, inserted] = index.try_emplace(key, groups.size());
    if (inserted) {
      groups.push_back(
          Group{event.sink, config_.dimension(event.dimension), event.customer_key, {}});
    }
    groups[it->second].events.push_back(std::move(event));
  }
  return groups;
}

bool Dispatcher::handle_lookup_failure(const Group& group, const Error& error, std::int64_t now) {
  const auto ids = ids_of(group.events);
  if (error.code == ErrorCode::kCustomerNotFound ||
      error.code == ErrorCode::kSubscriptionItemNotFound) {
    const auto retry_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(config_.park_retry()).count();
    metrics_.count_reason(to_string(error.code), ids.size());
    outbox_.park(ids, to_string(error.code), now + retry_ms);
    log_->warn("stripe_billing parked {} events of customer {}: {}", ids.size(),
               log_safe(group.customer_key), error.message);
    return true;
  }
  if (error.code == ErrorCode::kMissingCustomer) {
    metrics_.count_reason("invalid_customer_key", ids.size());
    outbox_.kill_events(ids, "invalid_customer_key");
    return true;
  }
  const Classification classification = classify(Expected<StripeResponse>(error));
  if (classification.outcome == Outcome::kPause) {
    pause_for_auth(classification.reason);
    return false;
  }
  // Stripe or the network is failing: leave this sink's events pending and back off.
  int& failures = lookup_failures_[static_cast<int>(group.sink)];
  std::int64_t& retry_at = lookup_retry_ms_[static_cast<int>(group.sink)];
  failures = std::min(failures + 1, 30);
  retry_at = now + backoff(failures).count();
  log_->warn("stripe_billing customer lookup failed ({}), retrying {} events in {} ms",
             error.to_string(), to_string(group.sink), retry_at - now);
  return false;
}

void Dispatcher::plan_usage_records(Group& group, const BillingTarget& target, std::int64_t now,
                                    bool force, std::int64_t& next_ready,
                                    std::vector<NewBatch>& out) {
  const std::int64_t window_ms = config_.aggregation_window().count();
  const std::string& item = target.subscription_item_id;
  if (window_ms > 0) {
    {
      std::lock_guard lock(mutex_);
      if (open_targets_.count(item) != 0) return;
    }
    for (const NewBatch& planned : out) {
      if (planned.batch.sink == Sink::kUsageRecord && planned.batch.target == item) return;
    }
    const std::int64_t oldest = group.events.front().accepted_at_ms;
    if (!force && oldest + window_ms > now) {
      next_ready = next_ready == 0 ? oldest + window_ms : std::min(next_ready, oldest + window_ms);
      return;
    }
  }
  // One batch per billing period (events before the item's current period stay apart), or one
  // per event when there is no window.
  std::vector<std::vector<StoredEvent>> parts;
  if (window_ms == 0) {
    for (auto& event : group.events) parts.push_back({std::move(event)});
  } else {
    std::vector<StoredEvent> current, earlier;
    for (auto& event : group.events) {
      (event.event_time < target.period_start ? earlier : current).push_back(std::move(event));
    }
    for (auto* part : {&earlier, &current}) {
      if (!part->empty()) parts.push_back(std::move(*part));
    }
  }
  for (const auto& part : parts) {
    NewBatch planned;
    planned.batch.sink = Sink::kUsageRecord;
    planned.batch.target = item;
    planned.batch.customer_id = target.customer_id;
    planned.batch.customer_key = group.customer_key;
    for (const auto& event : part) {
      planned.batch.quantity += event.quantity;
      planned.batch.timestamp = std::max(planned.batch.timestamp, event.event_time);
      planned.members.push_back({event.id, target.customer_id});
    }
    out.push_back(std::move(planned));
  }
}

void Dispatcher::plan_meter_events(Group& group, const BillingTarget& target, std::int64_t now,
                                   std::vector<NewBatch>& out, std::vector<BatchMember>& stream,
                                   std::vector<StoredEvent>& stream_events) {
  const std::int64_t oldest_allowed = now / 1000 - kMeterEventMaxAgeSeconds;
  std::vector<std::int64_t> too_old;
  for (StoredEvent& event : group.events) {
    if (event.event_time < oldest_allowed) {
      too_old.push_back(event.id);
      continue;
    }
    if (config_.billing_mode() == BillingMode::kMeterEventStream) {
      stream.push_back({event.id, target.customer_id});
      stream_events.push_back(std::move(event));
      continue;
    }
    NewBatch planned;
    planned.batch.sink = Sink::kMeterEvent;
    planned.batch.target = group.dimension->meter_event_name + " " + target.customer_id;
    planned.batch.customer_id = target.customer_id;
    planned.batch.customer_key = group.customer_key;
    planned.batch.quantity = event.quantity;
    planned.batch.timestamp = event.event_time;
    planned.members.push_back({event.id, target.customer_id});
    out.push_back(std::move(planned));
  }
  if (!too_old.empty()) {
    // Stripe refuses meter events older than 35 days: kept for an operator, never sent.
    metrics_.count_reason("meter_timestamp_too_old", too_old.size());
    outbox_.park(too_old, "meter_timestamp_too_old", std::nullopt);
    log_->warn("stripe_billing parked {} meter events of customer {}: older than the 35 days "
               "Stripe accepts",
               too_old.size(), log_safe(group.customer_key));
  }
}

void Dispatcher::plan_stream_batches(std::vector<BatchMember>& members,
                                     std::vector<StoredEvent>& events, std::int64_t now,
                                     bool force, std::int64_t& next_ready,
                                     std::vector<NewBatch>& out) {
  if (members.empty()) return;
  const std::int64_t window_ms = config_.aggregation_window().count();
  std::int64_t oldest = events.front().accepted_at_ms;
  for (const StoredEvent& event : events) oldest = std::min(oldest, event.accepted_at_ms);
  const bool ready = force || members.size() >= kMaxStreamEvents || oldest + window_ms <= now;
  for (std::size_t first = 0; first < members.size(); first += kMaxStreamEvents) {
    const std::size_t last = std::min(members.size(), first + kMaxStreamEvents);
    if (!ready || (last - first < kMaxStreamEvents && !force && oldest + window_ms > now)) {
      const std::int64_t at = oldest + window_ms;
      next_ready = next_ready == 0 ? at : std::min(next_ready, at);
      break;  // a partial batch waits for more events, or for the window
    }
    NewBatch planned;
    planned.batch.sink = Sink::kMeterEvent;
    planned.batch.target = kStreamTarget;
    for (std::size_t i = first; i < last; ++i) {
      planned.batch.quantity += events[i].quantity;
      planned.batch.timestamp = std::max(planned.batch.timestamp, events[i].event_time);
      planned.members.push_back(std::move(members[i]));
    }
    out.push_back(std::move(planned));
  }
}

void Dispatcher::persist_and_queue(std::vector<NewBatch> batches, std::int64_t now) {
  if (batches.empty()) return;
  auto created = outbox_.create_batches(std::move(batches), now);
  if (!created) {
    log_->error("stripe_billing cannot create batches: {}", created.error().message);
    return;
  }
  std::lock_guard lock(mutex_);
  for (Batch& batch : *created) {
    if (batch.sink == Sink::kUsageRecord && config_.aggregation_window().count() > 0) {
      open_targets_.insert(batch.target);
    }
    claimed_.insert(batch.id);
    ready_.push_back(std::move(batch));
  }
  sender_wake_.notify_all();
}

// The first queued batch that may go now: a v1 meter batch waits while another request for the
// same customer and meter is in flight. Called with mutex_ held.
std::deque<Batch>::iterator Dispatcher::next_sendable() {
  return std::find_if(ready_.begin(), ready_.end(), [this](const Batch& batch) {
    return batch.sink == Sink::kUsageRecord || batch.target == kStreamTarget ||
           sending_targets_.count(batch.target) == 0;
  });
}

void Dispatcher::send_loop(int index) {
  const std::string name = "sb-send-" + std::to_string(index);
  pthread_setname_np(pthread_self(), name.c_str());
  std::unique_lock lock(mutex_);
  while (true) {
    sender_wake_.wait(lock, [this] {
      return stopping_ || (!auth_paused_ && next_sendable() != ready_.end());
    });
    if (stopping_) break;
    const auto next = next_sendable();
    Batch batch = std::move(*next);
    ready_.erase(next);
    const bool serial = batch.sink == Sink::kMeterEvent && batch.target != kStreamTarget;
    if (serial) sending_targets_.insert(batch.target);
    lock.unlock();
    try {
      send(batch);
    } catch (const std::exception& e) {
      log_->error("stripe_billing sending batch {} failed: {}", batch.id, e.what());
      finish(batch, false, now_ms());
    }
    lock.lock();
    if (serial) {
      sending_targets_.erase(batch.target);
      sender_wake_.notify_all();
    }
  }
}

Dispatcher::Attempt Dispatcher::attempt(const Batch& batch) {
  if (batch.sink == Sink::kUsageRecord) {
    auto response =
        client_.post_form(usage_record_path(batch.target),
                          usage_record_fields(batch.quantity, batch.timestamp),
                          batch.idempotency_key);
    Classification result = classify(response);
    return {std::move(response), std::move(result), "usage_record"};
  }
  const bool stream = batch.target == kStreamTarget;
  auto response = send_meter_events(batch, stream);
  Classification result = classify(response);
  if (!response && is_already_recorded(response.error())) {
    result = {Outcome::kDelivered, "already_recorded"};
  } else if (!response && response.error().code == ErrorCode::kStorage) {
    result = {Outcome::kRetry, "storage"};
  } else if (!response && response.error().code == ErrorCode::kInvalidConfig) {
    // Made under a configuration that metered it (a mode or meter changed since): it waits, and
    // goes once a configuration that meters it runs again.
    result = {Outcome::kRetry, "meters_not_in_mode"};
  } else if (result.outcome == Outcome::kItemMissing) {
    result.outcome = Outcome::kDead;  // no subscription item to look up again
  }
  return {std::move(response), std::move(result), stream ? "meter_event_stream" : "meter_event"};
}

Expected<StripeResponse> Dispatcher::send_meter_events(const Batch& batch, bool stream) {
  auto events = outbox_.batch_events(batch.id);
  if (!events) return std::move(events).error();
  std::vector<MeterEvent> meter_events;
  for (const StoredEvent& event : *events) {
    const BilledDimension* dimension = config_.dimension(event.dimension);
    if (dimension == nullptr || dimension->meter_event_name.empty()) {
      return Error{ErrorCode::kInvalidConfig,
                   "dimension " + event.dimension + " has no meter in this configuration",
                   std::nullopt};
    }
    meter_events.push_back({dimension->meter_event_name,
                            meter_event_identifier(event.call_id, event.dimension),
                            event.customer_id, event.quantity, event.event_time,
                            dimension->token_type, event.model});
  }
  if (!stream) {
    if (meter_events.size() != 1) {
      return Error{ErrorCode::kStorage, "a meter event batch must hold exactly one event",
                   std::nullopt};
    }
    return client_.post_form("/v1/billing/meter_events",
                             meter_event_form(meter_events.front(), config_),
                             batch.idempotency_key);
  }
  nlohmann::json body = nlohmann::json::array();
  for (const MeterEvent& event : meter_events) body.push_back(meter_stream_event(event, config_));
  return stream_.send(body);
}

void Dispatcher::send(const Batch& batch) {
  const auto started = std::chrono::steady_clock::now();
  metrics_.stripe_requests.fetch_add(1);
  Attempt outcome = attempt(batch);
  const auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  const auto& response = outcome.response;
  const Classification& result = outcome.result;
  const std::string request_id =
      response ? response->request_id
               : (response.error().stripe ? response.error().stripe->request_id : "");
  const std::string detail = response ? "" : response.error().to_string();
  const std::int64_t now = now_ms();

  switch (result.outcome) {
    case Outcome::kDelivered:
      // Counted before the outbox records it: whoever sees the outbox drained sees the counts.
      metrics_.delivered_requests.fetch_add(1);
      metrics_.delivered_events.fetch_add(static_cast<std::uint64_t>(batch.events));
      metrics_.quantity_delivered.fetch_add(static_cast<std::uint64_t>(batch.quantity));
      if (auto events = outbox_.batch_events(batch.id)) {
        for (const StoredEvent& event : *events) {
          metrics_.count_quantity(event.model, static_cast<std::uint64_t>(event.quantity));
        }
      }
      outbox_.batch_delivered(batch.id, request_id, now);
      log_->info("{}", activity_line(
          config_.log_format(),
          {{"activity", outcome.activity}, {"success", true},
           {"customer", log_safe(batch.customer_key)}, {"customer_id", batch.customer_id},
           {"target", batch.target}, {"quantity", batch.quantity}, {"events", batch.events},
           {"batch", batch.id}, {"request_id", request_id}, {"latency_ms", latency.count()},
           {"attempt", batch.attempts + 1},
           {"already_recorded", result.reason == "already_recorded"}}));
      return finish(batch, true);
    case Outcome::kItemMissing: {
      for (const BilledDimension& dimension : config_.dimensions()) {
        resolver_.invalidate(batch.customer_key, dimension.price_id);
      }
      outbox_.dissolve_batch(batch.id);
      log_->warn("stripe_billing subscription item {} is gone; looking customer {} up again",
                 batch.target, log_safe(batch.customer_key));
      finish(batch, true);
      return wake();
    }
    case Outcome::kPause:
      pause_for_auth(result.reason);
      outbox_.batch_retry_later(batch.id, batch.attempts, now, detail);
      return finish(batch, false, now);
    case Outcome::kRetry: {
      if (result.reason == "aborted") return finish(batch, false, now);  // shutdown: no attempt
      const int attempts = batch.attempts + 1;
      const auto age = std::chrono::milliseconds(now - batch.created_ms);
      if (age < config_.max_delivery_age()) {
        const auto delay = backoff(attempts);
        outbox_.batch_retry_later(batch.id, attempts, now + delay.count(), detail);
        metrics_.retries.fetch_add(1);
        finish(batch, false, now + delay.count());
        log_->warn("{}", activity_line(
            config_.log_format(),
            {{"activity", outcome.activity}, {"success", false}, {"outcome", "retry"},
             {"reason", result.reason}, {"customer", log_safe(batch.customer_key)},
             {"batch", batch.id}, {"attempt", attempts}, {"next_in_ms", delay.count()},
             {"request_id", request_id}, {"latency_ms", latency.count()},
             {"detail", log_safe(detail, 300)}}));
        return;
      }
      return dead(batch, outcome.activity, "max_delivery_age_exceeded", request_id, detail);
    }
    case Outcome::kDead:
      return dead(batch, outcome.activity, result.reason, request_id, detail);
  }
}

void Dispatcher::dead(const Batch& batch, const char* activity, const std::string& reason,
                      const std::string& request_id, const std::string& detail) {
  metrics_.failed_events.fetch_add(static_cast<std::uint64_t>(batch.events));
  metrics_.count_reason(reason, static_cast<std::uint64_t>(batch.events));
  outbox_.batch_dead(batch.id, reason, request_id);
  log_->error("{}", activity_line(
      config_.log_format(),
      {{"activity", activity}, {"success", false}, {"outcome", "dead"}, {"reason", reason},
       {"customer", log_safe(batch.customer_key)}, {"target", batch.target},
       {"quantity", batch.quantity}, {"events", batch.events}, {"batch", batch.id},
       {"request_id", request_id}, {"detail", log_safe(detail, 300)}}));
  finish(batch, true);
}

void Dispatcher::finish(const Batch& batch, bool release_target, std::int64_t retry_at_ms) {
  std::lock_guard lock(mutex_);
  claimed_.erase(batch.id);
  progress_.notify_all();
  if (retry_at_ms >= 0) batches_due_ms_ = std::min(batches_due_ms_, retry_at_ms);
  // An item's window opens again: its pending events can make the next batch.
  if (release_target && open_targets_.erase(batch.target) != 0) {
    woken_ = true;
    planner_wake_.notify_one();
  }
}

void Dispatcher::pause_for_auth(const std::string& reason) {
  std::lock_guard lock(mutex_);
  const auto probe_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(config_.auth_probe_interval()).count();
  next_probe_ms_ = now_ms() + probe_ms;
  if (!auth_paused_) {
    auth_paused_ = true;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_auth_alarm_ >= std::chrono::minutes(1)) {
    last_auth_alarm_ = now;
    log_->error("stripe_billing Stripe refused the API key {} ({}): sending paused, events are "
                "kept and sending resumes by itself once the key works; check STRIPE_API_KEY",
                config_.api_key().redacted(), reason);
  }
}

bool Dispatcher::probe_auth() {
  metrics_.stripe_requests.fetch_add(1);
  auto response = config_.uses_usage_records()
                      ? client_.get("/v1/prices/" + encode_path_segment(config_.price_id()))
                      : client_.get("/v1/billing/meters", {{"limit", "1"}});
  const Outcome outcome = classify(response).outcome;
  if (outcome == Outcome::kPause) {
    pause_for_auth("probe refused");
    return false;
  }
  std::lock_guard lock(mutex_);
  auth_paused_ = false;
  sender_wake_.notify_all();
  log_->info("stripe_billing Stripe accepts the API key again; sending resumed");
  return true;
}

}  // namespace stripe_billing
