// A fleet of gateway replicas (StripeLoggers in one process, each with its own connections) on one
// PostgreSQL outbox: it bills like one process. Skipped, visibly, without STRIPE_TEST_PG_URL.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>

#include "pg_test_support.h"
#include "stripe_billing/reconciliation.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using testing::CapturedLog;
using testing::eventually;
using testing::in_seconds;
using testing::PgTestSchema;

class FleetTest : public testing::EmulatorTest {
 protected:
  void SetUp() override {
    STRIPE_SKIP_WITHOUT_PG();
    schema_ = std::make_unique<PgTestSchema>(*testing::test_pg_url());
  }

  Config fleet_config() const {
    Config config = EmulatorTest::config();
    config.outbox_url = schema_->url();
    config.outbox_schema = schema_->name();
    config.fleet_lease_s = "2";
    return config;
  }

  // Starts `count` replicas, each with a log of its own.
  void start(int count, const Config& config) {
    for (int i = 0; i < count; ++i) {
      logs_.push_back(std::make_unique<CapturedLog>());
      replicas_.push_back(make_logger(config, logs_.back()->logger()));
      ASSERT_NE(replicas_.back(), nullptr);
    }
  }

  // Which replica runs the delivery engine (the one that said so last), or -1.
  int engine_holder() const {
    for (std::size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i] &&
          logs_[i]->text().find("runs the delivery engine now") != std::string::npos) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

  std::size_t records_of(const std::string& item) const {
    return emulator_.usage_records(item).size();
  }

  std::unique_ptr<PgTestSchema> schema_;
  std::vector<std::unique_ptr<CapturedLog>> logs_;
  std::vector<std::unique_ptr<StripeLogger>> replicas_;
};

TEST_F(FleetTest, CallsServedByThreeReplicasAreBilledOnceAndAggregatedForTheFleet) {
  const std::string alice = add_customer("alice");
  const std::string bob = add_customer("bob");
  Config config = fleet_config();
  config.aggregation_window_ms = "4000";
  start(3, config);
  // Every call goes to one replica and is reported again to the next one (a retried callback).
  for (int i = 0; i < 90; ++i) {
    const std::string customer = i % 2 == 0 ? "alice" : "bob";
    const UsageEvent call = for_customer("call-" + std::to_string(i), 10, customer);
    replicas_[i % 3]->log_success_event(call);
    replicas_[(i + 1) % 3]->log_success_event(call);
  }
  ASSERT_TRUE(eventually(
      [&] { return emulator_.total_usage(alice) == 450 && emulator_.total_usage(bob) == 450; },
      std::chrono::seconds(30)))
      << "alice " << emulator_.total_usage(alice) << " bob " << emulator_.total_usage(bob);
  std::uint64_t accepted = 0, deduplicated = 0;
  for (auto& replica : replicas_) {
    ASSERT_TRUE(replica->flush(in_seconds(10)));
    accepted += replica->stats().accepted;
    deduplicated += replica->stats().deduplicated;
  }
  EXPECT_EQ(accepted, 90u);
  EXPECT_EQ(deduplicated, 90u);
  // One engine for the fleet: it plans every replica's rows of an item into one record per
  // window (replicas planning for themselves would send at least one record each, per item).
  EXPECT_GE(engine_holder(), 0);
  EXPECT_LE(records_of(alice), 2u);
  EXPECT_LE(records_of(bob), 2u);
  // And it looked each customer up once, not once per replica.
  EXPECT_EQ(count_requests("GET", "/v1/customers/search"), 2u);
  EXPECT_EQ(emulator_.total_usage(alice) + emulator_.total_usage(bob), 900);
  // Everything replicas hold is delivered, whichever replica accepted it.
  const StripeLoggerStats stats = replicas_[0]->stats();
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(stats.parked, 0u);
  // One ledger for the fleet: reconciling it (from any replica's configuration) agrees with
  // Stripe for every customer, whichever replica served the calls.
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  auto report = reconcile(replicas_[2]->config(), now - 3600, now + 60);
  ASSERT_TRUE(report) << report.error().to_string();
  ASSERT_EQ(report->rows.size(), 2u);
  std::int64_t local = 0;
  for (const auto& row : report->rows) local += static_cast<std::int64_t>(row.local);
  EXPECT_EQ(local, 900);
  EXPECT_TRUE(report->matches());
}

TEST_F(FleetTest, WhenTheEngineHolderStopsAnotherReplicaDeliversWhatItHeld) {
  const std::string alice = add_customer("alice");
  start(3, fleet_config());
  for (int i = 0; i < 30; ++i) {
    replicas_[i % 3]->log_success_event(for_customer("a" + std::to_string(i), 5));
  }
  ASSERT_TRUE(
      eventually([&] { return emulator_.total_usage(alice) == 150; }, std::chrono::seconds(30)));
  const int holder = engine_holder();
  ASSERT_GE(holder, 0);
  // Stripe stops answering: the holder keeps its batches in the store as it stops.
  stripe_emulator::Fault unavailable;
  unavailable.status = 503;
  unavailable.path_prefix = "/v1/subscription_items/";
  emulator_.inject(unavailable, 1'000'000);
  // Sync: each call returns once its rows are committed to PostgreSQL.
  for (int i = 0; i < 30; ++i) {
    replicas_[i % 3]->log_success_event(for_customer("b" + std::to_string(i), 5));
  }
  replicas_[static_cast<std::size_t>(holder)]->shutdown(in_seconds(2));
  replicas_[static_cast<std::size_t>(holder)].reset();
  emulator_.clear_faults();
  ASSERT_TRUE(
      eventually([&] { return emulator_.total_usage(alice) == 300; }, std::chrono::seconds(30)))
      << emulator_.total_usage(alice) << "\n"
      << logs_[(static_cast<std::size_t>(holder) + 1) % 3]->text()
      << logs_[(static_cast<std::size_t>(holder) + 2) % 3]->text();
  EXPECT_GE(engine_holder(), 0) << "a surviving replica took the engine over";
  EXPECT_NE(engine_holder(), holder);
}

TEST_F(FleetTest, AReplicaWaitsUntilTheReplicaRunningTheEngineHasDeliveredItsCalls) {
  const std::string alice = add_customer("alice");
  const Config config = fleet_config();
  start(1, config);  // replica 0 takes the engine lease
  ASSERT_TRUE(eventually([&] { return engine_holder() == 0; }, std::chrono::seconds(10)));
  start(1, config);  // replica 1 finds it held: it stores calls, replica 0 delivers them
  for (int i = 0; i < 20; ++i) {
    replicas_[1]->log_success_event(for_customer("w" + std::to_string(i), 5));
  }
  // flush() would return once the calls are in PostgreSQL; this waits for Stripe to have them.
  EXPECT_TRUE(replicas_[1]->wait_until_delivered(in_seconds(30)));
  EXPECT_EQ(emulator_.total_usage(alice), 100) << "delivered when the wait returned";
  EXPECT_EQ(replicas_[1]->stats().pending, 0u);
  EXPECT_EQ(logs_[1]->text().find("runs the delivery engine now"), std::string::npos)
      << "replica 0 delivered them, not replica 1";
}

TEST_F(FleetTest, WaitingForDeliveryIsFalseAtTheDeadlineWhileStripeRefusesAndTrueAfter) {
  const std::string alice = add_customer("alice");
  Config config = fleet_config();
  config.max_backoff_s = "1";
  start(1, config);
  ASSERT_TRUE(eventually([&] { return engine_holder() == 0; }, std::chrono::seconds(10)));
  start(1, config);
  stripe_emulator::Fault unavailable;
  unavailable.status = 503;
  unavailable.path_prefix = "/v1/subscription_items/";
  emulator_.inject(unavailable, 1'000'000);
  for (int i = 0; i < 5; ++i) {
    replicas_[1]->log_success_event(for_customer("r" + std::to_string(i), 5));
  }
  EXPECT_FALSE(replicas_[1]->wait_until_delivered(std::chrono::steady_clock::now() +
                                                  std::chrono::milliseconds(1500)));
  EXPECT_EQ(replicas_[1]->stats().pending, 5u) << "the rows stay in the store, retried";
  EXPECT_EQ(emulator_.total_usage(alice), 0);
  emulator_.clear_faults();
  EXPECT_TRUE(replicas_[1]->wait_until_delivered(in_seconds(30)));
  EXPECT_EQ(emulator_.total_usage(alice), 25);
}

TEST_F(FleetTest, TheFleetSendsWithinOneAccountRate) {
  std::vector<std::string> items;
  for (int c = 0; c < 6; ++c) items.push_back(add_customer("c" + std::to_string(c)));
  Config config = fleet_config();
  config.rate_limit = "40";
  start(3, config);
  emulator_.clear_requests();
  for (int i = 0; i < 150; ++i) {
    replicas_[i % 3]->log_success_event(
        for_customer("r" + std::to_string(i), 1, "c" + std::to_string(i % 6)));
  }
  ASSERT_TRUE(eventually(
      [&] {
        std::int64_t total = 0;
        for (const std::string& item : items) total += emulator_.total_usage(item);
        return total == 150;
      },
      std::chrono::seconds(60)));
  std::deque<std::chrono::steady_clock::time_point> window;
  std::size_t peak = 0;
  for (const auto& request : emulator_.requests()) {
    if (request.path.find("/usage_records") == std::string::npos) continue;
    window.push_back(request.received_at);
    while (request.received_at - window.front() >= std::chrono::seconds(1)) window.pop_front();
    peak = std::max(peak, window.size());
  }
  // The configured rate with its burst of one second (a token bucket), plus 10 %: three replicas
  // each with a budget of their own would send up to three times as much.
  EXPECT_LE(peak, 44u);
  EXPECT_GT(peak, 0u);
}

}  // namespace
}  // namespace stripe_billing
