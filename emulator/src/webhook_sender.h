// Delivers emitted events to the webhook endpoints as Stripe does, on one background thread
// ("stripe-emu-hooks"), never on a request thread: a POST of the event's payload with
// Content-Type: application/json and Stripe-Signature (webhook_signature.h), the endpoint's
// answer awaited at most 2 s. A normal delivery that gets no 2xx (or no answer) is tried again,
// with the same body re-signed at the time of the try, after each of the retry delays in turn,
// then given up. Redeliveries, forged and stale deliveries are one-shot test controls. Signature
// times come from the emulator clock. Every try is recorded once it is answered or failed.
// stop() drops what is still queued, cuts a POST in flight short (one caught just before it
// connects can still take up to its 2 s) and joins the thread.
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "event_log.h"
#include "stripe_emulator/emulator.h"

namespace httplib {
class Client;
}  // namespace httplib

namespace stripe_emulator {

class WebhookSender {
 public:
  enum class Kind { kNormal, kRedelivery, kForged, kStale };
  using Clock = std::function<std::int64_t()>;

  WebhookSender(Clock clock, std::vector<std::chrono::milliseconds> retry_delays);
  ~WebhookSender();  // stop()
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  // Throws std::invalid_argument for a URL that is not http(s)://host[:port][/path], or an empty
  // secret.
  void add_endpoint(const std::string& url, const std::string& secret);
  std::size_t endpoint_count() const;
  // Queues `event` for every endpoint. kStale signs it with t = now - `age`.
  void send(const EmittedEvent& event, Kind kind, std::chrono::seconds age = {});
  std::vector<WebhookDelivery> deliveries() const;
  bool wait_for(std::size_t count, std::chrono::milliseconds timeout) const;
  void stop();  // idempotent

 private:
  struct Endpoint {
    std::string origin;  // scheme://host:port, as httplib::Client takes it
    std::string path;
    std::string url;
    std::string secret;
  };
  struct Job {
    std::string event_id;
    std::string type;
    std::string payload;
    Endpoint endpoint;
    Kind kind = Kind::kNormal;
    int attempt = 1;
    std::chrono::seconds age{0};
  };
  using Due = std::chrono::steady_clock::time_point;

  void run();
  WebhookDelivery deliver(const Job& job);

  Clock clock_;
  const std::vector<std::chrono::milliseconds> retry_delays_;
  mutable std::mutex mutex_;
  std::condition_variable wakeup_;             // a job was queued, or stop()
  mutable std::condition_variable delivered_;  // a delivery was recorded, or stop()
  std::vector<Endpoint> endpoints_;
  std::multimap<Due, Job> queue_;  // by when it is due; equal times in the order queued
  std::vector<WebhookDelivery> deliveries_;
  httplib::Client* in_flight_ = nullptr;  // the client of the POST being made, for stop()
  bool stopping_ = false;
  std::thread thread_;  // last: starts once everything it uses exists
};

}  // namespace stripe_emulator
