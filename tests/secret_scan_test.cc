// The API key (and the v2 stream's session token) must never reach a log line, a metric or an
// error message. This runs the library's scenarios — deliveries in every mode, retries, refused
// keys, dead usage, bad configurations, reconciliation errors — with every log level captured,
// and scans everything it produced.
#include <gtest/gtest.h>

#include <set>

#include "stripe_billing/callback.h"
#include "stripe_billing/metrics.h"
#include "stripe_billing/reconciliation.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using testing::in_seconds;

class SecretScanTest : public testing::EmulatorTest {
 protected:
  SecretScanTest() { emulator_.create_meter("llm_tokens"); }

  // Runs the logger over a few calls and keeps its log, metrics and stats for the scan.
  void run(Config config, const std::vector<UsageEvent>& calls,
           std::chrono::milliseconds flush_for = std::chrono::seconds(10)) {
    auto logger = make_logger(config, log_.logger());
    ASSERT_TRUE(logger);
    for (const auto& call : calls) logger->log_success_event(call);
    logger->flush(std::chrono::steady_clock::now() + flush_for);
    const auto stats = logger->stats();
    produced_ += to_prometheus(stats) + to_json(stats);
    logger->shutdown(std::chrono::steady_clock::now() + flush_for);
  }

  void keep_error(const Error& error) { produced_ += error.to_string() + "\n" + error.message; }

  std::vector<std::string> secrets() const {
    std::vector<std::string> found = {testing::kEmulatorKey};
    // The stream's session tokens, as the emulator saw them in Authorization headers.
    for (const auto& request : emulator_.requests()) {
      const auto auth = request.headers.find("authorization");
      if (request.path == "/v2/billing/meter_event_stream" && auth != request.headers.end()) {
        found.push_back(auth->second.substr(std::string("Bearer ").size()));
      }
    }
    return found;
  }

  testing::CapturedLog log_;
  std::string produced_;
};

TEST_F(SecretScanTest, NoLogLineMetricOrErrorContainsTheKeyOrASessionToken) {
  add_customer("alice");
  emulator_.create_customer({{"litellm_customer_id", "bob"}});  // no subscription: parked
  const std::vector<UsageEvent> calls = {for_customer("c1", 10), for_customer("c2", 0),
                                         for_customer("c3", -4), for_customer("c4", 7, "bob"),
                                         for_customer("c5", 3, "")};
  Config records = config();
  records.max_backoff_s = "1";
  // Usage records through a 500, a dropped answer and a dead 400.
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/", {}});
  emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 0, "/v1/subscription_items/", {}});
  run(records, calls);
  emulator_.inject(Fault{FaultKind::kStatus, 400, "/v1/subscription_items/", {}});
  run(records, {for_customer("c6", 5)});

  // Meters, v1 and the v2 stream (a session minted, expired and renewed), and dual.
  Config meters = records;
  meters.billing_mode = "meter_events";
  meters.meter_event_name = "llm_tokens";
  meters.meter_stream_base = emulator_.base_url();
  meters.outbox_path = dir_.file("meters.db");
  run(meters, {for_customer("m1", 4), for_customer("m1", 4)});
  meters.billing_mode = "meter_event_stream";
  meters.outbox_path = dir_.file("stream.db");
  run(meters, {for_customer("s1", 4)});
  emulator_.expire_meter_sessions();
  run(meters, {for_customer("s2", 4)});
  meters.billing_mode = "dual";
  meters.outbox_path = dir_.file("dual.db");
  run(meters, {for_customer("d1", 9)});

  // A refused key: sending pauses and the error names the key redacted.
  Config refused = records;
  refused.api_key = "sk_test_refused_refused_refused_1234";
  refused.outbox_path = dir_.file("refused.db");
  run(refused, {for_customer("r1", 2)}, std::chrono::milliseconds(500));  // never drains: paused

  // Configurations with the key pasted where it does not belong.
  Config pasted = records;
  pasted.price_id = testing::kEmulatorKey;
  pasted.customer_map = std::string("alice=") + testing::kEmulatorKey;
  pasted.outbox_path = dir_.file(testing::kEmulatorKey);
  pasted.api_base = std::string("https://") + testing::kEmulatorKey + "@api.stripe.com";
  auto finalized = finalize_config(pasted);
  ASSERT_FALSE(finalized);
  keep_error(finalized.error());
  auto registry = CallbackRegistry::with_builtin_callbacks();
  auto made = registry.create("stripe", {pasted, log_.logger(), nullptr});
  ASSERT_FALSE(made);
  keep_error(made.error());

  // Reconciliation that fails at Stripe.
  auto good = finalize_config(records);
  ASSERT_TRUE(good);
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/", {}}, 5);
  auto report = reconcile(*good, 0, 4'000'000'000);
  if (!report) keep_error(report.error());

  produced_ += log_.text() + callback_ui_descriptor();
  ASSERT_GT(produced_.size(), 5'000u) << "the scenarios produced too little to prove anything";
  EXPECT_NE(produced_.find("sk_test_\xE2\x80\xA6"), std::string::npos) << "keys are shown redacted";
  const auto found = secrets();
  ASSERT_GE(found.size(), 3u) << "the stream minted no session";
  for (const std::string& secret : found) {
    ASSERT_GE(secret.size(), 16u);
    EXPECT_EQ(produced_.find(secret), std::string::npos) << "leaked: " << secret.substr(0, 8);
    EXPECT_EQ(produced_.find(secret.substr(secret.size() - 16)), std::string::npos)
        << "leaked the tail of " << secret.substr(0, 8);
  }
}

}  // namespace
}  // namespace stripe_billing
