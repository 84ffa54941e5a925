#include "rate_limiter.h"

#include <algorithm>

namespace stripe_billing {
namespace {

constexpr double kMinimumFloor = 0.5;  // requests per second

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

RateLimiter::RateLimiter(RateLimitPolicy policy, std::shared_ptr<const Clock> clock)
    : policy_(policy),
      clock_(clock ? std::move(clock) : Clock::system()),
      rate_(policy.rate),
      tokens_(std::max(1.0, policy.rate * policy.burst_seconds)),
      updated_(clock_->steady_now()) {}

double RateLimiter::floor() const {
  return std::min(policy_.rate, std::max(kMinimumFloor, policy_.rate * policy_.floor_fraction));
}

void RateLimiter::advance(SteadyTime now) {
  if (now <= updated_) return;
  const double elapsed = seconds(now - updated_);
  rate_ = std::min(policy_.rate, rate_ + policy_.rate * policy_.recovery_per_second * elapsed);
  tokens_ = std::min(std::max(1.0, rate_ * policy_.burst_seconds), tokens_ + elapsed * rate_);
  updated_ = now;
}

RateLimiter::Slot& RateLimiter::slot(SteadyTime now) {
  const auto width = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::nanoseconds>(policy_.interval).count() / kSlots);
  const std::int64_t index =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() / width;
  Slot& current = slots_[static_cast<std::size_t>(index % kSlots)];
  if (current.index != index) current = Slot{index, 0, 0, 0};
  return current;
}

double RateLimiter::window_share_throttled(SteadyTime now) const {
  const auto width = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::nanoseconds>(policy_.interval).count() / kSlots);
  const std::int64_t index =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() / width;
  std::uint64_t answers = 0, throttled = 0;
  for (const Slot& s : slots_) {
    if (s.index > index - kSlots && s.index <= index) {
      answers += s.answers;
      throttled += s.throttled;
    }
  }
  return answers == 0 ? 0.0 : static_cast<double>(throttled) / static_cast<double>(answers);
}

std::chrono::nanoseconds RateLimiter::try_acquire() {
  std::lock_guard lock(mutex_);
  const SteadyTime now = clock_->steady_now();
  advance(now);
  if (now < blocked_until_) return blocked_until_ - now;
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    ++slot(now).granted;
    return std::chrono::nanoseconds(0);
  }
  const double wait = (1.0 - tokens_) / rate_;
  return std::max(std::chrono::nanoseconds(1),
                  std::chrono::nanoseconds(static_cast<std::int64_t>(wait * 1e9)));
}

bool RateLimiter::acquire() {
  bool waited = false;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (interrupted_) return false;
    }
    const std::chrono::nanoseconds wait = try_acquire();
    if (wait.count() == 0) {
      if (waited) {
        std::lock_guard lock(mutex_);
        ++waits_;
      }
      return true;
    }
    waited = true;
    std::unique_lock lock(mutex_);
    // Real time passes here even under a test's clock; a test drives try_acquire() instead.
    wake_.wait_for(lock, std::min<std::chrono::nanoseconds>(wait, std::chrono::milliseconds(200)),
                   [this] { return interrupted_; });
  }
}

void RateLimiter::on_answer(Throttle throttle, std::optional<std::chrono::seconds> retry_after) {
  std::lock_guard lock(mutex_);
  const SteadyTime now = clock_->steady_now();
  advance(now);
  Slot& current = slot(now);
  ++current.answers;
  if (throttle != Throttle::kRate) return;
  ++current.throttled;
  if (retry_after && retry_after->count() > 0) {
    blocked_until_ =
        std::max(blocked_until_, now + std::min(*retry_after, policy_.max_retry_after));
  }
  // The first throttle of an interval starts one decrease from the rate then; the throttles that
  // follow within the interval deepen that same decrease to the share they show, never past it.
  if (!last_decrease_ || now - *last_decrease_ >= policy_.interval) {
    last_decrease_ = now;
    rate_before_decrease_ = rate_;
    ++decreases_;
  }
  const double share =
      std::clamp(window_share_throttled(now), policy_.min_decrease, policy_.max_decrease);
  rate_ = std::min(rate_, std::max(floor(), rate_before_decrease_ * (1.0 - share)));
  tokens_ = std::min(tokens_, 0.0);
}

void RateLimiter::interrupt() {
  std::lock_guard lock(mutex_);
  interrupted_ = true;
  wake_.notify_all();
}

double RateLimiter::current_rate() const {
  std::lock_guard lock(mutex_);
  return rate_;
}

std::uint64_t RateLimiter::waits() const {
  std::lock_guard lock(mutex_);
  return waits_;
}

std::uint64_t RateLimiter::decreases() const {
  std::lock_guard lock(mutex_);
  return decreases_;
}

bool is_meter_event_endpoint(Endpoint endpoint) noexcept {
  return endpoint == Endpoint::kMeterEvents || endpoint == Endpoint::kMeterEventStream;
}

RateLimitedTransport::RateLimitedTransport(std::shared_ptr<HttpTransport> inner,
                                           std::shared_ptr<RateLimiter> limiter,
                                           std::shared_ptr<RateLimiter> meter_limiter)
    : inner_(std::move(inner)),
      limiter_(std::move(limiter)),
      meter_limiter_(std::move(meter_limiter)) {}

RateLimiter& RateLimitedTransport::limiter_for(const HttpRequest& request) const {
  return meter_limiter_ && is_meter_event_endpoint(request.endpoint) ? *meter_limiter_ : *limiter_;
}

Expected<HttpResponse> RateLimitedTransport::send(const HttpRequest& request) {
  RateLimiter& limiter = limiter_for(request);
  if (!limiter.acquire()) {
    return Error{ErrorCode::kAborted, "shutting down: request not sent", std::nullopt};
  }
  auto response = inner_->send(request);
  if (!response) return response;  // no answer from Stripe: nothing to learn about its limits
  Throttle throttle = Throttle::kNone;
  std::optional<std::chrono::seconds> retry_after;
  if (response->status == 429) {
    const StripeError error = parse_stripe_error(*response);
    throttle = throttle_kind(error.http_status, error.code, error.rate_limited_reason);
    if (error.retry_after_seconds) retry_after = std::chrono::seconds(*error.retry_after_seconds);
  }
  limiter.on_answer(throttle, retry_after);
  return response;
}

void RateLimitedTransport::abort_in_flight() {
  limiter_->interrupt();
  if (meter_limiter_) meter_limiter_->interrupt();
  inner_->abort_in_flight();
}

}  // namespace stripe_billing
