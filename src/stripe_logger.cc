#include "stripe_billing/stripe_logger.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>

#include "charge_by.h"
#include "customer_resolver.h"
#include "retry_policy.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/version.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

std::shared_ptr<spdlog::logger> silent_logger() {
  return std::make_shared<spdlog::logger>("stripe_billing",
                                          std::make_shared<spdlog::sinks::null_sink_mt>());
}

std::int64_t unix_seconds(TimePoint time) {
  return std::chrono::duration_cast<std::chrono::seconds>(time.time_since_epoch()).count();
}

// The result of one try at recording an event, with what the log line needs.
struct Attempt {
  Classification classification;
  BillingTarget target;
  std::string request_id;
  std::string detail;  // Stripe's message or the local reason, for the log
};

}  // namespace

// Owns the queue and the worker thread "stripe-billing". The host's threads only copy an event
// into the queue; everything else (validation, lookups, HTTP, logging) runs on the worker.
class StripeLogger::Impl {
 public:
  Impl(FinalizedConfig config, StripeLoggerOptions options)
      : config_(std::move(config)),
        transport_(options.transport ? std::move(options.transport)
                                     : std::shared_ptr<HttpTransport>(make_curl_transport(
                                           {config_.connect_timeout(), kUserAgent}))),
        log_(options.logger ? std::move(options.logger) : silent_logger()),
        clock_(options.clock ? std::move(options.clock) : Clock::system()),
        client_(*transport_, StripeClientOptions{config_.api_base(), config_.api_key(),
                                                 config_.api_version(), config_.timeout()}),
        resolver_(client_, config_, clock_),
        worker_([this] { run(); }) {
    log_->info("stripe_billing {} started: {}", STRIPE_BILLING_VERSION, config_.summary());
  }

  ~Impl() { shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5)); }

  void enqueue(const UsageEvent& event) noexcept {
    received_.fetch_add(1, std::memory_order_relaxed);
    try {
      UsageEvent copy = event;
      std::lock_guard lock(mutex_);
      if (!accepting_) {
        dropped_shutdown_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      if (queue_.size() >= config_.queue_capacity()) {
        dropped_queue_full_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      queue_.push_back(std::move(copy));
      wake_.notify_one();
    } catch (...) {
      dropped_queue_full_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void count_failure_event() noexcept { failure_events_.fetch_add(1, std::memory_order_relaxed); }

  bool flush(SteadyTime deadline) noexcept {
    std::unique_lock lock(mutex_);
    return idle_.wait_until(lock, deadline, [this] { return queue_.empty() && !busy_; });
  }

  bool shutdown(SteadyTime deadline) noexcept {
    {
      std::unique_lock lock(mutex_);
      if (!worker_.joinable()) return queue_.empty();
      accepting_ = false;
    }
    const bool drained = flush(deadline);
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      wake_.notify_all();
    }
    if (!drained) transport_->abort_in_flight();
    worker_.join();
    std::lock_guard lock(mutex_);
    if (!queue_.empty()) {
      dropped_shutdown_.fetch_add(queue_.size(), std::memory_order_relaxed);
      log_->error("stripe_billing shutdown deadline passed with {} events not sent to Stripe",
                  queue_.size());
      queue_.clear();
    }
    log_->info("stripe_billing stopped: delivered={} failed={}", delivered_.load(), failed_.load());
    return drained;
  }

  StripeLoggerStats stats() const {
    StripeLoggerStats stats;
    stats.received = received_.load();
    stats.failure_events = failure_events_.load();
    stats.delivered = delivered_.load();
    stats.quantity_delivered = quantity_delivered_.load();
    stats.skipped_zero = skipped_zero_.load();
    stats.dropped_queue_full = dropped_queue_full_.load();
    stats.dropped_shutdown = dropped_shutdown_.load();
    stats.failed = failed_.load();
    stats.stripe_requests = posts_.load() + resolver_.requests();
    stats.retries = retries_.load();
    stats.lookup_hits = resolver_.hits();
    stats.lookup_misses = resolver_.misses();
    std::lock_guard lock(mutex_);
    stats.pending = queue_.size() + (busy_ ? 1 : 0);
    stats.rejected = rejected_;
    return stats;
  }

  const FinalizedConfig& config() const noexcept { return config_; }

 private:
  void run() {
    pthread_setname_np(pthread_self(), "stripe-billing");
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      UsageEvent event = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      try {
        handle(event);
      } catch (const std::exception& e) {
        reject("internal_error", event, e.what());
      }
      lock.lock();
      busy_ = false;
      if (queue_.empty()) idle_.notify_all();
    }
    busy_ = false;
    idle_.notify_all();
  }

  void handle(const UsageEvent& event) {
    const QuantityCheck quantity =
        billable_quantity(event, config_.quantity_source(), config_.max_quantity());
    if (quantity.verdict == QuantityCheck::Verdict::kZero) {
      skipped_zero_.fetch_add(1);
      log_->debug("stripe_billing skipped zero-quantity call call_id={}", log_safe(event.call_id));
      return;
    }
    if (quantity.verdict != QuantityCheck::Verdict::kBill) {
      reject(quantity.reason(), event, "quantity " + std::to_string(quantity.value));
      return;
    }
    const auto key = customer_key(event, config_.charge_by());
    if (!key) {
      reject("missing_customer", event,
             std::string("the event has no ") + to_string(config_.charge_by()));
      return;
    }
    deliver(event, *key, quantity.value);
  }

  void deliver(const UsageEvent& event, const std::string& key, std::int64_t quantity) {
    const TimePoint now = clock_->now();
    const TimePoint when = event.end_time && *event.end_time < now ? *event.end_time : now;
    bool looked_again = false;
    for (int attempt = 1;; ++attempt) {
      const auto started = std::chrono::steady_clock::now();
      Attempt result = try_once(event, key, quantity, unix_seconds(when));
      const auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - started);
      const Outcome outcome = result.classification.outcome;
      if (outcome == Outcome::kDelivered) {
        delivered_.fetch_add(1);
        quantity_delivered_.fetch_add(static_cast<std::uint64_t>(quantity));
        log_->info(
            "stripe_billing activity=usage_record success=true customer={} customer_id={} "
            "subscription_item={} quantity={} model={} call_id={} cost={} prompt_tokens={} "
            "completion_tokens={} request_id={} latency_ms={} attempt={}",
            log_safe(key), result.target.customer_id, result.target.subscription_item_id, quantity,
            log_safe(event.model), log_safe(event.call_id), event.response_cost.value_or(0.0),
            event.prompt_tokens.value_or(0), event.completion_tokens.value_or(0),
            result.request_id, latency.count(), attempt);
        return;
      }
      if (outcome == Outcome::kItemMissing && !looked_again) {
        resolver_.invalidate(key);
        looked_again = true;
        continue;
      }
      if (outcome == Outcome::kRetry && attempt <= config_.max_retries()) {
        retries_.fetch_add(1);
        log_->warn("stripe_billing activity=usage_record success=false retrying reason={} "
                   "call_id={} attempt={} detail={}",
                   result.classification.reason, log_safe(event.call_id), attempt,
                   log_safe(result.detail));
        if (!wait_for_backoff(retry_policy_.backoff(attempt, jitter()))) {
          reject("shutdown", event, "shutdown interrupted retries");
          return;
        }
        continue;
      }
      if (outcome == Outcome::kPause) {
        log_->error("stripe_billing Stripe refused the API key {} ({}): check STRIPE_API_KEY",
                    config_.api_key().redacted(), result.classification.reason);
      }
      failed_.fetch_add(1);
      reject(result.classification.reason, event, result.detail, result.request_id);
      return;
    }
  }

  Attempt try_once(const UsageEvent& event, const std::string& key, std::int64_t quantity,
                   std::int64_t timestamp) {
    Attempt attempt;
    auto target = resolver_.resolve(key);
    if (!target) {
      const Error& error = target.error();
      attempt.detail = error.to_string();
      switch (error.code) {
        case ErrorCode::kCustomerNotFound:
        case ErrorCode::kSubscriptionItemNotFound:
          attempt.classification = {Outcome::kDead, to_string(error.code)};
          return attempt;
        case ErrorCode::kMissingCustomer:
          attempt.classification = {Outcome::kDead, "invalid_customer_key"};
          return attempt;
        default:
          attempt.classification = classify(Expected<StripeResponse>(error));
          return attempt;
      }
    }
    attempt.target = std::move(target.value());
    posts_.fetch_add(1);
    auto response = client_.post_form(
        usage_record_path(attempt.target.subscription_item_id),
        usage_record_fields(quantity, timestamp),
        usage_record_idempotency_key(event.call_id, to_string(config_.quantity_source()),
                                     attempt.target.subscription_item_id));
    attempt.classification = classify(response);
    if (response) {
      attempt.request_id = response->request_id;
    } else {
      attempt.detail = response.error().to_string();
      if (response.error().stripe) attempt.request_id = response.error().stripe->request_id;
    }
    return attempt;
  }

  void reject(const std::string& reason, const UsageEvent& event, const std::string& detail,
              const std::string& request_id = "") {
    {
      std::lock_guard lock(mutex_);
      ++rejected_[reason];
    }
    log_->warn(
        "stripe_billing activity=usage_record success=false reason={} call_id={} model={} "
        "end_user_id={} user_id={} team_id={} total_tokens={} cost={} request_id={} detail={}",
        reason, log_safe(event.call_id), log_safe(event.model),
        log_safe(event.end_user_id.empty() ? event.request_user : event.end_user_id),
        log_safe(event.user_id), log_safe(event.team_id), event.total_tokens.value_or(-1),
        event.response_cost.value_or(0.0), request_id, log_safe(detail, 300));
  }

  // False when shutdown began: the caller gives up instead of waiting.
  bool wait_for_backoff(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, delay, [this] { return stopping_; });
  }

  double jitter() {
    std::uniform_real_distribution<double> distribution(0.5, 1.0);
    return distribution(random_);
  }

  const FinalizedConfig config_;
  std::shared_ptr<HttpTransport> transport_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;
  StripeClient client_;
  CustomerResolver resolver_;
  RetryPolicy retry_policy_;
  std::minstd_rand random_{std::random_device{}()};

  mutable std::mutex mutex_;
  std::condition_variable wake_;  // the worker: an event, or stopping_
  std::condition_variable idle_;  // flush(): queue empty and worker idle
  std::deque<UsageEvent> queue_;
  bool busy_ = false;
  bool accepting_ = true;
  bool stopping_ = false;
  std::map<std::string, std::uint64_t> rejected_;

  std::atomic<std::uint64_t> received_{0}, failure_events_{0}, delivered_{0},
      quantity_delivered_{0}, skipped_zero_{0}, dropped_queue_full_{0}, dropped_shutdown_{0},
      failed_{0}, posts_{0}, retries_{0};

  std::thread worker_;  // last: starts after everything it uses exists
};

StripeLogger::StripeLogger(FinalizedConfig config, StripeLoggerOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}

StripeLogger::~StripeLogger() = default;

void StripeLogger::log_success_event(const UsageEvent& event) noexcept { impl_->enqueue(event); }

void StripeLogger::log_failure_event(const UsageEvent&) noexcept { impl_->count_failure_event(); }

bool StripeLogger::flush(std::chrono::steady_clock::time_point deadline) noexcept {
  return impl_->flush(deadline);
}

bool StripeLogger::shutdown(std::chrono::steady_clock::time_point deadline) noexcept {
  return impl_->shutdown(deadline);
}

StripeLoggerStats StripeLogger::stats() const { return impl_->stats(); }

const FinalizedConfig& StripeLogger::config() const noexcept { return impl_->config(); }

Expected<std::unique_ptr<StripeLogger>> make_stripe_logger(const Config& config,
                                                           StripeLoggerOptions options) {
  auto finalized = finalize_config(config);
  if (!finalized) return finalized.error();
  return std::make_unique<StripeLogger>(std::move(finalized.value()), std::move(options));
}

}  // namespace stripe_billing
