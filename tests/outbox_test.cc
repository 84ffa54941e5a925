#include "outbox.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "temp_dir.h"

namespace stripe_billing {
namespace {

using testing::TempDir;

NewEvent pending(const std::string& call_id, std::int64_t quantity,
                 const std::string& key = "alice") {
  NewEvent event;
  event.call_id = call_id;
  event.dimension = "total_tokens";
  event.customer_key = key;
  event.quantity = quantity;
  event.event_time = 1'700'000'000;
  event.accepted_at_ms = 1'700'000'000'000;
  return event;
}

// A usage-record batch over `ids`, stored as a planning round stores it; claimed when `lease`.
Expected<Batch> make_batch(Outbox& outbox, const std::vector<std::int64_t>& ids,
                           const std::string& target = "si_1", std::int64_t now_ms = 0,
                           bool lease = true) {
  NewBatch spec;
  spec.batch.kind = BatchKind::kUsageRecord;
  spec.batch.target = target;
  spec.batch.customer_key = "alice";
  spec.batch.quantity = 5;
  spec.batch.timestamp = 1;
  for (std::int64_t id : ids) spec.members.push_back({id, "cus_1"});
  PlanWrites writes;
  writes.batches.push_back(std::move(spec));
  auto created = outbox.apply(std::move(writes), now_ms, lease ? 1 : 0);
  if (!created) return std::move(created).error();
  return std::move(created->front());
}

std::int64_t first_pending(Outbox& outbox) { return outbox.due_events(0, 1)->at(0).id; }

class OutboxTest : public ::testing::Test {
 protected:
  std::unique_ptr<Outbox> open() {
    auto outbox = Outbox::open(dir_.file("outbox.db"), false);
    EXPECT_TRUE(outbox) << outbox.error().to_string();
    return std::move(outbox.value());
  }
  std::unique_ptr<Outbox> open_engine() {
    auto outbox = Outbox::open_engine(dir_.file("outbox.db"), false);
    EXPECT_TRUE(outbox) << outbox.error().to_string();
    return outbox ? std::move(outbox.value()) : nullptr;
  }
  // Runs `sql` on a connection of the test's own.
  void exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(dir_.file("outbox.db").c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql;
    sqlite3_close(db);
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
    auto batch = make_batch(*outbox, {(*events)[0].id, (*events)[1].id}, "si_1", 1000, false);
    ASSERT_TRUE(batch);
    key = batch->idempotency_key;
  }
  auto outbox = open_engine();
  auto claimed = outbox->claim_due_batches(2000, 10);
  ASSERT_TRUE(claimed);
  ASSERT_EQ(claimed->size(), 1u);
  const Batch& batch = (*claimed)[0].batch;
  EXPECT_EQ(batch.idempotency_key, key);
  EXPECT_EQ(batch.quantity, 5);
  EXPECT_EQ(batch.target, "si_1");
  EXPECT_EQ(batch.events, 2);
  EXPECT_EQ(batch.kind, BatchKind::kUsageRecord);
  EXPECT_TRUE(*outbox->has_outstanding());
}

TEST_F(OutboxTest, BatchKeysAreUniqueAcrossRecreatedFiles) {
  std::string first_key;
  {
    auto outbox = open();
    ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
    first_key = make_batch(*outbox, {first_pending(*outbox)})->idempotency_key;
  }
  std::filesystem::remove(dir_.file("outbox.db"));
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  EXPECT_NE(first_key, make_batch(*outbox, {first_pending(*outbox)})->idempotency_key);
}

TEST_F(OutboxTest, ABatchedEventIsNotDueAgainNorBatchedTwice) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5), pending("call-2", 5)}));
  auto events = *outbox->due_events(0, 10);
  ASSERT_TRUE(make_batch(*outbox, {events[0].id}));
  auto left = *outbox->due_events(0, 10);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].call_id, "call-2");
  EXPECT_FALSE(make_batch(*outbox, {events[0].id}));
  EXPECT_EQ(outbox->counts()->batched, 1) << "the refused round wrote nothing";
}

TEST_F(OutboxTest, ADeliveredBatchDeliversItsEventsAndClosesIt) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  auto batch = make_batch(*outbox, {first_pending(*outbox)});
  ASSERT_TRUE(*outbox->batch_delivered(*batch, "req_1", 10));
  auto counts = *outbox->counts();
  EXPECT_EQ(counts.delivered, 1);
  EXPECT_EQ(counts.pending + counts.batched, 0);
  EXPECT_FALSE(*outbox->has_outstanding());
  EXPECT_TRUE(outbox->claim_due_batches(100, 10)->empty());
}

TEST_F(OutboxTest, ARetryWaitsForItsTime) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  auto batch = make_batch(*outbox, {first_pending(*outbox)});
  ASSERT_TRUE(*outbox->batch_retry_later(*batch, 1, 5000, "network"));
  EXPECT_TRUE(outbox->claim_due_batches(4999, 10)->empty());
  auto due = *outbox->claim_due_batches(5000, 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].batch.attempts, 1);
}

TEST_F(OutboxTest, AClaimedBatchIsNotClaimedAgainUntilReleased) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  ASSERT_TRUE(make_batch(*outbox, {first_pending(*outbox)}, "si_1", 0, false));
  auto first = *outbox->claim_due_batches(0, 10);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_TRUE(outbox->claim_due_batches(0, 10)->empty());
  ASSERT_TRUE(*outbox->release(first[0].batch));
  auto again = *outbox->claim_due_batches(0, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_GT(again[0].batch.lease, first[0].batch.lease) << "every claim raises the token";
}

TEST_F(OutboxTest, AnOutcomeUnderAnOldLeaseIsNotRecorded) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  ASSERT_TRUE(make_batch(*outbox, {first_pending(*outbox)}, "si_1", 0, false));
  Batch stale = outbox->claim_due_batches(0, 10)->at(0).batch;
  ASSERT_TRUE(*outbox->release(stale));
  Batch current = outbox->claim_due_batches(0, 10)->at(0).batch;
  EXPECT_FALSE(*outbox->batch_delivered(stale, "req_old", 10));
  EXPECT_FALSE(*outbox->batch_dead(stale, "stripe_x", "req_old", 10));
  EXPECT_EQ(outbox->counts()->batched, 1);
  EXPECT_TRUE(*outbox->batch_delivered(current, "req_new", 10));
  EXPECT_EQ(outbox->counts()->delivered, 1);
}

TEST_F(OutboxTest, ParkedEventsComeBackWhenDueAndNotBefore) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  PlanWrites writes;
  writes.parks.push_back({{first_pending(*outbox)}, "customer_not_found", 1000});
  ASSERT_TRUE(outbox->apply(std::move(writes), 0, 0));
  EXPECT_TRUE(outbox->due_events(999, 10)->empty());
  EXPECT_EQ(outbox->counts()->parked, 1);
  EXPECT_EQ(outbox->due_events(1000, 10)->size(), 1u);
  EXPECT_EQ(outbox->counts()->parked, 0);
  EXPECT_EQ(outbox->counts()->pending, 1);
}

TEST_F(OutboxTest, AnEventParkedWithoutATimeWaitsForAnOperator) {
  auto outbox = open();
  NewEvent missing = pending("call-1", 5, "");
  missing.state = EventState::kParked;
  missing.reason = "missing_customer";
  ASSERT_TRUE(outbox->insert({missing}));
  EXPECT_TRUE(outbox->due_events(INT64_MAX, 10)->empty());
  EXPECT_EQ(outbox->requeue("missing_customer", "")->moved, 1);
  EXPECT_EQ(outbox->due_events(0, 10)->size(), 1u);
}

TEST_F(OutboxTest, ADissolvedBatchReturnsItsEventsToPending) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  auto batch = make_batch(*outbox, {first_pending(*outbox)}, "si_old");
  ASSERT_TRUE(*outbox->dissolve_batch(*batch));
  EXPECT_TRUE(outbox->claim_due_batches(INT64_MAX, 10)->empty());
  EXPECT_EQ(outbox->due_events(0, 10)->size(), 1u);
  // The next batch never reuses the dissolved batch's id, so never its idempotency key.
  auto next = make_batch(*outbox, {first_pending(*outbox)}, "si_new");
  ASSERT_TRUE(next);
  EXPECT_NE(next->idempotency_key, batch->idempotency_key);
}

TEST_F(OutboxTest, ADeadBatchKillsItsEventsWithTheReason) {
  auto outbox = open();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  auto batch = make_batch(*outbox, {first_pending(*outbox)});
  ASSERT_TRUE(*outbox->batch_dead(*batch, "stripe_parameter_invalid", "req_9", 10));
  EXPECT_EQ(outbox->counts()->dead, 1);
  EXPECT_FALSE(*outbox->has_outstanding());
  EXPECT_EQ(outbox->requeue("stripe_parameter_invalid", "")->moved, 1);
}

TEST_F(OutboxTest, PrunesInStepsOnlyDeliveredRowsOlderThanTheRetention) {
  auto outbox = open();
  std::vector<NewEvent> rows;
  for (int i = 0; i < 7; ++i) rows.push_back(pending("call-" + std::to_string(i), 5));
  ASSERT_TRUE(outbox->insert(rows));
  auto events = *outbox->due_events(0, 10);
  for (int i = 0; i < 6; ++i) {  // six delivered (three old, three new), one left pending
    auto batch = make_batch(*outbox, {events[static_cast<std::size_t>(i)].id});
    ASSERT_TRUE(*outbox->batch_delivered(*batch, "req", i % 2 == 0 ? 1000 : 9000));
  }
  std::int64_t removed = 0;
  int steps = 0;
  for (PruneStep step; !step.done && steps < 10; ++steps) {
    step = *outbox->prune_delivered(5000, 2);
    removed += step.removed;
  }
  EXPECT_EQ(removed, 3);
  EXPECT_EQ(steps, 4) << "2 rows a step: three full steps, then one that finds the end";
  auto counts = *outbox->counts();
  EXPECT_EQ(counts.delivered, 3);
  EXPECT_EQ(counts.pending, 1);
  EXPECT_EQ(outbox->ledger_rows(0, INT64_MAX)->size(), 3u);
}

TEST_F(OutboxTest, CountsKeptAsRowsChangeEqualACountOfTheFile) {
  auto outbox = open_engine();
  std::vector<NewEvent> rows;
  for (int i = 0; i < 20; ++i) rows.push_back(pending("call-" + std::to_string(i), 5));
  NewEvent dead = pending("bad", 5);
  dead.state = EventState::kDead;
  dead.reason = "negative_quantity";
  rows.push_back(dead);
  ASSERT_TRUE(outbox->insert(rows));
  auto events = *outbox->due_events(0, 100);
  PlanWrites writes;
  writes.parks.push_back({{events[0].id, events[1].id}, "customer_not_found", std::nullopt});
  writes.kills.push_back({{events[2].id}, "invalid_customer_key", std::nullopt});
  ASSERT_TRUE(outbox->apply(std::move(writes), 0, 0));
  auto delivered = make_batch(*outbox, {events[3].id, events[4].id});
  ASSERT_TRUE(*outbox->batch_delivered(*delivered, "req", 10));
  auto dissolved = make_batch(*outbox, {events[5].id});
  ASSERT_TRUE(*outbox->dissolve_batch(*dissolved));
  auto failed = make_batch(*outbox, {events[6].id});
  ASSERT_TRUE(*outbox->batch_dead(*failed, "stripe_x", "req", 10));
  ASSERT_TRUE(make_batch(*outbox, {events[7].id, events[8].id}));
  ASSERT_TRUE(outbox->requeue("customer_not_found", ""));
  const OutboxCounts kept = *outbox->counts();
  const OutboxCounts counted = *Outbox::open_for_reading(dir_.file("outbox.db")).value()->counts();
  EXPECT_EQ(kept.pending, counted.pending);
  EXPECT_EQ(kept.batched, counted.batched);
  EXPECT_EQ(kept.delivered, counted.delivered);
  EXPECT_EQ(kept.parked, counted.parked);
  EXPECT_EQ(kept.dead, counted.dead);
  EXPECT_EQ(counted.pending, 14);
  EXPECT_EQ(counted.batched, 2);
  EXPECT_EQ(counted.delivered, 2);
  EXPECT_EQ(counted.dead, 3);
}

// stats() reads counts() at every scrape: it must not count the ledger (a big one held the old
// outbox's lock for seconds). Kept counts cost the same whatever the ledger's size.
TEST_F(OutboxTest, CountsDoNotGrowWithTheLedger) {
  auto outbox = open_engine();
  std::vector<NewEvent> rows;
  for (int i = 0; i < 200'000; ++i) {
    NewEvent row = pending("ledger-" + std::to_string(i), 5);
    row.state = EventState::kDelivered;
    rows.push_back(std::move(row));
    if (rows.size() == 8192) {
      ASSERT_TRUE(outbox->insert(rows));
      rows.clear();
    }
  }
  ASSERT_TRUE(outbox->insert(rows));
  const auto time = [](auto&& call) {
    const auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i) EXPECT_TRUE(call());
    return std::chrono::steady_clock::now() - started;
  };
  auto reader = Outbox::open_for_reading(dir_.file("outbox.db"));
  ASSERT_TRUE(reader);
  const auto counted = time([&] { return (*reader)->counts(); });  // a query, as before
  const auto kept = time([&] { return outbox->counts(); });
  EXPECT_EQ(outbox->counts()->delivered, 200'000);
  EXPECT_LT(kept * 10, counted) << "kept counts should not depend on the ledger's size";
}

TEST_F(OutboxTest, TheOldestPendingRowIsFoundAmongPendingAndBatchedRows) {
  auto outbox = open();
  NewEvent first = pending("call-1", 5);
  first.accepted_at_ms = 111;
  NewEvent second = pending("call-2", 5);
  second.accepted_at_ms = 222;
  ASSERT_TRUE(outbox->insert({first, second}));
  EXPECT_EQ(outbox->counts()->oldest_pending_ms, 111);
  ASSERT_TRUE(make_batch(*outbox, {first_pending(*outbox)}));
  EXPECT_EQ(outbox->counts()->oldest_pending_ms, 111) << "batched, not delivered: still waiting";
}

TEST_F(OutboxTest, ARowWhoseCostIsNotANumberFailsTheWriteInsteadOfVanishingAsADuplicate) {
  auto outbox = open();
  NewEvent broken = pending("call-1", 5);
  broken.cost = std::numeric_limits<double>::quiet_NaN();
  auto result = outbox->insert({pending("call-0", 5), broken});
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kStorage);
  EXPECT_EQ(outbox->counts()->pending, 0) << "the whole write failed; nothing half-stored";
}

TEST_F(OutboxTest, ARowBreakingAConstraintOtherThanTheKeyIsAnErrorNotADuplicate) {
  auto outbox = open();
  exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.call_id='bad' "
      "BEGIN SELECT RAISE(ABORT, 'refused'); END;");
  auto result = outbox->insert({pending("bad", 5)});
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kStorage);
}

TEST_F(OutboxTest, ASecondEngineOnTheSameFileIsRefused) {
  auto engine = open_engine();
  ASSERT_TRUE(engine);
  auto second = Outbox::open_engine(dir_.file("outbox.db"), false);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::kStorage);
  EXPECT_NE(second.error().message.find("another process"), std::string::npos)
      << second.error().message;
  EXPECT_TRUE(Outbox::open(dir_.file("outbox.db"), false)) << "operators' tools may still open it";
  engine.reset();
  EXPECT_TRUE(Outbox::open_engine(dir_.file("outbox.db"), false)) << "free once the engine stops";
}

TEST_F(OutboxTest, ARequeueWhileAnEngineRunsIsHandedToTheEngine) {
  auto engine = open_engine();
  NewEvent missing = pending("call-1", 5, "");
  missing.state = EventState::kParked;
  missing.reason = "missing_customer";
  ASSERT_TRUE(engine->insert({missing}));
  auto tool = open();
  auto handed = tool->requeue("missing_customer", "", std::chrono::milliseconds(0));
  ASSERT_TRUE(handed);
  EXPECT_TRUE(handed->handed_to_engine);
  EXPECT_FALSE(handed->engine_done);
  EXPECT_EQ(engine->counts()->parked, 1) << "the tool moved nothing itself";
  EXPECT_EQ(*engine->apply_requeue_requests(5), 1);
  EXPECT_EQ(engine->counts()->parked, 0);
  EXPECT_EQ(engine->counts()->pending, 1);
  EXPECT_EQ(*engine->apply_requeue_requests(6), 0) << "answered once";
}

TEST_F(OutboxTest, AFileReadableByOthersIsTightenedToTheOwnerOnly) {
  open().reset();
  ASSERT_EQ(::chmod(dir_.file("outbox.db").c_str(), 0644), 0);
  auto outbox = open();
  struct stat info {};
  ASSERT_EQ(::stat(dir_.file("outbox.db").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
  ASSERT_EQ(outbox->notes().size(), 1u);
  EXPECT_NE(outbox->notes()[0].find("0600"), std::string::npos);
}

TEST_F(OutboxTest, ADeletedFileIsRecreatedWithEverythingCommitted) {
  auto outbox = open_engine();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5), pending("call-2", 6)}));
  EXPECT_EQ(*outbox->check_file(), FileCheck::kSame);
  ASSERT_TRUE(std::filesystem::remove(dir_.file("outbox.db")));
  EXPECT_EQ(*outbox->check_file(), FileCheck::kRecreated);
  ASSERT_TRUE(outbox->insert({pending("call-3", 7)}));
  EXPECT_EQ(*outbox->check_file(), FileCheck::kSame);
  outbox.reset();
  auto reopened = open();
  EXPECT_EQ(reopened->due_events(0, 10)->size(), 3u) << "committed before and after the delete";
  struct stat info {};
  ASSERT_EQ(::stat(dir_.file("outbox.db").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
}

TEST_F(OutboxTest, AReplacedFileIsRecreatedFromTheOpenDatabase) {
  auto outbox = open_engine();
  ASSERT_TRUE(outbox->insert({pending("call-1", 5)}));
  ASSERT_TRUE(std::filesystem::remove(dir_.file("outbox.db")));
  {
    std::FILE* file = std::fopen(dir_.file("outbox.db").c_str(), "w");
    std::fclose(file);
  }
  EXPECT_EQ(*outbox->check_file(), FileCheck::kRecreated);
  outbox.reset();
  EXPECT_EQ(open()->due_events(0, 10)->size(), 1u);
}

TEST_F(OutboxTest, InterruptedWritesFailAtOnceInsteadOfWaitingForALock) {
  auto outbox = open();
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.file("outbox.db").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  outbox->interrupt_writes();
  const auto started = std::chrono::steady_clock::now();
  auto result = outbox->insert({pending("call-1", 5)});
  const auto waited = std::chrono::steady_clock::now() - started;
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  EXPECT_FALSE(result);
  EXPECT_LT(waited, std::chrono::seconds(2)) << "the busy wait (5 s) was not cut short";
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
  auto batches = *outbox->claim_due_batches(0, 10);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].batch.idempotency_key, "sb1-oldinstance-b7");
  EXPECT_EQ(batches[0].batch.kind, BatchKind::kUsageRecord);
  EXPECT_EQ(batches[0].batch.events, 1);
  auto ledger = *outbox->counts();
  EXPECT_EQ(ledger.batched, 1);
  auto pending_events = *outbox->due_events(0, 10);
  ASSERT_EQ(pending_events.size(), 1u);
  EXPECT_EQ(pending_events[0].call_id, "call-2");
  NewEvent meter = pending("call-2", 6);
  meter.sink = Sink::kMeterEvent;
  auto result = outbox->insert({pending("call-2", 6), meter});
  EXPECT_EQ(result->duplicates, 1);
  EXPECT_EQ(result->inserted, 1);
}

TEST_F(OutboxTest, AFileOfFormatTwoGetsBatchKindsFromItsTargets) {
  {
    auto outbox = open();
    NewEvent meter = pending("call-1", 5);
    meter.sink = Sink::kMeterEvent;
    NewEvent stream = pending("call-2", 6);
    stream.sink = Sink::kMeterEvent;
    ASSERT_TRUE(outbox->insert({meter, stream}));
  }
  // Back to format 2: no kind, count or lease; the stream's batches were told by their target.
  exec(
      "INSERT INTO batches(id, idempotency_key, target, customer_id, customer_key, quantity, "
      "timestamp, state, next_attempt_ms, created_ms, sink) VALUES "
      "(1, 'k1', 'llm_tokens cus_1', 'cus_1', 'alice', 5, 1, 1, 0, 0, 1),"
      "(2, 'k2', 'meter_event_stream', '', '', 6, 1, 1, 0, 0, 1);"
      "UPDATE events SET state=1, batch_id=1, customer_id='cus_1' WHERE call_id='call-1';"
      "UPDATE events SET state=1, batch_id=2, customer_id='cus_1' WHERE call_id='call-2';"
      "ALTER TABLE batches DROP COLUMN kind; ALTER TABLE batches DROP COLUMN event_count;"
      "ALTER TABLE batches DROP COLUMN lease_owner; ALTER TABLE batches DROP COLUMN lease_token;"
      "DROP INDEX events_by_state_id;"
      "CREATE INDEX events_by_state ON events(state, next_attempt_ms);");
  auto outbox = open();
  EXPECT_EQ(outbox->notes().size(), 1u);
  auto claimed = *outbox->claim_due_batches(0, 10);
  ASSERT_EQ(claimed.size(), 2u);
  EXPECT_EQ(claimed[0].batch.kind, BatchKind::kMeterEvent);
  EXPECT_EQ(claimed[0].batch.target, "llm_tokens cus_1");
  EXPECT_EQ(claimed[1].batch.kind, BatchKind::kMeterStream);
  EXPECT_EQ(claimed[1].batch.target, "");
  EXPECT_EQ(claimed[1].batch.events, 1);
  ASSERT_EQ(claimed[1].rows.size(), 1u);
  EXPECT_EQ(claimed[1].rows[0].call_id, "call-2");
}

}  // namespace
}  // namespace stripe_billing
