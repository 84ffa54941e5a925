#include "lookups.h"

#include <pthread.h>
#include <spdlog/logger.h>

#include <algorithm>

#include "usage_record.h"

namespace stripe_billing {
namespace {

std::string queue_key(const std::string& price_id, const std::string& customer_key) {
  return price_id + '\n' + customer_key;
}

std::int64_t to_ms(TimePoint time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

// True when the failure says something about this request only (Stripe answered it, wrongly
// shaped or refused, or one object was locked), false when the service itself failed.
bool about_this_request(const Error& error, const Classification& verdict) {
  if (error.code == ErrorCode::kInvalidResponse) return true;
  if (error.code != ErrorCode::kStripe || !error.stripe) return false;  // network, timeout
  const int status = error.stripe->http_status;
  if (status == 429) return verdict.throttle == Throttle::kObject;
  return status >= 400 && status < 500;
}

}  // namespace

Lookups::Lookups(CustomerResolver& resolver, std::shared_ptr<Clock> clock, RetryPolicy policy,
                 Hooks hooks, std::shared_ptr<spdlog::logger> log)
    : resolver_(resolver),
      clock_(std::move(clock)),
      policy_(policy),
      hooks_(std::move(hooks)),
      log_(std::move(log)),
      thread_([this] { run(); }) {}

Lookups::~Lookups() { stop(); }

void Lookups::stop() {
  {
    std::lock_guard lock(mutex_);
    if (!thread_.joinable()) return;
    stopping_ = true;
    wake_.notify_all();
  }
  thread_.join();
}

std::int64_t Lookups::now_ms() const { return to_ms(clock_->now()); }

std::size_t Lookups::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

Lookup Lookups::answer_of(CustomerResolver::Known known) const {
  Lookup lookup;
  if (known.answer) {
    lookup.status = Lookup::Status::kFound;
    lookup.target = std::move(known.answer.value());
    lookup.fetched_ms = to_ms(known.fetched);
    return lookup;
  }
  const Error& error = known.answer.error();
  lookup.message = error.message;
  if (error.code == ErrorCode::kMissingCustomer) {
    lookup.status = Lookup::Status::kInvalidKey;
  } else {
    lookup.status = Lookup::Status::kNotFound;
    lookup.not_found = error.code;
  }
  return lookup;
}

Lookup Lookups::peek(const std::string& customer_key, const std::string& price_id) {
  {
    std::lock_guard lock(mutex_);
    auto answer = answers_.find(queue_key(price_id, customer_key));
    if (answer != answers_.end()) {
      Lookup lookup = std::move(answer->second);
      answers_.erase(answer);
      return lookup;
    }
  }
  if (auto known = resolver_.known(customer_key, price_id)) return answer_of(std::move(*known));
  Lookup lookup;
  std::lock_guard lock(mutex_);
  const auto steady = clock_->steady_now();
  const auto at = retry_at(customer_key, price_id);
  if (at > steady) {
    lookup.retry_at_ms =
        now_ms() + std::chrono::duration_cast<std::chrono::milliseconds>(at - steady).count();
  }
  return lookup;
}

std::chrono::steady_clock::time_point Lookups::retry_at(const std::string& customer_key,
                                                        const std::string& price_id) const {
  std::chrono::steady_clock::time_point at{};
  if (backoff_.empty()) return at;
  if (auto it = backoff_.find(price_id); it != backoff_.end()) at = it->second.retry_at;
  if (auto it = backoff_.find(queue_key(price_id, customer_key)); it != backoff_.end()) {
    at = std::max(at, it->second.retry_at);
  }
  return at;
}

void Lookups::request(const LookupRequest& request) {
  if (request.refresh) resolver_.invalidate(request.customer_key, request.price_id);
  std::lock_guard lock(mutex_);
  if (stopping_ || !queued_.insert(queue_key(request.price_id, request.customer_key)).second) {
    return;
  }
  queue_.push_back(request);
  wake_.notify_one();
}

void Lookups::hurry() {
  std::lock_guard lock(mutex_);
  for (auto& [price, backoff] : backoff_) backoff.retry_at = {};
  wake_.notify_all();
}

void Lookups::run() {
  pthread_setname_np(pthread_self(), "sb-lookup");
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // The first request whose price is not backing off; else wait for the earliest retry.
    const auto now = clock_->steady_now();
    std::optional<std::chrono::steady_clock::time_point> soonest;
    auto next = queue_.end();
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      const auto at = retry_at(it->customer_key, it->price_id);
      if (at <= now) {
        next = it;
        break;
      }
      if (!soonest || at < *soonest) soonest = at;
    }
    if (next == queue_.end()) {
      const auto wait = soonest ? std::min<std::chrono::steady_clock::duration>(
                                      *soonest - now, std::chrono::seconds(1))
                                : std::chrono::steady_clock::duration(std::chrono::seconds(1));
      wake_.wait_for(
          lock, std::max<std::chrono::steady_clock::duration>(wait, std::chrono::milliseconds(1)));
      continue;
    }
    LookupRequest request = std::move(*next);
    queue_.erase(next);
    queued_.erase(queue_key(request.price_id, request.customer_key));
    lock.unlock();
    try {
      resolve(request);
    } catch (const std::exception& e) {
      log_->error("stripe_billing customer lookup failed: {}", e.what());
    }
    if (hooks_.answered) hooks_.answered();
    lock.lock();
  }
}

void Lookups::resolve(const LookupRequest& request) {
  auto target = resolver_.resolve(request.customer_key, request.price_id);
  const bool answered = target || target.error().code == ErrorCode::kCustomerNotFound ||
                        target.error().code == ErrorCode::kSubscriptionItemNotFound ||
                        target.error().code == ErrorCode::kMissingCustomer;
  std::unique_lock lock(mutex_);
  if (answered) {
    backoff_.erase(request.price_id);
    backoff_.erase(queue_key(request.price_id, request.customer_key));
    if (answers_.size() >= kMaxAnswers) answers_.clear();  // read by the cache, then, as before
    answers_[queue_key(request.price_id, request.customer_key)] =
        answer_of(CustomerResolver::Known{std::move(target), clock_->now()});
    return;
  }
  const Error& error = target.error();
  const Classification verdict = classify(RequestKind::kLookup, Expected<StripeResponse>(error));
  if (!verdict.attempted) return;  // aborted at shutdown: asked again at the next start
  const bool alone = about_this_request(error, verdict);
  if (alone && backoff_.size() >= kMaxAnswers) backoff_.clear();  // retried at once, then
  Backoff& backoff =
      backoff_[alone ? queue_key(request.price_id, request.customer_key) : request.price_id];
  backoff.failures = std::min(backoff.failures + 1, 30);
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  const auto delay = policy_.retry_delay(backoff.failures, jitter(random_), verdict);
  backoff.retry_at = clock_->steady_now() + delay;
  // Asked again by the planner once the backoff has passed.
  lock.unlock();
  if (verdict.outcome == Outcome::kPause) {
    if (hooks_.key_refused) hooks_.key_refused(verdict.reason);
    return;
  }
  log_->warn("stripe_billing customer lookup failed ({}), retrying {} in {} ms",
             log_safe(error.to_string(), 300),
             alone ? "this customer's lookup"
                   : (request.price_id.empty() ? "customer lookups" : "subscription item lookups"),
             delay.count());
}

}  // namespace stripe_billing
