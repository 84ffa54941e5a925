#include "stripe_billing/stripe_logger.h"

#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>

#include "admission.h"
#include "admission_store.h"
#include "customer_resolver.h"
#include "dispatcher.h"
#include "intake.h"
#include "meter_event_stream.h"
#include "metered_transport.h"
#include "metrics.h"
#include "outbox.h"
#include "rate_limiter.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/version.h"
#include "webhooks.h"

namespace stripe_billing {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

// The host's logger; else one named "stripe_billing" on the host's sinks, or on a null sink.
std::shared_ptr<spdlog::logger> library_logger(StripeLoggerOptions& options) {
  if (options.logger) return std::move(options.logger);
  if (options.sinks.empty())
    options.sinks.push_back(std::make_shared<spdlog::sinks::null_sink_mt>());
  return std::make_shared<spdlog::logger>("stripe_billing", options.sinks.begin(),
                                          options.sinks.end());
}

std::unique_ptr<Outbox> open_outbox(const FinalizedConfig& config, spdlog::logger& log) {
  auto outbox =
      open_configured_outbox(config, StoreMode::kEngine, config.durability() == Durability::kSync);
  if (outbox) {
    for (const std::string& note : (*outbox)->notes()) log.warn("stripe_billing {}", note);
    return std::move(outbox.value());
  }
  log.error(
      "stripe_billing cannot open the outbox ({}); usage is kept in memory only and is "
      "lost if the process stops",
      outbox.error().message);
  auto memory = Outbox::open(":memory:", false);
  return memory ? std::move(memory.value()) : nullptr;
}

// The admission store when admission or webhooks are on; a store that cannot be opened falls
// back to memory (logged): admission then holds for this process only, until a restart.
std::shared_ptr<AdmissionStore> open_store(const FinalizedConfig& config, spdlog::logger& log) {
  const AdmissionSettings& settings = config.admission();
  if (settings.mode == AdmissionMode::kOff && settings.webhook_secret.empty()) return nullptr;
  const std::int64_t dead_after_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(settings.hold_ttl).count();
  auto store = open_admission_store(config, admission_owner_name(), dead_after_ms);
  if (store) return std::move(store.value());
  log.error(
      "stripe_billing cannot open the admission store ({}); budgets and webhook de-duplication "
      "are kept in memory only",
      store.error().message);
  return open_memory_admission_store(admission_owner_name(), dead_after_ms);
}

RateLimitPolicy rate_policy(double rate) {
  RateLimitPolicy policy;
  policy.rate = rate;
  return policy;
}

}  // namespace

// Wires the pipeline: host → Intake (writer) → Outbox → Dispatcher (planner, senders) → Stripe.
class StripeLogger::Impl {
 public:
  Impl(FinalizedConfig config, StripeLoggerOptions options)
      : config_(std::move(config)),
        log_(library_logger(options)),
        clock_(options.clock ? std::move(options.clock) : Clock::system()),
        limiter_(std::make_shared<RateLimiter>(rate_policy(config_.rate_limit()), clock_)),
        meter_limiter_(
            config_.meter_rate_limit() > 0
                ? std::make_shared<RateLimiter>(rate_policy(config_.meter_rate_limit()), clock_)
                : nullptr),
        transport_(std::make_shared<RateLimitedTransport>(
            std::make_shared<MeteredTransport>(
                options.transport ? std::move(options.transport)
                                  : std::shared_ptr<HttpTransport>(make_curl_transport(
                                        {config_.connect_timeout(), kUserAgent})),
                metrics_),
            limiter_, meter_limiter_)),
        client_(*transport_, StripeClientOptions{config_.api_base(), config_.api_key(),
                                                 config_.api_version(), config_.timeout()}),
        resolver_(client_, config_, clock_),
        outbox_(open_outbox(config_, *log_)),
        stream_(*transport_, client_, config_, clock_),
        tables_(BillingTables::load(config_)),
        dispatcher_(config_, *outbox_, client_, stream_, resolver_, metrics_, log_, clock_,
                    tables_),
        admission_store_(open_store(config_, *log_)),
        admission_(config_.admission().mode == AdmissionMode::kOff
                       ? nullptr
                       : std::make_unique<Admission>(config_, tables_, client_, resolver_,
                                                     admission_store_, log_, clock_)),
        webhooks_(config_.admission().webhook_secret.empty()
                      ? nullptr
                      : std::make_unique<Webhooks>(config_, client_, admission_store_, *outbox_,
                                                   metrics_, admission_.get(), log_, clock_)),
        intake_(
            config_, *outbox_, metrics_, log_, clock_, [this] { dispatcher_.wake(); }, tables_) {
    log_->info("stripe_billing {} started: {}", STRIPE_BILLING_VERSION, config_.summary());
  }

  ~Impl() { shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5)); }

  void submit(const UsageEvent& event) noexcept {
    if (admission_) admission_->settle(event);
    intake_.submit(event);
  }
  void count_failure_event(const UsageEvent& event) noexcept {
    metrics_.failure_events.fetch_add(1);
    if (admission_) admission_->release(event);
  }

  AdmissionDecision admit(const AdmissionRequest& request) noexcept {
    if (admission_) return admission_->admit(request);
    AdmissionDecision decision;
    decision.verdict = AdmissionVerdict::kAllow;
    decision.reason = "admission_off";
    return decision;
  }

  WebhookResponse webhook(std::string_view body, std::string_view signature) noexcept {
    if (webhooks_) return webhooks_->handle(body, signature);
    webhooks_not_configured_.fetch_add(1);
    return {404, R"json({"error":"webhooks are not configured (STRIPE_WEBHOOK_SECRET)"})json"};
  }

  bool flush(SteadyTime deadline) noexcept {
    try {
      // Webhooks first: what they changed (a credit balance) is in force when flush returns.
      const bool webhooks_done = !webhooks_ || webhooks_->drain(deadline);
      const bool balances_done = !admission_ || admission_->wait_for_balances(deadline);
      return intake_.flush(deadline) && dispatcher_.drain(deadline) && webhooks_done &&
             balances_done;
    } catch (...) {
      return false;
    }
  }

  bool wait_until_delivered(SteadyTime deadline) noexcept {
    try {
      return intake_.flush(deadline) && dispatcher_.wait_until_delivered(deadline);
    } catch (...) {
      return false;
    }
  }

  bool shutdown(SteadyTime deadline) noexcept {
    std::lock_guard lock(shutdown_mutex_);
    if (stopped_) return drained_;
    stopped_ = true;
    try {
      if (webhooks_) webhooks_->stop();
      if (admission_) admission_->stop();
      intake_.stop(deadline);
      drained_ = dispatcher_.drain(deadline);
      transport_->abort_in_flight();
      // Past the deadline nothing may wait for a lock on the outbox (another process holds it):
      // what is not written now is sent again at the next start, with the same keys.
      if (!drained_) outbox_->interrupt_writes();
      dispatcher_.stop();
      const StripeLoggerStats final_stats = stats();
      log_->info(
          "stripe_billing stopped: delivered={} waiting_in_outbox={} parked={} dead={} "
          "lost={}",
          final_stats.delivered, final_stats.pending, final_stats.parked, final_stats.dead,
          final_stats.lost);
    } catch (...) {
      drained_ = false;
    }
    return drained_;
  }

  StripeLoggerStats stats() const {
    StripeLoggerStats stats;
    stats.received = metrics_.received.load();
    stats.failure_events = metrics_.failure_events.load();
    stats.accepted = metrics_.accepted.load();
    stats.outbox_commits = metrics_.outbox_commits.load();
    stats.deduplicated = metrics_.deduplicated.load();
    stats.skipped_zero = metrics_.skipped_zero.load();
    stats.lost = metrics_.lost.load();
    stats.dropped_shutdown = metrics_.dropped_shutdown.load();
    stats.delivered = metrics_.delivered_events.load();
    stats.delivered_requests = metrics_.delivered_requests.load();
    stats.quantity_delivered = metrics_.quantity_delivered.load();
    stats.failed = metrics_.failed_events.load();
    stats.stripe_requests = metrics_.stripe_requests.load() + resolver_.requests();
    stats.retries = metrics_.retries.load();
    stats.lookup_hits = resolver_.hits();
    stats.lookup_misses = resolver_.misses();
    stats.lookup_failures = resolver_.failures();
    stats.requests = metrics_.requests();
    stats.request_latency = metrics_.latency();
    stats.quantity_by_model = metrics_.quantity_by_model();
    stats.rate_limited_waits = limiter_->waits();
    stats.rate_limit = limiter_->current_rate();
    stats.rate_limit_decreases = limiter_->decreases();
    if (meter_limiter_) {
      stats.rate_limited_waits += meter_limiter_->waits();
      stats.rate_limit_decreases += meter_limiter_->decreases();
      stats.meter_rate_limit = meter_limiter_->current_rate();
    }
    stats.paused = dispatcher_.paused();
    stats.queued_batches = dispatcher_.queued();
    stats.rejected = metrics_.reasons();
    if (admission_) {
      const AdmissionCounters admission = admission_->counters();
      stats.admissions = admission.allowed;
      stats.admissions_fail_open = admission.fail_open;
      stats.admission_denials = admission.denied;
      stats.holds_open = admission.holds_open;
      stats.holds_settled = admission.holds_settled;
      stats.holds_released = admission.holds_released;
      stats.holds_expired = admission.holds_expired;
      stats.settled_without_hold = admission.settled_without_hold;
      stats.overage = admission.overage_units;
      stats.admission_store_errors = admission.store_errors;
      stats.credit_balance_fetches = admission.balance_fetches;
      stats.credit_balance_failures = admission.balance_failures;
    }
    if (webhooks_) stats.webhooks = webhooks_->counters();
    if (const auto refused = webhooks_not_configured_.load(); refused > 0) {
      stats.webhooks["not_configured"] += refused;
    }
    if (auto both = intake_.counts()) {
      // Rows the outbox holds and events still in memory, never one event in both (Intake::counts).
      const OutboxCounts* counts = &both->outbox;
      stats.pending =
          static_cast<std::uint64_t>(counts->pending + counts->batched) + both->in_memory;
      stats.parked = static_cast<std::uint64_t>(counts->parked);
      stats.dead = static_cast<std::uint64_t>(counts->dead);
      if (counts->oldest_pending_ms > 0) {
        stats.oldest_pending_age_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(clock_->now().time_since_epoch())
                .count() -
            counts->oldest_pending_ms;
      }
    }
    return stats;
  }

  const FinalizedConfig& config() const noexcept { return config_; }

  Expected<bool> reload_tables() {
    const BillingTables::Reload reload = tables_->reload();
    for (const std::string& file : reload.loaded) {
      log_->info("stripe_billing loaded {} anew", log_safe(file));
    }
    if (!reload.refused.empty()) {
      std::string message = "refused, the last good table stays in force:";
      for (const std::string& problem : reload.refused) message += " " + problem;
      log_->error("stripe_billing {}", message);
      return Error{ErrorCode::kInvalidConfig, message, std::nullopt};
    }
    if (!reload.loaded.empty()) dispatcher_.wake();
    return !reload.loaded.empty();
  }

 private:
  const FinalizedConfig config_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;
  Metrics metrics_;
  std::shared_ptr<RateLimiter> limiter_;
  std::shared_ptr<RateLimiter> meter_limiter_;  // null: meter events share limiter_
  std::shared_ptr<HttpTransport> transport_;
  StripeClient client_;
  CustomerResolver resolver_;
  std::unique_ptr<Outbox> outbox_;
  MeterEventStream stream_;  // mints a session only when a stream batch is sent
  std::shared_ptr<BillingTables> tables_;
  Dispatcher dispatcher_;
  std::shared_ptr<AdmissionStore> admission_store_;  // null: neither admission nor webhooks
  std::unique_ptr<Admission> admission_;             // null: STRIPE_ADMISSION=off
  std::unique_ptr<Webhooks> webhooks_;               // null: no STRIPE_WEBHOOK_SECRET
  std::atomic<std::uint64_t> webhooks_not_configured_{0};
  Intake intake_;  // last: the host's entry point exists only once everything behind it does
  std::mutex shutdown_mutex_;
  bool stopped_ = false;
  bool drained_ = false;
};

StripeLogger::StripeLogger(FinalizedConfig config, StripeLoggerOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}

StripeLogger::~StripeLogger() = default;

void StripeLogger::log_success_event(const UsageEvent& event) noexcept { impl_->submit(event); }

void StripeLogger::log_failure_event(const UsageEvent& event) noexcept {
  impl_->count_failure_event(event);
}

AdmissionDecision StripeLogger::admit(const AdmissionRequest& request) noexcept {
  return impl_->admit(request);
}

WebhookResponse StripeLogger::handle_stripe_webhook(std::string_view body,
                                                    std::string_view stripe_signature) noexcept {
  return impl_->webhook(body, stripe_signature);
}

bool StripeLogger::flush(std::chrono::steady_clock::time_point deadline) noexcept {
  return impl_->flush(deadline);
}

bool StripeLogger::wait_until_delivered(std::chrono::steady_clock::time_point deadline) noexcept {
  return impl_->wait_until_delivered(deadline);
}

bool StripeLogger::shutdown(std::chrono::steady_clock::time_point deadline) noexcept {
  return impl_->shutdown(deadline);
}

StripeLoggerStats StripeLogger::stats() const { return impl_->stats(); }

const FinalizedConfig& StripeLogger::config() const noexcept { return impl_->config(); }

Expected<bool> StripeLogger::reload_tables() { return impl_->reload_tables(); }

Expected<std::unique_ptr<StripeLogger>> make_stripe_logger(const Config& config,
                                                           StripeLoggerOptions options) {
  auto finalized = finalize_config(config);
  if (!finalized) return finalized.error();
  // Refuse to start without a working outbox (or with another process running on it); the
  // constructor alone would fall back to memory.
  if (auto outbox = open_configured_outbox(*finalized, StoreMode::kEngine, false); !outbox) {
    return outbox.error();
  }
  return std::make_unique<StripeLogger>(std::move(finalized.value()), std::move(options));
}

}  // namespace stripe_billing
