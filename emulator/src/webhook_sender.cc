#include "webhook_sender.h"

#include <httplib.h>
#include <pthread.h>

#include <stdexcept>

#include "webhook_signature.h"

namespace stripe_emulator {
namespace {

constexpr time_t kTimeoutSeconds = 2;

const char* kind_name(WebhookSender::Kind kind, int attempt) {
  switch (kind) {
    case WebhookSender::Kind::kNormal:
      return attempt == 1 ? "normal" : "retry";
    case WebhookSender::Kind::kRedelivery:
      return "redelivery";
    case WebhookSender::Kind::kForged:
      return "forged";
    case WebhookSender::Kind::kStale:
      return "stale";
  }
  return "normal";
}

}  // namespace

WebhookSender::WebhookSender(Clock clock, std::vector<std::chrono::milliseconds> retry_delays)
    : clock_(std::move(clock)),
      retry_delays_(std::move(retry_delays)),
      thread_([this] { run(); }) {}

WebhookSender::~WebhookSender() { stop(); }

void WebhookSender::add_endpoint(const std::string& url, const std::string& secret) {
  const auto scheme_end = url.find("://");
  const auto scheme = url.substr(0, scheme_end == std::string::npos ? 0 : scheme_end);
  const auto path_start = url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
  if ((scheme != "http" && scheme != "https") || path_start == scheme_end + 3) {
    throw std::invalid_argument("A webhook endpoint URL is http(s)://host[:port][/path], not " +
                                url);
  }
  if (secret.empty()) throw std::invalid_argument("A webhook endpoint needs a secret (whsec_…)");
  Endpoint endpoint{url.substr(0, path_start),
                    path_start == std::string::npos ? "/" : url.substr(path_start), url, secret};
  std::lock_guard lock(mutex_);
  endpoints_.push_back(std::move(endpoint));
}

std::size_t WebhookSender::endpoint_count() const {
  std::lock_guard lock(mutex_);
  return endpoints_.size();
}

void WebhookSender::send(const EmittedEvent& event, Kind kind, std::chrono::seconds age) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  if (stopping_) return;
  for (const auto& endpoint : endpoints_) {
    queue_.emplace(now, Job{event.id, event.type, event.payload, endpoint, kind, 1, age});
  }
  wakeup_.notify_all();
}

std::vector<WebhookDelivery> WebhookSender::deliveries() const {
  std::lock_guard lock(mutex_);
  return deliveries_;
}

bool WebhookSender::wait_for(std::size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return delivered_.wait_for(lock, timeout, [&] { return deliveries_.size() >= count; });
}

void WebhookSender::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
    if (in_flight_ != nullptr) in_flight_->stop();
  }
  wakeup_.notify_all();
  delivered_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void WebhookSender::run() {
  pthread_setname_np(pthread_self(), "stripe-emu-hooks");
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (queue_.empty()) {
      wakeup_.wait(lock);
      continue;
    }
    const auto due = queue_.begin()->first;
    if (due > std::chrono::steady_clock::now()) {
      wakeup_.wait_until(lock, due);
      continue;
    }
    const auto job = std::move(queue_.begin()->second);
    queue_.erase(queue_.begin());
    lock.unlock();
    auto delivery = deliver(job);
    lock.lock();
    const bool failed = delivery.status < 200 || delivery.status > 299;
    deliveries_.push_back(std::move(delivery));
    delivered_.notify_all();
    const auto retry = static_cast<std::size_t>(job.attempt) - 1;
    if (failed && !stopping_ && job.kind == Kind::kNormal && retry < retry_delays_.size()) {
      auto again = job;
      ++again.attempt;
      queue_.emplace(std::chrono::steady_clock::now() + retry_delays_[retry], std::move(again));
    }
  }
}

// Signed just before the POST, so a retry carries the time of its own try.
WebhookDelivery WebhookSender::deliver(const Job& job) {
  const auto t = clock_() - (job.kind == Kind::kStale ? job.age.count() : 0);
  const auto secret =
      job.kind == Kind::kForged ? "whsec_forged_by_the_emulator" : job.endpoint.secret;
  WebhookDelivery delivery{job.event_id,
                           job.type,
                           job.endpoint.url,
                           kind_name(job.kind, job.attempt),
                           job.attempt,
                           0,
                           stripe_signature_header(t, job.payload, secret),
                           job.payload};
  httplib::Client client(job.endpoint.origin);
  client.set_connection_timeout(kTimeoutSeconds);
  client.set_read_timeout(kTimeoutSeconds);
  client.set_write_timeout(kTimeoutSeconds);
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return delivery;
    in_flight_ = &client;
  }
  const auto result =
      client.Post(job.endpoint.path.c_str(),
                  {{"Stripe-Signature", delivery.signature_header},
                   {"User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}},
                  job.payload, "application/json; charset=utf-8");
  {
    std::lock_guard lock(mutex_);
    in_flight_ = nullptr;
  }
  if (result) delivery.status = result->status;
  return delivery;
}

}  // namespace stripe_emulator
