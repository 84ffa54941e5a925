// Customer and subscription-item lookups, off the planner's thread. One thread, "sb-lookup",
// resolves the (customer key, price) pairs the planner asks for, through the rate-limited client;
// the planner reads what is known without ever waiting (peek). So a burst of new customers, or a
// slow customer search, never stalls the retries and deliveries the planner schedules.
//
// A lookup that fails backs off. A failure of the service (network, timeout, 5xx, a throttling
// 429) backs off every lookup of that price ("" — the customer only — for meters), so a failing
// subscription lookup never holds up meter events and an outage is not hammered; a failure about
// one request (a wrongly shaped answer, a 4xx, a lock 429) backs off that customer alone, so one
// broken customer never holds up the next. A refused key is reported (the dispatcher pauses
// sending).
//
// Thread-safe. stop() joins the thread; the caller aborts in-flight requests first.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "customer_resolver.h"
#include "planner.h"
#include "retry_policy.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

class Lookups {
 public:
  struct Hooks {
    std::function<void()> answered;  // a lookup finished (found, not found, or failed)
    std::function<void(const std::string& reason)> key_refused;  // Stripe refused the key
  };

  Lookups(CustomerResolver& resolver, std::shared_ptr<Clock> clock, RetryPolicy policy, Hooks hooks,
          std::shared_ptr<spdlog::logger> log);
  ~Lookups();  // stop()
  Lookups(const Lookups&) = delete;
  Lookups& operator=(const Lookups&) = delete;

  // What is known now; kWaiting when only Stripe knows (ask with request()).
  Lookup peek(const std::string& customer_key, const std::string& price_id);
  // Queues a lookup once (a pair already queued is not queued again); `refresh` forgets the
  // cached answer first.
  void request(const LookupRequest& request);
  // Lookups that back off are tried again at once (a drain).
  void hurry();
  void stop();
  std::size_t queued() const;

 private:
  struct Backoff {
    int failures = 0;
    std::chrono::steady_clock::time_point retry_at{};  // monotonic: a clock jump moves nothing
  };
  static constexpr std::size_t kMaxAnswers = 100'000;

  void run();
  std::int64_t now_ms() const;
  Lookup answer_of(CustomerResolver::Known known) const;
  void resolve(const LookupRequest& request);
  // When the request may be tried again (a past time point when now); called with mutex_ held.
  std::chrono::steady_clock::time_point retry_at(const std::string& customer_key,
                                                 const std::string& price_id) const;

  CustomerResolver& resolver_;
  std::shared_ptr<Clock> clock_;
  const RetryPolicy policy_;
  const Hooks hooks_;
  std::shared_ptr<spdlog::logger> log_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<LookupRequest> queue_;
  std::set<std::string> queued_;  // "price\nkey" of every request in queue_
  // By price (the service failed) and by queue key (one customer's lookup failed).
  std::map<std::string, Backoff> backoff_;
  // Answers not yet read by the planner: one that the cache no longer holds (a TTL of 0, say)
  // still reaches it once.
  std::map<std::string, Lookup> answers_;
  std::mt19937 random_{std::random_device{}()};
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace stripe_billing
