// The intake's count of what it holds: stats().pending is the outbox's pending and batched rows
// plus the events still in memory (Intake::counts()). An event is in one or the other at every
// moment of its commit, never in both.
#include "intake.h"

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "temp_dir.h"

namespace stripe_billing {
namespace {

using testing::TempDir;

class IntakeCountsTest : public ::testing::TestWithParam<const char*> {
 protected:
  IntakeCountsTest() {
    Config raw;
    raw.api_key = "sk_test_intake_00000000000000000000";
    raw.price_id = "price_1";
    raw.charge_by = "user_id";
    raw.outbox_path = dir_.file("outbox.db");
    raw.durability = GetParam();
    raw.commit_interval_ms = "1";
    auto finalized = finalize_config(raw);
    EXPECT_TRUE(finalized) << finalized.error().to_string();
    config_ = std::make_unique<FinalizedConfig>(std::move(finalized.value()));
    auto outbox = Outbox::open_engine(raw.outbox_path.value(), false);
    EXPECT_TRUE(outbox) << outbox.error().to_string();
    outbox_ = std::move(outbox.value());
  }

  // An intake whose every commit, at the moment its rows are in the outbox (and before it has
  // returned to the writer), reads what it holds, as stats() would from another thread.
  std::unique_ptr<Intake> make_intake() {
    auto log = std::make_shared<spdlog::logger>("intake_test",
                                                std::make_shared<spdlog::sinks::null_sink_mt>());
    auto intake = std::make_unique<Intake>(*config_, *outbox_, metrics_, log, Clock::system(),
                                           [this] { on_commit(); });
    intake_ = intake.get();
    return intake;
  }

  void on_commit() {
    auto counts = intake_->counts();
    ASSERT_TRUE(counts) << counts.error().to_string();
    std::lock_guard lock(mutex_);
    seen_.push_back(counts->outbox.pending + counts->outbox.batched +
                    static_cast<std::int64_t>(counts->in_memory));
  }

  static UsageEvent event(int n) {
    UsageEvent event;
    event.call_id = "call-" + std::to_string(n);
    event.model = "gpt-4o";
    event.total_tokens = 10;
    event.user_id = "alice";
    event.end_time = std::chrono::system_clock::now();
    return event;
  }

  std::vector<std::int64_t> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

  TempDir dir_;
  std::unique_ptr<FinalizedConfig> config_;
  std::unique_ptr<Outbox> outbox_;
  Metrics metrics_;
  Intake* intake_ = nullptr;
  std::mutex mutex_;
  std::vector<std::int64_t> seen_;  // pending, as each commit saw it
};

TEST_P(IntakeCountsTest, AnEventBeingCommittedIsCountedOnceNotInTheOutboxAndInMemory) {
  auto intake = make_intake();
  intake->submit(event(1));
  ASSERT_TRUE(intake->flush(std::chrono::steady_clock::now() + std::chrono::seconds(10)));
  ASSERT_EQ(seen(), std::vector<std::int64_t>{1})
      << "the row is in the outbox and the event still in memory: one event, counted once";
  auto after = intake->counts();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->outbox.pending, 1);
  EXPECT_EQ(after->in_memory, 0u);
}

TEST_P(IntakeCountsTest, EveryCommitSeesEachEventSubmittedSoFarOnce) {
  auto intake = make_intake();
  constexpr int kEvents = 200;
  for (int n = 0; n < kEvents; ++n) {
    intake->submit(event(n));
    // Each event its own commit: what the commit sees is every event submitted, exactly.
    ASSERT_TRUE(intake->flush(std::chrono::steady_clock::now() + std::chrono::seconds(10)));
    const auto counts = seen();
    ASSERT_FALSE(counts.empty());
    ASSERT_EQ(counts.back(), n + 1) << "commit of event " << n;
  }
  auto after = intake->counts();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->outbox.pending, kEvents);
  EXPECT_EQ(after->in_memory, 0u);
}

INSTANTIATE_TEST_SUITE_P(Durability, IntakeCountsTest, ::testing::Values("sync", "async"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace stripe_billing
