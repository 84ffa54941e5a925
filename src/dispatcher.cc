#include "dispatcher.h"

#include <pthread.h>

#include <algorithm>
#include <map>

#include <spdlog/logger.h>

#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr int kEventsPerRound = 10'000;
constexpr int kBatchesPerRound = 1'000;
constexpr auto kIdleRound = std::chrono::milliseconds(1000);
constexpr std::int64_t kPruneEveryMs = 3'600'000;

// The events of one customer key, in the order the outbox returned them.
struct KeyGroup {
  std::vector<StoredEvent> events;
};

std::vector<std::int64_t> ids_of(const std::vector<StoredEvent>& events) {
  std::vector<std::int64_t> ids;
  ids.reserve(events.size());
  for (const auto& event : events) ids.push_back(event.id);
  return ids;
}

}  // namespace

Dispatcher::Dispatcher(const FinalizedConfig& config, Outbox& outbox, const StripeClient& client,
                       CustomerResolver& resolver, Metrics& metrics,
                       std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock)
    : config_(config),
      outbox_(outbox),
      client_(client),
      resolver_(resolver),
      metrics_(metrics),
      log_(std::move(log)),
      clock_(std::move(clock)) {
  retry_policy_.max_backoff = config_.max_backoff();
  if (config_.aggregation_window().count() > 0) {
    if (auto targets = outbox_.open_targets()) {
      open_targets_.insert(targets->begin(), targets->end());
    }
  }
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
  const std::int64_t next_ready_ms = batch_pending_events(now, force);
  std::int64_t wait = kIdleRound.count();
  if (next_ready_ms > 0) wait = std::clamp<std::int64_t>(next_ready_ms - now, 1, wait);
  return std::chrono::milliseconds(wait);
}

void Dispatcher::queue_due_batches(std::int64_t now_ms) {
  // Read under the lock: a sender records a batch's outcome in the outbox before it releases
  // the claim, so a batch read as due here is either still claimed or really due. Reading
  // outside the lock could queue a batch that was delivered in between, and send it twice.
  std::lock_guard lock(mutex_);
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
  if (now < lookup_retry_ms_ && !force) return lookup_retry_ms_;
  auto events = outbox_.due_events(now, kEventsPerRound);
  if (!events) {
    log_->error("stripe_billing cannot read pending events: {}", events.error().message);
    return 0;
  }
  std::vector<std::string> order;
  std::map<std::string, KeyGroup> groups;
  for (StoredEvent& event : *events) {
    auto [it, inserted] = groups.try_emplace(event.customer_key);
    if (inserted) order.push_back(event.customer_key);
    it->second.events.push_back(std::move(event));
  }
  const std::int64_t window_ms = config_.aggregation_window().count();
  std::int64_t next_ready = 0;
  for (const std::string& key : order) {
    auto& group = groups[key].events;
    auto target = resolver_.resolve(key);
    if (target && target->period_end > 0) {
      const bool stale = std::any_of(group.begin(), group.end(), [&](const StoredEvent& e) {
        return e.event_time >= target->period_end;
      });
      if (stale) {
        resolver_.invalidate(key);
        target = resolver_.resolve(key);
      }
    }
    if (!target) {
      const Error& error = target.error();
      const auto ids = ids_of(group);
      if (error.code == ErrorCode::kCustomerNotFound ||
          error.code == ErrorCode::kSubscriptionItemNotFound) {
        const auto retry_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(config_.park_retry()).count();
        metrics_.count_reason(to_string(error.code), ids.size());
        outbox_.park(ids, to_string(error.code), now + retry_ms);
        log_->warn("stripe_billing parked {} events of customer {}: {}", ids.size(), log_safe(key),
                   error.message);
        continue;
      }
      if (error.code == ErrorCode::kMissingCustomer) {
        metrics_.count_reason("invalid_customer_key", ids.size());
        outbox_.kill_events(ids, "invalid_customer_key");
        continue;
      }
      const Classification classification = classify(Expected<StripeResponse>(error));
      if (classification.outcome == Outcome::kPause) {
        pause_for_auth(classification.reason);
        return 0;
      }
      // Stripe or the network is failing: leave everything pending and back off.
      lookup_failures_ = std::min(lookup_failures_ + 1, 30);
      lookup_retry_ms_ = now + backoff(lookup_failures_).count();
      log_->warn("stripe_billing customer lookup failed ({}), retrying in {} ms",
                 error.to_string(), lookup_retry_ms_ - now);
      return lookup_retry_ms_;
    }
    lookup_failures_ = 0;
    const std::string& item = target->subscription_item_id;
    if (window_ms > 0) {
      {
        std::lock_guard lock(mutex_);
        if (open_targets_.count(item) != 0) continue;
      }
      const std::int64_t oldest = group.front().accepted_at_ms;
      if (!force && oldest + window_ms > now) {
        next_ready = next_ready == 0 ? oldest + window_ms : std::min(next_ready, oldest + window_ms);
        continue;
      }
    }
    // One batch per billing period (events before the item's current period stay apart), or one
    // per event when there is no window.
    std::vector<std::vector<StoredEvent>> batches;
    if (window_ms == 0) {
      for (auto& event : group) batches.push_back({std::move(event)});
    } else {
      std::vector<StoredEvent> current, earlier;
      for (auto& event : group) {
        (event.event_time < target->period_start ? earlier : current).push_back(std::move(event));
      }
      for (auto* part : {&earlier, &current}) {
        if (!part->empty()) batches.push_back(std::move(*part));
      }
    }
    for (const auto& part : batches) {
      std::int64_t quantity = 0;
      std::int64_t timestamp = 0;
      for (const auto& event : part) {
        quantity += event.quantity;
        timestamp = std::max(timestamp, event.event_time);
      }
      auto batch = outbox_.create_batch(item, target->customer_id, key, quantity, timestamp,
                                        ids_of(part), now);
      if (!batch) {
        log_->error("stripe_billing cannot create a batch: {}", batch.error().message);
        continue;
      }
      std::lock_guard lock(mutex_);
      if (window_ms > 0) open_targets_.insert(item);
      claimed_.insert(batch->id);
      ready_.push_back(std::move(batch.value()));
      sender_wake_.notify_one();
    }
  }
  return next_ready;
}

void Dispatcher::send_loop(int index) {
  const std::string name = "sb-send-" + std::to_string(index);
  pthread_setname_np(pthread_self(), name.c_str());
  std::unique_lock lock(mutex_);
  while (true) {
    sender_wake_.wait(lock, [this] { return stopping_ || (!ready_.empty() && !auth_paused_); });
    if (stopping_) break;
    Batch batch = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    try {
      send(batch);
    } catch (const std::exception& e) {
      log_->error("stripe_billing sending batch {} failed: {}", batch.id, e.what());
      finish(batch, false);
    }
    lock.lock();
  }
}

void Dispatcher::send(const Batch& batch) {
  const auto started = std::chrono::steady_clock::now();
  metrics_.stripe_requests.fetch_add(1);
  auto response = client_.post_form(usage_record_path(batch.target),
                                    usage_record_fields(batch.quantity, batch.timestamp),
                                    batch.idempotency_key);
  const auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  const Classification result = classify(response);
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
      outbox_.batch_delivered(batch.id, request_id, now);
      log_->info("stripe_billing activity=usage_record success=true customer={} customer_id={} "
                 "subscription_item={} quantity={} events={} batch={} request_id={} "
                 "latency_ms={} attempt={}",
                 log_safe(batch.customer_key), batch.customer_id, batch.target, batch.quantity,
                 batch.events, batch.id, request_id, latency.count(), batch.attempts + 1);
      return finish(batch, true);
    case Outcome::kItemMissing:
      resolver_.invalidate(batch.customer_key);
      outbox_.dissolve_batch(batch.id);
      log_->warn("stripe_billing subscription item {} is gone; looking customer {} up again",
                 batch.target, log_safe(batch.customer_key));
      finish(batch, true);
      return wake();
    case Outcome::kPause:
      pause_for_auth(result.reason);
      outbox_.batch_retry_later(batch.id, batch.attempts, now, detail);
      return finish(batch, false);
    case Outcome::kRetry: {
      if (result.reason == "aborted") return finish(batch, false);  // shutdown: not an attempt
      const int attempts = batch.attempts + 1;
      const auto age = std::chrono::milliseconds(now - batch.created_ms);
      if (age < config_.max_delivery_age()) {
        const auto delay = backoff(attempts);
        outbox_.batch_retry_later(batch.id, attempts, now + delay.count(), detail);
        metrics_.retries.fetch_add(1);
        log_->warn("stripe_billing activity=usage_record success=false retrying reason={} "
                   "batch={} attempt={} next_in_ms={} request_id={} detail={}",
                   result.reason, batch.id, attempts, delay.count(), request_id, log_safe(detail, 300));
        return finish(batch, false);
      }
      return dead(batch, "max_delivery_age_exceeded", request_id, detail);
    }
    case Outcome::kDead:
      return dead(batch, result.reason, request_id, detail);
  }
}

void Dispatcher::dead(const Batch& batch, const std::string& reason, const std::string& request_id,
                      const std::string& detail) {
  metrics_.failed_events.fetch_add(static_cast<std::uint64_t>(batch.events));
  metrics_.count_reason(reason, static_cast<std::uint64_t>(batch.events));
  outbox_.batch_dead(batch.id, reason, request_id);
  log_->error("stripe_billing activity=usage_record success=false dead reason={} customer={} "
              "subscription_item={} quantity={} events={} batch={} request_id={} detail={}",
              reason, log_safe(batch.customer_key), batch.target, batch.quantity, batch.events,
              batch.id, request_id, log_safe(detail, 300));
  finish(batch, true);
}

void Dispatcher::finish(const Batch& batch, bool release_target) {
  std::lock_guard lock(mutex_);
  claimed_.erase(batch.id);
  if (release_target) open_targets_.erase(batch.target);
  progress_.notify_all();
  if (release_target) {
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
  auto response = client_.get("/v1/prices/" + encode_path_segment(config_.price_id()));
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
