#include "dispatcher.h"

#include <pthread.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <cstdlib>

#include "activity_log.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr int kRowsPerRound = 10'000;
constexpr int kSharedRowsPerRound = 100'000;
constexpr int kClaimsPerRound = 1'000;
constexpr auto kIdleRound = std::chrono::milliseconds(1000);
// Rounds woken by commits come at most this often: a stream of commits is read incrementally,
// a few times a second, instead of once per commit.
constexpr auto kCommitRoundGap = std::chrono::milliseconds(25);
constexpr auto kPruneEvery = std::chrono::hours(1);
constexpr int kPruneRowsPerStep = 2'000;
constexpr auto kFileCheckEvery = std::chrono::seconds(1);
// A change of the wall clock against the monotonic one larger than this is a jump, not drift.
constexpr auto kClockJump = std::chrono::milliseconds(5'000);

RetryPolicy retry_policy_for(const FinalizedConfig& config) {
  RetryPolicy policy;
  policy.max_backoff = config.max_backoff();
  return policy;
}

}  // namespace

Dispatcher::Dispatcher(const FinalizedConfig& config, Outbox& outbox, const StripeClient& client,
                       MeterEventStream& stream, CustomerResolver& resolver, Metrics& metrics,
                       std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock,
                       std::shared_ptr<BillingTables> tables)
    : config_(config),
      outbox_(outbox),
      client_(client),
      resolver_(resolver),
      metrics_(metrics),
      tables_(tables ? std::move(tables) : BillingTables::load(config)),
      log_(std::move(log)),
      clock_(std::move(clock)),
      retry_policy_(retry_policy_for(config)),
      sender_(client, stream, config),
      lookups_(resolver, clock_, retry_policy_,
               Lookups::Hooks{[this] {
                                std::lock_guard lock(mutex_);
                                full_round_ = true;
                                planner_wake_.notify_one();
                              },
                              [this](const std::string& reason) { pause_for_auth(reason); }},
               log_) {
  if (config_.aggregation_window().count() > 0) {
    if (auto items = outbox_.open_targets()) {
      busy_items_.insert(items->begin(), items->end());
    } else {
      log_->error("stripe_billing cannot read open batches: {}", items.error().message);
    }
  }
  // Rows parked because an earlier configuration did not bill them are looked at again: this
  // one may (they are parked again at once if not).
  std::vector<Reason> again = {Reason::kDimensionNotConfigured};
  if (config_.uses_usage_records()) again.push_back(Reason::kUsageRecordsNotInMode);
  if (config_.uses_meters()) again.push_back(Reason::kMetersNotInMode);
  for (Reason reason : again) {
    if (auto moved = outbox_.requeue(to_string(reason), ""); !moved) {
      log_->error("stripe_billing cannot look at {} rows again: {}", to_string(reason),
                  moved.error().message);
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
  committed_ = true;
  planner_wake_.notify_one();
}

bool Dispatcher::paused() const {
  std::lock_guard lock(mutex_);
  return auth_paused_;
}

std::size_t Dispatcher::queued() const {
  std::lock_guard lock(mutex_);
  return queued_;
}

bool Dispatcher::drain(SteadyTime deadline) {
  lookups_.hurry();
  std::unique_lock lock(mutex_);
  ++draining_;
  full_round_ = true;
  planner_wake_.notify_one();
  bool drained = false;
  while (!stopping_) {
    const bool writes_pending = !unrecorded_.empty();
    if (engine_elsewhere_ ||
        (outbox_.shared() && queued_ == 0 && in_flight_ == 0 && unrecorded_.empty())) {
      // A fleet: what this replica accepted is in the shared store, which the replica running
      // the engine delivers (this one until it stops, then the next holder); it only finishes
      // the batches it has in hand.
      drained = true;
      break;
    }
    lock.unlock();
    auto outstanding = outbox_.has_outstanding();
    lock.lock();
    if (outstanding && !*outstanding && !writes_pending && unrecorded_.empty()) {
      drained = true;
      break;
    }
    if (progress_.wait_until(lock, deadline) == std::cv_status::timeout) break;
  }
  --draining_;
  return drained;
}

bool Dispatcher::wait_until_delivered(SteadyTime deadline) {
  if (drain(deadline) && !outbox_.shared()) return true;
  // A shared store; or drain() gave up (the deadline, or stopped), when the store is asked once.
  const bool shared = outbox_.shared();
  std::unique_lock lock(mutex_);
  ++draining_;  // while this replica runs the engine, it does not wait out aggregation windows
  full_round_ = true;
  planner_wake_.notify_one();
  bool delivered = false;
  while (true) {
    lock.unlock();
    auto outstanding = outbox_.has_outstanding();
    lock.lock();
    if (outstanding && !*outstanding && unrecorded_.empty()) {
      delivered = true;
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!shared || stopping_ || now >= deadline) break;
    // Not a test's sleep: other replicas' deliveries wake nothing here, so the store is asked
    // again at this interval; this process's own progress wakes it at once.
    progress_.wait_until(lock, std::min(deadline, now + kStoreRecheck));
  }
  --draining_;
  return delivered;
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
  lookups_.stop();
  // What is queued goes back unattempted; what could not be written is tried once more.
  std::vector<PendingWrite> left;
  {
    std::lock_guard lock(mutex_);
    for (auto& queue : ready_) {
      for (Batch& batch : queue)
        left.push_back(PendingWrite{PendingWrite::Kind::kRelease, std::move(batch)});
      queue.clear();
    }
    queued_ = 0;
    left.insert(left.end(), unrecorded_.begin(), unrecorded_.end());
    unrecorded_.clear();
  }
  std::size_t unwritten = 0;
  for (const PendingWrite& outcome : left) unwritten += apply(outcome) ? 0 : 1;
  outbox_.release_engine();
  if (unwritten > 0) {
    log_->error(
        "stripe_billing could not write {} outcomes to the outbox at shutdown; their "
        "batches are sent again at the next start, with the same idempotency keys",
        unwritten);
  }
}

std::int64_t Dispatcher::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_->now().time_since_epoch())
      .count();
}

void Dispatcher::plan_loop() {
  pthread_setname_np(pthread_self(), "sb-dispatch");
  std::unique_lock lock(mutex_);
  SteadyTime next_full = clock_->steady_now();
  SteadyTime last_end = next_full;
  auto gap = kCommitRoundGap;
  while (!stopping_) {
    // Durations on the library's clock, waited for on the real one: an injected clock that jumps
    // ahead never makes the planner sleep for the jump.
    planner_wake_.wait_for(lock, next_full - clock_->steady_now(),
                           [this] { return stopping_ || full_round_ || committed_; });
    if (stopping_) break;
    if (full_round_ || committed_) {
      // A burst of wake-ups (commits, answers, deliveries) makes one round, and rounds never
      // take more than about half of the planner's time.
      planner_wake_.wait_for(lock, last_end + gap - clock_->steady_now(),
                             [this] { return stopping_; });
      if (stopping_) break;
    }
    const SteadyTime started = clock_->steady_now();
    const bool full = full_round_ || started >= next_full;
    full_round_ = false;
    committed_ = false;
    lock.unlock();
    std::chrono::milliseconds wait = kIdleRound;
    try {
      wait = plan_round(full);
    } catch (const std::exception& e) {
      log_->error("stripe_billing planner round failed: {}", e.what());
    }
    last_end = clock_->steady_now();
    gap = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(last_end - started),
                     kCommitRoundGap, std::chrono::milliseconds(200));
    next_full = full ? last_end + wait : std::min(next_full, last_end + wait);
    lock.lock();
    progress_.notify_all();
  }
}

std::chrono::milliseconds Dispatcher::plan_round(bool full) {
  const std::int64_t now = now_ms();
  bool force;
  {
    std::lock_guard lock(mutex_);
    force = draining_ > 0;
    if (auth_paused_ && now < next_probe_ms_) {
      return std::chrono::milliseconds(std::min<std::int64_t>(next_probe_ms_ - now, 1000));
    }
  }
  // A fleet on one store: only the holder of the engine lease plans and sends.
  if (!lead()) return kIdleRound;
  if (paused() && !probe_auth()) return kIdleRound;
  // The tables are read again here too, so an idle gateway's parked rows (unmapped models) are
  // released by a changed file without any new call.
  for (const std::string& problem : tables_->reload_if_due(clock_->steady_now()).refused) {
    log_->error("stripe_billing refused a changed table, the last good one stays in force: {}",
                problem);
  }
  housekeeping(now);
  claim_due(now);
  std::int64_t next_ready_ms = plan_pending(now, full, force);
  {
    std::lock_guard lock(mutex_);
    if (batches_due_ms_ > 0 && (next_ready_ms == 0 || batches_due_ms_ < next_ready_ms)) {
      next_ready_ms = batches_due_ms_;
    }
  }
  std::int64_t wait = kIdleRound.count();
  if (next_ready_ms > 0) wait = std::clamp<std::int64_t>(next_ready_ms - now, 1, wait);
  if (pruning_) wait = std::min<std::int64_t>(wait, 10);
  return std::chrono::milliseconds(wait);
}

bool Dispatcher::lead() {
  std::vector<std::int64_t> batches;  // claimed by this process: queued or in flight
  {
    std::lock_guard lock(mutex_);
    batches.reserve(first_seen_.size());
    for (const auto& [id, seen] : first_seen_) batches.push_back(id);
  }
  auto held = outbox_.hold_engine(batches);
  const bool leading = held && *held;
  {
    std::lock_guard lock(mutex_);
    engine_elsewhere_ = held && !*held;
    if (leading == leading_) return leading;
    leading_ = leading;
    if (leading) {
      // Whatever the last holder left: every pending row, every open batch.
      full_round_ = true;
      unclaimed_ = true;
      last_read_id_ = 0;
    } else {
      // No longer ours: what is queued is claimed again by the new holder (its claims fence
      // ours out), so nothing here is sent.
      for (auto& queue : ready_) queue.clear();
      queued_ = 0;
      busy_items_.clear();
      first_seen_.clear();
      sending_targets_.clear();
    }
  }
  if (leading) {
    if (config_.aggregation_window().count() > 0) {
      if (auto items = outbox_.open_targets()) {
        std::lock_guard lock(mutex_);
        busy_items_.insert(items->begin(), items->end());
      }
    }
    if (outbox_.shared()) log_->info("stripe_billing this replica runs the delivery engine now");
  } else if (held) {
    log_->info("stripe_billing another replica runs the delivery engine; this one stands by");
  } else {
    store_alarm("cannot renew the engine lease", held.error().message);
  }
  return leading;
}

// A jump of the wall clock (NTP, a resumed VM) would make every retry due at once (forward) or
// hold it back for as long (backward): the schedule moves with the clock instead.
void Dispatcher::follow_clock_jump(std::int64_t now) {
  const std::int64_t steady =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_->steady_now().time_since_epoch())
          .count();
  const std::int64_t offset = now - steady;
  if (!clock_offset_ms_) clock_offset_ms_ = offset;
  const std::int64_t jump = offset - *clock_offset_ms_;
  if (std::abs(jump) < kClockJump.count()) return;
  clock_offset_ms_ = offset;
  if (auto shifted = outbox_.shift_schedule(jump); !shifted) {
    log_->error("stripe_billing cannot move retries after a clock jump: {}",
                shifted.error().message);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (batches_due_ms_ > 0) batches_due_ms_ += jump;
  }
  log_->warn("stripe_billing the wall clock jumped by {} s; scheduled retries moved with it",
             jump / 1000);
}

void Dispatcher::housekeeping(std::int64_t now) {
  follow_clock_jump(now);
  std::vector<PendingWrite> retry;
  {
    std::lock_guard lock(mutex_);
    retry.swap(unrecorded_);
  }
  for (PendingWrite& outcome : retry) {
    if (!apply(outcome)) {
      metrics_.count_reason(to_string(Reason::kOutcomeUnrecorded));
      std::lock_guard lock(mutex_);
      unrecorded_.push_back(std::move(outcome));
    }
  }
  const SteadyTime steady = clock_->steady_now();
  if (steady - last_file_check_ >= kFileCheckEvery) {
    last_file_check_ = steady;
    auto check = outbox_.check_file();
    if (!check || *check != FileCheck::kSame) {
      if (check && *check == FileCheck::kRecreated) {
        metrics_.count_reason(to_string(Reason::kOutboxRecreated));
        log_->error(
            "stripe_billing the outbox file {} was deleted or replaced while running; "
            "it has been recreated from the open database, nothing committed was lost",
            log_safe(config_.outbox_path()));
      } else if (steady - last_file_alarm_ >= std::chrono::minutes(1)) {
        last_file_alarm_ = steady;
        log_->error(
            "stripe_billing the outbox file {} was deleted and cannot be recreated ({}); "
            "usage is kept in the open database until the process stops, then LOST",
            log_safe(config_.outbox_path()),
            check ? "its directory is gone or not writable" : check.error().message);
      }
    }
    outbox_.checkpoint();
    auto requeued = outbox_.apply_requeue_requests(now);
    if (!requeued) {
      store_alarm("cannot apply operators' requeues", requeued.error().message);
    } else if (*requeued > 0) {
      log_->info("stripe_billing requeued {} rows as an operator asked", *requeued);
      std::lock_guard lock(mutex_);
      full_round_ = true;
    }
  }
  if (!pruning_ && steady - last_prune_ >= kPruneEvery) {
    pruning_ = true;
    last_prune_ = steady;
  }
  if (pruning_) {
    const auto retention_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(config_.ledger_retention()).count();
    auto step = outbox_.prune_delivered(now - retention_ms, kPruneRowsPerStep);
    if (!step) {
      store_alarm("cannot prune the ledger", step.error().message);
      pruning_ = false;
    } else if (step->done) {
      pruning_ = false;
    }
  }
}

void Dispatcher::claim_due(std::int64_t now) {
  std::size_t room;
  {
    std::lock_guard lock(mutex_);
    room = kMaxQueued > queued_ ? kMaxQueued - queued_ : 0;
    // Only when the outbox may hold a batch to claim (batches the planner made are queued
    // already), and once a second whatever happens.
    const bool due = unclaimed_ || (batches_due_ms_ > 0 && now >= batches_due_ms_) ||
                     now - last_claim_ms_ >= kIdleRound.count();
    if (room == 0 || !due) return;
    unclaimed_ = false;
    batches_due_ms_ = 0;
    last_claim_ms_ = now;
  }
  const int limit = static_cast<int>(std::min<std::size_t>(room, kClaimsPerRound));
  auto claimed = outbox_.claim_due_batches(now, limit);
  if (!claimed) {
    store_alarm("cannot read batches", claimed.error().message);
    std::lock_guard lock(mutex_);
    batches_due_ms_ = now + kIdleRound.count();
    return;
  }
  std::lock_guard lock(mutex_);
  if (static_cast<int>(claimed->size()) == limit) unclaimed_ = true;  // there may be more
  for (ClaimedBatch& entry : *claimed) {
    Batch& batch = entry.batch;
    if (batch.kind != BatchKind::kUsageRecord) {
      const auto slugs = tables_->slugs();
      auto events = meter_events_for(entry.rows, config_, slugs.get());
      // Made under a configuration that metered it: sent once one does again (an empty batch
      // is refused by the sender as "meters_not_in_mode", retried with backoff).
      if (events) batch.meter_events = std::move(*events);
    }
    if (batch.kind == BatchKind::kUsageRecord && config_.aggregation_window().count() > 0) {
      busy_items_.insert(batch.target);
    }
    enqueue(std::move(batch), now);
  }
  sender_wake_.notify_all();
}

// Returns when the earliest row still inside its aggregation window becomes ready (0: none).
std::int64_t Dispatcher::plan_pending(std::int64_t now, bool full, bool force) {
  // A shared store: other replicas commit rows this process is not told of, and their ids need not
  // arrive in order, so every round reads all pending rows (an item's batch then takes every
  // replica's rows up to the moment its window closes).
  if (outbox_.shared()) full = true;
  std::int64_t after = 0;
  std::set<std::string> busy;
  {
    std::lock_guard lock(mutex_);
    if (!full) after = last_read_id_;
    busy = busy_items_;
  }
  // A shared store's rounds read every replica's rows, so rows that must wait (an item with a
  // batch in flight) would hide newer ones of other customers behind a small window.
  const int limit = outbox_.shared() ? kSharedRowsPerRound : kRowsPerRound;
  auto rows = full ? outbox_.due_events(now, limit) : outbox_.new_events(after, limit);
  if (!rows) {
    store_alarm("cannot read pending events", rows.error().message);
    return 0;
  }
  if (rows->empty()) return 0;
  {
    std::lock_guard lock(mutex_);
    last_read_id_ = std::max(last_read_id_, rows->back().id);
  }
  const LookupFn lookup = [this](const std::string& key, const std::string& price) {
    return lookups_.peek(key, price);
  };
  const auto slugs = tables_->slugs();
  Plan plan = stripe_billing::plan(std::move(*rows),
                                   PlanInput{config_, now, force, busy, lookup, slugs.get()});
  for (const LookupRequest& request : plan.lookups) lookups_.request(request);
  for (const PlanNotice& notice : plan.notices) {
    metrics_.count_reason(to_string(notice.reason), notice.rows);
    log_->warn("stripe_billing {} {} {} rows of customer {}: {}",
               notice.reason == Reason::kInvalidCustomerKey ? "dead:" : "parked", notice.rows,
               to_string(notice.sink), log_safe(notice.customer_key), to_string(notice.reason));
  }
  if (plan.writes.batches.empty() && plan.writes.parks.empty() && plan.writes.kills.empty()) {
    return plan.next_wake_ms;
  }
  std::size_t room;
  {
    std::lock_guard lock(mutex_);
    room = kMaxQueued > queued_ ? kMaxQueued - queued_ : 0;
  }
  auto created = outbox_.apply(std::move(plan.writes), now, room);
  if (!created) {
    store_alarm("cannot store a planning round", created.error().message);
    return plan.next_wake_ms;
  }
  std::lock_guard lock(mutex_);
  for (Batch& batch : *created) {
    if (batch.kind == BatchKind::kUsageRecord && config_.aggregation_window().count() > 0) {
      busy_items_.insert(batch.target);
    }
    if (batch.lease > 0) {
      enqueue(std::move(batch), now);
    } else {
      unclaimed_ = true;
    }
  }
  sender_wake_.notify_all();
  return plan.next_wake_ms;
}

void Dispatcher::enqueue(Batch batch, std::int64_t now) {
  const auto wall_age =
      std::chrono::milliseconds(std::max<std::int64_t>(0, now - batch.created_ms));
  first_seen_.try_emplace(batch.id, clock_->steady_now(), wall_age);
  ready_[static_cast<int>(batch.kind)].push_back(std::move(batch));
  ++queued_;
}

// The next batch that may go: kinds take turns; a v1 meter batch waits while another request for
// the same customer and meter is in flight. Called with mutex_ held.
bool Dispatcher::take(Batch& batch) {
  for (int turn = 0; turn < 3; ++turn) {
    std::deque<Batch>& queue = ready_[(next_kind_ + turn) % 3];
    auto it = queue.begin();
    if (&queue == &ready_[static_cast<int>(BatchKind::kMeterEvent)]) {
      it = std::find_if(queue.begin(), queue.end(), [this](const Batch& candidate) {
        return sending_targets_.count(candidate.target) == 0;
      });
    }
    if (it == queue.end()) continue;
    batch = std::move(*it);
    queue.erase(it);
    --queued_;
    if (unclaimed_ && (queued_ == kMaxQueued / 2 || queued_ == 0)) {
      // The outbox holds batches that did not fit: claim more before the senders run dry.
      committed_ = true;
      planner_wake_.notify_one();
    }
    next_kind_ = (next_kind_ + turn + 1) % 3;
    if (batch.kind == BatchKind::kMeterEvent) sending_targets_.insert(batch.target);
    return true;
  }
  return false;
}

void Dispatcher::send_loop(int index) {
  const std::string name = "sb-send-" + std::to_string(index);
  pthread_setname_np(pthread_self(), name.c_str());
  std::unique_lock lock(mutex_);
  while (true) {
    Batch batch;
    sender_wake_.wait(lock, [&] { return stopping_ || (!auth_paused_ && take(batch)); });
    if (stopping_) break;
    ++in_flight_;
    lock.unlock();
    const std::string target = batch.target;
    const bool serial = batch.kind == BatchKind::kMeterEvent;
    try {
      send(std::move(batch));
    } catch (const std::exception& e) {
      log_->error("stripe_billing sending a batch failed: {}", e.what());
    }
    lock.lock();
    --in_flight_;
    progress_.notify_all();
    if (serial) {
      sending_targets_.erase(target);
      sender_wake_.notify_all();
    }
  }
}

std::chrono::milliseconds Dispatcher::age(const Batch& batch) {
  std::lock_guard lock(mutex_);
  const auto it = first_seen_.find(batch.id);
  if (it == first_seen_.end()) {
    return std::chrono::milliseconds(std::max<std::int64_t>(0, now_ms() - batch.created_ms));
  }
  return it->second.second + std::chrono::duration_cast<std::chrono::milliseconds>(
                                 clock_->steady_now() - it->second.first);
}

void Dispatcher::send(Batch batch) {
  const char* activity = to_string(batch.kind);
  if (age(batch) >= config_.max_delivery_age()) {
    // Stripe may have forgotten the key of an earlier attempt: sending now could bill twice.
    return dead(batch, to_string(Reason::kMaxDeliveryAgeExceeded), SendResult{}, activity);
  }
  metrics_.stripe_requests.fetch_add(1);
  const SendResult result = sender_.send(batch);
  if (result.verdict.outcome == Outcome::kDelivered) {
    return on_delivered(batch, result);
  }
  on_failed(batch, result, activity);
}

void Dispatcher::on_delivered(const Batch& batch, const SendResult& result) {
  // Counted once, before the outbox records it: whoever sees the outbox drained sees the counts.
  metrics_.delivered_requests.fetch_add(1);
  metrics_.delivered_events.fetch_add(static_cast<std::uint64_t>(batch.events));
  metrics_.quantity_delivered.fetch_add(static_cast<std::uint64_t>(batch.quantity));
  for (const auto& [model, quantity] : batch.quantity_by_model) {
    metrics_.count_quantity(model, static_cast<std::uint64_t>(quantity));
  }
  log_->info("{}",
             activity_line(config_.log_format(),
                           {{"activity", to_string(batch.kind)},
                            {"success", true},
                            {"customer", log_safe(batch.customer_key)},
                            {"customer_id", batch.customer_id},
                            {"target", batch.target},
                            {"quantity", batch.quantity},
                            {"events", batch.events},
                            {"batch", batch.id},
                            {"request_id", result.request_id},
                            {"latency_ms", result.latency.count()},
                            {"attempt", batch.attempts + 1},
                            {"already_recorded", result.verdict.reason == "already_recorded"}}));
  PendingWrite outcome{PendingWrite::Kind::kDelivered, batch};
  outcome.request_id = result.request_id;
  outcome.now_ms = now_ms();
  write(std::move(outcome));
}

void Dispatcher::on_failed(const Batch& batch, const SendResult& result, const char* activity) {
  const Classification& verdict = result.verdict;
  const std::int64_t now = now_ms();
  switch (verdict.outcome) {
    case Outcome::kDelivered:
      return;
    case Outcome::kItemMissing: {
      for (const BilledDimension& dimension : config_.dimensions()) {
        resolver_.invalidate(batch.customer_key, dimension.price_id);
      }
      log_->warn("stripe_billing subscription item {} is gone; looking customer {} up again",
                 batch.target, log_safe(batch.customer_key));
      write(PendingWrite{PendingWrite::Kind::kDissolve, batch});
      return;
    }
    case Outcome::kPause: {
      pause_for_auth(verdict.reason);
      PendingWrite outcome{PendingWrite::Kind::kRetry, batch, batch.attempts, now};
      outcome.detail = result.detail;
      write(std::move(outcome));
      return;
    }
    case Outcome::kRetry: {
      if (!verdict.attempted) {  // shutdown aborted it: no attempt, due again as it was
        write(PendingWrite{PendingWrite::Kind::kRelease, batch});
        return;
      }
      if (age(batch) >= config_.max_delivery_age()) {
        return dead(batch, to_string(Reason::kMaxDeliveryAgeExceeded), result, activity);
      }
      const int attempts = batch.attempts + 1;
      std::uniform_real_distribution<double> jitter(0.5, 1.0);
      std::chrono::milliseconds delay;
      {
        std::lock_guard lock(mutex_);
        delay = retry_policy_.retry_delay(attempts, jitter(random_), verdict);
      }
      metrics_.retries.fetch_add(1);
      log_->warn("{}",
                 activity_line(config_.log_format(), {{"activity", activity},
                                                      {"success", false},
                                                      {"outcome", "retry"},
                                                      {"reason", verdict.reason},
                                                      {"customer", log_safe(batch.customer_key)},
                                                      {"batch", batch.id},
                                                      {"attempt", attempts},
                                                      {"next_in_ms", delay.count()},
                                                      {"request_id", result.request_id},
                                                      {"latency_ms", result.latency.count()},
                                                      {"detail", log_safe(result.detail, 300)}}));
      PendingWrite outcome{PendingWrite::Kind::kRetry, batch, attempts, now + delay.count()};
      outcome.detail = result.detail;
      write(std::move(outcome));
      return;
    }
    case Outcome::kDead:
      return dead(batch, verdict.reason, result, activity);
  }
}

void Dispatcher::dead(const Batch& batch, const std::string& reason, const SendResult& result,
                      const char* activity) {
  metrics_.failed_events.fetch_add(static_cast<std::uint64_t>(batch.events));
  metrics_.count_reason(reason, static_cast<std::uint64_t>(batch.events));
  log_->error("{}",
              activity_line(config_.log_format(), {{"activity", activity},
                                                   {"success", false},
                                                   {"outcome", "dead"},
                                                   {"reason", reason},
                                                   {"customer", log_safe(batch.customer_key)},
                                                   {"target", batch.target},
                                                   {"quantity", batch.quantity},
                                                   {"events", batch.events},
                                                   {"batch", batch.id},
                                                   {"request_id", result.request_id},
                                                   {"detail", log_safe(result.detail, 300)}}));
  PendingWrite outcome{PendingWrite::Kind::kDead, batch};
  outcome.reason = reason;
  outcome.request_id = result.request_id;
  outcome.now_ms = now_ms();
  write(std::move(outcome));
}

// The store failing (PostgreSQL away, a disk full) fails every round: said at most once a minute,
// with how many were not said.
void Dispatcher::store_alarm(const std::string& what, const std::string& error) {
  std::lock_guard lock(alarm_mutex_);
  const SteadyTime now = clock_->steady_now();
  if (last_store_alarm_ != SteadyTime{} && now - last_store_alarm_ < std::chrono::minutes(1)) {
    ++store_alarms_suppressed_;
    return;
  }
  const std::string suppressed = store_alarms_suppressed_ == 0
                                     ? std::string()
                                     : " (" + std::to_string(store_alarms_suppressed_) +
                                           " more since the last one, not logged)";
  log_->error("stripe_billing {}{}{}{}", what, error.empty() ? "" : ": ", error, suppressed);
  last_store_alarm_ = now;
  store_alarms_suppressed_ = 0;
}

void Dispatcher::write(PendingWrite outcome) {
  if (apply(outcome)) return;
  metrics_.count_reason(to_string(Reason::kOutcomeUnrecorded));
  store_alarm("cannot write the outcome of batch " + std::to_string(outcome.batch.id) +
                  " to the outbox; it is kept in memory and written again, and the batch is "
                  "not sent again",
              "");
  std::lock_guard lock(mutex_);
  unrecorded_.push_back(std::move(outcome));
  progress_.notify_all();
}

// True once the outbox has it (or it was no longer ours to record).
bool Dispatcher::apply(const PendingWrite& outcome) {
  const Batch& batch = outcome.batch;
  Expected<bool> recorded = false;
  std::optional<std::int64_t> retry_at;
  switch (outcome.kind) {
    case PendingWrite::Kind::kDelivered:
      recorded = outbox_.batch_delivered(batch, outcome.request_id, outcome.now_ms);
      break;
    case PendingWrite::Kind::kDead:
      recorded = outbox_.batch_dead(batch, outcome.reason, outcome.request_id, outcome.now_ms);
      break;
    case PendingWrite::Kind::kDissolve:
      recorded = outbox_.dissolve_batch(batch);
      break;
    case PendingWrite::Kind::kRetry:
      recorded = outbox_.batch_retry_later(batch, outcome.attempts, outcome.next_attempt_ms,
                                           outcome.detail);
      retry_at = outcome.next_attempt_ms;
      break;
    case PendingWrite::Kind::kRelease:
      recorded = outbox_.release(batch);
      retry_at = 0;
      break;
  }
  if (!recorded) return false;
  if (!*recorded) {
    log_->warn(
        "stripe_billing batch {} is no longer held by this process; its outcome was not "
        "recorded",
        batch.id);
  }
  finish(batch, retry_at);
  if (outcome.kind == PendingWrite::Kind::kDissolve) {
    std::lock_guard lock(mutex_);
    full_round_ = true;
    planner_wake_.notify_one();
  }
  return true;
}

void Dispatcher::finish(const Batch& batch, std::optional<std::int64_t> retry_at_ms) {
  std::lock_guard lock(mutex_);
  progress_.notify_all();
  if (retry_at_ms) {
    if (*retry_at_ms == 0) {
      unclaimed_ = true;
    } else if (batches_due_ms_ == 0 || *retry_at_ms < batches_due_ms_) {
      batches_due_ms_ = *retry_at_ms;
    }
    planner_wake_.notify_one();
    return;
  }
  first_seen_.erase(batch.id);
  // An item's window opens again: its pending rows can make the next batch.
  if (batch.kind == BatchKind::kUsageRecord && busy_items_.erase(batch.target) != 0) {
    full_round_ = true;
    planner_wake_.notify_one();
  }
}

void Dispatcher::pause_for_auth(const std::string& reason) {
  std::lock_guard lock(mutex_);
  const auto probe_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(config_.auth_probe_interval()).count();
  next_probe_ms_ = now_ms() + probe_ms;
  auth_paused_ = true;
  const SteadyTime now = clock_->steady_now();
  if (now - last_auth_alarm_ >= std::chrono::minutes(1)) {
    last_auth_alarm_ = now;
    log_->error(
        "stripe_billing Stripe refused the API key {} ({}): sending paused, events are "
        "kept and sending resumes by itself once the key works; check STRIPE_API_KEY",
        config_.api_key().redacted(), reason);
  }
}

bool Dispatcher::probe_auth() {
  metrics_.stripe_requests.fetch_add(1);
  // Meter modes ask with what sending needs (meter event write): an empty event, which a key
  // that may write meter events has refused as malformed (400), and one that may not with 403.
  auto response = config_.uses_usage_records()
                      ? client_.get("/v1/prices/" + encode_path_segment(config_.price_id()))
                      : client_.post_form("/v1/billing/meter_events", {}, "sb-auth-probe");
  const bool refused =
      !response && response.error().stripe &&
      (response.error().stripe->http_status == 401 || response.error().stripe->http_status == 403);
  if (refused || classify(RequestKind::kLookup, response).outcome == Outcome::kPause) {
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
