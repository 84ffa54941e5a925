#include "rate_limiter.h"

#include <algorithm>

namespace stripe_billing {
namespace {

constexpr double kMinimumRate = 0.5;
constexpr auto kRecoveryStep = std::chrono::seconds(5);

}  // namespace

RateLimiter::RateLimiter(double requests_per_second)
    : configured_rate_(requests_per_second),
      rate_(requests_per_second),
      tokens_(std::max(1.0, requests_per_second)),
      last_refill_(Clock::now()),
      last_throttle_(Clock::time_point::min()),
      last_recovery_(Clock::now()) {}

void RateLimiter::refill(Clock::time_point now) {
  if (rate_ < configured_rate_ && now - last_throttle_ >= kRecoveryStep &&
      now - last_recovery_ >= kRecoveryStep) {
    rate_ = std::min(configured_rate_, rate_ * 1.1);
    last_recovery_ = now;
  }
  const double elapsed = std::chrono::duration<double>(now - last_refill_).count();
  tokens_ = std::min(std::max(1.0, rate_), tokens_ + elapsed * rate_);
  last_refill_ = now;
}

bool RateLimiter::acquire() {
  std::unique_lock lock(mutex_);
  bool waited = false;
  while (!interrupted_) {
    const auto now = Clock::now();
    refill(now);
    if (tokens_ >= 1.0) {
      tokens_ -= 1.0;
      if (waited) ++waits_;
      return true;
    }
    waited = true;
    const auto wait = std::chrono::duration<double>((1.0 - tokens_) / rate_);
    wake_.wait_until(lock, now + std::chrono::duration_cast<Clock::duration>(wait));
  }
  return false;
}

void RateLimiter::on_throttled() {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  rate_ = std::max(kMinimumRate, rate_ / 2);
  tokens_ = std::min(tokens_, 0.0);
  last_throttle_ = now;
  last_recovery_ = now;
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

bool is_meter_event_request(const std::string& url) {
  const std::string_view path = std::string_view(url).substr(0, url.find('?'));
  const auto ends_with = [path](std::string_view suffix) {
    return path.size() >= suffix.size() && path.substr(path.size() - suffix.size()) == suffix;
  };
  return ends_with("/v1/billing/meter_events") || ends_with("/v2/billing/meter_event_stream");
}

RateLimitedTransport::RateLimitedTransport(std::shared_ptr<HttpTransport> inner,
                                           std::shared_ptr<RateLimiter> limiter,
                                           std::shared_ptr<RateLimiter> meter_limiter)
    : inner_(std::move(inner)),
      limiter_(std::move(limiter)),
      meter_limiter_(std::move(meter_limiter)) {}

RateLimiter& RateLimitedTransport::limiter_for(const HttpRequest& request) const {
  return meter_limiter_ && is_meter_event_request(request.url) ? *meter_limiter_ : *limiter_;
}

Expected<HttpResponse> RateLimitedTransport::send(const HttpRequest& request) {
  RateLimiter& limiter = limiter_for(request);
  if (!limiter.acquire()) {
    return Error{ErrorCode::kAborted, "shutting down: request not sent", std::nullopt};
  }
  auto response = inner_->send(request);
  if (response && response->status == 429 &&
      !response->header("stripe-rate-limited-reason").empty()) {
    limiter.on_throttled();
  }
  return response;
}

void RateLimitedTransport::abort_in_flight() {
  limiter_->interrupt();
  if (meter_limiter_) meter_limiter_->interrupt();
  inner_->abort_in_flight();
}

}  // namespace stripe_billing
