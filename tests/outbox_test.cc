#include "outbox.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "temp_dir.h"

namespace stripe_billing {
namespace {

using testing::TempDir;

NewEvent pending(const std::string& call_id, std::int64_t quantity, const std::string& key = "alice") {
  NewEvent event;
  event.call_id = call_id;
  event.dimension = "total_tokens";
  event.customer_key = key;
  event.quantity = quantity;
  event.event_time = 1'700'000'000;
  event.accepted_at_ms = 1'700'000'000'000;
  return event;
}

class OutboxTest : public ::testing::Test {
 protected:
  std::unique_ptr<Outbox> open() {
    auto outbox = Outbox::open(dir_.file("outbox.db"), false);
    EXPECT_TRUE(outbox) << outbox.error().to_string();
    return std::move(outbox.value());
  }
  TempDir dir_;
};

TEST_F(OutboxTest, CreatesTheFileReadableOnlyByItsOwner) {
  open();
  struct stat info {};
  ASSERT_EQ(::stat(dir_.file("outbox.db").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
}

TEST_F(OutboxTest, StoresEachCallAndDimensionOnce) {
  auto outbox = open();
  auto first = outbox->insert({pending("call-1", 5), pending("call-2", 6), pending("call-1", 5)});
  ASSERT_TRUE(first);
  EXPECT_EQ(first->inserted, 2);
  EXPECT_EQ(first->duplicates, 1);
  NewEvent other_dimension = pending("call-1", 2);
  other_dimension.dimension = "prompt_tokens";
  auto second = outbox->insert({pending("call-2", 6), other_dimension});
  EXPECT_EQ(second->inserted, 1);
  EXPECT_EQ(second->duplicates, 1);
}

TEST_F(OutboxTest, KeepsEventsAndBatchesAcrossReopening) {
  std::string key;
  {
    auto outbox = open();
    ASSERT_TRUE(outbox->insert({pending("call-1", 5), pending("call-2", 7)}));
    auto events = outbox->due_events(0, 10);
    ASSERT_EQ(events->size(), 2u);
    auto batch = outbox->create_batch("si_1", "cus_1", "alice", 12, 1'700'000'000,
                                      {(*events)[0].id, (*events)[1].id}, 1000);
    ASSERT_TRUE(batch);
    key = batch->idempotency_key;
  }
  auto outbox = open();
  auto batches = outbox->due_batches(2000, 10);
  ASSERT_TRUE(batches);
  ASSERT_EQ(batches->size(), 1u);
  EXPECT_EQ((*batches)[0].idempotency_key, key);
  EXPECT_EQ((*batches)[0].quantity, 12);
  EXPECT_EQ((*batches)[0].target, "si_1");
  EXPECT_EQ((*batches)[0].events, 2);
  EXPECT_TRUE(*outbox->has_outstanding());
}

TEST_F(OutboxTest, BatchKeysAreUniqueAcrossRecreatedFiles) {
  std::string first_key;
  {
    auto outbox = open();
    outbox->insert({pending("call-1", 5)});
    first_key = outbox->create_batch("si_1", "", "alice", 5, 1, {outbox->due_events(0, 1)->at(0).id}, 0)
                    ->idempotency_key;
  }
  std::filesystem::remove(dir_.file("outbox.db"));
  auto outbox = open();
  outbox->insert({pending("call-1", 5)});
  const auto second_key =
      outbox->create_batch("si_1", "", "alice", 5, 1, {outbox->due_events(0, 1)->at(0).id}, 0)
          ->idempotency_key;
  EXPECT_NE(first_key, second_key);
}

TEST_F(OutboxTest, ABatchedEventIsNotDueAgain) {
  auto outbox = open();
  outbox->insert({pending("call-1", 5), pending("call-2", 5)});
  auto events = *outbox->due_events(0, 10);
  ASSERT_TRUE(outbox->create_batch("si_1", "", "alice", 5, 1, {events[0].id}, 0));
  auto left = *outbox->due_events(0, 10);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].call_id, "call-2");
  EXPECT_FALSE(outbox->create_batch("si_1", "", "alice", 5, 1, {events[0].id}, 0));
}

TEST_F(OutboxTest, ADeliveredBatchDeliversItsEventsAndClosesIt) {
  auto outbox = open();
  outbox->insert({pending("call-1", 5)});
  auto batch = outbox->create_batch("si_1", "", "alice", 5, 1, {outbox->due_events(0, 1)->at(0).id}, 0);
  ASSERT_TRUE(outbox->batch_delivered(batch->id, "req_1", 10));
  auto counts = *outbox->counts();
  EXPECT_EQ(counts.delivered, 1);
  EXPECT_EQ(counts.pending + counts.batched, 0);
  EXPECT_FALSE(*outbox->has_outstanding());
  EXPECT_TRUE(outbox->due_batches(100, 10)->empty());
}

TEST_F(OutboxTest, ARetryWaitsForItsTime) {
  auto outbox = open();
  outbox->insert({pending("call-1", 5)});
  auto batch = outbox->create_batch("si_1", "", "alice", 5, 1, {outbox->due_events(0, 1)->at(0).id}, 0);
  ASSERT_TRUE(outbox->batch_retry_later(batch->id, 1, 5000, "network"));
  EXPECT_TRUE(outbox->due_batches(4999, 10)->empty());
  auto due = *outbox->due_batches(5000, 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].attempts, 1);
}

TEST_F(OutboxTest, ParkedEventsComeBackWhenDueAndNotBefore) {
  auto outbox = open();
  outbox->insert({pending("call-1", 5)});
  const auto id = outbox->due_events(0, 1)->at(0).id;
  ASSERT_TRUE(outbox->park({id}, "customer_not_found", 1000));
  EXPECT_TRUE(outbox->due_events(999, 10)->empty());
  EXPECT_EQ(outbox->counts()->parked, 1);
  EXPECT_EQ(outbox->due_events(1000, 10)->size(), 1u);
}

TEST_F(OutboxTest, AnEventParkedWithoutATimeWaitsForAnOperator) {
  auto outbox = open();
  NewEvent missing = pending("call-1", 5, "");
  missing.state = EventState::kParked;
  missing.reason = "missing_customer";
  outbox->insert({missing});
  EXPECT_TRUE(outbox->due_events(INT64_MAX, 10)->empty());
  EXPECT_EQ(*outbox->requeue("missing_customer", ""), 1);
  EXPECT_EQ(outbox->due_events(0, 10)->size(), 1u);
}

TEST_F(OutboxTest, ADissolvedBatchReturnsItsEventsToPending) {
  auto outbox = open();
  outbox->insert({pending("call-1", 5)});
  auto batch = outbox->create_batch("si_old", "", "alice", 5, 1, {outbox->due_events(0, 1)->at(0).id}, 0);
  ASSERT_TRUE(outbox->dissolve_batch(batch->id));
  EXPECT_TRUE(outbox->due_batches(INT64_MAX, 10)->empty());
  EXPECT_EQ(outbox->due_events(0, 10)->size(), 1u);
  // The next batch never reuses the dissolved batch's id, so never its idempotency key.
  auto next = outbox->create_batch("si_new", "", "alice", 5, 1, {outbox->due_events(0, 1)->at(0).id}, 0);
  ASSERT_TRUE(next);
  EXPECT_NE(next->idempotency_key, batch->idempotency_key);
}

TEST_F(OutboxTest, ADeadBatchKillsItsEventsWithTheReason) {
  auto outbox = open();
  outbox->insert({pending("call-1", 5)});
  auto batch = outbox->create_batch("si_1", "", "alice", 5, 1, {outbox->due_events(0, 1)->at(0).id}, 0);
  ASSERT_TRUE(outbox->batch_dead(batch->id, "stripe_parameter_invalid", "req_9"));
  EXPECT_EQ(outbox->counts()->dead, 1);
  EXPECT_FALSE(*outbox->has_outstanding());
  EXPECT_EQ(*outbox->requeue("stripe_parameter_invalid", ""), 1);
}

TEST_F(OutboxTest, PrunesOnlyDeliveredRowsOlderThanTheRetention) {
  auto outbox = open();
  outbox->insert({pending("old", 5), pending("new", 5), pending("waiting", 5)});
  auto events = *outbox->due_events(0, 10);
  auto old_batch = outbox->create_batch("si_1", "", "alice", 5, 1, {events[0].id}, 0);
  auto new_batch = outbox->create_batch("si_1", "", "alice", 5, 1, {events[1].id}, 0);
  outbox->batch_delivered(old_batch->id, "req_1", 1000);
  outbox->batch_delivered(new_batch->id, "req_2", 9000);
  EXPECT_EQ(*outbox->prune_delivered(5000), 1);
  auto counts = *outbox->counts();
  EXPECT_EQ(counts.delivered, 1);
  EXPECT_EQ(counts.pending, 1);
}

TEST_F(OutboxTest, OpeningAnUnwritablePathIsAnError) {
  auto outbox = Outbox::open(dir_.file("missing-dir/outbox.db"), false);
  ASSERT_FALSE(outbox);
  EXPECT_EQ(outbox.error().code, ErrorCode::kStorage);
}

TEST_F(OutboxTest, OpeningACorruptFileIsAnError) {
  {
    std::FILE* file = std::fopen(dir_.file("outbox.db").c_str(), "w");
    std::fputs("this is not a database, it is a text file of some length ...............", file);
    std::fclose(file);
  }
  auto outbox = Outbox::open(dir_.file("outbox.db"), false);
  ASSERT_FALSE(outbox);
  EXPECT_EQ(outbox.error().code, ErrorCode::kStorage);
}

// ------------------------------------------------------------------------------------------
// Sinks, the carried cost remainder, and files written before billing meters

TEST_F(OutboxTest, AUsageRecordRowAndAMeterRowOfOneCallAreBothKept) {
  auto outbox = open();
  NewEvent meter = pending("call-1", 5);
  meter.sink = Sink::kMeterEvent;
  auto result = outbox->insert({pending("call-1", 5), meter, meter});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->inserted, 2);
  EXPECT_EQ(result->duplicates, 1);
  auto events = *outbox->due_events(0, 10);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].sink, Sink::kUsageRecord);
  EXPECT_EQ(events[1].sink, Sink::kMeterEvent);
}

NewEvent cost(const std::string& call_id, std::int64_t micros) {
  NewEvent event = pending(call_id, 0);
  event.dimension = "cost";
  event.amount_micros = micros;
  return event;
}

std::int64_t stored_quantity(Outbox& outbox, std::size_t index) {
  auto events = *outbox.due_events(0, 100);
  return index < events.size() ? events[index].quantity : -1;
}

TEST_F(OutboxTest, CostIsRoundedHalfUpWithTheRemainderCarriedAcrossReopening) {
  {
    auto outbox = open();
    ASSERT_TRUE(outbox->insert({cost("call-1", 1'600'000), cost("call-2", 1'600'000)}));
    EXPECT_EQ(stored_quantity(*outbox, 0), 2);  // 1.6 → 2, carry -0.4
    EXPECT_EQ(stored_quantity(*outbox, 1), 1);  // 1.2 → 1, carry +0.2
  }
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({cost("call-3", 300'000)}));  // 0.5 → 1 (half up)
  EXPECT_EQ(stored_quantity(*outbox, 2), 1);
}

TEST_F(OutboxTest, ADuplicateCostRowDoesNotMoveTheCarry) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({cost("call-1", 400'000)}));
  ASSERT_TRUE(outbox->insert({cost("call-1", 400'000), cost("call-1", 400'000)}));
  ASSERT_TRUE(outbox->insert({cost("call-2", 400'000)}));  // 0.4 + 0.4 → 1
  auto counts = *outbox->counts();
  EXPECT_EQ(counts.delivered, 1) << "the first 0.4 bills nothing yet: kept in the carry";
  EXPECT_EQ(counts.pending, 1);
  EXPECT_EQ(stored_quantity(*outbox, 0), 1);
}

TEST_F(OutboxTest, EachCustomerCarriesItsOwnRemainder) {
  auto outbox = open();
  NewEvent bob = cost("call-2", 400'000);
  bob.customer_key = "bob";
  ASSERT_TRUE(outbox->insert({cost("call-1", 400'000), bob, cost("call-3", 400'000)}));
  auto events = *outbox->due_events(0, 10);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].call_id, "call-3");
  EXPECT_EQ(events[0].quantity, 1);
}

// The schema as the delivery engine wrote it before billing meters (no sink, no customer_id).
constexpr const char* kSchemaBeforeMeters = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY,
  call_id TEXT NOT NULL,
  dimension TEXT NOT NULL,
  customer_key TEXT NOT NULL,
  quantity INTEGER NOT NULL,
  event_time INTEGER NOT NULL,
  accepted_at_ms INTEGER NOT NULL,
  model TEXT NOT NULL DEFAULT '',
  cost REAL NOT NULL DEFAULT 0,
  prompt_tokens INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  state INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  next_attempt_ms INTEGER,
  batch_id INTEGER,
  updated_ms INTEGER NOT NULL,
  UNIQUE(call_id, dimension));
CREATE INDEX IF NOT EXISTS events_by_state ON events(state, next_attempt_ms);
CREATE INDEX IF NOT EXISTS events_by_batch ON events(batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  idempotency_key TEXT NOT NULL UNIQUE,
  target TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  customer_key TEXT NOT NULL,
  quantity INTEGER NOT NULL,
  timestamp INTEGER NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  delivered_ms INTEGER,
  request_id TEXT NOT NULL DEFAULT '',
  last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS batches_by_state ON batches(state, next_attempt_ms);
)sql";

TEST_F(OutboxTest, AFileWrittenBeforeMetersIsMigratedWithItsRowsAndBatches) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(dir_.file("outbox.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, kSchemaBeforeMeters, nullptr, nullptr, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "INSERT INTO meta VALUES('instance_id','oldinstance');"
                           "INSERT INTO batches(id, idempotency_key, target, customer_id, "
                           "customer_key, quantity, timestamp, state, next_attempt_ms, created_ms) "
                           "VALUES(7,'sb1-oldinstance-b7','si_1','cus_1','alice',5,1,1,0,0);"
                           "INSERT INTO events(call_id, dimension, customer_key, quantity, "
                           "event_time, accepted_at_ms, state, batch_id, updated_ms) VALUES"
                           "('call-1','total_tokens','alice',5,1,0,1,7,0),"
                           "('call-2','total_tokens','alice',6,1,0,0,NULL,0);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto outbox = open();
  EXPECT_EQ(outbox->instance_id(), "oldinstance");
  auto batches = *outbox->due_batches(0, 10);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].idempotency_key, "sb1-oldinstance-b7");
  EXPECT_EQ(batches[0].sink, Sink::kUsageRecord);
  auto members = *outbox->batch_events(7);
  ASSERT_EQ(members.size(), 1u);
  EXPECT_EQ(members[0].customer_id, "cus_1");
  auto pending_events = *outbox->due_events(0, 10);
  ASSERT_EQ(pending_events.size(), 1u);
  EXPECT_EQ(pending_events[0].call_id, "call-2");
  NewEvent meter = pending("call-2", 6);
  meter.sink = Sink::kMeterEvent;
  auto result = outbox->insert({pending("call-2", 6), meter});
  EXPECT_EQ(result->duplicates, 1);
  EXPECT_EQ(result->inserted, 1);
}

}  // namespace
}  // namespace stripe_billing
