// The contract of the outbox (outbox.h) that every backend keeps: each TEST_P runs against SQLite
// (a file in a temporary directory) and PostgreSQL (a fresh schema on the server named by
// STRIPE_TEST_PG_URL; skipped, visibly, when it is unset). The PgStoreTest cases below cover what
// only a store shared by a fleet has: the engine lease, replicas, concurrent writers, the schema.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "outbox.h"
#include "pg_outbox.h"
#include "pg_test_support.h"
#include "reasons.h"
#include "sqlite_outbox.h"
#include "stripe_billing/secret.h"
#include "temp_dir.h"
#include "test_support.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

using testing::PgRows;
using testing::PgTestSchema;
using testing::TempDir;
using testing::test_pg_url;

constexpr std::int64_t kEventTime = 1'700'000'000;          // unix seconds
constexpr std::int64_t kAcceptedMs = 1'700'000'000'000;     // unix milliseconds
constexpr std::int64_t kFarFuture = 4'000'000'000'000'000;  // a parked row's "not soon"
constexpr std::int64_t kAnyTime = INT64_MAX;                // claims everything already due

// A value, or a test failure naming the error and the line that asked for it.
template <typename T>
T got(Expected<T> result, int line) {
  if (!result) {
    ADD_FAILURE_AT(__FILE__, line) << result.error().to_string();
    return T{};
  }
  return std::move(result).value();
}
#define GOT(expr) got((expr), __LINE__)

NewEvent row(const std::string& call_id, std::int64_t quantity, const std::string& key = "alice") {
  NewEvent event;
  event.call_id = call_id;
  event.dimension = "total_tokens";
  event.customer_key = key;
  event.quantity = quantity;
  event.event_time = kEventTime;
  event.accepted_at_ms = kAcceptedMs;
  event.model = "gpt-test";
  return event;
}

NewEvent meter_row(const std::string& call_id, std::int64_t quantity, const std::string& model,
                   const std::string& key = "alice") {
  NewEvent event = row(call_id, quantity, key);
  event.sink = Sink::kMeterEvent;
  event.model = model;
  return event;
}

NewEvent parked_row(const std::string& call_id, const std::string& reason,
                    std::optional<std::int64_t> next_attempt_ms, const std::string& key = "alice") {
  NewEvent event = row(call_id, 1, key);
  event.state = EventState::kParked;
  event.reason = reason;
  event.next_attempt_ms = next_attempt_ms;
  return event;
}

// A cost row of `units` millionths of a unit (what intake stores for cost billing).
NewEvent cost_row(const std::string& call_id, std::int64_t micros,
                  const std::string& key = "alice") {
  NewEvent event = row(call_id, 0, key);
  event.dimension = "cost";
  event.amount_micros = micros;
  return event;
}

NewBatch usage_batch(const std::vector<std::int64_t>& ids, const std::string& target = "si_1",
                     const std::string& customer_id = "cus_1", std::int64_t quantity = 5) {
  NewBatch spec;
  spec.batch.kind = BatchKind::kUsageRecord;
  spec.batch.target = target;
  spec.batch.customer_id = customer_id;
  spec.batch.customer_key = "alice";
  spec.batch.quantity = quantity;
  spec.batch.timestamp = kEventTime;
  for (std::int64_t id : ids) spec.members.push_back({id, customer_id});
  return spec;
}

NewBatch meter_batch(BatchKind kind, const std::vector<BatchMember>& members,
                     const std::string& target, const std::string& customer_id,
                     std::int64_t quantity) {
  NewBatch spec;
  spec.batch.kind = kind;
  spec.batch.target = target;
  spec.batch.customer_id = customer_id;
  spec.batch.customer_key = "alice";
  spec.batch.quantity = quantity;
  spec.batch.timestamp = kEventTime;
  spec.members = members;
  return spec;
}

PlanWrites batches_of(std::vector<NewBatch> batches) {
  PlanWrites writes;
  writes.batches = std::move(batches);
  return writes;
}

std::vector<std::int64_t> ids_of(const std::vector<StoredEvent>& events) {
  std::vector<std::int64_t> ids;
  for (const StoredEvent& event : events) ids.push_back(event.id);
  return ids;
}

std::vector<std::string> call_ids_of(const std::vector<StoredEvent>& events) {
  std::vector<std::string> ids;
  for (const StoredEvent& event : events) ids.push_back(event.call_id);
  return ids;
}

std::map<std::string, std::int64_t> by_model(const Batch& batch) {
  return {batch.quantity_by_model.begin(), batch.quantity_by_model.end()};
}

// ---------------------------------------------------------------------------------------------
// The contract, on every backend

class StoreContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (postgres()) {
      STRIPE_SKIP_WITHOUT_PG();
      schema_ = std::make_unique<PgTestSchema>(*test_pg_url());
    }
    ASSERT_NO_FATAL_FAILURE(reopen());
  }

  bool postgres() const { return GetParam() == "postgres"; }

  Expected<std::unique_ptr<Outbox>> open_store() {
    if (postgres()) {
      return PgOutbox::open(Secret(schema_->url()), schema_->name(), StoreMode::kEngine,
                            std::chrono::seconds(30));
    }
    return SqliteOutbox::open_file(dir_.file("outbox.db"), false, StoreMode::kEngine);
  }

  // Closes the store (if open) and opens it again, as the engine.
  void reopen() {
    store_.reset();
    auto opened = open_store();
    ASSERT_TRUE(opened) << opened.error().to_string();
    store_ = std::move(opened).value();
    auto held = store_->hold_engine({});
    ASSERT_TRUE(held) << held.error().to_string();
    ASSERT_TRUE(*held) << "a store of its own holds the engine";
  }

  Outbox& store() { return *store_; }

  std::vector<StoredEvent> due(std::int64_t now_ms = 0, int limit = 1000) {
    return GOT(store_->due_events(now_ms, limit));
  }
  OutboxCounts counts() { return GOT(store_->counts()); }
  std::vector<ClaimedBatch> claim(std::int64_t now_ms = kAnyTime, int limit = 100) {
    return GOT(store_->claim_due_batches(now_ms, limit));
  }
  // One planning round of `batches`, the first `lease` claimed.
  std::vector<Batch> plan(std::vector<NewBatch> batches, std::int64_t now_ms = 0,
                          std::size_t lease = 1) {
    return GOT(store_->apply(batches_of(std::move(batches)), now_ms, lease));
  }
  // One usage-record batch over `ids`, claimed.
  Batch batch_over(const std::vector<std::int64_t>& ids, std::int64_t now_ms = 0,
                   const std::string& target = "si_1") {
    auto created = plan({usage_batch(ids, target)}, now_ms, 1);
    EXPECT_EQ(created.size(), 1u);
    return created.empty() ? Batch{} : created[0];
  }
  std::int64_t id_of(const std::string& call_id) {
    for (const StoredEvent& event : due(0)) {
      if (event.call_id == call_id) return event.id;
    }
    ADD_FAILURE() << call_id << " is not pending";
    return 0;
  }

  // The test's own view of the store's tables (same table names in both backends).
  std::vector<std::vector<std::string>> raw(const std::string& sql) {
    std::vector<std::vector<std::string>> out;
    if (postgres()) {
      PgRows rows = schema_->query("SET search_path TO " + schema_->name() + "; " + sql);
      return rows.rows;
    }
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(dir_.file("outbox.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
        SQLITE_OK) {
      ADD_FAILURE() << "cannot open the outbox file";
      sqlite3_close(db);
      return out;
    }
    char* error = nullptr;
    const int rc = sqlite3_exec(
        db, sql.c_str(),
        [](void* sink, int columns, char** values, char**) {
          std::vector<std::string> line;
          for (int i = 0; i < columns; ++i) line.emplace_back(values[i] ? values[i] : "");
          static_cast<std::vector<std::vector<std::string>>*>(sink)->push_back(std::move(line));
          return 0;
        },
        &out, &error);
    EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << (error ? error : "");
    sqlite3_free(error);
    sqlite3_close(db);
    return out;
  }
  // "state reason quantity" of one stored row.
  std::string stored_row(const std::string& call_id,
                         const std::string& dimension = "total_tokens") {
    auto rows = raw("SELECT state, reason, quantity FROM events WHERE call_id='" + call_id +
                    "' AND dimension='" + dimension + "'");
    if (rows.size() != 1) return "rows: " + std::to_string(rows.size());
    return rows[0][0] + " " + rows[0][1] + " " + rows[0][2];
  }
  std::int64_t raw_count(const std::string& sql) {
    auto rows = raw(sql);
    return rows.size() == 1 ? std::stoll(rows[0][0]) : -1;
  }

  TempDir dir_;
  std::unique_ptr<PgTestSchema> schema_;  // dropped after the store is closed
  std::unique_ptr<Outbox> store_;
};

TEST_P(StoreContractTest, InsertDedupesByCallIdDimensionAndSink) {
  NewEvent prompt = row("call-1", 2);
  prompt.dimension = "prompt_tokens";
  NewEvent meter = meter_row("call-1", 5, "gpt-test");
  auto first =
      GOT(store().insert({row("call-1", 5), prompt, meter, row("call-2", 6), row("call-1", 9)}));
  EXPECT_EQ(first.inserted, 4);
  EXPECT_EQ(first.duplicates, 1) << "the same (call, dimension, sink) twice in one write";
  auto second = GOT(store().insert({row("call-2", 6), meter, row("call-3", 1)}));
  EXPECT_EQ(second.inserted, 1);
  EXPECT_EQ(second.duplicates, 2);

  auto rows = due();
  ASSERT_EQ(rows.size(), 5u);
  std::set<std::tuple<std::string, std::string, Sink, std::int64_t>> stored;
  for (const StoredEvent& event : rows) {
    stored.emplace(event.call_id, event.dimension, event.sink, event.quantity);
  }
  const std::set<std::tuple<std::string, std::string, Sink, std::int64_t>> expected = {
      {"call-1", "total_tokens", Sink::kUsageRecord, 5},
      {"call-1", "prompt_tokens", Sink::kUsageRecord, 2},
      {"call-1", "total_tokens", Sink::kMeterEvent, 5},
      {"call-2", "total_tokens", Sink::kUsageRecord, 6},
      {"call-3", "total_tokens", Sink::kUsageRecord, 1}};
  EXPECT_EQ(stored, expected) << "a duplicate never overwrites the stored row";
  EXPECT_EQ(counts().pending, 5);
}

TEST_P(StoreContractTest, DueEventsComeBackOldestFirstWithTheirFields) {
  NewEvent detailed = meter_row("call-a", 42, "gpt-4o", "bob");
  detailed.event_time = kEventTime + 7;
  detailed.accepted_at_ms = kAcceptedMs + 9;
  ASSERT_TRUE(GOT(store().insert({detailed})).inserted == 1);
  ASSERT_TRUE(GOT(store().insert({row("call-b", 1), row("call-c", 2)})).inserted == 2);
  ASSERT_TRUE(GOT(store().insert({row("call-d", 3)})).inserted == 1);

  auto rows = due();
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(call_ids_of(rows), (std::vector<std::string>{"call-a", "call-b", "call-c", "call-d"}));
  for (std::size_t i = 1; i < rows.size(); ++i) EXPECT_LT(rows[i - 1].id, rows[i].id);
  const StoredEvent& a = rows[0];
  EXPECT_EQ(a.dimension, "total_tokens");
  EXPECT_EQ(a.sink, Sink::kMeterEvent);
  EXPECT_EQ(a.model, "gpt-4o");
  EXPECT_EQ(a.customer_key, "bob");
  EXPECT_EQ(a.quantity, 42);
  EXPECT_EQ(a.event_time, kEventTime + 7);
  EXPECT_EQ(a.accepted_at_ms, kAcceptedMs + 9);
  EXPECT_EQ(a.customer_id, "") << "no Stripe customer before a batch";

  EXPECT_EQ(call_ids_of(due(0, 2)), (std::vector<std::string>{"call-a", "call-b"}));
}

TEST_P(StoreContractTest, NewEventsAreThePendingRowsAfterAnId) {
  ASSERT_TRUE(store().insert({row("call-a", 1), row("call-b", 2), row("call-c", 3)}));
  auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(call_ids_of(GOT(store().new_events(0, 10))),
            (std::vector<std::string>{"call-a", "call-b", "call-c"}));
  EXPECT_EQ(call_ids_of(GOT(store().new_events(ids[0], 10))),
            (std::vector<std::string>{"call-b", "call-c"}));
  EXPECT_EQ(call_ids_of(GOT(store().new_events(ids[0], 1))), (std::vector<std::string>{"call-b"}));
  EXPECT_TRUE(GOT(store().new_events(ids[2], 10)).empty());

  batch_over({ids[1]});
  EXPECT_EQ(call_ids_of(GOT(store().new_events(ids[0], 10))), (std::vector<std::string>{"call-c"}))
      << "a batched row is not new";
  ASSERT_TRUE(store().insert({row("call-d", 4)}));
  EXPECT_EQ(call_ids_of(GOT(store().new_events(ids[2], 10))), (std::vector<std::string>{"call-d"}));
}

TEST_P(StoreContractTest, ParkedRowsComeBackOnceDue) {
  ASSERT_TRUE(store().insert({row("call-a", 1), row("call-b", 1), row("call-c", 1),
                              parked_row("call-d", "customer_not_found", 4000),
                              parked_row("call-e", "missing_customer", std::nullopt)}));
  PlanWrites writes;
  writes.parks.push_back({{id_of("call-a")}, "customer_not_found", 1000});
  writes.parks.push_back({{id_of("call-b")}, "subscription_item_not_found", std::nullopt});
  ASSERT_TRUE(GOT(store().apply(std::move(writes), 0, 0)).empty());
  EXPECT_EQ(counts().parked, 4);
  EXPECT_EQ(counts().pending, 1);

  EXPECT_EQ(call_ids_of(due(999)), (std::vector<std::string>{"call-c"}));
  EXPECT_EQ(counts().parked, 4);
  EXPECT_EQ(call_ids_of(due(1000)), (std::vector<std::string>{"call-a", "call-c"}))
      << "a woken row keeps its place (oldest first)";
  EXPECT_EQ(counts().parked, 3);
  EXPECT_EQ(call_ids_of(due(4000)), (std::vector<std::string>{"call-a", "call-c", "call-d"}));
  EXPECT_EQ(call_ids_of(due(kAnyTime)), (std::vector<std::string>{"call-a", "call-c", "call-d"}))
      << "rows parked without a time wait for an operator";
  const auto counted = counts();
  EXPECT_EQ(counted.parked, 2);
  EXPECT_EQ(counted.pending, 3);

  std::set<std::pair<std::string, std::int64_t>> reasons;
  for (const ReasonCount& reason : GOT(store().reason_counts())) {
    EXPECT_EQ(reason.state, EventState::kParked);
    reasons.emplace(reason.reason, reason.events);
  }
  EXPECT_EQ(reasons, (std::set<std::pair<std::string, std::int64_t>>{
                         {"missing_customer", 1}, {"subscription_item_not_found", 1}}));
}

TEST_P(StoreContractTest, CountsFollowEveryStateAndTheOldestWaitingRow) {
  std::vector<NewEvent> rows;
  for (int i = 0; i < 6; ++i) {
    rows.push_back(row("call-" + std::to_string(i), 10 + i));
    rows.back().accepted_at_ms = kAcceptedMs + i * 1000;
  }
  ASSERT_TRUE(store().insert(rows));
  auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 6u);
  auto counted = counts();
  EXPECT_EQ(counted.pending, 6);
  EXPECT_EQ(counted.oldest_pending_ms, kAcceptedMs);
  EXPECT_TRUE(GOT(store().has_outstanding()));

  PlanWrites writes;
  writes.kills.push_back({{ids[0]}, "max_delivery_age_exceeded", std::nullopt});
  writes.parks.push_back({{ids[1]}, "customer_not_found", kFarFuture});
  writes.batches.push_back(usage_batch({ids[2], ids[3]}));
  auto created = GOT(store().apply(std::move(writes), 0, 1));
  ASSERT_EQ(created.size(), 1u);
  counted = counts();
  EXPECT_EQ(counted.pending, 2);
  EXPECT_EQ(counted.batched, 2);
  EXPECT_EQ(counted.delivered, 0);
  EXPECT_EQ(counted.parked, 1);
  EXPECT_EQ(counted.dead, 1);
  EXPECT_EQ(counted.oldest_pending_ms, kAcceptedMs + 2000) << "a batched row is still waiting";
  EXPECT_EQ(stored_row("call-0"), "4 max_delivery_age_exceeded 10");
  EXPECT_EQ(stored_row("call-1"), "3 customer_not_found 11");

  ASSERT_TRUE(GOT(store().batch_delivered(created[0], "req_1", 10)));
  counted = counts();
  EXPECT_EQ(counted.batched, 0);
  EXPECT_EQ(counted.delivered, 2);
  EXPECT_EQ(counted.oldest_pending_ms, kAcceptedMs + 4000);

  PlanWrites more;
  more.kills.push_back({{ids[4], ids[5]}, "max_delivery_age_exceeded", std::nullopt});
  more.kills.push_back({{ids[2]}, "max_delivery_age_exceeded", std::nullopt});  // not pending
  ASSERT_TRUE(store().apply(std::move(more), 0, 0));
  counted = counts();
  EXPECT_EQ(counted.pending, 0);
  EXPECT_EQ(counted.delivered, 2) << "a kill touches only pending rows";
  EXPECT_EQ(counted.dead, 3);
  EXPECT_EQ(counted.parked, 1);
  EXPECT_EQ(counted.oldest_pending_ms, 0);
  EXPECT_FALSE(GOT(store().has_outstanding())) << "parked and dead rows are not outstanding";

  auto reasons = GOT(store().reason_counts());
  ASSERT_EQ(reasons.size(), 2u);
  EXPECT_EQ(reasons[0].state, EventState::kDead);
  EXPECT_EQ(reasons[0].reason, "max_delivery_age_exceeded");
  EXPECT_EQ(reasons[0].events, 3);
  EXPECT_EQ(reasons[1].state, EventState::kParked);
  EXPECT_EQ(reasons[1].reason, "customer_not_found");
  EXPECT_EQ(reasons[1].events, 1);
}

TEST_P(StoreContractTest, ApplyHandsOutDistinctKeysAndClaimsTheFirstLease) {
  ASSERT_TRUE(
      store().insert({row("call-0", 1), row("call-1", 1), row("call-2", 1), row("call-3", 1)}));
  auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 4u);
  std::vector<NewBatch> specs;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    specs.push_back(usage_batch({ids[i]}, "si_" + std::to_string(i), "cus_1", 7));
  }
  auto created = plan(std::move(specs), 1000, 2);
  ASSERT_EQ(created.size(), 4u);
  std::set<std::string> keys;
  std::set<std::int64_t> batch_ids;
  for (std::size_t i = 0; i < created.size(); ++i) {
    const Batch& batch = created[i];
    EXPECT_FALSE(batch.idempotency_key.empty());
    EXPECT_NE(batch.idempotency_key.find(store().instance_id()), std::string::npos)
        << batch.idempotency_key << " is unique to this store";
    keys.insert(batch.idempotency_key);
    batch_ids.insert(batch.id);
    EXPECT_EQ(batch.target, "si_" + std::to_string(i)) << "batches come back in order";
    EXPECT_EQ(batch.quantity, 7);
    EXPECT_EQ(batch.events, 1);
    EXPECT_EQ(batch.attempts, 0);
    EXPECT_EQ(batch.created_ms, 1000);
    if (i < 2) {
      EXPECT_GT(batch.lease, 0) << "the first `lease` batches are claimed";
    } else {
      EXPECT_EQ(batch.lease, 0) << "the rest wait for claim_due_batches";
    }
  }
  EXPECT_EQ(keys.size(), 4u);
  EXPECT_EQ(batch_ids.size(), 4u);
  EXPECT_EQ(counts().batched, 4);

  EXPECT_TRUE(claim(999).empty()) << "due from the round's time on";
  auto claimed = claim(1000);
  ASSERT_EQ(claimed.size(), 2u) << "the two claimed at once are not claimed again";
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(claimed[i].batch.id, created[i + 2].id);
    EXPECT_EQ(claimed[i].batch.idempotency_key, created[i + 2].idempotency_key);
    EXPECT_EQ(claimed[i].batch.target, created[i + 2].target);
    EXPECT_EQ(claimed[i].batch.quantity, 7);
    EXPECT_EQ(claimed[i].batch.kind, BatchKind::kUsageRecord);
    EXPECT_GT(claimed[i].batch.lease, 0);
  }
  EXPECT_TRUE(claim().empty());

  auto targets = GOT(store().open_targets());
  EXPECT_EQ(std::set<std::string>(targets.begin(), targets.end()),
            (std::set<std::string>{"si_0", "si_1", "si_2", "si_3"}));
  EXPECT_TRUE(GOT(store().batch_delivered(created[0], "req_0", 2000)));
  EXPECT_TRUE(GOT(store().batch_delivered(claimed[0].batch, "req_2", 2000)));
  EXPECT_EQ(counts().delivered, 2);
}

TEST_P(StoreContractTest, ARoundOverARowNoLongerPendingWritesNothing) {
  ASSERT_TRUE(
      store().insert({row("call-0", 1), row("call-1", 1), row("call-2", 1), row("call-3", 1)}));
  auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 4u);
  const Batch first = batch_over({ids[0]});

  PlanWrites writes;
  writes.parks.push_back({{ids[3]}, "customer_not_found", 5000});
  writes.kills.push_back({{ids[2]}, "max_delivery_age_exceeded", std::nullopt});
  writes.batches.push_back(usage_batch({ids[1]}, "si_2"));
  writes.batches.push_back(usage_batch({ids[0]}, "si_3"));  // batched already
  EXPECT_FALSE(store().apply(std::move(writes), 0, 2));
  auto counted = counts();
  EXPECT_EQ(counted.pending, 3) << "no park, no kill, no batch of the refused round";
  EXPECT_EQ(counted.batched, 1);
  EXPECT_EQ(counted.parked, 0);
  EXPECT_EQ(counted.dead, 0);
  EXPECT_EQ(stored_row("call-1"), "0  1");
  EXPECT_EQ(stored_row("call-2"), "0  1");
  EXPECT_EQ(stored_row("call-3"), "0  1");
  EXPECT_EQ(raw_count("SELECT COUNT(*) FROM batches"), 1) << "no partial batch";
  EXPECT_TRUE(claim().empty());

  // A row killed in one round cannot be batched in the next, nor can a row that does not exist.
  PlanWrites kill;
  kill.kills.push_back({{ids[2]}, "max_delivery_age_exceeded", std::nullopt});
  ASSERT_TRUE(store().apply(std::move(kill), 0, 0));
  EXPECT_FALSE(store().apply(batches_of({usage_batch({ids[1], ids[2]})}), 0, 1));
  EXPECT_FALSE(store().apply(batches_of({usage_batch({ids[3] + 1000})}), 0, 1));
  EXPECT_EQ(stored_row("call-1"), "0  1");
  EXPECT_EQ(raw_count("SELECT COUNT(*) FROM batches"), 1);

  const Batch next = batch_over({ids[1]});
  EXPECT_NE(next.idempotency_key, first.idempotency_key);
  EXPECT_EQ(counts().batched, 2);
}

TEST_P(StoreContractTest, ClaimedMeterBatchesCarryTheirRows) {
  ASSERT_TRUE(store().insert({meter_row("m0", 3, "gpt-a"), meter_row("m1", 4, "gpt-b", "bob"),
                              meter_row("m2", 5, "gpt-a"), meter_row("m3", 7, "gpt-c")}));
  NewEvent u0 = row("u0", 10);
  u0.model = "gpt-a";
  NewEvent u1 = row("u1", 20);
  u1.model = "gpt-b";
  ASSERT_TRUE(store().insert({u0, u1}));
  auto rows = due();
  ASSERT_EQ(rows.size(), 6u);
  std::map<std::string, std::int64_t> id;
  for (const StoredEvent& event : rows) id[event.call_id] = event.id;

  auto created = plan(
      {meter_batch(BatchKind::kMeterStream,
                   {{id["m0"], "cus_a"}, {id["m1"], "cus_b"}, {id["m2"], "cus_a"}}, "", "", 12),
       meter_batch(BatchKind::kMeterEvent, {{id["m3"], "cus_a"}}, "tokens cus_a", "cus_a", 7),
       usage_batch({id["u0"], id["u1"]}, "si_9", "cus_u", 30)},
      100, 0);
  ASSERT_EQ(created.size(), 3u);
  auto claimed = claim(100, 10);
  ASSERT_EQ(claimed.size(), 3u);

  const ClaimedBatch& stream = claimed[0];
  EXPECT_EQ(stream.batch.kind, BatchKind::kMeterStream);
  EXPECT_EQ(stream.batch.sink(), Sink::kMeterEvent);
  EXPECT_EQ(stream.batch.idempotency_key, created[0].idempotency_key);
  EXPECT_EQ(stream.batch.events, 3);
  EXPECT_EQ(stream.batch.quantity, 12);
  ASSERT_EQ(stream.rows.size(), 3u);
  EXPECT_EQ(call_ids_of(stream.rows), (std::vector<std::string>{"m0", "m1", "m2"}));
  EXPECT_EQ(stream.rows[0].customer_id, "cus_a");
  EXPECT_EQ(stream.rows[1].customer_id, "cus_b");
  EXPECT_EQ(stream.rows[1].customer_key, "bob");
  EXPECT_EQ(stream.rows[1].quantity, 4);
  EXPECT_EQ(stream.rows[1].model, "gpt-b");
  EXPECT_EQ(stream.rows[1].sink, Sink::kMeterEvent);
  EXPECT_EQ(by_model(stream.batch),
            (std::map<std::string, std::int64_t>{{"gpt-a", 8}, {"gpt-b", 4}}));

  const ClaimedBatch& single = claimed[1];
  EXPECT_EQ(single.batch.kind, BatchKind::kMeterEvent);
  EXPECT_EQ(single.batch.target, "tokens cus_a");
  EXPECT_EQ(single.batch.customer_id, "cus_a");
  ASSERT_EQ(single.rows.size(), 1u);
  EXPECT_EQ(single.rows[0].call_id, "m3");
  EXPECT_EQ(single.rows[0].customer_id, "cus_a");
  EXPECT_EQ(by_model(single.batch), (std::map<std::string, std::int64_t>{{"gpt-c", 7}}));

  const ClaimedBatch& usage = claimed[2];
  EXPECT_EQ(usage.batch.kind, BatchKind::kUsageRecord);
  EXPECT_EQ(usage.batch.target, "si_9");
  EXPECT_EQ(usage.batch.customer_id, "cus_u");
  EXPECT_EQ(usage.batch.events, 2);
  EXPECT_TRUE(usage.rows.empty()) << "a usage record is built from the batch alone";
  EXPECT_EQ(by_model(usage.batch),
            (std::map<std::string, std::int64_t>{{"gpt-a", 10}, {"gpt-b", 20}}));

  EXPECT_EQ(GOT(store().open_targets()), (std::vector<std::string>{"si_9"}))
      << "only usage-record batches have an item to resume";
}

TEST_P(StoreContractTest, ARetryIsNotClaimedBeforeItIsDue) {
  ASSERT_TRUE(store().insert({row("call-0", 1)}));
  const Batch batch = batch_over({id_of("call-0")});
  ASSERT_TRUE(GOT(store().batch_retry_later(batch, 1, 5000, "network: timeout")));
  auto failure = GOT(store().latest_batch_failure());
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->batch_id, batch.id);
  EXPECT_FALSE(failure->dead);
  EXPECT_EQ(failure->attempts, 1);
  EXPECT_EQ(failure->last_error, "network: timeout");
  EXPECT_TRUE(claim(4999).empty());
  auto claimed = claim(5000);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].batch.idempotency_key, batch.idempotency_key);
  EXPECT_EQ(claimed[0].batch.attempts, 1);
  EXPECT_GT(claimed[0].batch.lease, batch.lease);
  EXPECT_EQ(counts().batched, 1);
}

TEST_P(StoreContractTest, DeliveredRowsFormTheLedger) {
  NewEvent d0 = row("d0", 7);
  d0.model = "gpt-a";
  d0.prompt_tokens = 3;
  d0.completion_tokens = 4;
  d0.cost = 0.25;
  NewEvent d1 = row("d1", 30);
  d1.event_time = kEventTime + 10;
  NewEvent d2 = row("d2", 5, "bob");
  d2.event_time = kEventTime + 20;
  NewEvent d3 = row("d3", 1);  // stays pending
  ASSERT_TRUE(store().insert({d0, d1, d2, d3}));
  auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 4u);
  auto created = plan({usage_batch({ids[0], ids[1]}, "si_1", "cus_1", 37),
                       usage_batch({ids[2]}, "si_2", "cus_2", 5)},
                      0, 2);
  ASSERT_EQ(created.size(), 2u);
  ASSERT_TRUE(GOT(store().batch_delivered(created[0], "req_1", 7000)));
  ASSERT_TRUE(GOT(store().batch_delivered(created[1], "req_2", 8000)));
  auto counted = counts();
  EXPECT_EQ(counted.delivered, 3);
  EXPECT_EQ(counted.batched, 0);
  EXPECT_EQ(counted.pending, 1);
  EXPECT_TRUE(claim().empty()) << "a delivered batch is done";
  EXPECT_TRUE(GOT(store().open_targets()).empty());

  auto totals = GOT(store().ledger_totals(kEventTime, kEventTime + 100));
  ASSERT_EQ(totals.size(), 2u);
  EXPECT_EQ(totals[0].sink, Sink::kUsageRecord);
  EXPECT_EQ(totals[0].customer_key, "alice");
  EXPECT_EQ(totals[0].customer_id, "cus_1");
  EXPECT_EQ(totals[0].dimension, "total_tokens");
  EXPECT_EQ(totals[0].target, "si_1");
  EXPECT_EQ(totals[0].quantity, 37);
  EXPECT_EQ(totals[0].events, 2);
  EXPECT_EQ(totals[1].customer_id, "cus_2");
  EXPECT_EQ(totals[1].target, "si_2");
  EXPECT_EQ(totals[1].quantity, 5);
  EXPECT_EQ(totals[1].events, 1);
  auto first_only = GOT(store().ledger_totals(kEventTime, kEventTime + 10));
  ASSERT_EQ(first_only.size(), 1u) << "[since, until)";
  EXPECT_EQ(first_only[0].quantity, 7);
  EXPECT_TRUE(GOT(store().ledger_totals(kEventTime + 21, kEventTime + 100)).empty());

  auto ledger = GOT(store().ledger_rows(kEventTime, kEventTime + 100));
  ASSERT_EQ(ledger.size(), 3u) << "the pending row is not in the ledger";
  EXPECT_EQ(ledger[0].call_id, "d0");
  EXPECT_EQ(ledger[0].customer_key, "alice");
  EXPECT_EQ(ledger[0].customer_id, "cus_1");
  EXPECT_EQ(ledger[0].sink, Sink::kUsageRecord);
  EXPECT_EQ(ledger[0].dimension, "total_tokens");
  EXPECT_EQ(ledger[0].model, "gpt-a");
  EXPECT_EQ(ledger[0].prompt_tokens, 3);
  EXPECT_EQ(ledger[0].completion_tokens, 4);
  EXPECT_DOUBLE_EQ(ledger[0].cost, 0.25);
  EXPECT_EQ(ledger[0].quantity, 7);
  EXPECT_EQ(ledger[0].event_time, kEventTime);
  EXPECT_EQ(ledger[0].request_id, "req_1");
  EXPECT_EQ(ledger[0].delivered_ms, 7000);
  EXPECT_EQ(ledger[1].call_id, "d1");
  EXPECT_EQ(ledger[1].request_id, "req_1");
  EXPECT_EQ(ledger[2].call_id, "d2");
  EXPECT_EQ(ledger[2].customer_id, "cus_2");
  EXPECT_EQ(ledger[2].request_id, "req_2");
  EXPECT_EQ(ledger[2].delivered_ms, 8000);
}

TEST_P(StoreContractTest, ADeadBatchKillsItsRowsWithTheReason) {
  ASSERT_TRUE(store().insert({row("x0", 1), row("x1", 2)}));
  const Batch batch = batch_over(ids_of(due()));
  ASSERT_TRUE(GOT(store().batch_dead(batch, "stripe_parameter_invalid", "req_9", 10)));
  auto counted = counts();
  EXPECT_EQ(counted.dead, 2);
  EXPECT_EQ(counted.batched, 0);
  EXPECT_FALSE(GOT(store().has_outstanding()));
  EXPECT_EQ(stored_row("x0"), "4 stripe_parameter_invalid 1");
  auto reasons = GOT(store().reason_counts());
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_EQ(reasons[0].state, EventState::kDead);
  EXPECT_EQ(reasons[0].reason, "stripe_parameter_invalid");
  EXPECT_EQ(reasons[0].events, 2);
  auto failure = GOT(store().latest_batch_failure());
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->batch_id, batch.id);
  EXPECT_TRUE(failure->dead);
  EXPECT_EQ(failure->sink, Sink::kUsageRecord);
  EXPECT_EQ(failure->last_error, "stripe_parameter_invalid");
  EXPECT_EQ(failure->request_id, "req_9");
  EXPECT_TRUE(GOT(store().ledger_rows(0, kAnyTime)).empty());
  EXPECT_TRUE(claim().empty());
}

TEST_P(StoreContractTest, AClaimAfterARetryFencesOutTheOldToken) {
  ASSERT_TRUE(store().insert({row("r0", 1), row("r1", 2)}));
  const Batch stale = batch_over(ids_of(due()));
  ASSERT_TRUE(GOT(store().batch_retry_later(stale, 1, 100, "timeout")));
  auto claimed = claim(100);
  ASSERT_EQ(claimed.size(), 1u);
  const Batch current = claimed[0].batch;
  EXPECT_EQ(current.id, stale.id);
  EXPECT_EQ(current.idempotency_key, stale.idempotency_key) << "a retry resends the same key";
  EXPECT_GT(current.lease, stale.lease) << "every claim raises the token";
  EXPECT_EQ(current.attempts, 1);

  EXPECT_FALSE(GOT(store().batch_delivered(stale, "req_old", 200)));
  EXPECT_FALSE(GOT(store().batch_dead(stale, "stripe_x", "req_old", 200)));
  EXPECT_FALSE(GOT(store().batch_retry_later(stale, 5, 9999, "stale")));
  EXPECT_FALSE(GOT(store().release(stale)));
  EXPECT_FALSE(GOT(store().dissolve_batch(stale)));
  auto counted = counts();
  EXPECT_EQ(counted.batched, 2) << "the old token changed nothing";
  EXPECT_EQ(counted.delivered + counted.dead + counted.pending, 0);
  auto failure = GOT(store().latest_batch_failure());
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->attempts, 1);
  EXPECT_EQ(failure->last_error, "timeout");
  EXPECT_TRUE(claim().empty()) << "still claimed under the new token";

  ASSERT_TRUE(GOT(store().batch_delivered(current, "req_new", 300)));
  EXPECT_EQ(counts().delivered, 2);
  auto ledger = GOT(store().ledger_rows(0, kAnyTime));
  ASSERT_EQ(ledger.size(), 2u);
  EXPECT_EQ(ledger[0].request_id, "req_new");
}

TEST_P(StoreContractTest, AReleasedBatchIsClaimableAgain) {
  ASSERT_TRUE(store().insert({row("r0", 1)}));
  const Batch batch = batch_over({id_of("r0")}, 50);
  EXPECT_TRUE(claim().empty()) << "claimed by the round";
  ASSERT_TRUE(GOT(store().release(batch)));
  auto claimed = claim(50);
  ASSERT_EQ(claimed.size(), 1u) << "due again as it was";
  EXPECT_EQ(claimed[0].batch.idempotency_key, batch.idempotency_key);
  EXPECT_EQ(claimed[0].batch.attempts, 0);
  EXPECT_GT(claimed[0].batch.lease, batch.lease);
  EXPECT_FALSE(GOT(store().batch_delivered(batch, "req_old", 60)));
  EXPECT_EQ(counts().batched, 1);
  EXPECT_TRUE(GOT(store().batch_delivered(claimed[0].batch, "req_new", 60)));
  EXPECT_EQ(counts().delivered, 1);
}

TEST_P(StoreContractTest, ADissolvedBatchReturnsItsRowsAndItsKeyIsNeverReused) {
  ASSERT_TRUE(store().insert({row("r0", 1), row("r1", 2)}));
  const auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 2u);
  std::set<std::string> keys;
  for (int round = 0; round < 3; ++round) {
    if (round == 2) {
      ASSERT_NO_FATAL_FAILURE(reopen());
    }
    const Batch batch = batch_over(ids, 0, "si_old" + std::to_string(round));
    keys.insert(batch.idempotency_key);
    ASSERT_TRUE(GOT(store().dissolve_batch(batch)));
    auto rows = due();
    ASSERT_EQ(ids_of(rows), ids) << "the rows are pending again";
    for (const StoredEvent& event : rows) EXPECT_EQ(event.customer_id, "");
    auto counted = counts();
    EXPECT_EQ(counted.pending, 2);
    EXPECT_EQ(counted.batched, 0);
    EXPECT_TRUE(claim().empty()) << "a dissolved batch is never sent";
  }
  const Batch last = batch_over(ids, 0, "si_new");
  keys.insert(last.idempotency_key);
  EXPECT_EQ(keys.size(), 4u) << "no key handed out twice";
  EXPECT_EQ(counts().batched, 2);
}

TEST_P(StoreContractTest, AFinishedBatchTakesNoFurtherOutcome) {
  ASSERT_TRUE(store().insert({row("r0", 1), row("r1", 2), row("r2", 3)}));
  const auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 3u);
  auto created = plan(
      {usage_batch({ids[0]}, "si_0"), usage_batch({ids[1]}, "si_1"), usage_batch({ids[2]}, "si_2")},
      0, 3);
  ASSERT_EQ(created.size(), 3u);
  const Batch& delivered = created[0];
  const Batch& dead = created[1];
  const Batch& dissolved = created[2];
  ASSERT_TRUE(GOT(store().batch_delivered(delivered, "req_1", 10)));
  ASSERT_TRUE(GOT(store().batch_dead(dead, "stripe_parameter_invalid", "req_2", 10)));
  ASSERT_TRUE(GOT(store().dissolve_batch(dissolved)));

  // The first outcome ended the claim: a late second one under the same token is refused.
  EXPECT_FALSE(GOT(store().batch_dead(delivered, "stripe_late", "req_late", 20)));
  EXPECT_FALSE(GOT(store().batch_retry_later(delivered, 1, 0, "late")));
  EXPECT_FALSE(GOT(store().batch_delivered(dead, "req_late", 20)));
  EXPECT_FALSE(GOT(store().batch_delivered(dissolved, "req_late", 20)));
  auto counted = counts();
  EXPECT_EQ(counted.delivered, 1);
  EXPECT_EQ(counted.dead, 1);
  EXPECT_EQ(counted.pending, 1);
  EXPECT_EQ(raw_count("SELECT COUNT(*) FROM batches WHERE request_id='req_late' OR "
                      "last_error IN ('late', 'stripe_late')"),
            0)
      << "no batch row took a late outcome";
  auto failure = GOT(store().latest_batch_failure());
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->batch_id, dead.id);
  EXPECT_TRUE(failure->dead);
  EXPECT_EQ(failure->request_id, "req_2");
  auto ledger = GOT(store().ledger_rows(0, kAnyTime));
  ASSERT_EQ(ledger.size(), 1u);
  EXPECT_EQ(ledger[0].request_id, "req_1");
  EXPECT_TRUE(claim().empty());
}

TEST_P(StoreContractTest, RequeueMovesParkedAndDeadRowsBackByReasonAndCustomer) {
  NewEvent dead_bob = row("dead-bob", 1, "bob");
  dead_bob.state = EventState::kDead;
  dead_bob.reason = "max_delivery_age_exceeded";
  ASSERT_TRUE(store().insert({parked_row("parked-alice", "customer_not_found", kFarFuture),
                              parked_row("parked-bob", "customer_not_found", std::nullopt, "bob"),
                              row("dead-alice", 1), dead_bob, row("carol", 1, "carol"),
                              row("batched", 1), row("delivered", 1)}));
  PlanWrites kill;
  kill.kills.push_back({{id_of("dead-alice")}, "max_delivery_age_exceeded", std::nullopt});
  ASSERT_TRUE(store().apply(std::move(kill), 0, 0));
  batch_over({id_of("batched")});
  const Batch delivered = batch_over({id_of("delivered")}, 0, "si_2");
  ASSERT_TRUE(GOT(store().batch_delivered(delivered, "req", 10)));
  auto counted = counts();
  ASSERT_EQ(counted.parked, 2);
  ASSERT_EQ(counted.dead, 2);

  auto moved = GOT(store().requeue("customer_not_found", "alice"));
  EXPECT_EQ(moved.moved, 1);
  EXPECT_FALSE(moved.handed_to_engine);
  EXPECT_TRUE(moved.engine_done);
  EXPECT_EQ(stored_row("parked-alice"), "0  1");
  EXPECT_EQ(GOT(store().requeue("", "bob")).moved, 2) << "any reason of bob's";
  EXPECT_EQ(stored_row("parked-bob"), "0  1");
  EXPECT_EQ(stored_row("dead-bob"), "0  1");
  EXPECT_EQ(GOT(store().requeue("max_delivery_age_exceeded", "")).moved, 1);
  EXPECT_EQ(GOT(store().requeue("", "")).moved, 0);

  counted = counts();
  EXPECT_EQ(counted.parked, 0);
  EXPECT_EQ(counted.dead, 0);
  EXPECT_EQ(counted.pending, 5);
  EXPECT_EQ(counted.batched, 1) << "batched rows are not requeued";
  EXPECT_EQ(counted.delivered, 1) << "delivered rows are not requeued";
  const auto requeued = call_ids_of(due(0));
  EXPECT_EQ(
      std::set<std::string>(requeued.begin(), requeued.end()),
      (std::set<std::string>{"parked-alice", "parked-bob", "dead-alice", "dead-bob", "carol"}))
      << "requeued rows are due at once, whatever their next attempt was";
  EXPECT_TRUE(GOT(store().reason_counts()).empty());
}

TEST_P(StoreContractTest, CostRowsRoundHalfUpWithTheCarry) {
  constexpr std::int64_t kUnit = kMicrosPerUnit;
  ASSERT_EQ(GOT(store().insert(
                    {cost_row("c1", 400'000), cost_row("c2", 400'000), cost_row("c3", 400'000)}))
                .inserted,
            3);
  ASSERT_TRUE(store().insert({cost_row("c4", 1'300'000)}));
  ASSERT_TRUE(store().insert({cost_row("c5", 700'000), cost_row("b1", 600'000, "bob")}));
  // 0.4 -> 0 (carry .4); .8 -> 1 (-.2); .2 -> 0 (.2); 1.5 -> 2 (-.5); .2 -> 0 (.2). bob: .6 -> 1.
  const std::string below = to_string(Reason::kBelowOneUnitCarried);
  EXPECT_EQ(stored_row("c1", "cost"), "2 " + below + " 0");
  EXPECT_EQ(stored_row("c2", "cost"), "0  1");
  EXPECT_EQ(stored_row("c3", "cost"), "2 " + below + " 0");
  EXPECT_EQ(stored_row("c4", "cost"), "0  2") << "half-up";
  EXPECT_EQ(stored_row("c5", "cost"), "2 " + below + " 0");
  EXPECT_EQ(stored_row("b1", "cost"), "0  1") << "each customer has a carry of its own";
  auto counted = counts();
  EXPECT_EQ(counted.pending, 3);
  EXPECT_EQ(counted.delivered, 3);

  // A carried row is in the ledger (nothing sent for it yet), not in the totals of what was sent.
  auto ledger = GOT(store().ledger_rows(0, kAnyTime));
  ASSERT_EQ(ledger.size(), 3u);
  for (const LedgerRow& carried : ledger) {
    EXPECT_EQ(carried.quantity, 0);
    EXPECT_EQ(carried.request_id, "");
  }
  EXPECT_TRUE(GOT(store().ledger_totals(0, kAnyTime)).empty());

  // Over many calls the billed units track the exact sum within half a unit.
  std::int64_t exact_micros = 0;
  for (int i = 0; i < 25; ++i) {
    const std::int64_t micros = 300'000 + 37'000 * (i % 4);
    exact_micros += micros;
    ASSERT_EQ(
        GOT(store().insert({cost_row("carol-" + std::to_string(i), micros, "carol")})).inserted, 1);
    std::int64_t billed = 0;
    for (const StoredEvent& event : due()) {
      if (event.customer_key == "carol") billed += event.quantity;
    }
    EXPECT_LE(std::abs(billed * kUnit - exact_micros), kUnit / 2)
        << "after " << i + 1 << " calls: billed " << billed << ", exact " << exact_micros;
  }
}

TEST_P(StoreContractTest, CostRowsOfSeveralCustomersInOneWriteKeepTheirOrder) {
  auto stored = GOT(store().insert({cost_row("a1", 400'000), cost_row("b1", 400'000, "bob"),
                                    row("plain", 9), cost_row("a2", 400'000),
                                    cost_row("b2", 700'000, "bob"), cost_row("a3", 1'200'000)}));
  EXPECT_EQ(stored.inserted, 6);
  const std::string below = "2 " + std::string(to_string(Reason::kBelowOneUnitCarried)) + " 0";
  EXPECT_EQ(stored_row("a1", "cost"), below);
  EXPECT_EQ(stored_row("a2", "cost"), "0  1") << ".4 + .4";
  EXPECT_EQ(stored_row("a3", "cost"), "0  1") << "-.2 + 1.2 = 1.0";
  EXPECT_EQ(stored_row("b1", "cost"), below);
  EXPECT_EQ(stored_row("b2", "cost"), "0  1") << ".4 + .7 = 1.1";
  EXPECT_EQ(stored_row("plain"), "0  9") << "a row without an amount keeps its quantity";
}

TEST_P(StoreContractTest, ADuplicateCostRowDoesNotMoveTheCarry) {
  ASSERT_TRUE(store().insert({cost_row("c1", 400'000)}));  // 0 units, carry .4
  auto duplicate = GOT(store().insert({cost_row("c1", 200'000)}));
  EXPECT_EQ(duplicate.inserted, 0);
  EXPECT_EQ(duplicate.duplicates, 1);
  ASSERT_TRUE(store().insert({cost_row("c2", 400'000)}));
  EXPECT_EQ(stored_row("c2", "cost"), "0  1") << ".4 + .4 (a moved carry: .4 + .2 + .4 -> 0)";
  // Carry now -.2. A duplicate in the same write, then a row that tells whether it moved.
  auto same_write = GOT(store().insert({cost_row("c3", 300'000), cost_row("c3", 300'000)}));
  EXPECT_EQ(same_write.inserted, 1);
  EXPECT_EQ(same_write.duplicates, 1);
  ASSERT_TRUE(store().insert({cost_row("c4", 350'000)}));
  EXPECT_EQ(stored_row("c4", "cost"), "2 below_one_unit_carried 0")
      << "-.2 + .3 + .35 = .45 (a moved carry: .75 -> 1)";
  EXPECT_EQ(stored_row("c1", "cost"), "2 below_one_unit_carried 0");
}

TEST_P(StoreContractTest, TheCarrySurvivesReopening) {
  ASSERT_TRUE(store().insert({cost_row("c1", 400'000)}));
  ASSERT_NO_FATAL_FAILURE(reopen());
  ASSERT_TRUE(store().insert({cost_row("c2", 400'000)}));
  EXPECT_EQ(stored_row("c2", "cost"), "0  1") << "the .4 carried across the reopening";
  ASSERT_NO_FATAL_FAILURE(reopen());
  EXPECT_EQ(GOT(store().insert({cost_row("c2", 900'000)})).duplicates, 1);
  ASSERT_TRUE(store().insert({cost_row("c3", 700'000)}));
  EXPECT_EQ(stored_row("c3", "cost"), "0  1") << "-.2 + .7 = .5 -> 1";
}

TEST_P(StoreContractTest, PruneRemovesOldDeliveredRowsStepByStep) {
  std::vector<NewEvent> rows;
  for (int i = 0; i < 7; ++i) rows.push_back(row("call-" + std::to_string(i), 1));
  ASSERT_TRUE(store().insert(rows));
  auto ids = ids_of(due());
  ASSERT_EQ(ids.size(), 7u);
  for (int i = 0; i < 6; ++i) {  // six delivered (three old, three recent), one left pending
    const Batch batch =
        batch_over({ids[static_cast<std::size_t>(i)]}, 0, "si_" + std::to_string(i));
    ASSERT_TRUE(GOT(store().batch_delivered(batch, "req", i % 2 == 0 ? 1000 : 9000)));
  }
  std::int64_t removed = 0;
  int steps = 0;
  for (PruneStep step; !step.done && steps < 20; ++steps) {
    step = GOT(store().prune_delivered(5000, 2));
    removed += step.removed;
    EXPECT_LE(step.removed, 2);
  }
  EXPECT_LT(steps, 20) << "pruning ends";
  EXPECT_GT(steps, 1) << "at most 2 rows a step";
  EXPECT_EQ(removed, 3);
  auto counted = counts();
  EXPECT_EQ(counted.delivered, 3);
  EXPECT_EQ(counted.pending, 1);
  auto ledger = GOT(store().ledger_rows(0, kAnyTime));
  EXPECT_EQ(std::vector<std::string>({ledger.size() > 0 ? ledger[0].call_id : "",
                                      ledger.size() > 1 ? ledger[1].call_id : "",
                                      ledger.size() > 2 ? ledger[2].call_id : ""}),
            (std::vector<std::string>{"call-1", "call-3", "call-5"}));
  EXPECT_EQ(raw_count("SELECT COUNT(*) FROM batches"), 3) << "emptied batches go too";

  // A second pass finds nothing more to remove; a later retention removes the rest.
  PruneStep again;
  for (steps = 0; !again.done && steps < 20; ++steps) {
    again = GOT(store().prune_delivered(5000, 100));
    EXPECT_EQ(again.removed, 0);
  }
  removed = 0;
  for (PruneStep step; !step.done;) {
    step = GOT(store().prune_delivered(10000, 100));
    removed += step.removed;
  }
  EXPECT_EQ(removed, 3);
  EXPECT_EQ(counts().delivered, 0);
  EXPECT_EQ(counts().pending, 1);
}

TEST_P(StoreContractTest, ShiftScheduleMovesRetryTimes) {
  ASSERT_TRUE(store().insert(
      {row("r0", 1), row("r1", 1), parked_row("by-hand", "missing_customer", std::nullopt)}));
  const Batch batch = batch_over({id_of("r0")});
  ASSERT_TRUE(GOT(store().batch_retry_later(batch, 1, 5000, "x")));
  PlanWrites park;
  park.parks.push_back({{id_of("r1")}, "customer_not_found", 3000});
  ASSERT_TRUE(store().apply(std::move(park), 0, 0));

  ASSERT_TRUE(store().shift_schedule(10'000));
  EXPECT_TRUE(due(12'999).empty());
  EXPECT_TRUE(claim(14'999).empty());
  EXPECT_EQ(call_ids_of(due(13'000)), (std::vector<std::string>{"r1"}));
  auto claimed = claim(15'000);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].batch.id, batch.id);

  ASSERT_TRUE(GOT(store().batch_retry_later(claimed[0].batch, 2, 20'000, "y")));
  ASSERT_TRUE(store().shift_schedule(-5'000));
  EXPECT_TRUE(claim(14'999).empty());
  EXPECT_EQ(claim(15'000).size(), 1u) << "a backward jump moves it earlier";
  EXPECT_EQ(counts().parked, 1) << "a row parked for an operator has no time to move";
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: a store shared by a fleet

class PgStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    STRIPE_SKIP_WITHOUT_PG();
    url_ = *test_pg_url();
    schema_ = std::make_unique<PgTestSchema>(url_);
  }

  Expected<std::unique_ptr<Outbox>> try_open(StoreMode mode = StoreMode::kEngine,
                                             std::chrono::seconds lease = std::chrono::seconds(30),
                                             const std::string& schema = "") {
    return PgOutbox::open(Secret(url_), schema.empty() ? schema_->name() : schema, mode, lease);
  }
  std::unique_ptr<Outbox> open(StoreMode mode = StoreMode::kEngine,
                               std::chrono::seconds lease = std::chrono::seconds(30),
                               const std::string& schema = "") {
    auto opened = try_open(mode, lease, schema);
    EXPECT_TRUE(opened) << opened.error().to_string();
    return opened ? std::move(opened).value() : nullptr;
  }
  std::string table(const std::string& name) const { return schema_->name() + "." + name; }
  std::string batch_state(std::int64_t id) {
    auto rows =
        schema_->query("SELECT state FROM " + table("batches") + " WHERE id=" + std::to_string(id));
    return rows.rows.size() == 1 ? rows.rows[0][0] : "";
  }

  std::string url_;
  std::unique_ptr<PgTestSchema> schema_;
};

TEST_F(PgStoreTest, ReplicasHandTheEngineLeaseOver) {
  auto a = open();
  auto b = open();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->instance_id(), b->instance_id()) << "one store";
  EXPECT_TRUE(a->shared());
  ASSERT_TRUE(GOT(a->hold_engine({})));
  EXPECT_FALSE(GOT(b->hold_engine({}))) << "one holder at a time";
  EXPECT_TRUE(GOT(a->hold_engine({}))) << "the holder renews";
  EXPECT_FALSE(GOT(b->hold_engine({})));

  ASSERT_TRUE(b->insert({row("r0", 1), row("r1", 2), row("r2", 3)})) << "any replica stores";
  auto ids = ids_of(GOT(a->due_events(0, 10)));
  ASSERT_EQ(ids.size(), 3u);
  auto refused = b->apply(batches_of({usage_batch({ids[2]})}), 0, 1);
  ASSERT_FALSE(refused) << "only the holder plans";
  EXPECT_EQ(refused.error().code, ErrorCode::kStorage);
  EXPECT_NE(refused.error().message.find("lease"), std::string::npos) << refused.error().message;
  EXPECT_EQ(GOT(a->counts()).batched, 0) << "the refused round wrote nothing";

  auto created = GOT(
      a->apply(batches_of({usage_batch({ids[0]}, "si_a"), usage_batch({ids[1]}, "si_b")}), 0, 1));
  ASSERT_EQ(created.size(), 2u);
  const Batch stale = created[0];  // claimed by a
  ASSERT_GT(stale.lease, 0);

  a->release_engine();
  EXPECT_TRUE(GOT(b->hold_engine({}))) << "a released lease is taken at once";
  EXPECT_FALSE(GOT(a->hold_engine({})));
  EXPECT_FALSE(a->apply(batches_of({usage_batch({ids[2]})}), 0, 1)) << "a no longer plans";

  auto claimed = GOT(b->claim_due_batches(kAnyTime, 10));
  ASSERT_EQ(claimed.size(), 2u) << "the new holder resends the old holder's claimed batches";
  std::map<std::string, Batch> by_key;
  for (const ClaimedBatch& entry : claimed) by_key[entry.batch.idempotency_key] = entry.batch;
  ASSERT_EQ(by_key.count(stale.idempotency_key), 1u) << "with the same idempotency key";
  const Batch current = by_key[stale.idempotency_key];
  EXPECT_EQ(current.id, stale.id);
  EXPECT_GT(current.lease, stale.lease);
  EXPECT_EQ(by_key.count(created[1].idempotency_key), 1u);

  EXPECT_FALSE(GOT(a->batch_delivered(stale, "req_a", 10))) << "the old holder is fenced out";
  EXPECT_FALSE(GOT(a->batch_dead(stale, "stripe_x", "req_a", 10)));
  EXPECT_FALSE(GOT(a->batch_retry_later(stale, 3, 999, "late")));
  EXPECT_EQ(batch_state(stale.id), "1") << "still being sent";
  auto counted = GOT(b->counts());
  EXPECT_EQ(counted.batched, 2);
  EXPECT_EQ(counted.delivered + counted.dead, 0);
  ASSERT_TRUE(GOT(b->batch_delivered(current, "req_b", 10)));
  EXPECT_EQ(GOT(a->counts()).delivered, 1);
}

TEST_F(PgStoreTest, AnExpiredLeaseIsTakenOverWithoutRenewal) {
  auto a = open(StoreMode::kEngine, std::chrono::seconds(2));
  auto b = open(StoreMode::kEngine, std::chrono::seconds(2));
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(GOT(a->hold_engine({})));
  ASSERT_TRUE(a->insert({row("r0", 1)}));
  auto created = GOT(a->apply(batches_of({usage_batch(ids_of(GOT(a->due_events(0, 10))))}), 0, 1));
  ASSERT_EQ(created.size(), 1u);
  const Batch stale = created[0];
  EXPECT_FALSE(GOT(b->hold_engine({})));

  // a stops renewing (a paused process); b takes the lease once it expires on the database clock.
  const auto started = std::chrono::steady_clock::now();
  const bool taken =
      testing::eventually([&] { return GOT(b->hold_engine({})); }, std::chrono::seconds(15));
  ASSERT_TRUE(taken) << "the lease never expired";
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(1000))
      << "not before it expired";
  EXPECT_FALSE(GOT(a->hold_engine({}))) << "the old holder sees it lost the lease";
  EXPECT_FALSE(a->apply(batches_of({}), 0, 0));

  auto claimed = GOT(b->claim_due_batches(kAnyTime, 10));
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].batch.idempotency_key, stale.idempotency_key);
  EXPECT_GT(claimed[0].batch.lease, stale.lease);
  EXPECT_FALSE(GOT(a->batch_delivered(stale, "req_a", 10)));
  EXPECT_EQ(batch_state(stale.id), "1");
  EXPECT_EQ(GOT(b->counts()).batched, 1);
  EXPECT_TRUE(GOT(b->batch_delivered(claimed[0].batch, "req_b", 10)));
}

TEST_F(PgStoreTest, TheSameCallReportedToTwoReplicasIsStoredOnce) {
  auto a = open();
  auto b = open(StoreMode::kMaintenance);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(GOT(a->insert({row("call-1", 5)})).inserted, 1);
  auto second = GOT(b->insert({row("call-1", 5), row("call-2", 6)}));
  EXPECT_EQ(second.inserted, 1);
  EXPECT_EQ(second.duplicates, 1);
  EXPECT_EQ(GOT(a->counts()).pending, 2);
  EXPECT_EQ(GOT(b->counts()).pending, 2);

  // Cost rows: the carry is the fleet's, and a duplicate at another replica does not move it.
  ASSERT_TRUE(a->insert({cost_row("x", 600'000)}));                   // 1 unit, carry -.4
  EXPECT_EQ(GOT(b->insert({cost_row("x", 600'000)})).duplicates, 1);  // no move
  ASSERT_TRUE(b->insert({cost_row("y", 600'000)}));                   // -.4 + .6 = .2 -> 0
  auto rows = schema_->query("SELECT call_id, quantity, state FROM " + table("events") +
                             " WHERE dimension='cost' ORDER BY id");
  ASSERT_EQ(rows.rows.size(), 2u);
  EXPECT_EQ(rows.rows[0], (std::vector<std::string>{"x", "1", "0"}));
  EXPECT_EQ(rows.rows[1], (std::vector<std::string>{"y", "0", "2"}));
}

TEST_F(PgStoreTest, ConcurrentInsertsOfOverlappingCallsStoreEachOnce) {
  auto a = open();
  auto b = open(StoreMode::kMaintenance);
  ASSERT_TRUE(a && b);
  constexpr int kThreads = 4, kPerThread = 200, kStride = 50, kChunk = 25;
  struct Tally {
    std::int64_t inserted = 0, duplicates = 0, attempts = 0;
    std::vector<std::string> errors;
  };
  std::vector<Tally> tallies(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Outbox& store = t % 2 == 0 ? *a : *b;
      std::vector<int> numbers;
      for (int i = 0; i < kPerThread; ++i) numbers.push_back(t * kStride + i);
      std::shuffle(numbers.begin(), numbers.end(), std::mt19937(static_cast<unsigned>(t) + 1));
      Tally& tally = tallies[static_cast<std::size_t>(t)];
      for (int first = 0; first < kPerThread; first += kChunk) {
        std::vector<NewEvent> chunk;
        for (int i = first; i < first + kChunk; ++i) {
          chunk.push_back(row("call-" + std::to_string(numbers[static_cast<std::size_t>(i)]), 1));
        }
        auto stored = store.insert(chunk);
        tally.attempts += kChunk;
        if (!stored) {
          tally.errors.push_back(stored.error().to_string());
          continue;
        }
        tally.inserted += stored->inserted;
        tally.duplicates += stored->duplicates;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::int64_t inserted = 0, duplicates = 0, attempts = 0;
  for (const Tally& tally : tallies) {
    for (const std::string& error : tally.errors) ADD_FAILURE() << "insert failed: " << error;
    inserted += tally.inserted;
    duplicates += tally.duplicates;
    attempts += tally.attempts;
  }
  constexpr std::int64_t kDistinct = (kThreads - 1) * kStride + kPerThread;
  EXPECT_EQ(inserted, kDistinct);
  EXPECT_EQ(inserted + duplicates, attempts);
  EXPECT_EQ(attempts, kThreads * kPerThread);
  EXPECT_EQ(GOT(a->counts()).pending, kDistinct);
  auto distinct =
      schema_->query("SELECT COUNT(*), COUNT(DISTINCT call_id) FROM " + table("events"));
  ASSERT_EQ(distinct.rows.size(), 1u);
  EXPECT_EQ(distinct.rows[0],
            (std::vector<std::string>{std::to_string(kDistinct), std::to_string(kDistinct)}));
}

TEST_F(PgStoreTest, ConcurrentCostRowsOfTwoCustomersKeepEachCarry) {
  auto a = open();
  auto b = open(StoreMode::kMaintenance);
  ASSERT_TRUE(a && b);
  constexpr int kWrites = 60;
  constexpr std::int64_t kMicros = 300'000;  // .3 of a unit a row
  std::vector<std::string> errors[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      Outbox& store = t == 0 ? *a : *b;
      // Each write has a row of both customers, in opposite orders at the two replicas.
      const std::string first = t == 0 ? "alice" : "bob", second = t == 0 ? "bob" : "alice";
      for (int i = 0; i < kWrites; ++i) {
        const std::string id = std::to_string(t) + "-" + std::to_string(i);
        auto stored = store.insert({cost_row(first + "-" + id, kMicros, first),
                                    cost_row(second + "-" + id, kMicros, second)});
        if (!stored) errors[t].push_back(stored.error().to_string());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& list : errors) {
    for (const std::string& error : list) ADD_FAILURE() << "insert failed: " << error;
  }
  for (const std::string customer : {"alice", "bob"}) {
    auto billed = schema_->query("SELECT COUNT(*), COALESCE(SUM(quantity), 0) FROM " +
                                 table("events") + " WHERE customer_key='" + customer + "'");
    ASSERT_EQ(billed.rows.size(), 1u);
    EXPECT_EQ(billed.rows[0][0], std::to_string(2 * kWrites));
    const std::int64_t exact = 2 * kWrites * kMicros;
    EXPECT_LE(std::abs(std::stoll(billed.rows[0][1]) * kMicrosPerUnit - exact), kMicrosPerUnit / 2)
        << customer << ": billed " << billed.rows[0][1] << " units of exactly " << exact
        << " micros: no carry lost or moved twice";
  }
}

TEST_F(PgStoreTest, ReopensASchemaOfTheCurrentFormat) {
  std::string instance;
  {
    auto first = open();
    ASSERT_TRUE(first);
    instance = first->instance_id();
    EXPECT_FALSE(instance.empty());
    ASSERT_EQ(first->notes().size(), 1u);
    EXPECT_NE(first->notes()[0].find("created"), std::string::npos) << first->notes()[0];
    ASSERT_TRUE(first->insert({row("call-1", 1)}));
  }
  auto version =
      schema_->query("SELECT value FROM " + table("meta") + " WHERE key='schema_version'");
  ASSERT_EQ(version.rows.size(), 1u);
  EXPECT_EQ(version.rows[0][0], std::to_string(PgOutbox::kSchemaVersion));
  for (StoreMode mode : {StoreMode::kEngine, StoreMode::kMaintenance, StoreMode::kReadOnly}) {
    auto again = open(mode);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->instance_id(), instance);
    EXPECT_TRUE(again->notes().empty()) << "nothing created the second time";
    EXPECT_EQ(GOT(again->counts()).pending, 1);
  }
}

TEST_F(PgStoreTest, RefusesASchemaOfANewerFormat) {
  { ASSERT_TRUE(open()); }
  schema_->query("UPDATE " + table("meta") + " SET value='99' WHERE key='schema_version'");
  for (StoreMode mode : {StoreMode::kEngine, StoreMode::kMaintenance, StoreMode::kReadOnly}) {
    auto refused = try_open(mode);
    ASSERT_FALSE(refused) << "mode " << static_cast<int>(mode);
    EXPECT_EQ(refused.error().code, ErrorCode::kStorage);
    EXPECT_NE(refused.error().message.find("format"), std::string::npos) << refused.error().message;
    EXPECT_NE(refused.error().message.find("99"), std::string::npos) << refused.error().message;
  }
  auto version =
      schema_->query("SELECT value FROM " + table("meta") + " WHERE key='schema_version'");
  ASSERT_EQ(version.rows.size(), 1u);
  EXPECT_EQ(version.rows[0][0], "99") << "a refused open changes nothing";
}

TEST_F(PgStoreTest, ReadOnlyOnAMissingSchemaFailsAndCreatesNothing) {
  auto opened = try_open(StoreMode::kReadOnly);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, ErrorCode::kStorage);
  EXPECT_NE(opened.error().message.find(schema_->name()), std::string::npos)
      << opened.error().message;
  EXPECT_FALSE(schema_->exists());
}

TEST_F(PgStoreTest, AnUnreachableDatabaseFailsFastWithoutShowingThePassword) {
  const auto started = std::chrono::steady_clock::now();
  auto opened = PgOutbox::open(Secret("postgresql://postgres:s3cretpw@127.0.0.1:1/x"),
                               schema_->name(), StoreMode::kEngine, std::chrono::seconds(30));
  const auto took = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, ErrorCode::kStorage);
  EXPECT_LT(took, std::chrono::seconds(6));
  EXPECT_EQ(opened.error().message.find("s3cretpw"), std::string::npos) << opened.error().message;
  EXPECT_EQ(opened.error().to_string().find("s3cretpw"), std::string::npos);
  EXPECT_NE(opened.error().message.find("127.0.0.1"), std::string::npos)
      << "names the database: " << opened.error().message;
}

TEST_F(PgStoreTest, TwoSchemasInOneDatabaseAreIndependent) {
  PgTestSchema other(url_);
  auto a = open();
  auto b = open(StoreMode::kEngine, std::chrono::seconds(30), other.name());
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->instance_id(), b->instance_id());
  EXPECT_TRUE(GOT(a->hold_engine({})));
  EXPECT_TRUE(GOT(b->hold_engine({}))) << "each schema has its own engine lease";
  EXPECT_EQ(GOT(a->insert({row("call-1", 1)})).inserted, 1);
  EXPECT_EQ(GOT(b->insert({row("call-1", 1), row("call-2", 1)})).inserted, 2)
      << "the same call in another schema is another store's";
  auto batches = GOT(a->apply(batches_of({usage_batch(ids_of(GOT(a->due_events(0, 10))))}), 0, 1));
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(GOT(a->counts()).batched, 1);
  auto other_counts = GOT(b->counts());
  EXPECT_EQ(other_counts.batched, 0);
  EXPECT_EQ(other_counts.pending, 2);
  EXPECT_TRUE(GOT(b->claim_due_batches(kAnyTime, 10)).empty());
  a.reset();
  b.reset();
}

}  // namespace
}  // namespace stripe_billing

namespace stripe_billing {
namespace {

TEST_F(PgStoreTest, AHolderWhoseLeaseExpiredTakesItAgainWithItsOldClaimsReleased) {
  // Its connection failed for longer than the lease (simulated: the lease's expiry passes) while
  // it held claimed batches; its queues were dropped then. Coming back it must not renew those
  // claims for ever: they are released and claimed again.
  auto a = open(StoreMode::kEngine, std::chrono::seconds(2));
  ASSERT_TRUE(a);
  ASSERT_TRUE(GOT(a->hold_engine({})));
  ASSERT_TRUE(a->insert({row("x0", 1)}));
  const auto ids = ids_of(GOT(a->due_events(0, 10)));
  ASSERT_EQ(ids.size(), 1u);
  const auto created = GOT(a->apply(batches_of({usage_batch({ids[0]})}), 0, 1));
  ASSERT_EQ(created.size(), 1u);
  ASSERT_GT(created[0].lease, 0);
  schema_->query("UPDATE " + table("engine_lease") + " SET expires_ms=0");
  // It asks again once its own view of the lease is due for renewal (a third of the lease).
  std::vector<ClaimedBatch> claimed;
  ASSERT_TRUE(testing::eventually(
      [&] {
        if (!GOT(a->hold_engine({}))) return false;
        claimed = GOT(a->claim_due_batches(kAnyTime, 10));
        return !claimed.empty();
      },
      std::chrono::seconds(10)))
      << "the batch it lost track of is claimable again";
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].batch.idempotency_key, created[0].idempotency_key);
  EXPECT_GT(claimed[0].batch.lease, created[0].lease);
  EXPECT_FALSE(GOT(a->batch_delivered(created[0], "req_old", 1))) << "the old claim is fenced";
}

TEST_F(PgStoreTest, OnlyTheClaimsTheEngineStillHoldsAreRenewed) {
  // A claim whose commit answer was lost (the engine never queued it) expires and is claimed
  // again; one the engine holds keeps being renewed.
  auto a = open(StoreMode::kEngine, std::chrono::seconds(2));
  ASSERT_TRUE(a);
  ASSERT_TRUE(GOT(a->hold_engine({})));
  ASSERT_TRUE(a->insert({row("h0", 1), row("h1", 2)}));
  const auto ids = ids_of(GOT(a->due_events(0, 10)));
  ASSERT_EQ(ids.size(), 2u);
  const auto created = GOT(a->apply(
      batches_of({usage_batch({ids[0]}, "si_held"), usage_batch({ids[1]}, "si_lost")}), 0, 2));
  ASSERT_EQ(created.size(), 2u);
  const std::vector<std::int64_t> held = {created[0].id};
  std::vector<ClaimedBatch> again;
  ASSERT_TRUE(testing::eventually(
      [&] {
        if (!GOT(a->hold_engine(held))) return false;
        again = GOT(a->claim_due_batches(kAnyTime, 10));
        return !again.empty();
      },
      std::chrono::seconds(15)));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].batch.id, created[1].id) << "the one it lost, not the one it holds";
}

TEST_F(PgStoreTest, AReplicaWithOnlyTheDocumentedGrantsOpensAnExistingSchema) {
  auto owner = open();
  ASSERT_TRUE(owner);
  const std::string role = schema_->name() + "_gw";
  schema_->query("CREATE ROLE " + role + " LOGIN");
  schema_->query("GRANT USAGE ON SCHEMA " + schema_->name() + " TO " + role);
  schema_->query("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + schema_->name() +
                 " TO " + role);
  schema_->query("GRANT USAGE ON ALL SEQUENCES IN SCHEMA " + schema_->name() + " TO " + role);
  PQconninfoOption* options = PQconninfoParse(url_.c_str(), nullptr);
  ASSERT_NE(options, nullptr);
  std::string host = "127.0.0.1", port = "5432", dbname = "postgres";
  for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const std::string key = option->keyword;
    if (key == "host") host = option->val;
    if (key == "port") port = option->val;
    if (key == "dbname") dbname = option->val;
  }
  PQconninfoFree(options);
  const std::string as_role =
      "host=" + host + " port=" + port + " dbname=" + dbname + " user=" + role;
  {
    auto replica = PgOutbox::open(Secret(as_role), schema_->name(), StoreMode::kEngine,
                                  std::chrono::seconds(30));
    ASSERT_TRUE(replica) << replica.error().to_string();
    EXPECT_TRUE((*replica)->insert({row("g0", 4)}));
    EXPECT_EQ(GOT((*replica)->counts()).pending, 1);
  }
  schema_->query("DROP OWNED BY " + role);
  schema_->query("DROP ROLE " + role);
}

TEST_F(PgStoreTest, TextPostgresCannotHoldIsStoredEscapedNotRefused) {
  auto a = open();
  ASSERT_TRUE(a);
  NewEvent odd = row("nul-model", 3);
  odd.model = std::string("gpt\0x", 5);
  NewEvent bytes = row("latin1-model", 4);
  bytes.model = "caf\xe9";
  const auto stored = GOT(a->insert({odd, bytes}));
  EXPECT_EQ(stored.inserted, 2);
  const auto rows = schema_->query("SELECT model FROM " + table("events") + " ORDER BY call_id");
  ASSERT_EQ(rows.rows.size(), 2u);
  EXPECT_EQ(rows.rows[0][0], "caf\\xe9");
  EXPECT_EQ(rows.rows[1][0], "gpt\\x00x");
}

}  // namespace
}  // namespace stripe_billing
