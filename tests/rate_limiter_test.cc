// The adaptive rate limiter, on a clock the test moves: bursts, floors, recovery, reasons.
#include "rate_limiter.h"

#include <gtest/gtest.h>

#include <atomic>

namespace stripe_billing {
namespace {

class FakeClock : public Clock {
 public:
  TimePoint now() const override {
    return TimePoint(std::chrono::seconds(1'700'000'000)) + offset();
  }
  std::chrono::steady_clock::time_point steady_now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::hours(1000)) + offset();
  }
  void advance(std::chrono::milliseconds by) { offset_ += by.count(); }

 private:
  std::chrono::milliseconds offset() const { return std::chrono::milliseconds(offset_.load()); }
  std::atomic<std::int64_t> offset_{0};
};

class RateLimiterTest : public ::testing::Test {
 protected:
  RateLimiter make(double rate) {
    RateLimitPolicy policy;
    policy.rate = rate;
    return RateLimiter(policy, clock_);
  }
  // Takes every token there is now; how many.
  static int drain(RateLimiter& limiter) {
    int taken = 0;
    while (limiter.try_acquire().count() == 0) ++taken;
    return taken;
  }
  // `answers` answers over the next `ms` milliseconds, the first `throttled` of them throttling.
  void answer(RateLimiter& limiter, int answers, int throttled, std::chrono::milliseconds ms) {
    for (int i = 0; i < answers; ++i) {
      clock_->advance(ms / answers);
      limiter.on_answer(i < throttled ? Throttle::kRate : Throttle::kNone);
    }
  }
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
};

TEST_F(RateLimiterTest, AllowsABurstOfATwentiethOfASecondThenTheRate) {
  RateLimiter limiter = make(100);
  EXPECT_EQ(drain(limiter), 5);
  EXPECT_GT(limiter.try_acquire().count(), 0);
  clock_->advance(std::chrono::milliseconds(30));
  EXPECT_EQ(drain(limiter), 3);
  // However long it was quiet: no more than a twentieth of a second's worth at once.
  clock_->advance(std::chrono::seconds(10));
  EXPECT_EQ(drain(limiter), 5);
}

TEST_F(RateLimiterTest, NoSecondSeesMoreThanTheRateAndItsSmallBurst) {
  RateLimiter limiter = make(40);
  // Requests taken as fast as they come, for 3 s in steps of 10 ms: any 1 s window holds at
  // most rate × 1.05 (a bucket of a full second would let twice the rate through).
  std::vector<int> per_step;
  for (int step = 0; step < 300; ++step) {
    per_step.push_back(drain(limiter));
    clock_->advance(std::chrono::milliseconds(10));
  }
  int peak = 0;
  for (std::size_t first = 0; first + 100 <= per_step.size(); ++first) {
    int sum = 0;
    for (std::size_t i = first; i < first + 100; ++i) sum += per_step[i];
    peak = std::max(peak, sum);
  }
  EXPECT_LE(peak, 42);
  EXPECT_GE(peak, 40);
}

TEST_F(RateLimiterTest, SaysHowLongUntilTheNextToken) {
  RateLimiter limiter = make(10);
  drain(limiter);
  const auto wait = limiter.try_acquire();
  EXPECT_GT(wait, std::chrono::milliseconds(90));
  EXPECT_LE(wait, std::chrono::milliseconds(100));
}

TEST_F(RateLimiterTest, ABurstOfThrottlesIsOneDecrease) {
  RateLimiter limiter = make(100);
  answer(limiter, 96, 0, std::chrono::milliseconds(960));
  // Four senders in flight come back throttled at once: one reaction, not four.
  for (int i = 0; i < 4; ++i) limiter.on_answer(Throttle::kRate);
  EXPECT_EQ(limiter.decreases(), 1u);
  EXPECT_NEAR(limiter.current_rate(), 95.0, 0.5) << "4 of 100 answers: the minimum 5 % cut";
}

TEST_F(RateLimiterTest, TheDecreaseFollowsTheShareOfThrottledAnswers) {
  struct Row {
    int answers;
    int throttled;
    double expected_rate;  // of 100
  };
  const std::vector<Row> table = {
      {100, 1, 95},                  // a stray 429: the least cut
      {100, 20, 80},                 // 20 % over the limit: 20 % off
      {100, 40, 60}, {100, 90, 50},  // never more than half at once
      {10, 10, 50},
  };
  for (const Row& row : table) {
    RateLimiter limiter = make(100);
    answer(limiter, row.answers - row.throttled, 0, std::chrono::milliseconds(500));
    for (int i = 0; i < row.throttled; ++i) limiter.on_answer(Throttle::kRate);
    EXPECT_NEAR(limiter.current_rate(), row.expected_rate, 0.5)
        << row.throttled << " of " << row.answers;
  }
}

TEST_F(RateLimiterTest, AtMostOneDecreasePerInterval) {
  RateLimiter limiter = make(100);
  answer(limiter, 10, 10, std::chrono::milliseconds(900));
  EXPECT_EQ(limiter.decreases(), 1u);
  clock_->advance(std::chrono::milliseconds(250));  // a second since the first throttle
  limiter.on_answer(Throttle::kRate);
  EXPECT_EQ(limiter.decreases(), 2u);
}

TEST_F(RateLimiterTest, NeverFallsBelowAFractionOfTheConfiguredRate) {
  RateLimiter limiter = make(100);
  for (int second = 0; second < 30; ++second) answer(limiter, 10, 10, std::chrono::seconds(1));
  EXPECT_GE(limiter.current_rate(), 10.0) << "a tenth of 100";
  EXPECT_LE(limiter.current_rate(), 15.0) << "plus at most a second's recovery";
  RateLimiter slow = make(2);
  for (int second = 0; second < 30; ++second) answer(slow, 10, 10, std::chrono::seconds(1));
  EXPECT_GE(slow.current_rate(), 0.5) << "and never below half a request a second";
}

TEST_F(RateLimiterTest, RecoversAdditivelyWithinSeconds) {
  RateLimiter limiter = make(100);
  answer(limiter, 10, 10, std::chrono::milliseconds(100));
  ASSERT_NEAR(limiter.current_rate(), 50.0, 0.1);
  clock_->advance(std::chrono::seconds(4));
  EXPECT_NEAR(limiter.current_rate(), 50.0, 0.1) << "read without an update moves nothing";
  limiter.on_answer(Throttle::kNone);
  EXPECT_NEAR(limiter.current_rate(), 70.0, 0.5) << "5 % of the configured rate each second";
  clock_->advance(std::chrono::seconds(10));
  limiter.on_answer(Throttle::kNone);
  EXPECT_DOUBLE_EQ(limiter.current_rate(), 100.0) << "and never above it";
}

TEST_F(RateLimiterTest, ALockOrResourceSpecific429LeavesTheRateAlone) {
  RateLimiter limiter = make(100);
  for (int i = 0; i < 50; ++i) limiter.on_answer(Throttle::kObject);
  EXPECT_EQ(limiter.decreases(), 0u);
  EXPECT_DOUBLE_EQ(limiter.current_rate(), 100.0);
}

TEST_F(RateLimiterTest, RetryAfterHoldsEveryRequest) {
  RateLimiter limiter = make(100);
  limiter.on_answer(Throttle::kRate, std::chrono::seconds(2));
  clock_->advance(std::chrono::milliseconds(1500));
  const auto wait = limiter.try_acquire();
  EXPECT_GE(wait, std::chrono::milliseconds(490));
  EXPECT_LE(wait, std::chrono::milliseconds(500));
  clock_->advance(std::chrono::milliseconds(500));
  EXPECT_EQ(limiter.try_acquire().count(), 0);
}

TEST_F(RateLimiterTest, AnAbsurdRetryAfterIsCapped) {
  RateLimiter limiter = make(100);
  limiter.on_answer(Throttle::kRate, std::chrono::hours(24));
  clock_->advance(std::chrono::seconds(60));
  EXPECT_EQ(limiter.try_acquire().count(), 0);
}

TEST_F(RateLimiterTest, AThrottleTakesTheTokensLeft) {
  RateLimiter limiter = make(100);
  limiter.on_answer(Throttle::kRate);
  EXPECT_GT(limiter.try_acquire().count(), 0) << "the burst allowance is gone after a throttle";
}

// Five percent of answers throttled at random (not caused by the client's rate) cost a few
// percent of the rate, not most of it.
TEST_F(RateLimiterTest, FivePercentOfRandomThrottlesKeepMostOfTheRate) {
  RateLimiter limiter = make(25);
  int sent = 0, accepted = 0;
  double lowest = 25;
  for (int tick = 0; tick < 60'000; ++tick) {  // a minute, in milliseconds
    clock_->advance(std::chrono::milliseconds(1));
    lowest = std::min(lowest, limiter.current_rate());
    if (limiter.try_acquire().count() != 0) continue;
    ++sent;
    const bool throttled = sent % 20 == 0;
    accepted += throttled ? 0 : 1;
    limiter.on_answer(throttled ? Throttle::kRate : Throttle::kNone);
  }
  EXPECT_GE(sent, 60 * 25 * 8 / 10) << "at least 80 % of the configured rate is sent";
  EXPECT_GE(accepted, 60 * 25 / 2) << "at least half of it gets through";
  EXPECT_GE(lowest, 12.5) << "the rate never drops below half";
}

// A server whose true limit is below the configured rate: the client settles near it.
TEST_F(RateLimiterTest, ConvergesToATrueLimitBelowTheConfiguredRate) {
  RateLimiter limiter = make(100);
  const double limit = 40;  // the server accepts 40 a second, one second's burst
  double server_tokens = limit;
  double lowest = 100, sum = 0;
  int samples = 0;
  for (int tick = 0; tick < 120'000; ++tick) {
    clock_->advance(std::chrono::milliseconds(1));
    server_tokens = std::min(limit, server_tokens + limit / 1000);
    if (tick >= 30'000 && tick % 100 == 0) {
      lowest = std::min(lowest, limiter.current_rate());
      sum += limiter.current_rate();
      ++samples;
    }
    if (limiter.try_acquire().count() != 0) continue;
    const bool accepted = server_tokens >= 1;
    if (accepted) server_tokens -= 1;
    limiter.on_answer(accepted ? Throttle::kNone : Throttle::kRate);
  }
  const double mean = sum / samples;
  EXPECT_NEAR(mean, limit, limit * 0.2) << "within 20 % of the true limit";
  EXPECT_GE(lowest, limit / 2) << "and never below half of it";
}

}  // namespace
}  // namespace stripe_billing
