// The sync mode's journal: what it reads back after a crash, and what it never reads back.
#include "journal.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "test_support.h"

namespace stripe_billing {
namespace {

using testing::in_seconds;
using testing::TempDir;

NewEvent row(const std::string& call_id, std::int64_t quantity = 5) {
  NewEvent event;
  event.call_id = call_id;
  event.dimension = "total_tokens";
  event.sink = Sink::kMeterEvent;
  event.customer_key = "alice \xe2\x82\xac";
  event.quantity = quantity;
  event.event_time = 1'767'225'600;
  event.accepted_at_ms = 1'767'225'600'123;
  event.model = "gpt-4o";
  event.cost = 0.000245;
  event.prompt_tokens = 812;
  event.completion_tokens = 205;
  return event;
}

class JournalTest : public ::testing::Test {
 protected:
  std::unique_ptr<Journal> open() {
    auto journal = Journal::open(path());
    EXPECT_TRUE(journal) << journal.error().to_string();
    return std::move(journal.value());
  }
  std::string path() const { return dir_.file("outbox.db.journal"); }
  std::vector<NewEvent> recovered() { return *open()->recover(); }
  TempDir dir_;
};

TEST_F(JournalTest, EveryFieldOfARowComesBack) {
  NewEvent parked = row("call-2", 7);
  parked.state = EventState::kParked;
  parked.reason = "missing_customer";
  parked.next_attempt_ms = 1'767'225'660'000;
  NewEvent cost = row("call-3", 0);
  cost.amount_micros = 1'600'000;
  cost.sink = Sink::kUsageRecord;
  {
    auto journal = open();
    ASSERT_TRUE(journal->reset());
    ASSERT_TRUE(journal->append({row("call-1"), parked}));
    ASSERT_TRUE(journal->append({cost}));
  }
  const auto rows = recovered();
  ASSERT_EQ(rows.size(), 3u);
  const NewEvent& first = rows[0];
  EXPECT_EQ(first.call_id, "call-1");
  EXPECT_EQ(first.customer_key, "alice \xe2\x82\xac");
  EXPECT_EQ(first.sink, Sink::kMeterEvent);
  EXPECT_EQ(first.quantity, 5);
  EXPECT_EQ(first.event_time, 1'767'225'600);
  EXPECT_EQ(first.accepted_at_ms, 1'767'225'600'123);
  EXPECT_EQ(first.model, "gpt-4o");
  EXPECT_DOUBLE_EQ(first.cost, 0.000245);
  EXPECT_EQ(first.prompt_tokens, 812);
  EXPECT_EQ(first.completion_tokens, 205);
  EXPECT_EQ(first.state, EventState::kPending);
  EXPECT_FALSE(first.amount_micros);
  EXPECT_FALSE(first.next_attempt_ms);
  EXPECT_EQ(rows[1].state, EventState::kParked);
  EXPECT_EQ(rows[1].reason, "missing_customer");
  EXPECT_EQ(rows[1].next_attempt_ms, 1'767'225'660'000);
  EXPECT_EQ(rows[2].amount_micros, 1'600'000);
  EXPECT_EQ(rows[2].sink, Sink::kUsageRecord);
}

TEST_F(JournalTest, ATornRecordEndsWhatIsReadBack) {
  {
    auto journal = open();
    ASSERT_TRUE(journal->reset());
    ASSERT_TRUE(journal->append({row("call-1")}));
    ASSERT_TRUE(journal->append({row("call-2"), row("call-3")}));
  }
  // A crash in the middle of the second write: its tail never reached the disk.
  std::string data;
  {
    std::ifstream in(path(), std::ios::binary);
    data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::size_t header = encode_journal_header(0).size();
  const std::string first = encode_journal_record({row("call-1")}, 0);
  const std::string second = encode_journal_record({row("call-2"), row("call-3")}, 0);
  for (std::size_t cut = header + first.size() + 1; cut < header + first.size() + second.size();
       cut += 37) {
    std::string torn = data.substr(0, cut);
    const auto rows = decode_journal(torn);
    ASSERT_EQ(rows.size(), 1u) << cut;
    EXPECT_EQ(rows[0].call_id, "call-1");
  }
}

TEST_F(JournalTest, ADamagedRecordEndsWhatIsReadBack) {
  const std::string first = encode_journal_record({row("call-1")}, 4);
  std::string second = encode_journal_record({row("call-2")}, 4);
  second[second.size() / 2] ^= 0x40;
  const auto rows = decode_journal(encode_journal_header(4) + first + second +
                                   encode_journal_record({row("call-3")}, 4));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].call_id, "call-1");
}

TEST_F(JournalTest, RecordsOfAnEarlierGenerationAreNeverReadAsNew) {
  const std::string old_records =
      encode_journal_record({row("old-1")}, 6) + encode_journal_record({row("old-2")}, 6);
  const std::string new_record = encode_journal_record({row("new-1")}, 7);
  // The new generation overwrote the start of the records; the old one's tail is still there.
  std::string records = old_records;
  records.replace(0, new_record.size(), new_record);
  const auto rows =
      decode_journal(encode_journal_header(7) + records + encode_journal_record({row("old-3")}, 6));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].call_id, "new-1");
  EXPECT_TRUE(decode_journal(encode_journal_header(8) + old_records).empty());
}

TEST_F(JournalTest, AfterAResetNothingOfBeforeComesBack) {
  {
    auto journal = open();
    ASSERT_TRUE(journal->reset());
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(journal->append({row("old-" + std::to_string(i))}));
    ASSERT_TRUE(journal->reset());
    EXPECT_EQ(journal->size(), 0u);
  }
  EXPECT_TRUE(recovered().empty());
  {
    auto journal = open();
    ASSERT_TRUE(journal->recover());
    ASSERT_TRUE(journal->reset());
    ASSERT_TRUE(journal->append({row("new-1")}));
  }
  const auto rows = recovered();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].call_id, "new-1");
}

TEST_F(JournalTest, GarbageIsReadAsNothing) {
  for (const std::string& data :
       {std::string(), std::string(4096, '\0'), std::string("SBJ2xx"), std::string(10'000, '\xff'),
        std::string(4096, '\0') + encode_journal_record({row("call-1")}, 0)}) {
    EXPECT_TRUE(decode_journal(data).empty());
  }
}

TEST_F(JournalTest, TheFileIsReadableOnlyByItsOwnerAndWrittenThroughOnce) {
  auto journal = open();
  ASSERT_TRUE(journal->reset());
  struct stat info {};
  ASSERT_EQ(::stat(path().c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
  EXPECT_EQ(info.st_size, 16 << 20) << "appends then overwrite blocks the file already has";
}

// A logger finds what a crash left in the journal, and stores it before it does anything else.
class JournalRecoveryTest : public testing::EmulatorTest {};

TEST_F(JournalRecoveryTest, RowsACrashLeftInTheJournalAreBilledAtTheNextStart) {
  const std::string item = add_customer("alice");
  Config config = this->config();
  config.durability = "sync";
  {
    auto logger = make_logger(config);  // creates the outbox and the journal
    logger->log_success_event(for_customer("call-1", 4));
    ASSERT_TRUE(logger->flush(in_seconds(10)));
  }
  // What a SIGKILL right after a sync commit leaves: the rows in the journal only.
  NewEvent journaled;
  journaled.call_id = "call-2";
  journaled.dimension = "total_tokens";
  journaled.customer_key = "alice";
  journaled.quantity = 6;
  journaled.event_time = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  journaled.accepted_at_ms = journaled.event_time * 1000;
  NewEvent again = journaled;
  again.call_id = "call-1";  // and one the outbox already has: stored once
  again.quantity = 4;
  {
    auto journal = Journal::open(outbox_path() + ".journal");
    ASSERT_TRUE(journal);
    ASSERT_TRUE((*journal)->recover());
    ASSERT_TRUE((*journal)->reset());
    ASSERT_TRUE((*journal)->append({journaled, again}));
  }
  auto logger = make_logger(config);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  EXPECT_EQ(emulator_.total_usage(item), 10);
  EXPECT_EQ(logger->stats().deduplicated, 1u);
  auto left = Journal::open(outbox_path() + ".journal");
  ASSERT_TRUE(left);
  EXPECT_TRUE((*left)->recover()->empty()) << "emptied once the outbox has it";
}

}  // namespace
}  // namespace stripe_billing
