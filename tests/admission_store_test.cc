// The admission stores (memory, the SQLite outbox file, PostgreSQL) against one contract: takes
// never hand out more than is left of a budget, however many owners take at once; one owner at a
// time holds the last piece; a dead owner's grant counts until it is dead for good, then only its
// use; reports give back; webhook events are stored once and survive a reopen.
#include "admission_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "admission_take.h"
#include "pg_test_support.h"
#include "stripe_billing/config.h"
#include "temp_dir.h"

namespace stripe_billing {
namespace {

using testing::PgTestSchema;
using testing::TempDir;

constexpr std::int64_t kDeadAfterMs = 10'000;
constexpr std::int64_t kNow = 1'800'000'000'000;

TEST(DecideTake, HandsOutAtMostWhatIsLeftAndTheLastPieceOnce) {
  TakeInputs in;
  in.budget = 100;
  in.want = 60;
  in.fleet_total = 50;
  TakeOutcome out = decide_take(in);
  EXPECT_EQ(out.taken.granted, 50);
  EXPECT_TRUE(out.taken.exhausted);
  EXPECT_TRUE(out.taken.crossing);
  EXPECT_TRUE(out.set_crossing);

  in.crossing_free = false;  // someone alive holds it
  out = decide_take(in);
  EXPECT_EQ(out.taken.granted, 50);
  EXPECT_FALSE(out.taken.crossing);

  in.fleet_total = 120;  // overage already: nothing left, never negative
  out = decide_take(in);
  EXPECT_EQ(out.taken.granted, 0);
  EXPECT_TRUE(out.taken.exhausted);

  in.force = true;  // overage is taken whatever is left
  out = decide_take(in);
  EXPECT_EQ(out.taken.granted, 60);
  EXPECT_EQ(out.taken.fleet_total, 180);

  in = TakeInputs{};
  in.budget = 100;
  in.want = 10;
  out = decide_take(in);
  EXPECT_EQ(out.taken.granted, 10);
  EXPECT_FALSE(out.taken.exhausted);
  EXPECT_FALSE(out.taken.crossing);
}

enum class Backend { kMemory, kSqlite, kPostgres };

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  switch (info.param) {
    case Backend::kMemory:
      return "memory";
    case Backend::kSqlite:
      return "sqlite";
    case Backend::kPostgres:
      return "postgres";
  }
  return "unknown";
}

class AdmissionStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kPostgres) {
      STRIPE_SKIP_WITHOUT_PG();
      schema_ = std::make_unique<PgTestSchema>(*testing::test_pg_url());
      Config config;
      config.api_key = "sk_test_emulator_0000000000000000";
      config.billing_mode = "meter_events";
      config.meter_event_name = "llm_tokens";
      config.outbox_url = schema_->url();
      config.outbox_schema = schema_->name();
      auto finalized = finalize_config(config);
      ASSERT_TRUE(finalized) << finalized.error().message;
      config_ = std::make_unique<FinalizedConfig>(std::move(finalized.value()));
    }
  }

  bool shared() const { return GetParam() != Backend::kMemory; }

  // A store for `owner` on the test's database (memory: a store of its own).
  std::unique_ptr<AdmissionStore> open(const std::string& owner) {
    switch (GetParam()) {
      case Backend::kMemory:
        return open_memory_admission_store(owner, kDeadAfterMs);
      case Backend::kSqlite: {
        auto store = open_sqlite_admission_store(dir_.file("outbox.db"), owner, kDeadAfterMs);
        EXPECT_TRUE(store) << store.error().message;
        return store ? std::move(store.value()) : nullptr;
      }
      case Backend::kPostgres: {
        auto store = open_pg_admission_store(*config_, owner, kDeadAfterMs);
        EXPECT_TRUE(store) << store.error().message;
        return store ? std::move(store.value()) : nullptr;
      }
    }
    return nullptr;
  }

  TempDir dir_;
  std::unique_ptr<PgTestSchema> schema_;
  std::unique_ptr<FinalizedConfig> config_;
};

// Stores several processes share: the SQLite file and PostgreSQL.
class SharedAdmissionStoreTest : public AdmissionStoreTest {};

TEST_P(AdmissionStoreTest, OneOwnerTakesWhatIsLeftAndNoMore) {
  auto store = open("a");
  ASSERT_TRUE(store);
  auto first = store->take("cus_1", "2026-12", 40, 100, false, kNow);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->granted, 40);
  EXPECT_FALSE(first->exhausted);
  auto second = store->take("cus_1", "2026-12", 100, 100, false, kNow);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->granted, 60);
  EXPECT_TRUE(second->exhausted);
  EXPECT_TRUE(second->crossing);
  auto third = store->take("cus_1", "2026-12", 1, 100, false, kNow);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->granted, 0);
  EXPECT_EQ(third->fleet_total, 100);
  // Another customer and another period are budgets of their own.
  auto other = store->take("cus_2", "2026-12", 100, 100, false, kNow);
  auto next = store->take("cus_1", "2027-01", 100, 100, false, kNow);
  ASSERT_TRUE(other && next);
  EXPECT_EQ(other->granted, 100);
  EXPECT_EQ(next->granted, 100);
}

TEST_P(SharedAdmissionStoreTest, OwnersTakingAtOnceNeverShareMoreThanTheBudget) {
  constexpr int kOwners = 4;
  constexpr std::int64_t kBudget = 10'007;
  std::vector<std::unique_ptr<AdmissionStore>> stores;
  for (int i = 0; i < kOwners; ++i) {
    stores.push_back(open("owner-" + std::to_string(i)));
    ASSERT_TRUE(stores.back());
  }
  std::vector<std::int64_t> granted(kOwners, 0);
  std::vector<int> crossings(kOwners, 0);
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kOwners; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 random(static_cast<unsigned>(i) + 7);
      for (;;) {
        auto taken = stores[static_cast<std::size_t>(i)]->take(
            "cus_race", "2026-12", 1 + static_cast<std::int64_t>(random() % 700), kBudget, false,
            kNow);
        if (!taken) {
          ++errors;
          return;
        }
        granted[static_cast<std::size_t>(i)] += taken->granted;
        if (taken->crossing) crossings[static_cast<std::size_t>(i)] = 1;
        if (taken->exhausted) return;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(errors.load(), 0);
  std::int64_t total = 0;
  int holders = 0;
  for (int i = 0; i < kOwners; ++i) {
    total += granted[static_cast<std::size_t>(i)];
    holders += crossings[static_cast<std::size_t>(i)];
  }
  EXPECT_EQ(total, kBudget);
  EXPECT_EQ(holders, 1) << "exactly one owner holds the last piece";
}

TEST_P(SharedAdmissionStoreTest, ADeadOwnersGrantCountsUntilItIsDeadThenOnlyItsUse) {
  auto a = open("a");
  auto b = open("b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->take("cus_1", "2026-12", 100, 100, false, kNow));
  ASSERT_TRUE(a->report({{"cus_1", "2026-12", 100, 30}}, kNow));
  // a's heartbeat is fresh: everything it was granted counts, and it keeps the last piece.
  auto early = b->take("cus_1", "2026-12", 100, 100, false, kNow + kDeadAfterMs - 1);
  ASSERT_TRUE(early) << early.error().message;
  EXPECT_EQ(early->granted, 0);
  EXPECT_TRUE(early->exhausted);
  EXPECT_FALSE(early->crossing);
  EXPECT_EQ(early->fleet_used, 30);
  // After its heartbeat is older than the TTL only what it used counts; the last piece moves.
  auto late = b->take("cus_1", "2026-12", 100, 100, false, kNow + kDeadAfterMs + 1);
  ASSERT_TRUE(late) << late.error().message;
  EXPECT_EQ(late->granted, 70);
  EXPECT_TRUE(late->crossing);
  // a comes back (a heartbeat): what b took is b's; a gets nothing more.
  auto back = a->take("cus_1", "2026-12", 100, 100, false, kNow + kDeadAfterMs + 2);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->granted, 0);
  EXPECT_EQ(back->fleet_total, 170) << "a alive again: its whole grant counts as well";
}

TEST_P(SharedAdmissionStoreTest, AReportGivesBackWhatIsNotNeeded) {
  auto a = open("a");
  auto b = open("b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->take("cus_1", "2026-12", 1000, 1000, false, kNow));
  auto none = b->take("cus_1", "2026-12", 500, 1000, false, kNow);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->granted, 0);
  ASSERT_TRUE(a->report({{"cus_1", "2026-12", 250, 200}}, kNow));  // keeps 250, used 200
  auto some = b->take("cus_1", "2026-12", 1000, 1000, false, kNow);
  ASSERT_TRUE(some);
  EXPECT_EQ(some->granted, 750);
  EXPECT_EQ(some->fleet_used, 200);
}

TEST_P(AdmissionStoreTest, OverageIsTakenWhateverIsLeftAndCounted) {
  auto a = open("a");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->take("cus_1", "2026-12", 100, 100, false, kNow));
  auto forced = a->take("cus_1", "2026-12", 25, 100, true, kNow);
  ASSERT_TRUE(forced) << forced.error().message;
  EXPECT_EQ(forced->granted, 25);
  EXPECT_EQ(forced->fleet_total, 125);
  auto after = a->take("cus_1", "2026-12", 10, 100, false, kNow);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->granted, 0);
  EXPECT_TRUE(after->exhausted);
}

TEST_P(AdmissionStoreTest, WebhookEventsAreStoredOnceAndSurviveAReopen) {
  {
    auto store = open("a");
    ASSERT_TRUE(store);
    auto fresh = store->remember_webhook({"evt_1", "billing.credit_grant.created", "{}"}, kNow);
    ASSERT_TRUE(fresh) << fresh.error().message;
    EXPECT_TRUE(*fresh);
    auto again = store->remember_webhook({"evt_1", "billing.credit_grant.created", "{}"}, kNow);
    ASSERT_TRUE(again);
    EXPECT_FALSE(*again);
    ASSERT_TRUE(store->remember_webhook({"evt_2", "x", "{\"id\":\"evt_2\"}"}, kNow + 1));
    ASSERT_TRUE(store->webhook_processed("evt_1", kNow + 2));
    auto open_events = store->unprocessed_webhooks(10);
    ASSERT_TRUE(open_events);
    ASSERT_EQ(open_events->size(), 1u);
    EXPECT_EQ((*open_events)[0].id, "evt_2");
    EXPECT_EQ((*open_events)[0].payload, "{\"id\":\"evt_2\"}");
  }
  if (!shared()) return;
  auto reopened = open("b");
  ASSERT_TRUE(reopened);
  auto again = reopened->remember_webhook({"evt_1", "billing.credit_grant.created", "{}"}, kNow);
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again) << "a restart still knows the event";
  auto open_events = reopened->unprocessed_webhooks(10);
  ASSERT_TRUE(open_events);
  ASSERT_EQ(open_events->size(), 1u);
  EXPECT_EQ((*open_events)[0].id, "evt_2");
}

INSTANTIATE_TEST_SUITE_P(Stores, AdmissionStoreTest,
                         ::testing::Values(Backend::kMemory, Backend::kSqlite, Backend::kPostgres),
                         backend_name);
INSTANTIATE_TEST_SUITE_P(Stores, SharedAdmissionStoreTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres), backend_name);

}  // namespace
}  // namespace stripe_billing
