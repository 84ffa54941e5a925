// Billing meters end to end through the emulator: v1 meter events, the v2 stream, dual mode,
// split and cost quantities. What Stripe counted is read from the emulator.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "dispatcher.h"
#include "meter_event.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using testing::in_seconds;

constexpr const char* kMeter = "llm_tokens";

class MeterDeliveryTest : public testing::EmulatorTest {
 protected:
  MeterDeliveryTest() { meter_id_ = emulator_.create_meter(kMeter); }

  Config meter_config(const char* mode = "meter_events") const {
    Config config = EmulatorTest::config();
    config.billing_mode = mode;
    config.price_id.reset();
    config.meter_event_name = kMeter;
    config.meter_stream_base = emulator_.base_url();
    return config;
  }

  // A customer found by its litellm_customer_id metadata, without any subscription.
  std::string add_meter_customer(const std::string& key) {
    return emulator_.create_customer({{"litellm_customer_id", key}});
  }

  double metered(const std::string& customer_id, const std::string& meter = kMeter,
                 const std::string& group_key = "", const std::string& group_value = "") const {
    const auto totals = emulator_.meter_totals_by_customer(meter, group_key, group_value);
    const auto it = totals.find(customer_id);
    return it == totals.end() ? 0 : it->second;
  }

  std::size_t meter_posts() const { return count_requests("POST", "/v1/billing/meter_events"); }
  std::size_t stream_posts() const {
    return count_requests("POST", "/v2/billing/meter_event_stream");
  }

  std::string meter_id_;
};

TEST_F(MeterDeliveryTest, EachCallBecomesOneMeterEventOfItsCustomer) {
  const std::string alice = add_meter_customer("alice");
  const std::string bob = add_meter_customer("bob");
  auto logger = make_logger(meter_config());
  logger->log_success_event(for_customer("call-1", 100));
  logger->log_success_event(for_customer("call-2", 20));
  logger->log_success_event(for_customer("call-3", 7, "bob"));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice), 120);
  EXPECT_EQ(metered(bob), 7);
  EXPECT_EQ(meter_posts(), 3u);
  EXPECT_EQ(count_requests("GET", "/v1/subscriptions"), 0u) << "meters need no subscription item";
  for (const auto& recorded : emulator_.meter_events()) {
    EXPECT_EQ(recorded.source, "v1");
    EXPECT_EQ(recorded.error_code, "");
    EXPECT_EQ(recorded.identifier.rfind("call-", 0), 0u) << recorded.identifier;
  }
}

TEST_F(MeterDeliveryTest, TheIdentifierComesFromTheCallIdAndTheTimestampFromItsEnd) {
  add_meter_customer("alice");
  auto logger = make_logger(meter_config());
  UsageEvent call = for_customer("chatcmpl-42", 10);
  call.end_time = std::chrono::system_clock::now() - std::chrono::hours(30);
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto events = emulator_.meter_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].identifier, meter_event_identifier("chatcmpl-42", "total_tokens"));
  EXPECT_EQ(
      events[0].timestamp,
      std::chrono::duration_cast<std::chrono::seconds>(call.end_time->time_since_epoch()).count());
}

TEST_F(MeterDeliveryTest, ConfiguredPayloadKeysAndTheModelDimensionAreSent) {
  emulator_.create_meter("tokens_by_model", "customer", "tokens");
  const std::string alice = add_meter_customer("alice");
  Config config = meter_config();
  config.meter_event_name = "tokens_by_model";
  config.meter_customer_key = "customer";
  config.meter_value_key = "tokens";
  config.meter_model_key = "model";
  auto logger = make_logger(config);
  logger->log_success_event(for_customer("call-1", 33));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice, "tokens_by_model", "model", "gpt-test"), 33);
  const auto events = emulator_.meter_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].payload.at("customer"), alice);
  EXPECT_EQ(events[0].payload.at("tokens"), "33");
}

TEST_F(MeterDeliveryTest, AnEventReportedThreeTimesIsMeteredOnce) {
  const std::string alice = add_meter_customer("alice");
  auto logger = make_logger(meter_config());
  for (int copy = 0; copy < 3; ++copy) {
    for (int i = 0; i < 5; ++i)
      logger->log_success_event(for_customer("call-" + std::to_string(i), 4));
  }
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice), 20);
  EXPECT_EQ(logger->stats().deduplicated, 10u);
}

TEST_F(MeterDeliveryTest, StripesAlreadyRecordedAnswerCountsAsDelivered) {
  const std::string alice = add_meter_customer("alice");
  {
    auto first = make_logger(meter_config());
    first->log_success_event(for_customer("call-1", 8));
    ASSERT_TRUE(first->shutdown(in_seconds(20)));
  }
  // Another gateway (its own outbox) reports the same call: Stripe refuses the identifier.
  Config other = meter_config();
  other.outbox_path = dir_.file("other-outbox.db");
  auto second = make_logger(other);
  second->log_success_event(for_customer("call-1", 8));
  ASSERT_TRUE(second->flush(in_seconds(20)));
  const auto stats = second->stats();
  EXPECT_EQ(stats.delivered, 1u);
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(stats.dead, 0u);
  EXPECT_EQ(metered(alice), 8);
  EXPECT_EQ(meter_posts(), 2u);
}

TEST_F(MeterDeliveryTest, ARetryAfterALostAnswerIsMeteredOnce) {
  const std::string alice = add_meter_customer("alice");
  emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 0, "/v1/billing/meter_events", {}});
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/billing/meter_events", {}});
  Config config = meter_config();
  config.max_backoff_s = "1";
  auto logger = make_logger(config);
  logger->log_success_event(for_customer("call-1", 50));
  logger->log_success_event(for_customer("call-2", 5));
  ASSERT_TRUE(logger->flush(in_seconds(30)));
  EXPECT_EQ(metered(alice), 55);
  std::size_t dropped = 0, failed = 0;
  for (const auto& request : emulator_.requests()) {
    dropped += request.path == "/v1/billing/meter_events" && request.status == 0;
    failed += request.path == "/v1/billing/meter_events" && request.status == 500;
  }
  EXPECT_EQ(dropped, 1u);
  EXPECT_EQ(failed, 1u);
}

TEST_F(MeterDeliveryTest, AnEventOlderThanStripesWindowIsParkedNotSent) {
  add_meter_customer("alice");
  auto logger = make_logger(meter_config());
  UsageEvent old = for_customer("call-old", 10);
  old.end_time = std::chrono::system_clock::now() - std::chrono::hours(24 * 36);
  logger->log_success_event(old);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.parked, 1u);
  EXPECT_EQ(stats.rejected.at("meter_timestamp_too_old"), 1u);
  EXPECT_EQ(meter_posts(), 0u);
}

TEST_F(MeterDeliveryTest, TheLargestQuantityTheConfigurationAllowsFitsStripesFifteenDigits) {
  const std::string alice = add_meter_customer("alice");
  Config config = meter_config();
  config.max_quantity = "999999999999999";
  auto logger = make_logger(config);
  logger->log_success_event(for_customer("call-huge", 1'000'000'000'000'000));
  logger->log_success_event(for_customer("call-fits", 999'999'999'999'999));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.dead, 1u);
  EXPECT_EQ(stats.rejected.at("quantity_too_large"), 1u);
  EXPECT_EQ(meter_posts(), 1u);
  EXPECT_EQ(emulator_.meter_totals_by_customer(kMeter).at(alice), 999'999'999'999'999.0);
}

TEST_F(MeterDeliveryTest, OnlyOneRequestPerCustomerAndMeterIsInFlight) {
  const std::string alice = add_meter_customer("alice");
  const std::string bob = add_meter_customer("bob");
  emulator_.inject(
      Fault{FaultKind::kHang, 0, "/v1/billing/meter_events", std::chrono::seconds(20)});
  auto logger = make_logger(meter_config());
  logger->log_success_event(for_customer("alice-1", 1));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, std::chrono::seconds(10)));
  logger->log_success_event(for_customer("alice-2", 2));
  logger->log_success_event(for_customer("alice-3", 4));
  for (int i = 0; i < 3; ++i)
    logger->log_success_event(for_customer("bob-" + std::to_string(i), 1, "bob"));
  // Bob's three go one after another while alice's first request still hangs; alice's others
  // wait for it, although three senders are free.
  EXPECT_TRUE(testing::eventually([&] { return metered(bob) == 3; }, std::chrono::seconds(10)));
  EXPECT_EQ(metered(alice), 0);
  EXPECT_EQ(emulator_.hung_requests(), 1u);
  emulator_.release_hangs();
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice), 7);
}

TEST_F(MeterDeliveryTest, TheStreamSendsUpToOneHundredEventsPerRequest) {
  const std::string alice = add_meter_customer("alice");
  const std::string bob = add_meter_customer("bob");
  Config config = meter_config("meter_event_stream");
  config.aggregation_window_ms = "60000";  // only flush() sends a partial batch
  auto logger = make_logger(config);
  for (int i = 0; i < 250; ++i) {
    logger->log_success_event(
        for_customer("call-" + std::to_string(i), 2, i % 2 ? "bob" : "alice"));
  }
  ASSERT_TRUE(logger->flush(in_seconds(30)));
  EXPECT_EQ(metered(alice), 250);
  EXPECT_EQ(metered(bob), 250);
  EXPECT_EQ(stream_posts(), 3u);
  EXPECT_EQ(meter_posts(), 0u);
  EXPECT_EQ(emulator_.meter_sessions_created(), 1u);
  for (const auto& recorded : emulator_.meter_events()) EXPECT_EQ(recorded.source, "v2");
}

TEST_F(MeterDeliveryTest, AnExpiredSessionIsRenewedAndTheSameEventsAreSentAgain) {
  const std::string alice = add_meter_customer("alice");
  auto logger = make_logger(meter_config("meter_event_stream"));
  logger->log_success_event(for_customer("call-1", 3));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  emulator_.expire_meter_sessions();
  logger->log_success_event(for_customer("call-2", 5));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice), 8);
  EXPECT_EQ(emulator_.meter_sessions_created(), 2u);
  EXPECT_EQ(logger->stats().dead, 0u);
  std::size_t expired_answers = 0;
  for (const auto& request : emulator_.requests()) {
    if (request.path == "/v2/billing/meter_event_stream" && request.status == 401)
      ++expired_answers;
  }
  EXPECT_EQ(expired_answers, 1u);
}

TEST_F(MeterDeliveryTest, TheStreamRetriesThroughFailuresAndCountsEachEventOnce) {
  const std::string alice = add_meter_customer("alice");
  emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 0, "/v2/billing/meter_event_stream", {}});
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v2/billing/meter_event_session", {}});
  Config config = meter_config("meter_event_stream");
  config.max_backoff_s = "1";
  auto logger = make_logger(config);
  for (int i = 0; i < 10; ++i)
    logger->log_success_event(for_customer("call-" + std::to_string(i), 1));
  ASSERT_TRUE(logger->flush(in_seconds(30)));
  EXPECT_EQ(metered(alice), 10);
}

TEST_F(MeterDeliveryTest, DualModeBillsBothSidesTheSame) {
  std::string alice, bob;
  const std::string alice_item = add_customer("alice", &alice);
  const std::string bob_item = add_customer("bob", &bob);
  Config config = meter_config("dual");
  config.price_id = price_;
  auto logger = make_logger(config);
  for (int i = 0; i < 20; ++i) {
    logger->log_success_event(
        for_customer("call-" + std::to_string(i), 10 + i, i % 3 ? "alice" : "bob"));
  }
  ASSERT_TRUE(logger->flush(in_seconds(30)));
  EXPECT_GT(emulator_.total_usage(alice_item), 0);
  EXPECT_EQ(metered(alice), emulator_.total_usage(alice_item));
  EXPECT_EQ(metered(bob), emulator_.total_usage(bob_item));
  EXPECT_EQ(metered(alice) + metered(bob), 20 * 10 + 190);
  EXPECT_EQ(logger->stats().accepted, 40u) << "one usage-record row and one meter row per call";
}

TEST_F(MeterDeliveryTest, SplitOnOneMeterTagsInputAndOutputTokens) {
  const std::string alice = add_meter_customer("alice");
  Config config = meter_config();
  config.quantity = "split";
  auto logger = make_logger(config);
  UsageEvent call = for_customer("call-1", 0);
  call.prompt_tokens = 120;
  call.completion_tokens = 30;
  call.total_tokens = 150;
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice, kMeter, "token_type", "input"), 120);
  EXPECT_EQ(metered(alice, kMeter, "token_type", "output"), 30);
  std::set<std::string> identifiers;
  for (const auto& recorded : emulator_.meter_events()) identifiers.insert(recorded.identifier);
  EXPECT_EQ(identifiers.size(), 2u);
}

TEST_F(MeterDeliveryTest, SplitOnTwoMetersBillsEachOnItsOwn) {
  emulator_.create_meter("input_tokens");
  emulator_.create_meter("output_tokens");
  const std::string alice = add_meter_customer("alice");
  Config config = meter_config();
  config.quantity = "split";
  config.meter_event_name.reset();
  config.prompt_meter_event_name = "input_tokens";
  config.completion_meter_event_name = "output_tokens";
  auto logger = make_logger(config);
  UsageEvent call = for_customer("call-1", 0);
  call.prompt_tokens = 11;
  call.completion_tokens = 0;  // nothing to bill on the output meter
  call.total_tokens = 11;
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice, "input_tokens"), 11);
  EXPECT_EQ(metered(alice, "output_tokens"), 0);
  EXPECT_EQ(logger->stats().skipped_zero, 1u);
}

TEST_F(MeterDeliveryTest, SplitUsageRecordsBillTwoSubscriptionItems) {
  std::string alice;
  const std::string input_item = add_customer("alice", &alice);
  const std::string output_price = emulator_.create_metered_price(product_);
  const std::string output_item = emulator_.create_subscription(alice, output_price).item_id;
  Config config = EmulatorTest::config();
  config.quantity = "split";
  config.price_id.reset();
  config.prompt_price_id = price_;
  config.completion_price_id = output_price;
  auto logger = make_logger(config);
  UsageEvent call = for_customer("call-1", 0);
  call.prompt_tokens = 40;
  call.completion_tokens = 2;
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(input_item), 40);
  EXPECT_EQ(emulator_.total_usage(output_item), 2);
}

TEST_F(MeterDeliveryTest, CostIsBilledInCentsWithTheRoundingRemainderCarried) {
  const std::string alice = add_meter_customer("alice");
  Config config = meter_config();
  config.quantity = "cost";
  {
    auto logger = make_logger(config);
    for (int i = 0; i < 5; ++i) {
      UsageEvent call = for_customer("call-" + std::to_string(i), 10);
      call.response_cost = 0.004;  // 0.4 cents: none of these calls alone reaches a cent
      logger->log_success_event(call);
    }
    ASSERT_TRUE(logger->shutdown(in_seconds(20)));
  }
  EXPECT_EQ(metered(alice), 2);       // 2.0 cents
  auto logger = make_logger(config);  // the remainder survives a restart
  for (int i = 5; i < 10; ++i) {
    UsageEvent call = for_customer("call-" + std::to_string(i), 10);
    call.response_cost = 0.004;
    logger->log_success_event(call);
  }
  UsageEvent duplicate = for_customer("call-9", 10);
  duplicate.response_cost = 0.004;
  logger->log_success_event(duplicate);  // a duplicate must not move the remainder
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(metered(alice), 4);  // exactly 10 × 0.4 cents
}

TEST_F(MeterDeliveryTest, ANegativeOrMissingCostIsDeadWithItsReason) {
  add_meter_customer("alice");
  Config config = meter_config();
  config.quantity = "cost";
  auto logger = make_logger(config);
  UsageEvent negative = for_customer("call-1", 10);
  negative.response_cost = -0.5;
  UsageEvent missing = for_customer("call-2", 10);
  missing.response_cost.reset();
  logger->log_success_event(negative);
  logger->log_success_event(missing);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.dead, 2u);
  EXPECT_EQ(stats.rejected.at("negative_quantity"), 1u);
  EXPECT_EQ(stats.rejected.at("missing_usage"), 1u);
  EXPECT_EQ(meter_posts(), 0u);
}

TEST_F(MeterDeliveryTest, AnUnknownCustomerIsParkedAndBilledOnceItExists) {
  Config config = meter_config();
  config.park_retry_s = "1";
  config.lookup_miss_ttl = "0";
  auto logger = make_logger(config);
  logger->log_success_event(for_customer("call-1", 6, "late"));
  ASSERT_TRUE(
      testing::eventually([&] { return logger->stats().parked == 1; }, std::chrono::seconds(20)));
  const std::string late = add_meter_customer("late");
  EXPECT_TRUE(testing::eventually([&] { return metered(late) == 6; }, std::chrono::seconds(20)));
}

TEST_F(MeterDeliveryTest, RowsOfASinkTheModeNoLongerSendsWaitUntilAModeSendsThem) {
  std::string alice;
  const std::string item = add_customer("alice", &alice);
  Config dual = meter_config("dual");
  dual.price_id = price_;
  {
    // The item lookup fails, so the usage-record row stays pending (a batch already made would
    // still be sent after the switch: it has its item and its idempotency key).
    emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/subscriptions", {}}, 1000);
    auto logger = make_logger(dual);
    logger->log_success_event(for_customer("call-1", 12));
    // The meter side goes on while the usage-record side's lookups back off.
    EXPECT_TRUE(
        testing::eventually([&] { return metered(alice) == 12; }, std::chrono::seconds(20)));
    logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
    emulator_.clear_faults();
  }
  EXPECT_EQ(emulator_.total_usage(item), 0);
  {
    auto meters_only = make_logger(meter_config());
    ASSERT_TRUE(testing::eventually([&] { return meters_only->stats().parked == 1; },
                                    std::chrono::seconds(20)));
    EXPECT_EQ(meters_only->stats().rejected.at("usage_records_not_in_mode"), 1u);
    ASSERT_TRUE(meters_only->shutdown(in_seconds(10)));
  }
  EXPECT_EQ(emulator_.total_usage(item), 0);
  testing::CapturedLog log;
  auto logger = make_logger(dual, log.logger());
  EXPECT_TRUE(testing::eventually([&] { return emulator_.total_usage(item) == 12; },
                                  std::chrono::seconds(20)))
      << log.text();
  EXPECT_EQ(metered(alice), 12);
}

TEST_F(MeterDeliveryTest, AMeterBatchWaitsThroughAConfigurationWithoutMetersAndGoesAfter) {
  std::string alice;
  add_customer("alice", &alice);  // subscribed too, for the usage-records configuration
  Config meters = meter_config();
  meters.max_backoff_s = "1";
  {
    emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/billing/meter_events", {}}, 1000);
    auto logger = make_logger(meters);
    logger->log_success_event(for_customer("call-1", 21));
    ASSERT_TRUE(testing::eventually([&] { return logger->stats().retries >= 1; },
                                    std::chrono::seconds(20)));
    logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
    emulator_.clear_faults();
  }
  const std::size_t posts_before = meter_posts();
  {
    Config records = EmulatorTest::config();  // usage records only: no meter to send it to
    records.max_backoff_s = "1";
    auto logger = make_logger(records);
    ASSERT_TRUE(testing::eventually([&] { return logger->stats().retries >= 1; },
                                    std::chrono::seconds(20)));
    EXPECT_EQ(meter_posts(), posts_before) << "nothing is sent without a meter";
    EXPECT_EQ(logger->stats().dead, 0u);
    logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
  }
  EXPECT_EQ(metered(alice), 0);
  auto logger = make_logger(meters);
  EXPECT_TRUE(testing::eventually([&] { return metered(alice) == 21; }, std::chrono::seconds(20)));
}

TEST_F(MeterDeliveryTest, TheQueueOfReadyBatchesStaysBoundedWhileStripeIsSlow) {
  const std::string alice = add_meter_customer("alice");
  Config config = meter_config();
  config.rate_limit = "10000";
  config.timeout_ms = "60000";  // the client waits for the hung request (Stripe holds its lock)
  auto logger = make_logger(config);
  // The first request hangs, and one customer's meter events go one at a time: nothing is
  // delivered while 3,000 calls come in.
  emulator_.inject(
      Fault{FaultKind::kHang, 0, "/v1/billing/meter_events", std::chrono::seconds(30)});
  for (int i = 0; i < 3000; ++i)
    logger->log_success_event(for_customer("call-" + std::to_string(i), 1));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, std::chrono::seconds(10)));
  ASSERT_TRUE(testing::eventually(
      [&] {
        const auto stats = logger->stats();
        return stats.accepted == 3000 && stats.queued_batches == Dispatcher::kMaxQueued;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(logger->stats().pending, 3000u) << "the rest wait in the outbox, not in memory";
  emulator_.release_hangs();
  ASSERT_TRUE(logger->flush(in_seconds(60)));
  EXPECT_EQ(metered(alice), 3000);
  EXPECT_EQ(logger->stats().delivered, 3000u);
}

TEST_F(MeterDeliveryTest, AStreamTokenRefusedForAnotherReasonMintsANewSessionWithoutPausing) {
  const std::string alice = add_meter_customer("alice");
  auto logger = make_logger(meter_config("meter_event_stream"));
  // The token is refused once as invalid (not as expired): a new session, the same events.
  emulator_.inject(Fault{FaultKind::kStatus, 401, "/v2/billing/meter_event_stream", {}});
  logger->log_success_event(for_customer("call-1", 8));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(metered(alice), 8);
  EXPECT_EQ(emulator_.meter_sessions_created(), 2u);
  EXPECT_FALSE(logger->stats().paused);
  EXPECT_EQ(count_requests("GET", "/v1/billing/meters"), 0u) << "no key probe: the key was fine";
}

}  // namespace
}  // namespace stripe_billing
