// Shared arrangement for tests that run the library against the local Stripe emulator.
#pragma once

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "stripe_billing/config.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/stripe_logger.h"
#include "stripe_billing/usage_event.h"
#include "stripe_emulator/emulator.h"
#include "temp_dir.h"

namespace stripe_billing::testing {

inline constexpr const char* kEmulatorKey = "sk_test_emulator_0000000000000000";

inline std::chrono::steady_clock::time_point in_seconds(int seconds) {
  return std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
}

// Polls `condition` until it holds or `timeout` passes, for outcomes that have no event to wait
// on (a parked event retried by the planner's own schedule). True when it held.
template <typename Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::mutex mutex;
  std::condition_variable never_notified;
  std::unique_lock lock(mutex);
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    never_notified.wait_for(lock, std::chrono::milliseconds(5));
  }
  return true;
}

// Rewrites the body of every answer to a request whose URL holds `marker`, as a broken proxy or
// a changed API would.
class ReshapingTransport final : public HttpTransport {
 public:
  ReshapingTransport(std::string marker, std::string body)
      : inner_(make_curl_transport()), marker_(std::move(marker)), body_(std::move(body)) {}
  Expected<HttpResponse> send(const HttpRequest& request) override {
    auto response = inner_->send(request);
    if (response && request.url.find(marker_) != std::string::npos) response->body = body_;
    return response;
  }
  void abort_in_flight() override { inner_->abort_in_flight(); }

 private:
  std::unique_ptr<HttpTransport> inner_;
  std::string marker_;
  std::string body_;
};

// A logger whose lines the test can read, from any thread.
class CapturedLog {
 public:
  CapturedLog()
      : sink_(std::make_shared<Sink>()),
        logger_(std::make_shared<spdlog::logger>("stripe_billing_test", sink_)) {
    logger_->set_level(spdlog::level::trace);
  }
  std::shared_ptr<spdlog::logger> logger() const { return logger_; }
  std::string text() const { return sink_->text(); }

 private:
  class Sink : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::string text() {
      std::lock_guard lock(mutex_);
      return text_;
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& message) override {
      spdlog::memory_buf_t formatted;
      formatter_->format(message, formatted);
      text_.append(formatted.data(), formatted.size());
    }
    void flush_() override {}

   private:
    std::string text_;
  };
  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

class EmulatorTest : public ::testing::Test {
 protected:
  EmulatorTest() {
    product_ = emulator_.create_product("LLM tokens");
    price_ = emulator_.create_metered_price(product_);
  }

  // A customer whose metadata litellm_customer_id is `key`, subscribed to the price. Returns
  // the subscription item.
  std::string add_customer(const std::string& key, std::string* customer_id = nullptr) {
    const std::string customer = emulator_.create_customer({{"litellm_customer_id", key}});
    if (customer_id != nullptr) *customer_id = customer;
    return emulator_.create_subscription(customer, price_).item_id;
  }

  Config config() const {
    Config config;
    config.api_key = kEmulatorKey;
    config.price_id = price_;
    config.api_base = emulator_.base_url();
    config.timeout_ms = "2000";
    config.connect_timeout_ms = "1000";
    config.outbox_path = outbox_path();
    config.aggregation_window_ms = "0";  // one usage record per event unless a test says so
    config.rate_limit = "1000";
    // The tests name customers by the request's `user` (for_customer), matched by metadata.
    config.trust_request_user = "lookup";
    return config;
  }

  std::unique_ptr<StripeLogger> make_logger(const Config& config,
                                            std::shared_ptr<spdlog::logger> logger = nullptr) {
    auto made = make_stripe_logger(config, {nullptr, std::move(logger), nullptr, {}});
    EXPECT_TRUE(made) << made.error().to_string();
    return made ? std::move(made.value()) : nullptr;
  }

  static UsageEvent event(const std::string& call_id, std::int64_t total_tokens) {
    UsageEvent event;
    event.call_id = call_id;
    event.model = "gpt-test";
    event.prompt_tokens = total_tokens / 2;
    event.completion_tokens = total_tokens - total_tokens / 2;
    event.total_tokens = total_tokens;
    event.response_cost = 0.001;
    event.end_time = std::chrono::system_clock::now();
    return event;
  }

  // An event of `customer`: the request's `user`, which STRIPE_CHARGE_BY=end_user_id bills when
  // the key has no end user and STRIPE_TRUST_REQUEST_USER allows it (config() does).
  static UsageEvent for_customer(const std::string& call_id, std::int64_t tokens,
                                 const std::string& customer = "alice") {
    UsageEvent e = event(call_id, tokens);
    e.request_user = customer;
    return e;
  }

  std::size_t count_requests(const std::string& method, const std::string& path_prefix) const {
    std::size_t count = 0;
    for (const auto& request : emulator_.requests()) {
      if (request.method == method && request.path.rfind(path_prefix, 0) == 0) ++count;
    }
    return count;
  }

  std::string outbox_path() const { return dir_.file("outbox.db"); }

  TempDir dir_;
  stripe_emulator::Emulator emulator_;
  std::string product_;
  std::string price_;
};

}  // namespace stripe_billing::testing
