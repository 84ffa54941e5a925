// The delivery engine: exactly once through duplicates, restarts, outages and throttling.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>

#include "journal.h"
#include "stripe_billing/http_transport.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using testing::in_seconds;

class DeliveryTest : public testing::EmulatorTest {
 protected:
  // Rows of the outbox file, read through a connection of the test's own.
  std::int64_t count_rows(const std::string& where) const {
    sqlite3* db = nullptr;
    sqlite3_open_v2(outbox_path().c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* statement = nullptr;
    const std::string sql = "SELECT COUNT(*) FROM events WHERE " + where;
    std::int64_t count = -1;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
      count = sqlite3_column_int64(statement, 0);
    }
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return count;
  }

  std::size_t usage_posts() const { return count_requests("POST", "/v1/subscription_items/"); }

  // In the outbox, or synced to the journal beside it: either survives a crash.
  bool durable(const std::string& call_id) const {
    if (count_rows("call_id='" + call_id + "'") == 1) return true;
    std::ifstream file(outbox_path() + ".journal", std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(file)),
                           std::istreambuf_iterator<char>());
    for (const NewEvent& row : decode_journal(data)) {
      if (row.call_id == call_id) return true;
    }
    return false;
  }

  // Runs `sql` on the outbox through a connection of the test's own.
  void exec(const std::string& sql) const {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(outbox_path().c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql;
    sqlite3_close(db);
  }
};

TEST_F(DeliveryTest, AnEventReportedThreeTimesIsBilledOnce) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  for (int copy = 0; copy < 3; ++copy) {
    for (int i = 0; i < 10; ++i)
      logger->log_success_event(for_customer("call-" + std::to_string(i), 7));
  }
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 70);
  const auto stats = logger->stats();
  EXPECT_EQ(stats.accepted, 10u);
  EXPECT_EQ(stats.deduplicated, 20u);
}

TEST_F(DeliveryTest, ADuplicateAfterARestartIsStillBilledOnce) {
  const std::string item = add_customer("alice");
  {
    auto logger = make_logger(config());
    logger->log_success_event(for_customer("call-1", 9));
    ASSERT_TRUE(logger->shutdown(in_seconds(10)));
  }
  auto logger = make_logger(config());
  logger->log_success_event(for_customer("call-1", 9));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 9);
  EXPECT_EQ(logger->stats().deduplicated, 1u);
}

TEST_F(DeliveryTest, UsageLeftByAStoppedProcessIsSentByTheNextStart) {
  const std::string item = add_customer("alice");
  {
    auto logger = make_logger(config());
    emulator_.inject(Fault{FaultKind::kHang, 0, "/v1/", std::chrono::seconds(30)}, 1000);
    logger->log_success_event(for_customer("call-1", 5));
    logger->log_success_event(for_customer("call-2", 6));
    EXPECT_FALSE(
        logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(300)));
    emulator_.clear_faults();
    emulator_.release_hangs();
  }
  EXPECT_EQ(count_rows("state IN (0, 1)"), 2);
  auto logger = make_logger(config());
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 11);
}

TEST_F(DeliveryTest, ABatchResentAfterARestartUsesItsFirstIdempotencyKey) {
  const std::string item = add_customer("alice");
  {
    auto logger = make_logger(config());
    // Stripe records the usage but the answer is lost, then the process stops.
    emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 0, "/v1/subscription_items", {}});
    emulator_.inject(Fault{FaultKind::kCloseConnection, 0, "/v1/subscription_items", {}}, 1000);
    logger->log_success_event(for_customer("call-1", 5));
    EXPECT_FALSE(
        logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(1500)));
    emulator_.clear_faults();
  }
  auto logger = make_logger(config());
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 5);
  EXPECT_EQ(emulator_.usage_records(item).size(), 1u);
  std::set<std::string> keys;
  for (const auto& request : emulator_.requests()) {
    if (request.method == "POST") keys.insert(request.headers.at("idempotency-key"));
  }
  EXPECT_EQ(keys.size(), 1u);
}

TEST_F(DeliveryTest, EventsOfAnItemWithinTheWindowGoOutAsOneRecord) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.aggregation_window_ms = "60000";
  auto logger = make_logger(config);
  const auto base = std::chrono::system_clock::now() - std::chrono::seconds(30);
  for (int i = 0; i < 10; ++i) {
    UsageEvent e = for_customer("call-" + std::to_string(i), 10 + i);
    e.end_time = base + std::chrono::seconds(i);
    logger->log_success_event(e);
  }
  ASSERT_TRUE(logger->flush(in_seconds(10)));  // flush sends without waiting out the window
  const auto records = emulator_.usage_records(item);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].quantity, 145);
  EXPECT_EQ(records[0].timestamp, std::chrono::duration_cast<std::chrono::seconds>(
                                      (base + std::chrono::seconds(9)).time_since_epoch())
                                      .count());
  EXPECT_EQ(logger->stats().delivered, 10u);
  EXPECT_EQ(logger->stats().delivered_requests, 1u);
}

TEST_F(DeliveryTest, AWindowOfZeroSendsOneRecordPerEvent) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  for (int i = 0; i < 4; ++i)
    logger->log_success_event(for_customer("call-" + std::to_string(i), 3));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.usage_records(item).size(), 4u);
}

TEST_F(DeliveryTest, ARecordNeverMixesTwoBillingPeriods) {
  const std::string customer = emulator_.create_customer({{"litellm_customer_id", "alice"}});
  const auto now = std::chrono::system_clock::now();
  const auto now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  const std::string item =
      emulator_.create_subscription(customer, price_, now_s - 3600, now_s + 86400).item_id;
  Config config = this->config();
  config.aggregation_window_ms = "60000";
  auto logger = make_logger(config);
  UsageEvent previous = for_customer("previous-period", 100);
  previous.end_time = now - std::chrono::hours(2);
  UsageEvent current = for_customer("current-period", 7);
  current.end_time = now - std::chrono::minutes(1);
  logger->log_success_event(previous);
  logger->log_success_event(current);
  logger->flush(in_seconds(10));
  // The current period's record is billed alone; the previous period's is Stripe's to refuse.
  EXPECT_EQ(emulator_.total_usage(item), 7);
  std::size_t posts = 0;
  for (const auto& request : emulator_.requests()) {
    if (request.method != "POST") continue;
    ++posts;
    EXPECT_TRUE(request.body.rfind("quantity=7&", 0) == 0 ||
                request.body.rfind("quantity=100&", 0) == 0)
        << request.body;
  }
  EXPECT_EQ(posts, 2u);
  EXPECT_EQ(logger->stats().dead, 1u);
}

TEST_F(DeliveryTest, AnOutageLosesNothingAndBillsEverythingOnceWhenStripeReturns) {
  const std::string alice = add_customer("alice");
  const std::string bob = add_customer("bob");
  Config config = this->config();
  config.max_backoff_s = "1";
  auto logger = make_logger(config);
  // Stripe is unreachable: every connection is dropped, lookups included.
  emulator_.inject(Fault{FaultKind::kCloseConnection, 0, "/v1/", {}}, 1'000'000);
  for (int i = 0; i < 30; ++i) {
    logger->log_success_event(
        for_customer("call-" + std::to_string(i), 2, i % 2 ? "alice" : "bob"));
  }
  EXPECT_FALSE(logger->flush(std::chrono::steady_clock::now() + std::chrono::seconds(1)));
  EXPECT_EQ(logger->stats().pending, 30u);
  EXPECT_EQ(emulator_.total_usage(alice) + emulator_.total_usage(bob), 0);
  emulator_.clear_faults();
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(alice), 30);
  EXPECT_EQ(emulator_.total_usage(bob), 30);
  EXPECT_EQ(logger->stats().delivered, 30u);
}

// Clocks the test moves by hand: the wall clock (event times, retry times) and the monotonic one
// (ages within a run), together or one alone, as a clock jump would.
class MovableClock : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now() + wall_.load(); }
  std::chrono::steady_clock::time_point steady_now() const override {
    return std::chrono::steady_clock::now() + steady_.load();
  }
  void advance(std::chrono::seconds by) {
    wall_ = wall_.load() + by;
    steady_ = steady_.load() + by;
  }
  void jump_wall(std::chrono::seconds by) { wall_ = wall_.load() + by; }
  void advance_steady(std::chrono::seconds by) { steady_ = steady_.load() + by; }

 private:
  std::atomic<std::chrono::seconds> wall_{std::chrono::seconds(0)};
  std::atomic<std::chrono::seconds> steady_{std::chrono::seconds(0)};
};

class DeliveryAgeTest : public DeliveryTest {
 protected:
  // A logger whose batch of one event has failed at least once (Stripe answers 500).
  std::unique_ptr<StripeLogger> failing_logger() {
    Config config = this->config();
    config.max_delivery_age_s = "60";
    auto made = make_stripe_logger(config, {nullptr, nullptr, clock_, {}});
    EXPECT_TRUE(made) << made.error().to_string();
    emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/subscription_items", {}}, 1'000'000);
    made.value()->log_success_event(for_customer("call-1", 5));
    EXPECT_TRUE(testing::eventually([&] { return made.value()->stats().retries >= 1; },
                                    std::chrono::seconds(10)));
    EXPECT_EQ(made.value()->stats().dead, 0u);
    return std::move(made.value());
  }
  std::shared_ptr<MovableClock> clock_ = std::make_shared<MovableClock>();
};

TEST_F(DeliveryAgeTest, ABatchStillFailingAfterTheMaximumAgeIsDeadNotRetriedForever) {
  const std::string item = add_customer("alice");
  auto logger = failing_logger();
  clock_->advance(std::chrono::minutes(2));  // past the age, and past any backoff
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.dead, 1u);
  EXPECT_EQ(stats.rejected.at("max_delivery_age_exceeded"), 1u);
  EXPECT_EQ(emulator_.total_usage(item), 0);
}

TEST_F(DeliveryAgeTest, AForwardJumpOfTheWallClockDoesNotKillAFreshBatch) {
  const std::string item = add_customer("alice");
  auto logger = failing_logger();
  clock_->jump_wall(std::chrono::hours(23));  // NTP, a suspended VM: no time has passed
  emulator_.clear_faults();
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(logger->stats().dead, 0u);
  EXPECT_EQ(emulator_.total_usage(item), 5);
}

TEST_F(DeliveryAgeTest, ABackwardJumpOfTheWallClockDoesNotDefeatTheAgeGuard) {
  const std::string item = add_customer("alice");
  auto logger = failing_logger();
  clock_->jump_wall(-std::chrono::hours(2));
  clock_->advance_steady(std::chrono::minutes(2));  // while two minutes really pass
  ASSERT_TRUE(
      testing::eventually([&] { return logger->stats().dead == 1; }, std::chrono::seconds(20)));
  EXPECT_EQ(logger->stats().rejected.at("max_delivery_age_exceeded"), 1u);
  EXPECT_EQ(emulator_.total_usage(item), 0);
}

TEST_F(DeliveryTest, AThrottling429LowersTheSharedRate) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.rate_limit = "40";
  auto logger = make_logger(config);
  emulator_.inject(Fault{FaultKind::kStatus, 429, "/v1/subscription_items", {}});
  logger->log_success_event(for_customer("call-1", 3));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 3);
  const auto stats = logger->stats();
  EXPECT_EQ(stats.rate_limit_decreases, 1u);
  EXPECT_LT(stats.rate_limit, 40.0);
  EXPECT_GE(stats.rate_limit, 4.0) << "never below a tenth of the configured rate";
}

TEST_F(DeliveryTest, ALockTimeout429RetriesItsBatchAndSlowsNobody) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.rate_limit = "40";
  auto logger = make_logger(config);
  Fault lock{FaultKind::kStatus, 429, "/v1/subscription_items", {}};
  lock.code = stripe_emulator::TooManyRequestsCode::kLockTimeout;
  emulator_.inject(lock, 2);
  logger->log_success_event(for_customer("call-1", 3));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 3);
  const auto stats = logger->stats();
  EXPECT_EQ(stats.rate_limit_decreases, 0u);
  EXPECT_DOUBLE_EQ(stats.rate_limit, 40.0);
  EXPECT_EQ(stats.retries, 2u);
}

TEST_F(DeliveryTest, StripesRetryAfterIsWaitedOut) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  Fault lock{FaultKind::kStatus, 429, "/v1/subscription_items", {}};
  lock.code = stripe_emulator::TooManyRequestsCode::kLockTimeout;
  lock.retry_after = std::chrono::seconds(2);
  emulator_.inject(lock);
  logger->log_success_event(for_customer("call-1", 3));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 3);
  std::vector<std::chrono::steady_clock::time_point> posts;
  for (const auto& request : emulator_.requests()) {
    if (request.path.rfind("/v1/subscription_items/", 0) == 0) posts.push_back(request.received_at);
  }
  ASSERT_EQ(posts.size(), 2u);
  EXPECT_GE(posts[1] - posts[0], std::chrono::milliseconds(1900))
      << "the backoff alone would be 0.25-0.5 s";
}

TEST_F(DeliveryTest, InSyncModeTheCallReturnsOnceTheEventIsCommitted) {
  add_customer("alice");
  Config config = this->config();
  config.durability = "sync";
  auto logger = make_logger(config);
  emulator_.inject(Fault{FaultKind::kHang, 0, "/v1/", std::chrono::seconds(30)}, 1000);
  for (int i = 0; i < 5; ++i) {
    logger->log_success_event(for_customer("call-" + std::to_string(i), 3));
    EXPECT_TRUE(durable("call-" + std::to_string(i))) << i;
  }
  emulator_.clear_faults();
  emulator_.release_hangs();
}

TEST_F(DeliveryTest, AnUnwritableOutboxCountsLostEventsAndKeepsServing) {
  add_customer("alice");
  auto logger = make_logger(config());
  logger->log_success_event(for_customer("before", 3));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  // From now on the process may not grow any file: the outbox's writes fail as on a full disk.
  signal(SIGXFSZ, SIG_IGN);
  rlimit original{};
  getrlimit(RLIMIT_FSIZE, &original);
  rlimit tiny = original;
  tiny.rlim_cur = 0;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &tiny), 0);
  for (int i = 0; i < 2000; ++i) {
    logger->log_success_event(for_customer("during-" + std::to_string(i), 3));
  }
  logger->flush(in_seconds(5));
  setrlimit(RLIMIT_FSIZE, &original);
  const auto stats = logger->stats();
  EXPECT_GT(stats.lost, 0u);
  EXPECT_EQ(stats.lost + stats.accepted, 2001u);
  EXPECT_EQ(stats.rejected.at("outbox_unwritable"), stats.lost);
  logger->log_success_event(for_customer("after", 3));
  EXPECT_TRUE(logger->flush(in_seconds(10)));
}

TEST_F(DeliveryTest, ASuccessTheOutboxCannotRecordIsNotSentAgain) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  // The outbox refuses to mark any batch delivered, as a full disk would.
  exec(
      "CREATE TRIGGER full_disk BEFORE UPDATE OF state ON batches WHEN NEW.state = 2 "
      "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;");
  logger->log_success_event(for_customer("call-1", 5));
  // Written again every planning round, about once a second: three failures take a few rounds.
  ASSERT_TRUE(testing::eventually(
      [&] {
        const auto rejected = logger->stats().rejected;
        const auto it = rejected.find("outcome_unrecorded");
        return it != rejected.end() && it->second >= 3;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(usage_posts(), 1u) << "Stripe's answer is known: the batch is never sent again";
  EXPECT_EQ(logger->stats().delivered, 1u) << "and counted once";
  EXPECT_FALSE(logger->flush(std::chrono::steady_clock::now() + std::chrono::milliseconds(10)))
      << "not drained while the outcome is only in memory";
  exec("DROP TRIGGER full_disk;");
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(count_rows("state = 2"), 1);
  EXPECT_EQ(usage_posts(), 1u);
  EXPECT_EQ(emulator_.total_usage(item), 5);
  EXPECT_EQ(logger->stats().delivered, 1u);
}

TEST_F(DeliveryTest, DeletingTheOutboxFileWhileRunningLosesNothing) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.durability = "sync";
  {
    auto logger = make_logger(config);
    emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/subscription_items", {}}, 1'000'000);
    for (int i = 0; i < 3; ++i)
      logger->log_success_event(for_customer("before-" + std::to_string(i), 2));
    ASSERT_TRUE(std::filesystem::remove(outbox_path()));
    ASSERT_TRUE(
        testing::eventually([&] { return logger->stats().rejected.count("outbox_recreated") == 1; },
                            std::chrono::seconds(10)));
    for (int i = 0; i < 3; ++i)
      logger->log_success_event(for_customer("after-" + std::to_string(i), 2));
    logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
  }
  emulator_.clear_faults();
  ASSERT_TRUE(std::filesystem::exists(outbox_path()));
  auto logger = make_logger(config);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 12) << "every sync-committed event, before and after";
}

TEST_F(DeliveryTest, AWronglyShapedLookupAnswerForOneCustomerHoldsUpNobodyElse) {
  std::string broken_customer;
  add_customer("broken", &broken_customer);
  const std::string alice = add_customer("alice");
  auto transport = std::make_shared<testing::ReshapingTransport>(
      "customer=" + broken_customer, R"({"object":"list","data":[{"items":"not a list"}]})");
  auto made = make_stripe_logger(config(), {transport, nullptr, nullptr, {}});
  ASSERT_TRUE(made);
  auto& logger = *made;
  logger->log_success_event(for_customer("call-broken", 4, "broken"));
  logger->log_success_event(for_customer("call-alice", 6, "alice"));
  ASSERT_TRUE(testing::eventually([&] { return emulator_.total_usage(alice) == 6; },
                                  std::chrono::seconds(20)));
  // Stripe has it; the library records the answer a moment later (counted first, then stored).
  EXPECT_TRUE(testing::eventually(
      [&] {
        const auto stats = logger->stats();
        return stats.delivered == 1 && stats.pending == 1;
      },
      std::chrono::seconds(10)))
      << "the other customer's row waits, retried";
  const auto stats = logger->stats();
  EXPECT_GE(stats.lookup_failures, 1u);
  EXPECT_EQ(stats.dead, 0u);
  logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
}

TEST_F(DeliveryTest, ABurstOfNewCustomersWhoseLookupsHangHoldsUpNobodyKnown) {
  const std::string alice = add_customer("alice");
  auto logger = make_logger(config());
  logger->log_success_event(for_customer("call-1", 3, "alice"));
  ASSERT_TRUE(logger->flush(in_seconds(10)));  // alice is looked up and cached
  emulator_.inject(Fault{FaultKind::kHang, 0, "/v1/customers/search", std::chrono::seconds(20)},
                   100);
  for (int i = 0; i < 20; ++i) {
    logger->log_success_event(
        for_customer("new-" + std::to_string(i), 1, "new-" + std::to_string(i)));
  }
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, std::chrono::seconds(10)));
  // The lookup thread is stuck on a search; planning and sending are not.
  logger->log_success_event(for_customer("call-2", 4, "alice"));
  EXPECT_TRUE(testing::eventually([&] { return emulator_.total_usage(alice) == 7; },
                                  std::chrono::seconds(10)));
  emulator_.clear_faults();
  emulator_.release_hangs();
}

}  // namespace
}  // namespace stripe_billing
