#include "outbox.h"

#include <gtest/gtest.h>
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

}  // namespace
}  // namespace stripe_billing
