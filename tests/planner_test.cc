// The planner as a pure function: rows, what is known of the customers and a moved clock in; the
// batches, parks, kills, lookups and next wake-up out. No store, no threads, no Stripe.
#include "planner.h"

#include <gtest/gtest.h>

#include <map>

namespace stripe_billing {
namespace {

constexpr std::int64_t kNow = 1'767'225'600'000;  // 2026-01-01T00:00:00Z, in ms
constexpr std::int64_t kWindow = 2'000;

FinalizedConfig make_config(const std::string& mode, const std::string& window = "2000",
                            const std::string& quantity = "total_tokens") {
  Config config;
  config.api_key = "sk_test_planner_0000000000000000";
  config.billing_mode = mode;
  if (mode == "usage_records" || mode == "dual") config.price_id = "price_tokens";
  if (mode != "usage_records") config.meter_event_name = "llm_tokens";
  config.aggregation_window_ms = window;
  config.quantity = quantity;
  if (quantity == "split") {
    config.price_id.reset();
    config.meter_event_name.reset();
    if (mode == "usage_records") {
      config.prompt_price_id = "price_prompt";
      config.completion_price_id = "price_completion";
    } else {
      config.prompt_meter_event_name = "llm_prompt";
      config.completion_meter_event_name = "llm_completion";
    }
  }
  auto finalized = finalize_config(config);
  if (!finalized) throw std::runtime_error(finalized.error().to_string());
  return std::move(finalized.value());
}

StoredEvent row(std::int64_t id, const std::string& customer, std::int64_t quantity,
                std::int64_t accepted_at_ms = kNow - 5'000, Sink sink = Sink::kUsageRecord,
                const std::string& dimension = "total_tokens") {
  StoredEvent event;
  event.id = id;
  event.call_id = "call-" + std::to_string(id);
  event.dimension = dimension;
  event.sink = sink;
  event.model = "gpt-test";
  event.customer_key = customer;
  event.quantity = quantity;
  event.accepted_at_ms = accepted_at_ms;
  event.event_time = accepted_at_ms / 1000;
  return event;
}

Lookup found(const std::string& customer_id, const std::string& item = "",
             std::int64_t period_start = 0, std::int64_t period_end = 0) {
  Lookup lookup;
  lookup.status = Lookup::Status::kFound;
  lookup.target = BillingTarget{customer_id, item, period_start, period_end};
  lookup.fetched_ms = kNow;
  return lookup;
}

class PlannerTest : public ::testing::Test {
 protected:
  Plan run(const FinalizedConfig& config, std::vector<StoredEvent> rows, std::int64_t now = kNow,
           bool force = false) {
    const LookupFn lookup = [this](const std::string& key, const std::string& price) {
      ++asked_[price + "/" + key];
      auto it = known_.find(price + "/" + key);
      return it == known_.end() ? Lookup{} : it->second;
    };
    return plan(std::move(rows), PlanInput{config, now, force, busy_, lookup});
  }

  std::map<std::string, Lookup> known_;  // "price/key"
  std::map<std::string, int> asked_;
  std::set<std::string> busy_;
};

TEST_F(PlannerTest, RowsOfAQuantityThisConfigurationDoesNotBillAreParked) {
  const auto config = make_config("usage_records");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  const Plan plan = run(config, {row(1, "alice", 5, kNow - 5000, Sink::kUsageRecord, "cost")});
  ASSERT_EQ(plan.writes.parks.size(), 1u);
  EXPECT_EQ(plan.writes.parks[0].reason, "dimension_not_configured");
  EXPECT_EQ(plan.writes.parks[0].event_ids, std::vector<std::int64_t>{1});
  EXPECT_FALSE(plan.writes.parks[0].next_attempt_ms) << "until a configuration bills them";
  EXPECT_TRUE(plan.writes.batches.empty());
  EXPECT_TRUE(asked_.empty()) << "nobody is looked up for rows that are not billed";
}

TEST_F(PlannerTest, RowsOfASinkTheModeDoesNotSendAreParkedByTheirSink) {
  const auto meters = make_config("meter_events");
  Plan plan = run(meters, {row(1, "alice", 5)});
  ASSERT_EQ(plan.writes.parks.size(), 1u);
  EXPECT_EQ(plan.writes.parks[0].reason, "usage_records_not_in_mode");
  const auto records = make_config("usage_records");
  plan = run(records, {row(2, "alice", 5, kNow, Sink::kMeterEvent)});
  ASSERT_EQ(plan.writes.parks.size(), 1u);
  EXPECT_EQ(plan.writes.parks[0].reason, "meters_not_in_mode");
}

TEST_F(PlannerTest, AnUnknownCustomerWaitsAndIsAskedForNotLookedUp) {
  const auto config = make_config("usage_records");
  const Plan plan = run(config, {row(1, "alice", 5), row(2, "alice", 6)});
  EXPECT_TRUE(plan.writes.batches.empty());
  EXPECT_TRUE(plan.writes.parks.empty());
  ASSERT_EQ(plan.lookups.size(), 1u) << "one request for the group, not one per row";
  EXPECT_EQ(plan.lookups[0].customer_key, "alice");
  EXPECT_EQ(plan.lookups[0].price_id, "price_tokens");
  EXPECT_FALSE(plan.lookups[0].refresh);
  EXPECT_EQ(plan.next_wake_ms, 0) << "the lookup's answer wakes the planner";
}

TEST_F(PlannerTest, AFailingLookupWakesThePlannerWhenItsBackoffEnds) {
  const auto config = make_config("meter_events");
  Lookup failing;
  failing.retry_at_ms = kNow + 4'000;
  known_["/alice"] = failing;
  const Plan plan = run(config, {row(1, "alice", 5, kNow, Sink::kMeterEvent)});
  EXPECT_TRUE(plan.writes.batches.empty());
  EXPECT_EQ(plan.next_wake_ms, kNow + 4'000);
}

TEST_F(PlannerTest, OneCustomersFailingLookupHoldsUpNobodyElse) {
  const auto config = make_config("meter_events");
  Lookup failing;
  failing.retry_at_ms = kNow + 4'000;
  known_["/alice"] = failing;
  known_["/bob"] = found("cus_b");
  const Plan plan = run(config, {row(1, "alice", 5, kNow, Sink::kMeterEvent),
                                 row(2, "bob", 6, kNow, Sink::kMeterEvent)});
  ASSERT_EQ(plan.writes.batches.size(), 1u);
  EXPECT_EQ(plan.writes.batches[0].batch.customer_id, "cus_b");
}

TEST_F(PlannerTest, ACustomerNotInStripeIsParkedUntilTheParkRetry) {
  const auto config = make_config("usage_records");
  Lookup missing;
  missing.status = Lookup::Status::kNotFound;
  missing.not_found = ErrorCode::kSubscriptionItemNotFound;
  known_["price_tokens/alice"] = missing;
  const Plan plan = run(config, {row(1, "alice", 5)});
  ASSERT_EQ(plan.writes.parks.size(), 1u);
  EXPECT_EQ(plan.writes.parks[0].reason, "subscription_item_not_found");
  EXPECT_EQ(plan.writes.parks[0].next_attempt_ms, kNow + 60'000);
  ASSERT_EQ(plan.notices.size(), 1u);
  EXPECT_EQ(plan.notices[0].customer_key, "alice");
}

TEST_F(PlannerTest, AKeyNoStripeMetadataCanEqualIsDead) {
  const auto config = make_config("meter_events");
  Lookup invalid;
  invalid.status = Lookup::Status::kInvalidKey;
  known_["/\xff"] = invalid;
  const Plan plan = run(config, {row(1, "\xff", 5, kNow, Sink::kMeterEvent)});
  ASSERT_EQ(plan.writes.kills.size(), 1u);
  EXPECT_EQ(plan.writes.kills[0].reason, "invalid_customer_key");
}

TEST_F(PlannerTest, UsageRecordsWaitOutTheWindowThenBecomeOneRecordPerItem) {
  const auto config = make_config("usage_records");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  const std::int64_t first = kNow - 500;
  std::vector<StoredEvent> rows = {row(1, "alice", 5, first), row(2, "alice", 7, first + 300)};
  Plan plan = run(config, rows);
  EXPECT_TRUE(plan.writes.batches.empty());
  EXPECT_EQ(plan.next_wake_ms, first + kWindow);
  plan = run(config, rows, first + kWindow);  // the clock moved on: the window is over
  ASSERT_EQ(plan.writes.batches.size(), 1u);
  const NewBatch& record = plan.writes.batches[0];
  EXPECT_EQ(record.batch.kind, BatchKind::kUsageRecord);
  EXPECT_EQ(record.batch.target, "si_a");
  EXPECT_EQ(record.batch.quantity, 12);
  EXPECT_EQ(record.batch.timestamp, (first + 300) / 1000);
  ASSERT_EQ(record.members.size(), 2u);
  EXPECT_EQ(record.members[1].customer_id, "cus_a");
  ASSERT_EQ(record.batch.quantity_by_model.size(), 1u);
  EXPECT_EQ(record.batch.quantity_by_model[0].second, 12);
}

TEST_F(PlannerTest, RowsAcceptedLaterThanNowAfterTheClockWentBackWaitNoLonger) {
  const auto config = make_config("usage_records");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  const std::int64_t accepted = kNow + 3'600'000;  // an hour "ahead": the clock went back
  const Plan plan = run(config, {row(1, "alice", 5, accepted)});
  EXPECT_EQ(plan.writes.batches.size(), 1u) << "not held back for an hour and a window";
}

TEST_F(PlannerTest, ADrainDoesNotWaitOutTheWindow) {
  const auto config = make_config("usage_records");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  const Plan plan = run(config, {row(1, "alice", 5, kNow)}, kNow, /*force=*/true);
  EXPECT_EQ(plan.writes.batches.size(), 1u);
}

TEST_F(PlannerTest, AnItemWithAnUndeliveredRecordGetsNoSecondOne) {
  const auto config = make_config("usage_records");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  busy_.insert("si_a");
  const Plan plan = run(config, {row(1, "alice", 5)});
  EXPECT_TRUE(plan.writes.batches.empty());
  EXPECT_EQ(plan.next_wake_ms, 0) << "the record's outcome wakes the planner";
}

TEST_F(PlannerTest, TwoCustomersOnOneStaticItemMakeOneRecord) {
  const auto config = make_config("usage_records");
  known_["price_tokens/alice"] = found("", "si_shared");
  known_["price_tokens/bob"] = found("", "si_shared");
  const Plan plan = run(config, {row(1, "alice", 5), row(2, "bob", 6)});
  ASSERT_EQ(plan.writes.batches.size(), 1u) << "never two open records for one item";
  EXPECT_EQ(plan.writes.batches[0].batch.quantity, 5);
}

TEST_F(PlannerTest, RowsBeforeTheItemsPeriodGoInARecordOfTheirOwn) {
  const auto config = make_config("usage_records");
  const std::int64_t period_start = kNow / 1000 - 60;
  known_["price_tokens/alice"] = found("cus_a", "si_a", period_start, period_start + 86'400);
  const Plan plan = run(config, {row(1, "alice", 5, (period_start - 10) * 1000),
                                 row(2, "alice", 7, (period_start + 10) * 1000)});
  ASSERT_EQ(plan.writes.batches.size(), 2u);
  EXPECT_EQ(plan.writes.batches[0].batch.quantity, 5);
  EXPECT_EQ(plan.writes.batches[1].batch.quantity, 7);
}

TEST_F(PlannerTest, ARecordNeverSumsMoreThanFifteenDigits) {
  const auto config = make_config("usage_records");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  const std::int64_t big = 600'000'000'000'000;
  const Plan plan = run(config, {row(1, "alice", big), row(2, "alice", big), row(3, "alice", 1)});
  ASSERT_EQ(plan.writes.batches.size(), 2u);
  EXPECT_EQ(plan.writes.batches[0].batch.quantity, big);
  EXPECT_EQ(plan.writes.batches[1].batch.quantity, big + 1);
  for (const NewBatch& batch : plan.writes.batches) {
    EXPECT_LE(batch.batch.quantity, kMaxBatchQuantity);
  }
}

TEST_F(PlannerTest, WithoutAWindowEachRowIsItsOwnRecord) {
  const auto config = make_config("usage_records", "0");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  busy_.insert("si_a");  // no window: no limit of one record in flight
  const Plan plan = run(config, {row(1, "alice", 5, kNow), row(2, "alice", 6, kNow)});
  ASSERT_EQ(plan.writes.batches.size(), 2u);
}

TEST_F(PlannerTest, AnEndedPeriodAsksForAFreshLookupBeforeBilling) {
  const auto config = make_config("usage_records");
  const std::int64_t period_end = kNow / 1000 - 100;
  Lookup stale = found("cus_a", "si_a", period_end - 86'400, period_end);
  stale.fetched_ms = (period_end - 1000) * 1000;
  known_["price_tokens/alice"] = stale;
  Plan plan = run(config, {row(1, "alice", 5)});
  EXPECT_TRUE(plan.writes.batches.empty());
  ASSERT_EQ(plan.lookups.size(), 1u);
  EXPECT_TRUE(plan.lookups[0].refresh);
  // Looked up after the row and still ended: Stripe has no newer period; the row goes.
  known_["price_tokens/alice"].fetched_ms = kNow;
  plan = run(config, {row(1, "alice", 5)});
  EXPECT_EQ(plan.writes.batches.size(), 1u);
  EXPECT_TRUE(plan.lookups.empty());
}

TEST_F(PlannerTest, EachMeterRowIsOneEventWithItsIdentifier) {
  const auto config = make_config("meter_events");
  known_["/alice"] = found("cus_a");
  const Plan plan = run(config, {row(1, "alice", 5, kNow, Sink::kMeterEvent),
                                 row(2, "alice", 6, kNow, Sink::kMeterEvent)});
  ASSERT_EQ(plan.writes.batches.size(), 2u) << "no window for v1 meter events";
  const Batch& first = plan.writes.batches[0].batch;
  EXPECT_EQ(first.kind, BatchKind::kMeterEvent);
  EXPECT_EQ(first.target, "llm_tokens cus_a");
  ASSERT_EQ(first.meter_events.size(), 1u);
  EXPECT_EQ(first.meter_events[0].identifier, "call-1:total_tokens");
  EXPECT_EQ(first.meter_events[0].customer_id, "cus_a");
  EXPECT_EQ(first.meter_events[0].value, 5);
  EXPECT_EQ(first.meter_events[0].timestamp, kNow / 1000);
  EXPECT_TRUE(asked_.count("/alice")) << "meters look up the customer only";
}

TEST_F(PlannerTest, SplitMetersSendEachTokenTypeToItsMeter) {
  const auto config = make_config("meter_events", "2000", "split");
  known_["/alice"] = found("cus_a");
  const Plan plan = run(config, {row(1, "alice", 5, kNow, Sink::kMeterEvent, "prompt_tokens"),
                                 row(2, "alice", 6, kNow, Sink::kMeterEvent, "completion_tokens")});
  ASSERT_EQ(plan.writes.batches.size(), 2u);
  EXPECT_EQ(plan.writes.batches[0].batch.meter_events[0].event_name, "llm_prompt");
  EXPECT_EQ(plan.writes.batches[1].batch.meter_events[0].event_name, "llm_completion");
}

TEST_F(PlannerTest, MeterRowsOlderThanStripesThirtyFiveDaysAreParked) {
  const auto config = make_config("meter_events");
  known_["/alice"] = found("cus_a");
  const std::int64_t old = kNow - 36LL * 24 * 3600 * 1000;
  const Plan plan = run(config, {row(1, "alice", 5, old, Sink::kMeterEvent),
                                 row(2, "alice", 6, kNow, Sink::kMeterEvent)});
  ASSERT_EQ(plan.writes.parks.size(), 1u);
  EXPECT_EQ(plan.writes.parks[0].reason, "meter_timestamp_too_old");
  EXPECT_EQ(plan.writes.parks[0].event_ids, std::vector<std::int64_t>{1});
  EXPECT_EQ(plan.writes.batches.size(), 1u);
}

TEST_F(PlannerTest, TheStreamFillsBatchesOfAHundredAndAPartialOneWaitsForTheWindow) {
  const auto config = make_config("meter_event_stream");
  known_["/alice"] = found("cus_a");
  known_["/bob"] = found("cus_b");
  std::vector<StoredEvent> rows;
  for (int i = 1; i <= 250; ++i) {
    rows.push_back(row(i, i % 2 ? "alice" : "bob", 1, kNow - 500, Sink::kMeterEvent));
  }
  Plan plan = run(config, rows);
  ASSERT_EQ(plan.writes.batches.size(), 2u);
  for (const NewBatch& batch : plan.writes.batches) {
    EXPECT_EQ(batch.batch.kind, BatchKind::kMeterStream);
    EXPECT_EQ(batch.members.size(), 100u);
    EXPECT_EQ(batch.batch.meter_events.size(), 100u);
  }
  std::set<std::string> customers;
  for (const MeterEvent& event : plan.writes.batches[1].batch.meter_events) {
    customers.insert(event.customer_id);
  }
  EXPECT_EQ(customers.size(), 2u) << "one batch carries rows of any customers";
  EXPECT_EQ(plan.next_wake_ms, kNow - 500 + kWindow);
  plan = run(config, rows, kNow - 500 + kWindow);
  EXPECT_EQ(plan.writes.batches.size(), 3u) << "the window is over: the partial batch goes";
  EXPECT_EQ(plan.writes.batches[2].members.size(), 50u);
}

TEST_F(PlannerTest, InDualModeEachSinkIsPlannedOnItsOwn) {
  const auto config = make_config("dual");
  known_["price_tokens/alice"] = found("cus_a", "si_a");
  known_["/alice"] = found("cus_a");
  const Plan plan =
      run(config, {row(1, "alice", 5), row(2, "alice", 5, kNow - 5000, Sink::kMeterEvent)});
  ASSERT_EQ(plan.writes.batches.size(), 2u);
  EXPECT_EQ(plan.writes.batches[0].batch.kind, BatchKind::kUsageRecord);
  EXPECT_EQ(plan.writes.batches[1].batch.kind, BatchKind::kMeterEvent);
}

TEST(MeterEventsFor, RowsWithoutAMeterInThisConfigurationWait) {
  const auto config = make_config("meter_events");
  StoredEvent metered = row(1, "alice", 5, kNow, Sink::kMeterEvent);
  metered.customer_id = "cus_a";
  auto events = meter_events_for({metered}, config);
  ASSERT_TRUE(events);
  EXPECT_EQ(events->at(0).customer_id, "cus_a");
  EXPECT_EQ(events->at(0).event_name, "llm_tokens");
  StoredEvent other = row(2, "alice", 5, kNow, Sink::kMeterEvent, "prompt_tokens");
  auto refused = meter_events_for({metered, other}, config);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidConfig);
}

}  // namespace
}  // namespace stripe_billing
