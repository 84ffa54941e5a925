#include "intake.h"

#include <pthread.h>

#include <algorithm>
#include <random>

#include <spdlog/logger.h>

#include "activity_log.h"
#include "charge_by.h"
#include "customer_resolver.h"
#include "meter_event.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

// Async mode: a writer wakes for a full group even before the commit interval ends.
constexpr std::size_t kGroupSize = 8192;
constexpr std::size_t kMaxMetadataValue = 500;
constexpr std::size_t kMaxStoredText = 200;
constexpr int kWarningsPerSecond = 20;

std::int64_t to_ms(TimePoint time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

std::string generated_call_id() {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "gen-%016llx",
                static_cast<unsigned long long>(random()));
  return buffer;
}

std::string bounded(const std::string& text) {
  return text.size() <= kMaxStoredText && is_valid_utf8(text) ? text : log_safe(text, kMaxStoredText);
}

}  // namespace

std::string stable_call_key(const std::string& call_id) {
  if (call_id.size() <= kMaxStoredText && is_valid_utf8(call_id)) return call_id;
  return "hash:" + hashed_id(call_id);
}

Intake::Intake(const FinalizedConfig& config, Outbox& outbox, Metrics& metrics,
               std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock,
               std::function<void()> on_commit)
    : config_(config),
      outbox_(outbox),
      metrics_(metrics),
      log_(std::move(log)),
      clock_(std::move(clock)),
      on_commit_(std::move(on_commit)),
      sinks_(sinks_for(config.billing_mode())),
      writer_([this] { run(); }) {}

Intake::~Intake() { stop(std::chrono::steady_clock::now() + std::chrono::seconds(5)); }

void Intake::submit(const UsageEvent& event) noexcept {
  metrics_.received.fetch_add(1, std::memory_order_relaxed);
  try {
    HandedEvent handed{event.call_id,
                       event.model,
                       charge_by_value(event, config_.charge_by()),
                       {event.prompt_tokens, event.completion_tokens, event.total_tokens},
                       event.response_cost,
                       event.end_time};
    std::unique_lock lock(mutex_);
    if (!accepting_) {
      metrics_.dropped_shutdown.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (in_memory_ >= config_.queue_capacity()) {
      metrics_.lost.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    buffer_.push_back(std::move(handed));
    ++in_memory_;
    const std::uint64_t sequence = ++submitted_;
    if (config_.durability() == Durability::kSync) {
      wake_writer_.notify_one();
      committed_.wait_for(lock, config_.sync_timeout(), [&] { return written_ >= sequence; });
    } else if (buffer_.size() == kGroupSize) {
      wake_writer_.notify_one();
    }
  } catch (...) {
    metrics_.lost.fetch_add(1, std::memory_order_relaxed);
  }
}

bool Intake::flush(SteadyTime deadline) noexcept {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = submitted_;
  flush_requested_ = true;
  wake_writer_.notify_one();
  return committed_.wait_until(lock, deadline, [&] { return written_ >= target; });
}

void Intake::stop(SteadyTime deadline) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (!writer_.joinable()) return;
    accepting_ = false;
  }
  flush(deadline);
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_writer_.notify_one();
  }
  writer_.join();
}

std::size_t Intake::buffered() const {
  std::lock_guard lock(mutex_);
  return in_memory_;
}

void Intake::run() {
  pthread_setname_np(pthread_self(), "sb-writer");
  std::vector<HandedEvent> group;
  std::unique_lock lock(mutex_);
  while (true) {
    if (config_.durability() == Durability::kSync) {
      wake_writer_.wait(lock, [this] { return stopping_ || !buffer_.empty(); });
    } else {
      // Group commit: wait out the interval unless a full group or a flush asks sooner.
      wake_writer_.wait_for(lock, config_.commit_interval(), [this] {
        return stopping_ || flush_requested_ || buffer_.size() >= kGroupSize;
      });
    }
    flush_requested_ = false;
    if (buffer_.empty()) {
      if (stopping_) break;
      continue;
    }
    // The swap hands the host an empty vector that keeps the last group's capacity, so a
    // steady stream never reallocates under the lock.
    group.swap(buffer_);
    const std::uint64_t sequence = submitted_;
    lock.unlock();
    write(group);
    const std::size_t stored = group.size();
    group.clear();
    // After a burst, give the memory back: the two vectors trade places each round, so both
    // would otherwise keep the burst's capacity for good.
    if (group.capacity() > 4 * kGroupSize) group.shrink_to_fit();
    lock.lock();
    in_memory_ -= stored;
    written_ = sequence;
    committed_.notify_all();
  }
}

void Intake::write(std::vector<HandedEvent>& events) {
  // In slices, so the rows being built never take as much memory again as the events do.
  const std::int64_t now_ms = to_ms(clock_->now());
  std::vector<NewEvent> rows;
  rows.reserve(std::min(events.size(), kGroupSize) * sinks_.size() *
               config_.dimensions().size());
  for (HandedEvent& event : events) {
    add_rows(event, now_ms, rows);
    if (rows.size() >= kGroupSize) store(rows);
  }
  store(rows);
}

void Intake::store(std::vector<NewEvent>& rows) {
  if (rows.empty()) return;
  auto result = outbox_.insert(rows);
  const std::size_t count = rows.size();
  std::int64_t pending = 0;
  for (const NewEvent& row : rows) pending += row.state == EventState::kPending ? 1 : 0;
  rows.clear();
  if (!result) {
    metrics_.lost.fetch_add(count);
    metrics_.count_reason("outbox_unwritable", count);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_storage_alarm_ >= std::chrono::minutes(1)) {
      last_storage_alarm_ = now;
      log_->error("stripe_billing LOST {} usage events: the outbox cannot be written ({}); "
                  "billing continues to be attempted for new events",
                  count, result.error().message);
    }
    return;
  }
  metrics_.accepted.fetch_add(static_cast<std::uint64_t>(result->inserted));
  metrics_.deduplicated.fetch_add(static_cast<std::uint64_t>(result->duplicates));
  if (pending > 0 && on_commit_) on_commit_();
}

// One row per billed dimension and sink: total_tokens bills one quantity, split two; dual mode
// stores each once for usage records and once for meter events.
void Intake::add_rows(HandedEvent& event, std::int64_t now_ms, std::vector<NewEvent>& rows) {
  if (event.call_id.empty()) {
    event.call_id = generated_call_id();
    metrics_.count_reason("generated_call_id");
  }
  NewEvent common;
  common.call_id = stable_call_key(event.call_id);
  const std::int64_t end_ms = event.end_time ? to_ms(*event.end_time) : now_ms;
  common.event_time = std::min(end_ms, now_ms) / 1000;
  common.accepted_at_ms = now_ms;
  common.model = bounded(event.model);
  common.cost = event.response_cost.value_or(0.0);
  common.prompt_tokens = event.tokens.prompt.value_or(0);
  common.completion_tokens = event.tokens.completion.value_or(0);
  common.state = EventState::kPending;
  if (event.customer_key.empty()) {
    common.state = EventState::kParked;
    common.reason = "missing_customer";
  } else if (event.customer_key.size() > kMaxMetadataValue || !is_valid_utf8(event.customer_key)) {
    common.customer_key = log_safe(event.customer_key, 100);
    common.state = EventState::kDead;
    common.reason = "invalid_customer_key";
  } else {
    common.customer_key = std::move(event.customer_key);
  }

  for (const BilledDimension& dimension : config_.dimensions()) {
    const bool cost = dimension.source == QuantitySource::kCost;
    const QuantityCheck quantity =
        cost ? cost_amount(event.response_cost, config_.cost_multiplier(), config_.max_quantity())
             : billable_quantity(event.tokens, dimension.source, config_.max_quantity());
    if (quantity.verdict == QuantityCheck::Verdict::kZero) {
      metrics_.skipped_zero.fetch_add(1);
      continue;
    }
    NewEvent row = common;
    row.dimension = dimension.name;
    if (cost && quantity.verdict == QuantityCheck::Verdict::kBill) {
      row.amount_micros = quantity.value;
    } else {
      row.quantity = quantity.value;
    }
    if (quantity.verdict != QuantityCheck::Verdict::kBill) {
      row.state = EventState::kDead;
      row.reason = quantity.reason();
    }
    if (row.state != EventState::kPending) metrics_.count_reason(row.reason, sinks_.size());
    if (row.state != EventState::kPending && may_warn()) {
      log_->warn("{}", activity_line(
          config_.log_format(),
          {{"activity", "accept"}, {"success", false}, {"reason", row.reason},
           {"call_id", log_safe(event.call_id)}, {"model", log_safe(event.model)},
           {"customer", log_safe(row.customer_key)}, {"dimension", row.dimension},
           {"quantity", quantity.value}}));
    }
    for (std::size_t i = 0; i < sinks_.size(); ++i) {
      rows.push_back(i + 1 == sinks_.size() ? std::move(row) : row);
      NewEvent& stored = rows.back();
      stored.sink = sinks_[i];
      // A cost row's quantity is rounded when stored: at most one unit above its amount.
      const std::int64_t value = stored.amount_micros
                                     ? *stored.amount_micros / kMicrosPerUnit + 1
                                     : stored.quantity;
      if (stored.sink == Sink::kMeterEvent && stored.state == EventState::kPending &&
          value > kMaxMeterValue) {
        // Stripe refuses meter values of more than 15 significant digits.
        stored.state = EventState::kDead;
        stored.reason = "meter_value_too_large";
        stored.amount_micros.reset();
        metrics_.count_reason(stored.reason);
      }
    }
  }
}

// A flood of bad events must not flood the host's log: at most kWarningsPerSecond lines a
// second, then one line saying how many were left out (every one is still counted by reason).
bool Intake::may_warn() {
  const auto now = std::chrono::steady_clock::now();
  if (now - warning_window_ >= std::chrono::seconds(1)) {
    if (suppressed_warnings_ > 0) {
      log_->warn("stripe_billing left out {} refused-event lines in the last second; the "
                 "reasons are counted in stats().rejected",
                 suppressed_warnings_);
    }
    warning_window_ = now;
    warnings_in_window_ = 0;
    suppressed_warnings_ = 0;
  }
  if (warnings_in_window_ < kWarningsPerSecond) {
    ++warnings_in_window_;
    return true;
  }
  ++suppressed_warnings_;
  return false;
}

std::vector<Sink> sinks_for(BillingMode mode) {
  switch (mode) {
    case BillingMode::kUsageRecords: return {Sink::kUsageRecord};
    case BillingMode::kMeterEvents:
    case BillingMode::kMeterEventStream: return {Sink::kMeterEvent};
    case BillingMode::kDual: return {Sink::kUsageRecord, Sink::kMeterEvent};
  }
  return {Sink::kUsageRecord};
}

}  // namespace stripe_billing
