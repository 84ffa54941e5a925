#include "intake.h"

#include <pthread.h>
#include <spdlog/logger.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "activity_log.h"
#include "charge_by.h"
#include "customer_resolver.h"
#include "meter_event.h"
#include "reasons.h"
#include "token_types.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

// Async mode: a writer wakes for a full group even before the commit interval ends.
constexpr std::size_t kGroupSize = 8192;
constexpr std::size_t kKeptChunks = 2;  // hand-off chunks kept for reuse
// Sync mode: the longest the writer holds a commit open for callers it has just woken.
constexpr auto kMaxCommitDelay = std::chrono::microseconds(200);
// Sync mode: events journaled but not yet in the outbox, at most; and the journal size from which
// it is started over once the outbox has caught up.
constexpr std::size_t kMaxIngestBacklog = 65'536;
constexpr std::uint64_t kJournalResetBytes = 8u << 20;
constexpr std::size_t kMaxMetadataValue = 500;
constexpr std::size_t kMaxStoredText = 200;
constexpr int kWarningsPerSecond = 20;

std::int64_t to_ms(TimePoint time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

std::string generated_call_id() {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "gen-%016llx", static_cast<unsigned long long>(random()));
  return buffer;
}

std::string bounded(const std::string& text) {
  return text.size() <= kMaxStoredText && is_storable_text(text) ? text
                                                                 : log_safe(text, kMaxStoredText);
}

}  // namespace

std::optional<std::string> derived_call_id(const UsageEvent& event, std::string_view customer_key) {
  if (!event.end_time) return std::nullopt;
  const auto ns = [](const std::optional<TimePoint>& time) {
    return time ? std::to_string(
                      std::chrono::duration_cast<std::chrono::nanoseconds>(time->time_since_epoch())
                          .count())
                : std::string("-");
  };
  const auto count = [](const std::optional<std::int64_t>& value) {
    return value ? std::to_string(*value) : std::string("-");
  };
  char cost[40] = "-";
  if (event.response_cost) std::snprintf(cost, sizeof cost, "%.17g", *event.response_cost);
  const std::string identity = std::string(customer_key) + '\n' + event.model + '\n' +
                               ns(event.start_time) + '\n' + ns(event.end_time) + '\n' +
                               count(event.prompt_tokens) + '\n' + count(event.completion_tokens) +
                               '\n' + count(event.total_tokens) + '\n' + cost;
  return "derived-" + hashed_id(identity);
}

std::string stable_call_key(const std::string& call_id) {
  if (call_id.size() <= kMaxStoredText && is_storable_text(call_id)) return call_id;
  return "hash:" + hashed_id(call_id);
}

Intake::Intake(const FinalizedConfig& config, Outbox& outbox, Metrics& metrics,
               std::shared_ptr<spdlog::logger> log, std::shared_ptr<Clock> clock,
               std::function<void()> on_commit, std::shared_ptr<BillingTables> tables)
    : config_(config),
      outbox_(outbox),
      metrics_(metrics),
      tables_(tables ? std::move(tables) : BillingTables::load(config)),
      log_(std::move(log)),
      clock_(std::move(clock)),
      on_commit_(std::move(on_commit)),
      sinks_(sinks_for(config.billing_mode())),
      by_token_type_(config.quantity_source() == QuantitySource::kTokenTypes ||
                     config.quantity_source() == QuantitySource::kPriced) {
  recover_journal();
  writer_ = std::thread([this] { run(); });
  if (journal_) ingester_ = std::thread([this] { ingest(); });
}

// Rows a crash left in the journal go into the outbox before anything else; those already there
// are duplicates and ignored. Sync mode keeps the journal open for its commits.
void Intake::recover_journal() {
  const std::string& path = config_.outbox_path();
  const bool sync = config_.durability() == Durability::kSync;
  const std::string journal_path = path + ".journal";
  struct stat info {};
  // A shared store (PostgreSQL) is the durable copy itself: no journal on a replica's disk.
  if (outbox_.shared() || path == ":memory:" ||
      (!sync && ::stat(journal_path.c_str(), &info) != 0)) {
    return;
  }
  auto opened = Journal::open(journal_path);
  if (!opened) {
    log_->error(
        "stripe_billing cannot open the journal ({}); sync commits go to the outbox "
        "directly",
        opened.error().message);
    return;
  }
  auto rows = (*opened)->recover();
  if (!rows) {
    log_->error("stripe_billing cannot read the journal: {}", rows.error().message);
    return;  // left as it is, for the next start
  }
  bool kept = rows->empty();
  if (!rows->empty()) {
    const std::size_t count = rows->size();
    std::vector<NewEvent> slice;
    kept = true;
    for (std::size_t first = 0; first < count && kept; first += kGroupSize) {
      slice.assign(std::make_move_iterator(rows->begin() + static_cast<std::ptrdiff_t>(first)),
                   std::make_move_iterator(rows->begin() + static_cast<std::ptrdiff_t>(std::min(
                                                               count, first + kGroupSize))));
      kept = insert(slice);
    }
    if (kept) {
      log_->warn("stripe_billing stored {} rows an earlier run left in the journal", count);
    } else {
      log_->error(
          "stripe_billing cannot store the {} rows of the journal yet; they stay in it "
          "for the next start",
          count);
      return;
    }
  }
  if (auto reset = (*opened)->reset(); !reset) {
    log_->error("stripe_billing cannot empty the journal: {}", reset.error().message);
    return;
  }
  if (!sync) return;
  journal_ = std::move(opened.value());
  if (auto relaxed = outbox_.relax_writer_sync(); !relaxed) {
    log_->warn("stripe_billing {}; the outbox syncs every commit", relaxed.error().message);
  }
}

Intake::~Intake() { stop(std::chrono::steady_clock::now() + std::chrono::seconds(5)); }

void Intake::submit(const UsageEvent& event) noexcept {
  metrics_.received.fetch_add(1, std::memory_order_relaxed);
  try {
    const CustomerKey customer = charge_by_value(event, config_);
    HandedEvent handed{event.call_id,
                       event.model,
                       std::string(customer.value),
                       customer.refused,
                       false,
                       {event.prompt_tokens, event.completion_tokens, event.total_tokens},
                       event.response_cost,
                       event.end_time,
                       {},
                       {},
                       {},
                       {},
                       {},
                       false,
                       nullptr};
    if (by_token_type_) {
      handed.cache_read = event.cache_read_tokens;
      handed.cache_write = event.cache_write_tokens;
      handed.reasoning = event.reasoning_tokens;
      handed.provider = event.provider;
    }
    handed.cache_hit = event.cache_hit;
    handed.call_type = event.call_type;
    if (handed.call_id.empty()) {
      // Rare, and it needs the start time, which nothing else does: derived here, not stored.
      if (auto derived = derived_call_id(event, customer.value)) {
        handed.call_id = std::move(*derived);
        handed.derived_call_id = true;
      }
    }
    std::uint64_t sequence;
    {
      std::lock_guard lock(mutex_);
      if (!accepting_) {
        metrics_.dropped_shutdown.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      if (in_memory_ >= config_.queue_capacity()) {
        metrics_.lost.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      buffer_.push(std::move(handed), spare_chunks_);
      ++in_memory_;
      sequence = ++submitted_;
      const bool sync = config_.durability() == Durability::kSync;
      const std::size_t size = buffer_.size();
      if (writer_waiting_ && (sync ? size == 1 || size >= wanted_ : size == kGroupSize)) {
        wake_writer_.notify_one();
      }
      if (!sync) return;
    }
    if (!durable_.wait_until(sequence, std::chrono::steady_clock::now() + config_.sync_timeout())) {
      metrics_.count_reason(to_string(Reason::kSyncWaitTimeout));
    }
  } catch (...) {
    metrics_.lost.fetch_add(1, std::memory_order_relaxed);
  }
}

bool Intake::flush(SteadyTime deadline) noexcept {
  std::uint64_t target;
  {
    std::lock_guard lock(mutex_);
    target = submitted_;
    flush_requested_ = true;
    wake_writer_.notify_one();
  }
  return stored_.wait_until(target, deadline);
}

void Intake::stop(SteadyTime deadline) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (!writer_.joinable()) return;
    accepting_ = false;
  }
  if (!flush(deadline)) {
    // The writer cannot store everything in time (the outbox is locked or the disk stalls): it
    // stops trying, counts what is left as lost, and returns.
    abandon_ = true;
    outbox_.interrupt_writes();
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_writer_.notify_one();
  }
  writer_.join();
  if (ingester_.joinable()) {
    {
      std::lock_guard lock(ingest_mutex_);
      ingest_stopping_ = true;
      ingest_wake_.notify_all();
      ingest_room_.notify_all();
    }
    ingester_.join();
    std::lock_guard lock(ingest_mutex_);
    if (ingested_rows_ == journaled_rows_ && outbox_.sync_writes()) {
      if (auto reset = journal_->reset(); !reset) {
        log_->warn(
            "stripe_billing cannot empty the journal ({}); its rows are stored again "
            "(as duplicates) at the next start",
            reset.error().message);
      }
    } else {
      log_->warn(
          "stripe_billing {} journaled rows are not in the outbox yet; the next start "
          "stores them",
          journaled_rows_ - ingested_rows_);
    }
  }
}

Expected<Intake::Counts> Intake::counts() const {
  for (int attempt = 0;; ++attempt) {
    auto outbox = outbox_.counts();
    if (!outbox) return outbox.error();
    // After the outbox's counts: an event still in memory now was not in the outbox then, unless
    // its insert had ended, or begun (PostgreSQL), by then.
    std::lock_guard lock(mutex_);
    Counts counts{*outbox, in_memory_};
    if (storing_events_ > 0 && storing_insert_ != 0 && storing_insert_ <= outbox->inserts) {
      counts.in_memory -= storing_events_;
    }
    // Events that left memory since the counts were read, by an insert they do not include, are
    // in neither: read again. Past a few tries (inserts following each other flat out), the
    // count is short of them for a moment; it never counts an event twice.
    if (left_after_insert_ <= outbox->inserts || attempt == 2) return counts;
  }
}

void Intake::begin_storing(std::size_t events) {
  std::lock_guard lock(mutex_);
  storing_events_ = events;
  storing_insert_ = 0;
}

void Intake::end_storing(std::size_t events) {
  std::lock_guard lock(mutex_);
  in_memory_ -= events;
  storing_events_ = 0;
  storing_insert_ = 0;
  left_after_insert_ = last_insert_;
}

bool Intake::store_events(std::vector<NewEvent>& rows, std::size_t events) {
  begin_storing(events);
  const bool stored = store(rows);
  end_storing(events);
  return stored;
}

bool Intake::abandoned() const { return abandon_.load(std::memory_order_relaxed); }

void Intake::run() {
  pthread_setname_np(pthread_self(), "sb-writer");
  EventBuffer group;
  const bool sync = config_.durability() == Durability::kSync;
  std::unique_lock lock(mutex_);
  while (true) {
    writer_waiting_ = true;
    if (sync) {
      wake_writer_.wait(lock, [this] { return stopping_ || flush_requested_ || !buffer_.empty(); });
      if (!stopping_ && !flush_requested_ && buffer_.size() < wanted_) {
        // The callers the last commit woke are on their way back: give them a moment to join
        // this commit instead of the next one, so one commit serves every caller waiting.
        wake_writer_.wait_for(lock, commit_delay_, [this] {
          return stopping_ || flush_requested_ || buffer_.size() >= wanted_;
        });
      }
    } else {
      // Group commit: wait out the interval unless a full group or a flush asks sooner.
      wake_writer_.wait_for(lock, config_.commit_interval(), [this] {
        return stopping_ || flush_requested_ || buffer_.size() >= kGroupSize;
      });
    }
    writer_waiting_ = false;
    flush_requested_ = false;
    if (buffer_.empty()) {
      const std::uint64_t sequence = submitted_;
      lock.unlock();
      durable_.publish(sequence);
      if (!journal_) stored_.publish(sequence);
      lock.lock();
      if (stopping_) break;
      continue;
    }
    group.swap(buffer_);
    const std::uint64_t sequence = submitted_;
    lock.unlock();
    const std::size_t events = group.size();
    const auto started = std::chrono::steady_clock::now();
    std::size_t left = 0;  // async: events that have left memory with their rows' insert
    if (journal_) {
      write(group, [&](std::vector<NewEvent>& rows, bool last, std::size_t) {
        journal(rows, last ? sequence : 0, last ? events : 0);
      });
    } else {
      write(group, [&](std::vector<NewEvent>& rows, bool, std::size_t slice) {
        (void)store_events(rows, slice);
        left += slice;
      });
    }
    if (sync) {
      // At most a quarter of a commit's own time, and never more than kMaxCommitDelay.
      commit_delay_ = std::min<std::chrono::steady_clock::duration>(
          (std::chrono::steady_clock::now() - started) / 4, kMaxCommitDelay);
    }
    durable_.publish(sequence);
    // Frees outside the lock, so the host never waits for them: the events' strings, and after
    // a burst every chunk but the two kept for the host's next events (a steady stream then
    // allocates nothing).
    group.destroy_events();
    group.trim(kKeptChunks);
    lock.lock();
    if (auto unused = group.recycle(spare_chunks_, kKeptChunks); !unused.empty()) {
      lock.unlock();
      unused.clear();
      lock.lock();
    }
    if (!journal_) {
      in_memory_ -= events - left;  // those the deadline left unstored (counted lost)
      lock.unlock();
      stored_.publish(sequence);
      lock.lock();
    }
    wanted_ = events;
  }
}

void EventBuffer::push(HandedEvent&& event, std::vector<std::unique_ptr<Chunk>>& spares) {
  if (chunks_.empty() || chunks_.back()->size() == kChunk) {
    if (spares.empty()) {
      chunks_.push_back(std::make_unique<Chunk>());
      chunks_.back()->reserve(kChunk);
    } else {
      chunks_.push_back(std::move(spares.back()));
      spares.pop_back();
    }
  }
  chunks_.back()->push_back(std::move(event));
  ++size_;
}

void EventBuffer::swap(EventBuffer& other) noexcept {
  chunks_.swap(other.chunks_);
  std::swap(size_, other.size_);
}

void EventBuffer::destroy_events() {
  for (auto& chunk : chunks_) chunk->clear();
  size_ = 0;
}

void EventBuffer::trim(std::size_t keep) {
  if (chunks_.size() > keep) chunks_.resize(keep);
}

std::vector<std::unique_ptr<EventBuffer::Chunk>> EventBuffer::recycle(
    std::vector<std::unique_ptr<Chunk>>& spares, std::size_t keep) {
  std::vector<std::unique_ptr<Chunk>> unused;
  for (auto& chunk : chunks_) {
    chunk->clear();
    (spares.size() < keep ? spares : unused).push_back(std::move(chunk));
  }
  chunks_.clear();
  size_ = 0;
  return unused;
}

template <typename Sink>
void Intake::write(EventBuffer& events, Sink sink) {
  // In slices, so the rows being built never take as much memory again as the events do.
  const std::int64_t now_ms = to_ms(clock_->now());
  reload_tables(tables_->reload_if_due(std::chrono::steady_clock::now()));
  std::vector<NewEvent> rows;
  rows.reserve(std::min(events.size(), kGroupSize) * sinks_.size() * config_.dimensions().size());
  std::size_t handled = 0;
  std::size_t sliced = 0;  // events whose rows have gone to `sink`
  events.for_each([&](HandedEvent& event) {
    if (abandoned()) return;
    add_rows(event, now_ms, rows);
    ++handled;
    if (rows.size() >= kGroupSize && handled < events.size()) {
      sink(rows, false, handled - sliced);
      sliced = handled;
    }
  });
  sink(rows, true, handled - sliced);
  if (handled < events.size()) {
    count_lost(events.size() - handled, Reason::kShutdownDeadline,
               "the shutdown deadline passed before the outbox could store them");
  }
}

void Intake::count_lost(std::size_t count, Reason reason, const std::string& why) {
  metrics_.lost.fetch_add(count);
  metrics_.count_reason(to_string(reason), count);
  const auto now = std::chrono::steady_clock::now();
  if (abandoned() || now - last_storage_alarm_ >= std::chrono::minutes(1)) {
    last_storage_alarm_ = now;
    log_->error(
        "stripe_billing LOST {} usage rows: {}; billing continues to be attempted for "
        "new events",
        count, why);
  }
}

// Stores the rows in the outbox; true once they are there. Without a journal, rows the outbox
// refuses are counted lost (with one, they are kept there and stored again).
bool Intake::store(std::vector<NewEvent>& rows) {
  if (rows.empty()) return true;
  if (insert(rows)) return true;
  if (outbox_.shared()) return !rows.empty() && store_again(rows);
  if (!journal_) rows.clear();
  return false;
}

// A shared store (PostgreSQL) that did not take a commit is away, not broken: the rows stay in
// memory (the host's calls keep being accepted up to STRIPE_QUEUE_CAPACITY) and are stored again,
// backing off to once every 2 s, until the store answers or the stop deadline passes.
bool Intake::store_again(std::vector<NewEvent>& rows) {
  auto wait = std::chrono::milliseconds(50);
  while (!abandoned()) {
    const auto until = std::chrono::steady_clock::now() + wait;
    while (!abandoned() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (abandoned()) break;
    metrics_.count_reason(to_string(Reason::kOutboxUnreachable));
    if (insert(rows)) return true;
    if (rows.empty()) return false;  // refused for good (counted lost by insert())
    wait = std::min(wait * 2, std::chrono::milliseconds(2000));
  }
  count_lost(rows.size(), Reason::kShutdownDeadline,
             "the shutdown deadline passed while PostgreSQL did not answer");
  rows.clear();
  return false;
}

bool Intake::insert(std::vector<NewEvent>& rows) {
  {
    // counts(): whether the outbox's counts include this insert is told by its number.
    std::lock_guard lock(mutex_);
    storing_insert_ = last_insert_ = outbox_.next_insert();
  }
  auto result = outbox_.insert(rows);
  if (!result) {
    {
      std::lock_guard lock(mutex_);
      storing_insert_ = 0;  // none of its rows are in the outbox
    }
    if (outbox_.shared() && result.error().code != ErrorCode::kStorage) {
      // PostgreSQL refused the rows themselves: trying again would fail again and hold up every
      // later commit.
      count_lost(rows.size(), Reason::kOutboxUnwritable,
                 "PostgreSQL refused them (" + result.error().message + ")");
      rows.clear();
    } else if (outbox_.shared()) {
      if (std::chrono::steady_clock::now() - last_storage_alarm_ >= std::chrono::minutes(1)) {
        last_storage_alarm_ = std::chrono::steady_clock::now();
        log_->error(
            "stripe_billing cannot store {} rows in PostgreSQL ({}); they are held in memory "
            "and stored again until it answers (sync calls wait at most STRIPE_SYNC_TIMEOUT_MS)",
            rows.size(), result.error().message);
      }
    } else if (!journal_) {
      count_lost(rows.size(), abandoned() ? Reason::kShutdownDeadline : Reason::kOutboxUnwritable,
                 "the outbox cannot be written (" + result.error().message + ")");
    } else if (std::chrono::steady_clock::now() - last_storage_alarm_ >= std::chrono::minutes(1)) {
      last_storage_alarm_ = std::chrono::steady_clock::now();
      log_->error(
          "stripe_billing cannot store {} journaled rows in the outbox ({}); they are "
          "kept in the journal and stored again",
          rows.size(), result.error().message);
    }
    return false;
  }
  std::int64_t pending = 0;
  for (const NewEvent& row : rows) pending += row.state == EventState::kPending ? 1 : 0;
  rows.clear();
  metrics_.outbox_commits.fetch_add(journal_ ? 0 : 1, std::memory_order_relaxed);
  metrics_.accepted.fetch_add(static_cast<std::uint64_t>(result->inserted));
  metrics_.deduplicated.fetch_add(static_cast<std::uint64_t>(result->duplicates));
  if (pending > 0 && on_commit_) on_commit_();
  return true;
}

// Sync mode: the rows are durable once this returns (or counted lost); "sb-ingest" stores them.
void Intake::journal(std::vector<NewEvent>& rows, std::uint64_t sequence, std::size_t events) {
  {
    // The outbox keeps up with the journal, or the callers wait: the memory this takes is bounded.
    std::unique_lock lock(ingest_mutex_);
    ingest_room_.wait(lock, [this] {
      return ingest_backlog_ < kMaxIngestBacklog || ingest_stopping_ || abandoned();
    });
    if (journaled_rows_ > 0 && ingested_rows_ == journaled_rows_ &&
        journal_->size() >= kJournalResetBytes) {
      // Everything journaled is in the outbox: once that is on the disk too, start over.
      if (outbox_.sync_writes() && journal_->reset()) journaled_rows_ = ingested_rows_ = 0;
    }
  }
  if (!rows.empty()) {
    if (auto appended = journal_->append(rows); !appended) {
      count_lost(rows.size(), abandoned() ? Reason::kShutdownDeadline : Reason::kOutboxUnwritable,
                 "the journal cannot be written (" + appended.error().message + ")");
      rows.clear();
    } else {
      metrics_.outbox_commits.fetch_add(1, std::memory_order_relaxed);
    }
  }
  std::lock_guard lock(ingest_mutex_);
  journaled_rows_ += rows.size();
  ingest_backlog_ += events;
  ingest_queue_.push_back(Journaled{std::move(rows), sequence, events});
  rows = {};
  ingest_wake_.notify_one();
}

void Intake::ingest() {
  pthread_setname_np(pthread_self(), "sb-ingest");
  std::unique_lock lock(ingest_mutex_);
  while (true) {
    ingest_wake_.wait(lock, [this] { return ingest_stopping_ || !ingest_queue_.empty(); });
    if (ingest_queue_.empty()) break;  // stopping, and everything is stored
    // Everything waiting, in transactions of up to a group each.
    std::vector<NewEvent> rows;
    std::uint64_t sequence = 0;
    std::size_t events = 0;
    while (!ingest_queue_.empty() && rows.size() < kGroupSize) {
      Journaled& next = ingest_queue_.front();
      rows.insert(rows.end(), std::make_move_iterator(next.rows.begin()),
                  std::make_move_iterator(next.rows.end()));
      sequence = std::max(sequence, next.sequence);
      events += next.events;
      ingest_queue_.pop_front();
    }
    lock.unlock();
    const std::size_t count = rows.size();
    begin_storing(events);
    bool stored = store(rows);
    while (!stored && !abandoned()) {
      // The rows are safe in the journal: try again (a full disk, a lock held elsewhere).
      std::unique_lock wait(ingest_mutex_);
      ingest_wake_.wait_for(wait, std::chrono::seconds(1), [this] { return abandoned(); });
      wait.unlock();
      stored = store(rows);
    }
    lock.lock();
    if (stored) ingested_rows_ += count;
    ingest_backlog_ -= events;
    ingest_room_.notify_all();
    lock.unlock();
    end_storing(events);
    if (sequence > 0) stored_.publish(sequence);
    lock.lock();
  }
}

// One row per billed dimension and sink: total_tokens bills one quantity, split two; dual mode
// stores each once for usage records and once for meter events.
void Intake::add_rows(HandedEvent& event, std::int64_t now_ms, std::vector<NewEvent>& rows) {
  if (!billed_at_all(event)) return;
  const bool cost_refused = event.response_cost && !std::isfinite(*event.response_cost);
  if (cost_refused) {
    // A host's NaN or infinity: no cost at all (dead as invalid_cost in cost mode), never a row
    // that cannot be stored; the token counts still bill.
    event.response_cost.reset();
    metrics_.count_reason(to_string(Reason::kNonFiniteCost));
  }
  if (event.derived_call_id) metrics_.count_reason(to_string(Reason::kDerivedCallId));
  if (event.call_id.empty()) {
    event.call_id = generated_call_id();
    metrics_.count_reason(to_string(Reason::kGeneratedCallId));
  }
  NewEvent common;
  common.call_id = stable_call_key(event.call_id);
  const std::int64_t end_ms = event.end_time ? to_ms(*event.end_time) : now_ms;
  common.event_time = std::min(end_ms, now_ms) / 1000;
  common.accepted_at_ms = now_ms;
  // Token billing maps the model to a `provider/model` slug when it plans: a model without a
  // provider prefix keeps the provider the host named, so the slug rules can use it.
  common.model = bounded(config_.model_slugs() && !event.provider.empty() &&
                                 event.model.find('/') == std::string::npos
                             ? event.provider + "/" + event.model
                             : event.model);
  common.cost = event.response_cost.value_or(0.0);
  common.prompt_tokens = event.tokens.prompt.value_or(0);
  common.completion_tokens = event.tokens.completion.value_or(0);
  common.state = EventState::kPending;
  // Times Stripe refuses for meter events (usage records have no such window: dual mode's
  // usage-record row is stored as usual). More than 5 minutes ahead: the host's clock or its
  // end time is wrong; kept for an operator (`stripe-billing retry` sends it with the time it
  // is stored under: now). Older than 35 days: Stripe keeps no such events. Never sent under a
  // time Stripe refuses, never dropped.
  event.meter_refusal = nullptr;
  if (end_ms > now_ms + kMeterEventMaxAheadSeconds * 1000) {
    event.meter_refusal = to_string(Reason::kEventTimeInFuture);
  } else if (end_ms < now_ms - kMeterEventMaxAgeSeconds * 1000) {
    event.meter_refusal = to_string(Reason::kMeterTimestampTooOld);
  }
  if (event.customer_key.empty()) {
    common.state = EventState::kParked;
    // The request named a customer the configuration does not let a caller choose: kept, and
    // billed once an operator decides (STRIPE_TRUST_REQUEST_USER, then `stripe-billing retry`).
    common.reason = event.refused != RequestUserRefusal::kNone
                        ? to_string(event.refused)
                        : to_string(Reason::kMissingCustomer);
  } else if (event.customer_key.size() > kMaxMetadataValue ||
             !is_storable_text(event.customer_key)) {
    common.customer_key = log_safe(event.customer_key, 100);
    common.state = EventState::kDead;
    common.reason = to_string(Reason::kInvalidCustomerKey);
  } else {
    common.customer_key = std::move(event.customer_key);
  }
  if (by_token_type_) return add_token_rows(event, common, rows);

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
      if (cost && cost_refused) row.reason = to_string(Reason::kInvalidCost);
    }
    push_row(std::move(row), event, rows);
  }
}

void Intake::push_row(NewEvent row, const HandedEvent& event, std::vector<NewEvent>& rows) {
  if (event.meter_refusal != nullptr && row.state == EventState::kPending &&
      sinks_.back() == Sink::kMeterEvent) {
    // Dual mode: the usage record goes as usual; the meter row is parked.
    if (sinks_.size() > 1) {
      NewEvent record = row;
      record.sink = sinks_.front();
      rows.push_back(std::move(record));
    }
    row.state = EventState::kParked;
    row.reason = event.meter_refusal;
    metrics_.count_reason(row.reason);
    rows.push_back(std::move(row));
    rows.back().sink = Sink::kMeterEvent;
    return;
  }
  {
    if (row.state != EventState::kPending) metrics_.count_reason(row.reason, sinks_.size());
    if (row.state != EventState::kPending && may_warn()) {
      log_->warn("{}",
                 activity_line(config_.log_format(), {{"activity", "accept"},
                                                      {"success", false},
                                                      {"reason", row.reason},
                                                      {"call_id", log_safe(event.call_id)},
                                                      {"model", log_safe(event.model)},
                                                      {"customer", log_safe(row.customer_key)},
                                                      {"dimension", row.dimension},
                                                      {"quantity", row.quantity}}));
    }
    for (std::size_t i = 0; i < sinks_.size(); ++i) {
      rows.push_back(i + 1 == sinks_.size() ? std::move(row) : row);
      // Every quantity fits Stripe's 15 significant digits: STRIPE_MAX_QUANTITY cannot be more.
      rows.back().sink = sinks_[i];
    }
  }
}

void Intake::reload_tables(const BillingTables::Reload& reload) {
  for (const std::string& file : reload.loaded) {
    log_->info("stripe_billing loaded {} anew", log_safe(file));
  }
  for (const std::string& problem : reload.refused) {
    log_->error("stripe_billing refused a changed table, the last good one stays in force: {}",
                problem);
  }
}

bool Intake::billed_at_all(const HandedEvent& event) {
  if (event.cache_hit && config_.cache_hit() == CacheHitPolicy::kSkip) {
    metrics_.count_reason(to_string(Reason::kCacheHitNotBilled));
    return false;
  }
  if (!event.call_type.empty()) {
    const auto& skipped = config_.skip_call_types();
    if (std::find(skipped.begin(), skipped.end(), event.call_type) != skipped.end()) {
      metrics_.count_reason(to_string(Reason::kCallTypeNotBilled));
      return false;
    }
  }
  return true;
}

// Token types: one row per non-zero type (docs/token-types.md). Priced: one row of the call's
// exact amount, carried like a cost; a call without a price falls back to its token types, or
// dies as unpriced_model, as STRIPE_UNPRICED_MODEL says.
void Intake::add_token_rows(HandedEvent& event, const NewEvent& common,
                            std::vector<NewEvent>& rows) {
  const TokenDetails details{event.tokens.prompt, event.tokens.completion, event.tokens.total,
                             event.cache_read,    event.cache_write,       event.reasoning};
  const ProviderGuess guess = provider_family(event.provider, event.model);
  if (!guess.known) metrics_.count_reason(to_string(Reason::kUnknownProvider));
  const BillableTokens tokens = billable_tokens(details, guess.family);
  const auto refused = [&](const char* dimension, Reason reason) {
    NewEvent row = common;
    row.dimension = dimension;
    row.state = EventState::kDead;
    row.reason = to_string(reason);
    push_row(std::move(row), event, rows);
  };
  switch (tokens.verdict) {
    case BillableTokens::Verdict::kMissingUsage:
      return refused(to_string(TokenType::kInput), Reason::kMissingUsage);
    case BillableTokens::Verdict::kNegative:
      return refused(to_string(TokenType::kInput), Reason::kNegativeQuantity);
    case BillableTokens::Verdict::kTooLarge:
      return refused(to_string(TokenType::kInput), Reason::kQuantityTooLarge);
    case BillableTokens::Verdict::kInconsistent:
      metrics_.count_reason(to_string(Reason::kInconsistentTokenDetails));
      break;
    case BillableTokens::Verdict::kOk:
      break;
  }
  const std::int64_t max_micros = config_.max_quantity() * kMicrosPerUnit;
  if (config_.quantity_source() == QuantitySource::kPriced) {
    const auto prices = tables_->prices();
    const ModelPrices* found = prices ? prices->find(event.model) : nullptr;
    if (found == nullptr && prices) {
      if (const auto slug = tables_->slugs()->slug(event.model, event.provider)) {
        found = prices->find(*slug);
      }
    }
    const std::optional<std::int64_t> amount =
        found ? priced_amount_micros(tokens, *found, tables_->markup(), tables_->units_per_usd())
              : std::nullopt;
    if (amount) {
      if (*amount == 0) {
        metrics_.skipped_zero.fetch_add(1);
        return;
      }
      if (*amount > max_micros) return refused("priced", Reason::kQuantityTooLarge);
      NewEvent row = common;
      row.dimension = "priced";
      row.amount_micros = *amount;
      return push_row(std::move(row), event, rows);
    }
    if (config_.unpriced_model() == UnpricedPolicy::kReject) {
      return refused("priced", Reason::kUnpricedModel);
    }
    metrics_.count_reason(to_string(Reason::kUnpricedFallback));
  }
  if (event.cache_hit && config_.cache_hit() == CacheHitPolicy::kTokenType) {
    NewEvent row = common;
    row.dimension = "cache_hit";
    row.quantity = tokens.sum();
    if (row.quantity == 0) {
      metrics_.skipped_zero.fetch_add(1);
      return;
    }
    if (row.quantity > config_.max_quantity()) {
      row.state = EventState::kDead;
      row.reason = to_string(Reason::kQuantityTooLarge);
    }
    return push_row(std::move(row), event, rows);
  }
  bool any = false;
  for (TokenType type : kAllTokenTypes) {
    const std::int64_t count = tokens[type];
    if (count == 0) continue;
    any = true;
    NewEvent row = common;
    row.dimension = to_string(type);
    row.quantity = count;
    if (count > config_.max_quantity()) {
      row.state = EventState::kDead;
      row.reason = to_string(Reason::kQuantityTooLarge);
    }
    push_row(std::move(row), event, rows);
  }
  if (!any) metrics_.skipped_zero.fetch_add(1);
}

// A flood of bad events must not flood the host's log: at most kWarningsPerSecond lines a
// second, then one line saying how many were left out (every one is still counted by reason).
bool Intake::may_warn() {
  const auto now = std::chrono::steady_clock::now();
  if (now - warning_window_ >= std::chrono::seconds(1)) {
    if (suppressed_warnings_ > 0) {
      log_->warn(
          "stripe_billing left out {} refused-event lines in the last second; the "
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
    case BillingMode::kUsageRecords:
      return {Sink::kUsageRecord};
    case BillingMode::kMeterEventsV2:
    case BillingMode::kMeterEvents:
    case BillingMode::kMeterEventStream:
      return {Sink::kMeterEvent};
    case BillingMode::kDual:
      return {Sink::kUsageRecord, Sink::kMeterEvent};
  }
  return {Sink::kUsageRecord};
}

}  // namespace stripe_billing
