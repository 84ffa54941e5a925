// The "stripe" success callback end to end: events in, usage records at the emulator out.
#include "stripe_billing/stripe_logger.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <future>
#include <limits>
#include <set>
#include <thread>

#include "stripe_billing/callback.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using testing::CapturedLog;
using testing::EmulatorTest;
using testing::in_seconds;

class StripeLoggerTest : public EmulatorTest {
 protected:
  // Another connection holds the outbox's write lock while `logger` gets `events` calls and is shut
  // down with a 300 ms deadline (the writer alone would wait 5 s per attempt). True when shutdown
  // returned within 3 s, with the lock still held.
  static bool shutdown_keeps_its_deadline_while_locked(StripeLogger& logger,
                                                       const std::string& outbox, int events) {
    sqlite3* other = nullptr;
    // The logger's engine may be writing right now (its start-up housekeeping): wait for the
    // lock instead of failing at once.
    if (sqlite3_open(outbox.c_str(), &other) != SQLITE_OK ||
        sqlite3_busy_timeout(other, 5000) != SQLITE_OK ||
        sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      sqlite3_close(other);
      return false;
    }
    for (int i = 0; i < events; ++i) {
      logger.log_success_event(for_customer("call-" + std::to_string(i), 1));
    }
    auto stopped = std::async(std::launch::async, [&] {
      logger.shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(300));
    });
    const bool returned = stopped.wait_for(std::chrono::seconds(3)) == std::future_status::ready;
    sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(other);
    stopped.wait();
    return returned;
  }
};

TEST_F(StripeLoggerTest, BillsTheEndUserToTheCustomerFoundByMetadata) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 42);
  e.request_user = "alice";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 42);
  EXPECT_EQ(logger->stats().delivered, 1u);
}

struct ChargeByCase {
  const char* charge_by;
  void (*set)(UsageEvent&, const std::string&);
};

class ChargeByTest : public StripeLoggerTest, public ::testing::WithParamInterface<ChargeByCase> {};

TEST_P(ChargeByTest, BillsTheCustomerTheStrategyNames) {
  const std::string billed = add_customer("chosen");
  const std::string other = add_customer("other");
  Config config = this->config();
  config.charge_by = GetParam().charge_by;
  auto logger = make_logger(config);
  UsageEvent e = event("call-1", 7);
  e.request_user = e.end_user_id = e.user_id = e.team_id = "other";
  GetParam().set(e, "chosen");
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(billed), 7);
  EXPECT_EQ(emulator_.total_usage(other), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, ChargeByTest,
    ::testing::Values(
        ChargeByCase{"end_user_id", [](UsageEvent& e, const std::string& v) { e.end_user_id = v; }},
        ChargeByCase{"user_id", [](UsageEvent& e, const std::string& v) { e.user_id = v; }},
        ChargeByCase{"team_id", [](UsageEvent& e, const std::string& v) { e.team_id = v; }}),
    [](const auto& info) { return std::string(info.param.charge_by); });

TEST_F(StripeLoggerTest, EndUserIdFallsBackToTheRequestBodyUser) {
  const std::string item = add_customer("body-user");
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 5);
  e.request_user = "body-user";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 5);
}

TEST_F(StripeLoggerTest, RecordsSmallMediumAndLargeTokenCountsExactly) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  std::int64_t expected = 0;
  int call = 0;
  for (std::int64_t tokens : {1, 3, 10, 100, 512, 1000, 10'000, 250'000, 9'999'999}) {
    UsageEvent e = event("call-" + std::to_string(++call), tokens);
    e.request_user = "alice";
    logger->log_success_event(e);
    expected += tokens;
  }
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), expected);
  EXPECT_EQ(logger->stats().quantity_delivered, static_cast<std::uint64_t>(expected));
}

TEST_F(StripeLoggerTest, SendsOnlyQuantityTimestampAndActionToTheUsageRecordEndpoint) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 9);
  e.request_user = "alice";
  e.metadata["note"] = "kept out of the request";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  bool seen = false;
  for (const auto& request : emulator_.requests()) {
    if (request.method != "POST") continue;
    seen = true;
    EXPECT_EQ(request.path, "/v1/subscription_items/" + item + "/usage_records");
    const auto timestamp =
        std::chrono::duration_cast<std::chrono::seconds>(e.end_time->time_since_epoch()).count();
    EXPECT_EQ(request.body,
              "quantity=9&timestamp=" + std::to_string(timestamp) + "&action=increment");
    EXPECT_EQ(request.headers.at("stripe-version"), "2025-02-24.acacia");
    EXPECT_FALSE(request.headers.at("idempotency-key").empty());
    EXPECT_EQ(request.status, 200);
  }
  EXPECT_TRUE(seen);
}

TEST_F(StripeLoggerTest, CountsAnEventWithNoCustomerAsMissingCustomer) {
  CapturedLog log;
  auto logger = make_logger(config(), log.logger());
  logger->log_success_event(event("call-1", 10));  // no user of any kind
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(logger->stats().rejected["missing_customer"], 1u);
  EXPECT_EQ(logger->stats().parked, 1u);
  EXPECT_EQ(count_requests("POST", "/v1/"), 0u);
  EXPECT_NE(log.text().find("reason=missing_customer call_id=call-1"), std::string::npos);
}

TEST_F(StripeLoggerTest, CountsAnEventWithMissingTeamMetadataAsMissingCustomer) {
  add_customer("alice");
  Config config = this->config();
  config.charge_by = "team_id";
  auto logger = make_logger(config);
  UsageEvent e = event("call-1", 10);
  e.user_id = "alice";  // a user but no team
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(logger->stats().rejected["missing_customer"], 1u);
}

TEST_F(StripeLoggerTest, CountsACustomerStripeDoesNotKnow) {
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 10);
  e.request_user = "nobody";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(logger->stats().rejected["customer_not_found"], 1u);
  EXPECT_EQ(logger->stats().parked, 1u);
  EXPECT_EQ(count_requests("POST", "/v1/"), 0u);
}

TEST_F(StripeLoggerTest, CountsACustomerWithoutASubscriptionOnThePrice) {
  emulator_.create_customer({{"litellm_customer_id", "unsubscribed"}});
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 10);
  e.request_user = "unsubscribed";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(logger->stats().rejected["subscription_item_not_found"], 1u);
}

TEST_F(StripeLoggerTest, SkipsZeroAndRejectsNegativeMissingAndAbsurdQuantities) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  auto send = [&](const std::string& id, std::optional<std::int64_t> total) {
    UsageEvent e = event(id, 1);
    e.total_tokens = total;
    e.prompt_tokens.reset();
    e.completion_tokens.reset();
    e.request_user = "alice";
    logger->log_success_event(e);
  };
  send("zero", 0);
  send("negative", -5);
  send("missing", std::nullopt);
  send("absurd", 10'000'001);
  send("fine", 3);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  auto stats = logger->stats();
  EXPECT_EQ(stats.skipped_zero, 1u);
  EXPECT_EQ(stats.rejected["negative_quantity"], 1u);
  EXPECT_EQ(stats.rejected["missing_usage"], 1u);
  EXPECT_EQ(stats.rejected["quantity_too_large"], 1u);
  EXPECT_EQ(emulator_.total_usage(item), 3);
}

TEST_F(StripeLoggerTest, ARefusedKeyPausesSendingAndIsNeverLogged) {
  add_customer("alice");
  CapturedLog log;
  Config config = this->config();
  config.api_key = "sk_test_wrong_wrong_wrong_wrongwxyz";
  config.customer_map = "alice=si_fixed";  // no lookup: the usage record itself meets the 401
  auto logger = make_logger(config, log.logger());
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_success_event(e);
  EXPECT_FALSE(logger->flush(std::chrono::steady_clock::now() + std::chrono::milliseconds(500)));
  const auto stats = logger->stats();
  EXPECT_TRUE(stats.paused);
  EXPECT_EQ(stats.pending, 1u);
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(log.text().find("sk_test_wrong_wrong_wrong_wrongwxyz"), std::string::npos);
  EXPECT_NE(log.text().find("sk_test_…wxyz"), std::string::npos) << log.text();
  EXPECT_FALSE(logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
}

TEST_F(StripeLoggerTest, SendingResumesByItselfOnceTheKeyWorksAgain) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.auth_probe_s = "1";
  config.customer_map = "alice=" + item;
  auto logger = make_logger(config);
  // Stripe refuses the key for the first request and the first probe, then accepts it.
  emulator_.inject(Fault{FaultKind::kStatus, 401, "/v1/", {}}, 2);
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(15)));
  EXPECT_EQ(emulator_.total_usage(item), 10);
  EXPECT_FALSE(logger->stats().paused);
}

TEST_F(StripeLoggerTest, AnUnreachableStripeKeepsTheEventAndRetries) {
  Config config = this->config();
  const int port = emulator_.port();
  emulator_.stop();  // nothing listens there any more
  config.api_base = "http://127.0.0.1:" + std::to_string(port);
  config.customer_map = "alice=si_fixed";
  auto logger = make_logger(config);
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_success_event(e);
  EXPECT_FALSE(logger->flush(std::chrono::steady_clock::now() + std::chrono::milliseconds(1500)));
  auto stats = logger->stats();
  EXPECT_GE(stats.retries, 1u);
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(stats.pending, 1u);
  EXPECT_FALSE(logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
}

TEST_F(StripeLoggerTest, AHangPastTheTimeoutIsRetriedAndBilledOnce) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.timeout_ms = "300";
  config.connect_timeout_ms = "300";
  auto logger = make_logger(config);
  // The held request keeps its idempotency key busy (409 to the retries) until it completes.
  emulator_.inject(Fault{FaultKind::kHang, 0, "/v1/subscription_items", std::chrono::seconds(1)});
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  emulator_.release_hangs();
  EXPECT_EQ(emulator_.total_usage(item), 10);
  EXPECT_GE(logger->stats().retries, 1u);
}

TEST_F(StripeLoggerTest, RetriesA500WithTheSameIdempotencyKey) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/subscription_items", {}}, 2);
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 10);
  std::set<std::string> keys;
  std::size_t posts = 0;
  for (const auto& request : emulator_.requests()) {
    if (request.method == "POST") {
      ++posts;
      keys.insert(request.headers.at("idempotency-key"));
    }
  }
  EXPECT_EQ(posts, 3u);
  EXPECT_EQ(keys.size(), 1u);
}

TEST_F(StripeLoggerTest, ALostAnswerAfterStripeRecordedIsNotBilledTwice) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 0, "/v1/subscription_items", {}});
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 10);
  EXPECT_EQ(emulator_.usage_records(item).size(), 1u);
  EXPECT_EQ(logger->stats().delivered, 1u);
}

TEST_F(StripeLoggerTest, ARejectedTimestampIsCountedWithStripesReason) {
  const std::string customer = emulator_.create_customer({{"litellm_customer_id", "alice"}});
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  emulator_.create_subscription(customer, price_, now - 3600, now + 86400);
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  e.end_time = std::chrono::system_clock::now() - std::chrono::hours(48);  // before the period
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.dead, 1u);
  EXPECT_EQ(stats.rejected.count("stripe_parameter_invalid") + stats.rejected.count("stripe_400"),
            1u);
}

TEST_F(StripeLoggerTest, LooksTheItemUpAgainAfterStripeSaysItIsGone) {
  std::string customer;
  const std::string old_item = add_customer("alice", &customer);
  CapturedLog log;
  auto logger = make_logger(config(), log.logger());
  UsageEvent first = event("call-1", 10);
  first.request_user = "alice";
  logger->log_success_event(first);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  emulator_.delete_subscription_item(old_item);
  const std::string new_item = emulator_.create_subscription(customer, price_).item_id;
  UsageEvent second = event("call-2", 20);
  second.request_user = "alice";
  logger->log_success_event(second);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(new_item), 20);
  EXPECT_EQ(logger->stats().delivered, 2u) << log.text();
}

TEST_F(StripeLoggerTest, CachesTheLookupBetweenEvents) {
  add_customer("alice");
  auto logger = make_logger(config());
  for (int i = 0; i < 5; ++i) {
    UsageEvent e = event("call-" + std::to_string(i), 10);
    e.request_user = "alice";
    logger->log_success_event(e);
  }
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(count_requests("GET", "/v1/customers/search"), 1u);
  EXPECT_EQ(count_requests("GET", "/v1/subscriptions"), 1u);
}

TEST_F(StripeLoggerTest, StaticMappingToAnItemSkipsEveryLookup) {
  const std::string item = add_customer("someone");
  Config config = this->config();
  config.customer_map = "alice=" + item;
  auto logger = make_logger(config);
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 10);
  EXPECT_EQ(count_requests("GET", "/v1/"), 0u);
}

TEST_F(StripeLoggerTest, ACustomerIdIsUsedWithoutSearching) {
  std::string customer;
  const std::string item = add_customer("ignored", &customer);
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 10);
  e.end_user_id = customer;  // bound to the API key by the gateway: trusted as a customer id
  logger->log_success_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 10);
  EXPECT_EQ(count_requests("GET", "/v1/customers/search"), 0u);
}

TEST_F(StripeLoggerTest, TheHostsCallReturnsWhileStripeHangs) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  emulator_.inject(Fault{FaultKind::kHang, 0, "/v1/", std::chrono::seconds(30)}, 1000);
  UsageEvent first = event("call-0", 1);
  first.request_user = "alice";
  logger->log_success_event(first);
  // The worker is now stuck in a request the emulator holds; the host's calls still return.
  for (int i = 1; i <= 200; ++i) {
    UsageEvent e = event("call-" + std::to_string(i), 1);
    e.request_user = "alice";
    logger->log_success_event(e);
  }
  EXPECT_EQ(logger->stats().received, 201u);
  emulator_.clear_faults();
  emulator_.release_hangs();
  ASSERT_TRUE(logger->flush(in_seconds(30)));
  EXPECT_EQ(emulator_.total_usage(item), 201);
}

TEST_F(StripeLoggerTest, ShutdownKeepsItsDeadlineWhileStripeHangs) {
  add_customer("alice");
  auto logger = make_logger(config());
  emulator_.inject(Fault{FaultKind::kHang, 0, "/v1/", std::chrono::seconds(30)}, 1000);
  UsageEvent e = event("call-1", 1);
  e.request_user = "alice";
  logger->log_success_event(e);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_FALSE(logger->shutdown(std::chrono::steady_clock::now() + std::chrono::milliseconds(300)));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  logger->log_success_event(e);
  EXPECT_EQ(logger->stats().dropped_shutdown, 1u);
  EXPECT_EQ(logger->stats().pending, 1u);  // kept in the outbox for the next start
  emulator_.release_hangs();
}

TEST_F(StripeLoggerTest, AFullMemoryBufferCountsWhatItCouldNotTake) {
  add_customer("alice");
  Config config = this->config();
  config.durability = "async";  // a sync caller waits for its commit: it never fills the buffer
  config.queue_capacity = "5";
  config.commit_interval_ms = "10000";  // the writer waits: the buffer fills
  auto logger = make_logger(config);
  for (int i = 0; i < 20; ++i) {
    UsageEvent e = event("call-" + std::to_string(i), 1);
    e.request_user = "alice";
    logger->log_success_event(e);
  }
  const auto stats = logger->stats();
  EXPECT_EQ(stats.received, 20u);
  EXPECT_EQ(stats.lost, 15u);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(logger->stats().delivered, 5u);
}

TEST_F(StripeLoggerTest, ABurstLargerThanOneCommitGroupIsBilledInFull) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.durability = "async";
  config.commit_interval_ms = "10000";   // only a full group or the flush wakes the writer
  config.aggregation_window_ms = "500";  // a few usage records, not one per call
  auto logger = make_logger(config);
  const int calls = 3 * 8192 + 5;  // three hand-off chunks and a bit: groups span chunks
  for (int i = 0; i < calls; ++i) {
    UsageEvent e = event("burst-" + std::to_string(i), 3);
    e.request_user = "alice";
    logger->log_success_event(e);
  }
  ASSERT_TRUE(logger->flush(in_seconds(60)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.accepted, static_cast<std::uint64_t>(calls));
  EXPECT_EQ(stats.lost, 0u);
  EXPECT_EQ(emulator_.total_usage(item), 3 * calls);
}

TEST_F(StripeLoggerTest, ManyHostThreadsCanReportAtOnce) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        UsageEvent e = event("t" + std::to_string(t) + "-" + std::to_string(i), 2);
        e.request_user = "alice";
        logger->log_success_event(e);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_TRUE(logger->flush(in_seconds(30)));
  EXPECT_EQ(emulator_.total_usage(item), 200);
}

TEST_F(StripeLoggerTest, PendingNeverCountsAnEventTwiceWhileItIsCommitted) {
  // stats() from another thread, as a /metrics scrape, while every call is its own commit (sync,
  // one host thread): pending is never more than the calls made so far.
  add_customer("alice");
  auto logger = make_logger(config());
  std::atomic<std::uint64_t> started{0};
  std::atomic<bool> logging{true};
  std::atomic<std::uint64_t> reads{0}, over{0}, worst{0};
  std::thread scraper([&] {
    while (logging.load()) {
      const std::uint64_t pending = logger->stats().pending;
      const std::uint64_t made = started.load();  // read after: every event counted had started
      ++reads;
      if (pending > made) {
        ++over;
        worst = std::max(worst.load(), pending - made);
      }
    }
  });
  for (int i = 0; i < 2000; ++i) {
    ++started;
    UsageEvent e = event("call-" + std::to_string(i), 1);
    e.request_user = "alice";
    logger->log_success_event(e);
  }
  logging = false;
  scraper.join();
  EXPECT_GT(reads.load(), 0u);
  EXPECT_EQ(over.load(), 0u) << "of " << reads.load() << " reads; at worst " << worst.load()
                             << " more than the calls made";
  ASSERT_TRUE(logger->flush(in_seconds(30)));
}

TEST_F(StripeLoggerTest, WaitUntilDeliveredIsFalseWhileStripeRefusesAndTrueOnceItHasEverything) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.max_backoff_s = "1";
  auto logger = make_logger(config);
  stripe_emulator::Fault unavailable;
  unavailable.status = 503;
  unavailable.path_prefix = "/v1/subscription_items/";
  emulator_.inject(unavailable, 1'000'000);
  for (int i = 0; i < 3; ++i) {
    UsageEvent e = event("call-" + std::to_string(i), 4);
    e.request_user = "alice";
    logger->log_success_event(e);
  }
  EXPECT_FALSE(logger->wait_until_delivered(std::chrono::steady_clock::now() +
                                            std::chrono::milliseconds(1000)));
  EXPECT_EQ(logger->stats().pending, 3u);
  emulator_.clear_faults();
  EXPECT_TRUE(logger->wait_until_delivered(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 12);
  EXPECT_EQ(logger->stats().pending, 0u);
  // After shutdown it only looks: nothing is outstanding.
  ASSERT_TRUE(logger->shutdown(in_seconds(10)));
  EXPECT_TRUE(logger->wait_until_delivered(in_seconds(1)));
}

TEST_F(StripeLoggerTest, HostileValuesNeverChangeThePathOrTheParameters) {
  const std::vector<std::string> billable = {
      "a&quantity=999", "x=y", "a/b", "../../v1/customers", "100%", "two words", "it's"};
  const std::vector<std::string> unbillable = {std::string("caf\xff\xfe"),
                                               std::string(1 << 20, 'z')};
  std::map<std::string, std::string> items;
  for (const auto& value : billable) items[value] = add_customer(value);
  CapturedLog log;
  auto logger = make_logger(config(), log.logger());
  int call = 0;
  for (const auto& value : billable) {
    UsageEvent e = event("call-" + std::to_string(++call) + "&x=" + value, 11);
    e.request_user = value;
    e.model = value + "\r\nX-Injected: 1";
    e.metadata[value] = value;
    logger->log_success_event(e);
  }
  for (const auto& value : unbillable) {
    UsageEvent e = event(value, 11);
    e.request_user = value;
    logger->log_success_event(e);
  }
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  for (const auto& value : billable) EXPECT_EQ(emulator_.total_usage(items[value]), 11) << value;
  EXPECT_EQ(logger->stats().rejected["invalid_customer_key"], 2u);
  for (const auto& request : emulator_.requests()) {
    if (request.method == "POST") {
      EXPECT_EQ(request.path.rfind("/v1/subscription_items/si_", 0), 0u) << request.path;
      EXPECT_EQ(request.body.find("quantity=11&timestamp="), 0u) << request.body;
      EXPECT_EQ(std::count(request.body.begin(), request.body.end(), '&'), 2);
    } else {
      EXPECT_TRUE(request.path == "/v1/customers/search" || request.path == "/v1/subscriptions")
          << request.path;
    }
  }
  const std::string text = log.text();
  EXPECT_EQ(text.find("X-Injected: 1\n"), std::string::npos);
  EXPECT_LT(text.size(), 200'000u);  // the 1 MB key is truncated in the log
}

TEST_F(StripeLoggerTest, FailureEventsAreCountedAndNeverBilled) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  logger->log_failure_event(e);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(logger->stats().failure_events, 1u);
  EXPECT_EQ(emulator_.total_usage(item), 0);
}

TEST_F(StripeLoggerTest, TheRegistryBuildsTheStripeCallbackByName) {
  const std::string item = add_customer("alice");
  auto registry = CallbackRegistry::with_builtin_callbacks();
  ASSERT_TRUE(registry.contains("stripe"));
  auto callback = registry.create("stripe", CallbackContext{config(), nullptr, nullptr});
  ASSERT_TRUE(callback) << callback.error().to_string();
  UsageEvent e = event("call-1", 10);
  e.request_user = "alice";
  (*callback)->log_success_event(e);
  ASSERT_TRUE((*callback)->shutdown(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 10);
}

TEST(CallbackRegistry, AnUnknownNameListsTheKnownOnes) {
  auto registry = CallbackRegistry::with_builtin_callbacks();
  auto callback = registry.create("lago", CallbackContext{});
  ASSERT_FALSE(callback);
  EXPECT_EQ(callback.error().code, ErrorCode::kInvalidConfig);
  EXPECT_NE(callback.error().message.find("stripe"), std::string::npos);
}

TEST(CallbackRegistry, ABadConfigurationIsAnErrorNotAnException) {
  auto registry = CallbackRegistry::with_builtin_callbacks();
  auto callback = registry.create("stripe", CallbackContext{});
  ASSERT_FALSE(callback);
  EXPECT_EQ(callback.error().code, ErrorCode::kInvalidConfig);
  EXPECT_NE(callback.error().message.find("STRIPE_API_KEY"), std::string::npos);
}

TEST_F(StripeLoggerTest, ANonFiniteCostIsStoredAsNoCostAndTheTokensStillBill) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  UsageEvent nan = for_customer("call-nan", 10);
  nan.response_cost = std::numeric_limits<double>::quiet_NaN();
  UsageEvent inf = for_customer("call-inf", 20);
  inf.response_cost = std::numeric_limits<double>::infinity();
  logger->log_success_event(nan);
  logger->log_success_event(inf);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(emulator_.total_usage(item), 30);
  EXPECT_EQ(stats.accepted, 2u);
  EXPECT_EQ(stats.deduplicated, 0u) << "never a vanished row counted as a duplicate";
  EXPECT_EQ(stats.rejected.at("non_finite_cost"), 2u);
}

TEST_F(StripeLoggerTest, InCostModeANonFiniteCostIsDeadAsInvalidCost) {
  add_customer("alice");
  Config config = this->config();
  config.quantity = "cost";
  auto logger = make_logger(config);
  UsageEvent nan = for_customer("call-nan", 10);
  nan.response_cost = std::numeric_limits<double>::quiet_NaN();
  logger->log_success_event(nan);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.dead, 1u);
  EXPECT_EQ(stats.rejected.at("invalid_cost"), 1u);
}

TEST_F(StripeLoggerTest, TheSameCallReportedTwiceWithoutACallIdIsBilledOnce) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  UsageEvent call = for_customer("", 10);
  logger->log_success_event(call);
  logger->log_success_event(call);
  UsageEvent another = call;
  another.end_time = *call.end_time + std::chrono::microseconds(1);
  logger->log_success_event(another);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(emulator_.total_usage(item), 20) << "two calls, one of them reported twice";
  EXPECT_EQ(stats.deduplicated, 1u);
  EXPECT_EQ(stats.rejected.at("derived_call_id"), 3u);
}

TEST_F(StripeLoggerTest, ACallWithoutACallIdOrAnEndTimeGetsARandomIdAndIsCounted) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(config());
  UsageEvent call = for_customer("", 10);
  call.end_time.reset();
  logger->log_success_event(call);
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 20) << "nothing tells the two reports apart";
  EXPECT_EQ(logger->stats().rejected.at("generated_call_id"), 2u);
}

TEST_F(StripeLoggerTest, ASecondProcessOnTheSameOutboxIsRefused) {
  auto first = make_logger(config());
  ASSERT_TRUE(first);
  auto second = make_stripe_logger(config());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::kStorage);
  EXPECT_NE(second.error().message.find("another process runs the delivery engine"),
            std::string::npos)
      << second.error().message;
  first.reset();
  EXPECT_TRUE(make_stripe_logger(config())) << "free once the first one stops";
}

TEST_F(StripeLoggerTest, AnUnreachableDatabaseIsAClearErrorNotAFallback) {
  // Nothing listens on port 1: the fleet's store cannot be reached.
  Config unreachable = config();
  unreachable.outbox_url = "postgresql://gw:Pg5ecretPassw0rd@127.0.0.1:1/billing";
  auto logger = make_stripe_logger(unreachable);
  ASSERT_FALSE(logger);
  EXPECT_EQ(logger.error().code, ErrorCode::kStorage);
  EXPECT_NE(
      logger.error().message.find("cannot connect to PostgreSQL postgresql://gw:…@127.0.0.1:1"),
      std::string::npos)
      << logger.error().message;
  EXPECT_EQ(logger.error().message.find("Pg5ecretPassw0rd"), std::string::npos);
}

TEST_F(StripeLoggerTest, ShutdownKeepsItsDeadlineWhileTheOutboxIsLocked) {
  add_customer("alice");
  Config config = this->config();
  config.durability = "async";
  auto logger = make_logger(config);
  ASSERT_TRUE(shutdown_keeps_its_deadline_while_locked(*logger, outbox_path(), 100))
      << "shutdown waited for the lock, far past its deadline";
  const auto stats = logger->stats();
  EXPECT_EQ(stats.lost, 100u) << "not stored in time, and counted, never silently dropped";
  EXPECT_EQ(stats.rejected.at("shutdown_deadline"), 100u);
}

TEST_F(StripeLoggerTest, InSyncModeWhatTheLockedOutboxCouldNotTakeIsStoredAtTheNextStart) {
  const std::string item = add_customer("alice");
  {
    // Each call returns once its event is in the journal, whatever the outbox is doing.
    auto logger = make_logger(config());
    ASSERT_TRUE(shutdown_keeps_its_deadline_while_locked(*logger, outbox_path(), 20));
    EXPECT_EQ(logger->stats().lost, 0u) << "durable in the journal: nothing lost";
  }
  auto logger = make_logger(config());
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 20);
}

}  // namespace
}  // namespace stripe_billing
