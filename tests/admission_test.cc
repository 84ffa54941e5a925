// Admission through the public API (StripeLogger::admit, docs/admission.md): holds and their
// settlement, release and expiry, the policies and their answers, the bound under 64 concurrent
// threads, restarts with open holds, and the fail policies with the balance source down.
#include "stripe_billing/admission.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stripe_billing/config.h"
#include "stripe_billing/stripe_logger.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using testing::EmulatorTest;
using testing::eventually;
using testing::in_seconds;

// The wall clock and the monotonic one, moved forward together by the test.
class ManualClock : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now() + offset_.load(); }
  std::chrono::steady_clock::time_point steady_now() const override {
    return std::chrono::steady_clock::now() + offset_.load();
  }
  void advance(std::chrono::seconds by) { offset_ = offset_.load() + by; }

 private:
  std::atomic<std::chrono::seconds> offset_{std::chrono::seconds(0)};
};

class AdmissionTest : public EmulatorTest {
 protected:
  // Static budgets in tokens; the customer is the end user's id.
  Config admission_config(const std::string& budgets, int max_output = 1000) const {
    Config config = this->config();
    config.admission = "static";
    config.budgets = budgets;
    config.admission_max_output = std::to_string(max_output);
    config.admission_wait_ms = "5000";  // the first grant comes from a local file: well within
    return config;
  }

  std::unique_ptr<StripeLogger> start(const Config& config) {
    auto made = make_stripe_logger(config, {nullptr, nullptr, clock_, {}});
    EXPECT_TRUE(made) << made.error().to_string();
    return made ? std::move(made.value()) : nullptr;
  }

  static AdmissionRequest ask(const std::string& call_id, const std::string& customer,
                              std::int64_t input, std::int64_t max_tokens,
                              const std::string& plan = "") {
    AdmissionRequest request;
    request.call_id = call_id;
    request.model = "gpt-test";
    request.end_user_id = customer;
    request.plan = plan;
    request.input_tokens = input;
    request.max_tokens = max_tokens;
    return request;
  }

  // A call of `customer` that used `tokens` in all.
  static UsageEvent used(const std::string& call_id, std::int64_t tokens,
                         const std::string& customer = "alice") {
    UsageEvent e = event(call_id, tokens);
    e.end_user_id = customer;
    return e;
  }

  std::shared_ptr<ManualClock> clock_ = std::make_shared<ManualClock>();
};

std::uint64_t denials(const StripeLoggerStats& stats, const std::string& reason) {
  const auto found = stats.admission_denials.find(reason);
  return found == stats.admission_denials.end() ? 0 : found->second;
}

// Seconds from `now` to the start of the next period (UTC), computed here independently.
std::int64_t seconds_to_period_end(TimePoint now, bool day) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm at{};
  gmtime_r(&seconds, &at);
  std::tm next{};
  next.tm_year = at.tm_year;
  if (day) {
    next.tm_mon = at.tm_mon;
    next.tm_mday = at.tm_mday + 1;
  } else {
    next.tm_mon = at.tm_mon + 1;  // timegm normalises December + 1
    next.tm_mday = 1;
  }
  return static_cast<std::int64_t>(timegm(&next)) - static_cast<std::int64_t>(seconds);
}

// ---------------------------------------------------------------------------------------------
// Holds and settlement

TEST_F(AdmissionTest, HoldsAreSizedSettledToTheActualAmountAndReleased) {
  auto logger = start(admission_config("alice=10000", 1000));
  ASSERT_NE(logger, nullptr);

  // input + min(max_tokens, cap); without max_tokens the cap.
  const AdmissionDecision first = logger->admit(ask("c1", "alice", 100, 5000));
  EXPECT_EQ(first.verdict, AdmissionVerdict::kAllow);
  EXPECT_TRUE(first.allowed());
  EXPECT_EQ(first.reason, "");
  EXPECT_EQ(first.http_status(), 200);
  EXPECT_EQ(first.reserved, 1100);
  EXPECT_EQ(first.remaining, 10000 - 1100);
  const AdmissionDecision second = logger->admit(ask("c2", "alice", 100, 0));
  EXPECT_EQ(second.reserved, 1100);
  EXPECT_EQ(second.remaining, 10000 - 2200);
  const AdmissionDecision third = logger->admit(ask("c3", "alice", 30, 70));
  EXPECT_EQ(third.reserved, 100);
  EXPECT_EQ(third.remaining, 10000 - 2300);
  StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(stats.admissions, 3u);
  EXPECT_EQ(stats.holds_open, 3u);

  // Settled to what the call used: 800 of c1's 1100 come back.
  logger->log_success_event(used("c1", 300));
  stats = logger->stats();
  EXPECT_EQ(stats.holds_settled, 1u);
  EXPECT_EQ(stats.holds_open, 2u);
  const AdmissionDecision fourth = logger->admit(ask("c4", "alice", 100, 100));
  EXPECT_EQ(fourth.reserved, 200);
  EXPECT_EQ(fourth.remaining, 10000 - 300 - 1100 - 100 - 200);

  // Released: c2's whole hold comes back.
  logger->log_failure_event(used("c2", 0));
  stats = logger->stats();
  EXPECT_EQ(stats.holds_released, 1u);
  EXPECT_EQ(stats.holds_open, 2u);
  const AdmissionDecision fifth = logger->admit(ask("c5", "alice", 0, 1));
  EXPECT_EQ(fifth.reserved, 1);
  EXPECT_EQ(fifth.remaining, 10000 - 300 - 100 - 200 - 1);

  // The same success again counts once; a failure after the success releases nothing.
  logger->log_success_event(used("c1", 300));
  logger->log_failure_event(used("c1", 0));
  stats = logger->stats();
  EXPECT_EQ(stats.holds_settled, 1u);
  EXPECT_EQ(stats.holds_released, 1u);
  EXPECT_EQ(stats.settled_without_hold, 0u);
  const AdmissionDecision sixth = logger->admit(ask("c6", "alice", 0, 1));
  EXPECT_EQ(sixth.remaining, 10000 - 300 - 100 - 200 - 1 - 1);

  // A success that was never admitted is used all the same.
  logger->log_success_event(used("unadmitted", 500));
  EXPECT_EQ(logger->stats().settled_without_hold, 1u);
  const AdmissionDecision seventh = logger->admit(ask("c7", "alice", 0, 1));
  EXPECT_EQ(seventh.remaining, 10000 - 300 - 500 - 100 - 200 - 1 - 1 - 1);

  // Everything left, exactly, then nothing more: what is left is held by open calls.
  const std::int64_t left = seventh.remaining;
  const AdmissionDecision rest = logger->admit(ask("c8", "alice", left - 1, 1));
  EXPECT_TRUE(rest.allowed());
  EXPECT_EQ(rest.reserved, left);
  EXPECT_EQ(rest.remaining, 0);
  const AdmissionDecision refused = logger->admit(ask("c9", "alice", 0, 1));
  EXPECT_EQ(refused.verdict, AdmissionVerdict::kDeny);
  EXPECT_EQ(refused.reason, "held_by_open_calls");
  EXPECT_EQ(refused.http_status(), 429);
  EXPECT_EQ(refused.retry_after, std::chrono::seconds(1));
  stats = logger->stats();
  EXPECT_EQ(stats.admissions, 8u);
  EXPECT_EQ(denials(stats, "held_by_open_calls"), 1u);
  // Open: c3, c4, c5, c6, c7, c8.
  EXPECT_EQ(stats.holds_open, 6u);
  EXPECT_EQ(stats.holds_settled, 1u);

  // Settling one returns its unused part at once.
  logger->log_success_event(used("c4", 50));
  const AdmissionDecision after = logger->admit(ask("c10", "alice", 0, 150));
  EXPECT_TRUE(after.allowed()) << after.reason;
  EXPECT_EQ(after.remaining, 0);
}

// Call ids that are long or not text hold and settle like any other.
// Holds are kept by customer (in shards): an event that names no customer is not billed, and
// still closes its call's hold, whichever customer was admitted.
TEST_F(AdmissionTest, EventsThatNameNoCustomerStillCloseTheirHolds) {
  auto logger = start(admission_config("*=100000"));
  ASSERT_NE(logger, nullptr);
  constexpr int kCustomers = 16;  // enough to land in shards other than the nameless one's
  for (int i = 0; i < kCustomers; ++i) {
    const std::string customer = "cust-" + std::to_string(i);
    ASSERT_TRUE(logger->admit(ask("fail-" + customer, customer, 10, 10)).allowed());
    ASSERT_TRUE(logger->admit(ask("ok-" + customer, customer, 10, 10)).allowed());
  }
  ASSERT_EQ(logger->stats().holds_open, 2u * kCustomers);
  for (int i = 0; i < kCustomers; ++i) {
    UsageEvent nameless = used("fail-cust-" + std::to_string(i), 0, "");
    logger->log_failure_event(nameless);
  }
  EXPECT_EQ(logger->stats().holds_released, static_cast<std::uint64_t>(kCustomers));
  for (int i = 0; i < kCustomers; ++i) {
    logger->log_success_event(used("ok-cust-" + std::to_string(i), 5, ""));
  }
  EXPECT_EQ(logger->stats().holds_settled, static_cast<std::uint64_t>(kCustomers));
  EXPECT_EQ(logger->stats().holds_open, 0u);
}

TEST_F(AdmissionTest, LongAndBinaryCallIdsSettleTheirHolds) {
  auto logger = start(admission_config("alice=1000", 100));
  ASSERT_NE(logger, nullptr);
  const std::string long_id(100'000, 'x');
  const std::string binary_id = std::string("call\0\x01\xff", 7);
  ASSERT_EQ(logger->admit(ask(long_id, "alice", 100, 100)).reserved, 200);
  ASSERT_EQ(logger->admit(ask(binary_id, "alice", 100, 100)).reserved, 200);
  ASSERT_EQ(logger->admit(ask(long_id + "y", "alice", 100, 100)).reserved, 200);
  EXPECT_EQ(logger->stats().holds_open, 3u);
  logger->log_success_event(used(long_id, 50));
  logger->log_failure_event(used(binary_id, 0));
  StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(stats.holds_settled, 1u);
  EXPECT_EQ(stats.holds_released, 1u);
  EXPECT_EQ(stats.holds_open, 1u);
  EXPECT_EQ(logger->admit(ask("c", "alice", 0, 1)).remaining, 1000 - 50 - 200 - 1);
}

TEST_F(AdmissionTest, CustomersHaveTheirOwnBudgets) {
  auto logger = start(admission_config("alice=1000,bob=1000", 100));
  ASSERT_NE(logger, nullptr);
  EXPECT_EQ(logger->admit(ask("a1", "alice", 900, 100)).remaining, 0);
  const AdmissionDecision bob = logger->admit(ask("b1", "bob", 100, 100));
  EXPECT_TRUE(bob.allowed());
  EXPECT_EQ(bob.remaining, 800);
  EXPECT_FALSE(logger->admit(ask("a2", "alice", 0, 1)).allowed());
}

// ---------------------------------------------------------------------------------------------
// Expiry

TEST_F(AdmissionTest, AHoldNeverSettledExpiresAfterTheTtl) {
  Config config = admission_config("alice=1000", 100);
  config.hold_ttl_s = "5";
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision all = logger->admit(ask("c1", "alice", 900, 100));
  ASSERT_TRUE(all.allowed());
  EXPECT_EQ(all.remaining, 0);
  EXPECT_EQ(logger->admit(ask("c2", "alice", 0, 1)).reason, "held_by_open_calls");

  clock_->advance(std::chrono::seconds(4));
  EXPECT_EQ(logger->admit(ask("c3", "alice", 0, 1)).reason, "held_by_open_calls");
  EXPECT_EQ(logger->stats().holds_expired, 0u);

  clock_->advance(std::chrono::seconds(2));
  const AdmissionDecision back = logger->admit(ask("c4", "alice", 0, 2));
  EXPECT_TRUE(back.allowed()) << back.reason;
  EXPECT_EQ(back.remaining, 1000 - 2);
  StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(stats.holds_expired, 1u);
  EXPECT_EQ(stats.holds_open, 1u);

  // The call that ran past its hold still bills what it used: counted, without a hold.
  logger->log_success_event(used("c1", 400));
  stats = logger->stats();
  EXPECT_EQ(stats.settled_without_hold, 1u);
  EXPECT_EQ(stats.holds_settled, 0u);
  EXPECT_EQ(logger->admit(ask("c5", "alice", 0, 1)).remaining, 1000 - 400 - 2 - 1);
}

// admission.h: a call admitted without a call id holds nothing by id, and its hold expires after
// STRIPE_HOLD_TTL_S; until then it counts like any other (the bound holds for hosts that do not
// pass call ids).
TEST_F(AdmissionTest, ACallWithoutACallIdHoldsItsReservationUntilTheTtl) {
  Config config = admission_config("alice=100", 10);
  config.hold_ttl_s = "5";
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision first = logger->admit(ask("", "alice", 50, 10));
  ASSERT_TRUE(first.allowed());
  EXPECT_EQ(first.reserved, 60);
  EXPECT_EQ(first.remaining, 40);
  // 40 left: the last piece may be crossed once, and then nothing more.
  EXPECT_TRUE(logger->admit(ask("", "alice", 50, 10)).allowed());
  const AdmissionDecision third = logger->admit(ask("", "alice", 50, 10));
  EXPECT_FALSE(third.allowed()) << "admitted 180 of a budget of 100";
  clock_->advance(std::chrono::seconds(6));
  EXPECT_TRUE(logger->admit(ask("", "alice", 50, 10)).allowed());
}

// ---------------------------------------------------------------------------------------------
// Policies and answers

void expect_error_body(const AdmissionDecision& decision, const std::string& type) {
  const auto body = nlohmann::json::parse(decision.openai_error_body(), nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << decision.openai_error_body();
  ASSERT_TRUE(body.contains("error")) << body.dump();
  const auto& error = body["error"];
  EXPECT_TRUE(error["message"].is_string());
  EXPECT_FALSE(error["message"].get<std::string>().empty());
  EXPECT_EQ(error["type"], type);
  EXPECT_EQ(error["code"], std::string(decision.reason));
  EXPECT_TRUE(error.contains("param"));
  EXPECT_TRUE(error["param"].is_null());
}

TEST_F(AdmissionTest, ACallThatCannotBeEstimatedIsRefusedUnderReject) {
  Config config = admission_config("*=100000");
  config.quantity = "cost";  // response_cost is known only afterwards
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision refused = logger->admit(ask("c1", "alice", 100, 100));
  EXPECT_EQ(refused.verdict, AdmissionVerdict::kDeny);
  EXPECT_EQ(refused.reason, "not_estimable");
  EXPECT_EQ(refused.http_status(), 400);
  EXPECT_EQ(refused.retry_after, std::chrono::seconds(0));
  expect_error_body(refused, "invalid_request_error");
  EXPECT_EQ(denials(logger->stats(), "not_estimable"), 1u);
  EXPECT_EQ(logger->stats().holds_open, 0u);
}

TEST_F(AdmissionTest, UnknownInputTokensCannotBeEstimatedInTokenModes) {
  auto logger = start(admission_config("*=100000"));
  ASSERT_NE(logger, nullptr);
  EXPECT_EQ(logger->admit(ask("c1", "alice", -1, 100)).reason, "not_estimable");
  EXPECT_TRUE(logger->admit(ask("c2", "alice", 0, 100)).allowed());
}

TEST_F(AdmissionTest, UnestimableCallsAllowedHoldNothing) {
  Config config = admission_config("*=1000");
  config.quantity = "cost";
  config.admission_unestimable = "allow";
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision allowed = logger->admit(ask("c1", "alice", 100, 100));
  EXPECT_EQ(allowed.verdict, AdmissionVerdict::kAllow);
  EXPECT_EQ(allowed.reserved, 0);
  EXPECT_EQ(allowed.remaining, 1000);
  // What it used is counted when it is settled: $2.50 at 100 cents per dollar.
  logger->log_success_event([] {
    UsageEvent e = used("c1", 10);
    e.response_cost = 2.5;
    return e;
  }());
  EXPECT_EQ(logger->admit(ask("c2", "alice", 100, 100)).remaining, 1000 - 250);
}

TEST_F(AdmissionTest, UnestimableCallsReserveTheFixedAmount) {
  Config config = admission_config("*=1000");
  config.quantity = "cost";
  config.admission_unestimable = "reserve";
  config.admission_reserve = "300";
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  for (int i = 0; i < 3; ++i) {
    const AdmissionDecision held = logger->admit(ask("c" + std::to_string(i), "alice", 1, 1));
    EXPECT_TRUE(held.allowed());
    EXPECT_EQ(held.reserved, 300);
    EXPECT_EQ(held.remaining, 1000 - 300 * (i + 1));
  }
  // 100 left, 300 wanted: the single process holds the budget's last piece and may cross it once.
  const AdmissionDecision crossing = logger->admit(ask("c3", "alice", 1, 1));
  EXPECT_TRUE(crossing.allowed());
  EXPECT_EQ(crossing.remaining, 0);
  const AdmissionDecision refused = logger->admit(ask("c4", "alice", 1, 1));
  EXPECT_FALSE(refused.allowed());
  EXPECT_EQ(refused.reason, "held_by_open_calls");
  EXPECT_EQ(logger->stats().holds_open, 4u);
}

TEST_F(AdmissionTest, ARequestThatNamesNoCustomerIsRefused) {
  auto logger = start(admission_config("*=1000"));
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision refused = logger->admit(ask("c1", "", 10, 10));
  EXPECT_EQ(refused.verdict, AdmissionVerdict::kDeny);
  EXPECT_EQ(refused.reason, "missing_customer");
  EXPECT_EQ(refused.http_status(), 403);
  EXPECT_EQ(refused.retry_after, std::chrono::seconds(0));
  expect_error_body(refused, "permission_error");
  EXPECT_EQ(denials(logger->stats(), "missing_customer"), 1u);
}

TEST_F(AdmissionTest, ACustomerWithoutABudgetIsRefused) {
  auto logger = start(admission_config("bob=1000,pro=1000"));
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision refused = logger->admit(ask("c1", "alice", 10, 10));
  EXPECT_EQ(refused.verdict, AdmissionVerdict::kDeny);
  EXPECT_EQ(refused.reason, "no_budget");
  EXPECT_EQ(refused.http_status(), 402);
  expect_error_body(refused, "insufficient_quota");
  const AdmissionDecision other_plan = logger->admit(ask("c2", "carol", 10, 10, "free"));
  EXPECT_EQ(other_plan.reason, "no_budget");
  EXPECT_TRUE(logger->admit(ask("c3", "bob", 10, 10)).allowed());
  EXPECT_EQ(denials(logger->stats(), "no_budget"), 2u);
}

TEST_F(AdmissionTest, TheCustomersBudgetWinsOverThePlansAndThePlansOverTheDefault) {
  auto logger = start(admission_config("alice=1000,pro=500,*=200", 10));
  ASSERT_NE(logger, nullptr);
  EXPECT_EQ(logger->admit(ask("a", "alice", 10, 10, "pro")).remaining, 1000 - 20);
  EXPECT_EQ(logger->admit(ask("c", "carol", 10, 10, "pro")).remaining, 500 - 20);
  EXPECT_EQ(logger->admit(ask("d", "dave", 10, 10)).remaining, 200 - 20);
  EXPECT_EQ(logger->admit(ask("e", "erin", 10, 10, "free")).remaining, 200 - 20);
}

TEST_F(AdmissionTest, ASpentBudgetIsRefusedUntilThePeriodEnds) {
  for (const bool day : {false, true}) {
    SCOPED_TRACE(day ? "day" : "month");
    Config config = admission_config("alice=100", 50);
    config.budget_period = day ? "day" : "month";
    config.outbox_path = dir_.file(day ? "day.db" : "month.db");
    auto logger = start(config);
    ASSERT_NE(logger, nullptr);
    ASSERT_TRUE(logger->admit(ask("c1", "alice", 50, 50)).allowed());
    logger->log_success_event(used("c1", 100));
    const AdmissionDecision refused = logger->admit(ask("c2", "alice", 1, 1));
    const std::int64_t expected = seconds_to_period_end(clock_->now(), day);
    EXPECT_EQ(refused.verdict, AdmissionVerdict::kDeny);
    EXPECT_EQ(refused.reason, "budget_exhausted");
    EXPECT_EQ(refused.http_status(), 402);
    EXPECT_GE(refused.retry_after.count(), expected - 2);
    EXPECT_LE(refused.retry_after.count(), expected + 1);
    expect_error_body(refused, "insufficient_quota");
    EXPECT_EQ(denials(logger->stats(), "budget_exhausted"), 1u);
    EXPECT_EQ(logger->stats().overage, 0u);
  }
}

TEST_F(AdmissionTest, TransientRefusalsAnswerRateLimitErrors) {
  auto logger = start(admission_config("alice=10", 10));
  ASSERT_NE(logger, nullptr);
  ASSERT_TRUE(logger->admit(ask("c1", "alice", 0, 10)).allowed());
  const AdmissionDecision refused = logger->admit(ask("c2", "alice", 0, 1));
  EXPECT_EQ(refused.reason, "held_by_open_calls");
  EXPECT_EQ(refused.http_status(), 429);
  expect_error_body(refused, "rate_limit_error");
}

// An estimate too low: the call used more than the whole budget. The excess is recorded and
// billed; STRIPE_OVERAGE decides whether the next call goes.
TEST_F(AdmissionTest, OverageIsRecordedAndBilledAndRefusesTheNextCallUnderRefuse) {
  const std::string item = add_customer("alice");
  for (const bool allow : {false, true}) {
    SCOPED_TRACE(allow ? "allow" : "refuse");
    Config config = admission_config("alice=100", 10);
    config.overage = allow ? "allow" : "refuse";
    config.outbox_path = dir_.file(allow ? "allow.db" : "refuse.db");
    config.charge_by = "end_user_id";
    auto logger = start(config);
    ASSERT_NE(logger, nullptr);
    const std::string run = allow ? "allow-" : "refuse-";
    const AdmissionDecision first = logger->admit(ask(run + "c1", "alice", 40, 10));
    ASSERT_TRUE(first.allowed());
    EXPECT_EQ(first.reserved, 50);
    logger->log_success_event(used(run + "c1", 300));
    EXPECT_TRUE(eventually([&] { return logger->stats().overage > 0; }, std::chrono::seconds(5)));
    EXPECT_EQ(logger->stats().overage, 200u);
    EXPECT_EQ(logger->stats().holds_settled, 1u);
    const AdmissionDecision next = logger->admit(ask(run + "c2", "alice", 1, 1));
    if (allow) {
      EXPECT_TRUE(next.allowed()) << next.reason;
    } else {
      EXPECT_FALSE(next.allowed());
      EXPECT_EQ(next.reason, "budget_exhausted");
    }
    ASSERT_TRUE(logger->flush(in_seconds(20)));
  }
  // Billed, never forgiven: both runs' 300 tokens reached Stripe.
  EXPECT_EQ(emulator_.total_usage(item), 600);
}

TEST_F(AdmissionTest, AdmissionOffAllowsEverythingAndHoldsNothing) {
  Config config = this->config();
  config.admission = "off";
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision allowed = logger->admit(ask("c1", "", -1, 0));
  EXPECT_EQ(allowed.verdict, AdmissionVerdict::kAllow);
  EXPECT_EQ(allowed.reason, "admission_off");
  EXPECT_EQ(allowed.http_status(), 200);
  EXPECT_EQ(allowed.reserved, 0);
  const StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(stats.holds_open, 0u);
  EXPECT_TRUE(stats.admission_denials.empty());
}

// ---------------------------------------------------------------------------------------------
// Budgets per token type (STRIPE_TOKEN_BUDGETS)

class TokenBudgetTest : public AdmissionTest {
 protected:
  // STRIPE_QUANTITY=token_types on meters, with budgets per type (and `budgets` for all units).
  Config typed_config(const std::string& token_budgets, const std::string& budgets = "",
                      const char* quantity = "token_types") const {
    Config config = admission_config(budgets, 1000);
    if (budgets.empty()) config.budgets.reset();
    config.billing_mode = "meter_events";
    config.price_id.reset();
    config.meter_event_name = "tokens";
    config.quantity = quantity;
    config.token_budgets = token_budgets;
    return config;
  }

  static UsageEvent typed_call(const std::string& call_id, std::int64_t prompt,
                               std::int64_t completion, std::int64_t cached = 0,
                               const std::string& customer = "alice") {
    UsageEvent e = used(call_id, prompt + completion, customer);
    e.prompt_tokens = prompt;
    e.completion_tokens = completion;
    if (cached > 0) e.cache_read_tokens = cached;
    return e;
  }
};

TEST_F(TokenBudgetTest, ACallMustFitEveryBudgetAndIsRefusedByTheTypeThatIsSpent) {
  auto logger = start(typed_config("alice:output=300", "alice=100000"));
  ASSERT_NE(logger, nullptr);
  // The output budget holds the capped max_tokens; the total holds input plus output.
  const AdmissionDecision first = logger->admit(ask("c1", "alice", 10, 200));
  ASSERT_TRUE(first.allowed()) << first.reason;
  EXPECT_EQ(first.reserved, 210);
  EXPECT_EQ(first.remaining, 100) << "what is left of the tightest budget: output's";
  // 100 output tokens left, 200 wanted: the single process holds the last piece and may cross
  // it with one call; the next is refused by the output budget alone.
  const AdmissionDecision crossing = logger->admit(ask("c2", "alice", 10, 200));
  ASSERT_TRUE(crossing.allowed()) << crossing.reason;
  const AdmissionDecision held = logger->admit(ask("c3", "alice", 10, 10));
  EXPECT_FALSE(held.allowed());
  EXPECT_EQ(held.reason, "held_by_open_calls");
  EXPECT_EQ(held.token_type, "output");
  EXPECT_EQ(held.http_status(), 429);

  // c1 used 250 output tokens, c2 failed: 50 are left.
  logger->log_success_event(typed_call("c1", 10, 250));
  logger->log_failure_event(typed_call("c2", 0, 0));
  const AdmissionDecision fits = logger->admit(ask("c4", "alice", 10, 40));
  ASSERT_TRUE(fits.allowed()) << fits.reason;
  EXPECT_EQ(fits.remaining, 10);
  logger->log_success_event(typed_call("c4", 10, 60));  // 310 of 300: the type is spent
  const AdmissionDecision spent = logger->admit(ask("c5", "alice", 10, 1));
  EXPECT_FALSE(spent.allowed());
  EXPECT_EQ(spent.reason, "budget_exhausted");
  EXPECT_EQ(spent.token_type, "output");
  EXPECT_EQ(spent.http_status(), 402);
  const auto body = nlohmann::json::parse(spent.openai_error_body());
  EXPECT_NE(body["error"]["message"].get<std::string>().find("output token budget"),
            std::string::npos)
      << body.dump();
  EXPECT_EQ(body["error"]["code"], "budget_exhausted");
  // The total was never the limit, and its refusals name no type.
  EXPECT_EQ(denials(logger->stats(), "budget_exhausted"), 1u);
}

TEST_F(TokenBudgetTest, TheBudgetOfAllUnitsStillRefusesWhenTheTypesFit) {
  auto logger = start(typed_config("alice:output=100000", "alice=500"));
  ASSERT_NE(logger, nullptr);
  ASSERT_TRUE(logger->admit(ask("c1", "alice", 300, 100)).allowed());
  logger->log_success_event(typed_call("c1", 450, 100));
  const AdmissionDecision spent = logger->admit(ask("c2", "alice", 1, 1));
  EXPECT_EQ(spent.reason, "budget_exhausted");
  EXPECT_EQ(spent.token_type, "") << "the budget of all units, not a type's";
}

TEST_F(TokenBudgetTest, BudgetsPerTypeAloneNeedNoBudgetOfAllUnits) {
  auto logger = start(typed_config("*:input=100, pro:input=1000"));
  ASSERT_NE(logger, nullptr);
  ASSERT_TRUE(logger->admit(ask("a1", "alice", 60, 5000)).allowed()) << "output is not limited";
  ASSERT_TRUE(logger->admit(ask("a2", "alice", 60, 10)).allowed()) << "the one crossing";
  EXPECT_EQ(logger->admit(ask("a3", "alice", 60, 10)).reason, "held_by_open_calls");
  EXPECT_TRUE(logger->admit(ask("b1", "bob", 60, 10)).allowed()) << "bob has his own";
  EXPECT_EQ(logger->admit(ask("c1", "carol", 900, 10, "pro")).remaining, 100);
}

TEST_F(TokenBudgetTest, EachTypeResolvesByKeyThenPlanThenDefault) {
  auto logger = start(typed_config("*:output=100, pro:output=500, alice:input=50"));
  ASSERT_NE(logger, nullptr);
  // alice: her own input budget, her plan's output budget.
  EXPECT_EQ(logger->admit(ask("a", "alice", 10, 10, "pro")).remaining, 40);
  EXPECT_EQ(logger->admit(ask("c", "carol", 10, 10, "pro")).remaining, 490);
  EXPECT_EQ(logger->admit(ask("d", "dave", 10, 10)).remaining, 90);
}

TEST_F(TokenBudgetTest, ACustomerWithoutAnyBudgetIsRefused) {
  auto logger = start(typed_config("pro:output=500"));
  ASSERT_NE(logger, nullptr);
  EXPECT_EQ(logger->admit(ask("a", "alice", 10, 10)).reason, "no_budget");
  EXPECT_TRUE(logger->admit(ask("b", "alice", 10, 10, "pro")).allowed()) << "her plan changed";
}

// Cache reads cannot be estimated before the call: the type reserves nothing and is held to its
// budget by what the calls used.
TEST_F(TokenBudgetTest, ATypeThatCannotBeEstimatedIsHeldToItsBudgetByUsage) {
  auto logger = start(typed_config("alice:cached_input=100"));
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision first = logger->admit(ask("c1", "alice", 500, 100));
  ASSERT_TRUE(first.allowed()) << first.reason;
  EXPECT_EQ(first.remaining, 100);
  // 100 cached of 500: the type's budget is used exactly, and a call that reserves nothing of it
  // needs something left.
  logger->log_success_event(typed_call("c1", 500, 100, 100));
  const AdmissionDecision spent = logger->admit(ask("c2", "alice", 1, 1));
  EXPECT_EQ(spent.reason, "budget_exhausted");
  EXPECT_EQ(spent.token_type, "cached_input");
}

TEST_F(TokenBudgetTest, SplitBudgetsInputAndOutput) {
  auto logger = start(typed_config("alice:input=100, alice:output=1000", "", "split"));
  ASSERT_NE(logger, nullptr);
  ASSERT_TRUE(logger->admit(ask("c1", "alice", 40, 10)).allowed());
  logger->log_success_event(typed_call("c1", 120, 10));
  const AdmissionDecision spent = logger->admit(ask("c2", "alice", 1, 1));
  EXPECT_EQ(spent.reason, "budget_exhausted");
  EXPECT_EQ(spent.token_type, "input");
}

TEST_F(TokenBudgetTest, WhatATypeUsedSurvivesARestart) {
  const Config config = typed_config("alice:output=300", "alice=100000");
  {
    auto logger = start(config);
    ASSERT_NE(logger, nullptr);
    ASSERT_TRUE(logger->admit(ask("c1", "alice", 10, 300)).allowed());
    logger->log_success_event(typed_call("c1", 10, 300));
    ASSERT_TRUE(logger->shutdown(in_seconds(10)));
  }
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision spent = logger->admit(ask("c2", "alice", 10, 1));
  EXPECT_EQ(spent.reason, "budget_exhausted");
  EXPECT_EQ(spent.token_type, "output");
  EXPECT_EQ(logger->admit(ask("b1", "bob", 10, 1)).reason, "no_budget");
}

// ---------------------------------------------------------------------------------------------
// The bound: 64 threads, one customer

struct BoundCase {
  std::int64_t budget;
  int cap;  // STRIPE_ADMISSION_MAX_OUTPUT; estimates: input in [0, cap], max_tokens in [0, 2 cap]
};

struct BoundOutcome {
  std::int64_t open = 0;     // reserved by holds still open
  std::int64_t settled = 0;  // actual amounts settled
  std::int64_t largest = 0;  // the largest reservation admitted
  std::uint64_t allowed = 0;
  std::uint64_t open_holds = 0;
  std::uint64_t wrong_sizes = 0;
  std::uint64_t odd_refusals = 0;
};

// Each thread admits until refused for good (the budget is held or spent), settling or
// releasing some of its calls at random when `settle` is set.
// `output_only`: what is counted is the output tokens alone (a budget on that type).
BoundOutcome hammer(StripeLogger& logger, const BoundCase& bound, bool settle, int threads,
                    const std::string& customer = "alice", bool output_only = false) {
  std::atomic<std::int64_t> open{0}, settled{0}, largest{0};
  std::atomic<std::uint64_t> allowed{0}, open_holds{0}, wrong_sizes{0}, odd{0};
  std::atomic<int> waiting{threads};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 random(static_cast<std::uint64_t>(bound.budget) * 131 + t);
      std::uniform_int_distribution<std::int64_t> input(0, bound.cap);
      std::uniform_int_distribution<std::int64_t> output(0, 2 * bound.cap);
      std::uniform_int_distribution<int> fate(0, 2);
      // All threads start together.
      waiting.fetch_sub(1);
      while (waiting.load() > 0) std::this_thread::yield();
      int transient = 0;
      for (int i = 0; i < 1'000'000 && transient < 10'000; ++i) {
        const std::string call = customer + "-t" + std::to_string(t) + "-" + std::to_string(i);
        AdmissionRequest request;
        request.call_id = call;
        request.model = "gpt-test";
        request.end_user_id = customer;
        request.input_tokens = input(random);
        request.max_tokens = output(random);
        const std::int64_t output_held = request.max_tokens > 0
                                             ? std::min<std::int64_t>(request.max_tokens, bound.cap)
                                             : bound.cap;
        const std::int64_t expected = request.input_tokens + output_held;
        const std::int64_t counted = output_only ? output_held : expected;
        const AdmissionDecision decision = logger.admit(request);
        if (!decision.allowed()) {
          if (decision.reason == "held_by_open_calls" || decision.reason == "budget_exhausted") {
            break;
          }
          if (decision.reason != "budget_refilling" && decision.reason != "balance_unavailable") {
            odd.fetch_add(1);
            break;
          }
          ++transient;
          continue;
        }
        allowed.fetch_add(1);
        if (decision.reserved != expected) wrong_sizes.fetch_add(1);
        std::int64_t seen = largest.load();
        while (counted > seen && !largest.compare_exchange_weak(seen, counted)) {
        }
        const int what = settle ? fate(random) : 0;
        if (what == 1) {  // settled to what it used: at most its reservation
          // (Counted alone, the output is at most the output held.)
          const std::int64_t actual = std::uniform_int_distribution<std::int64_t>(
              1, std::max<std::int64_t>(1, counted))(random);
          const std::int64_t completion = output_only ? actual : actual - actual / 2;
          UsageEvent event;
          event.call_id = call;
          event.model = "gpt-test";
          event.end_user_id = customer;
          event.prompt_tokens = output_only ? request.input_tokens : actual / 2;
          event.completion_tokens = completion;
          event.total_tokens = *event.prompt_tokens + completion;
          event.end_time = std::chrono::system_clock::now();
          logger.log_success_event(event);
          settled.fetch_add(output_only ? completion : actual);
        } else if (what == 2) {
          UsageEvent event;
          event.call_id = call;
          event.end_user_id = customer;
          logger.log_failure_event(event);
        } else {
          open.fetch_add(counted);
          open_holds.fetch_add(1);
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  BoundOutcome out;
  out.open = open.load();
  out.settled = settled.load();
  out.largest = largest.load();
  out.allowed = allowed.load();
  out.open_holds = open_holds.load();
  out.wrong_sizes = wrong_sizes.load();
  out.odd_refusals = odd.load();
  return out;
}

class AdmissionBoundTest : public AdmissionTest, public ::testing::WithParamInterface<bool> {};

TEST_P(AdmissionBoundTest, SixtyFourThreadsNeverExceedTheBudgetByMoreThanOneReservation) {
  const bool in_memory = GetParam();
  const std::vector<BoundCase> cases = {{1, 8},        {100, 8},       {4096, 64},
                                        {10'000, 100}, {123'457, 512}, {1'000'000, 256}};
  int run = 0;
  for (const BoundCase& bound : cases) {
    for (const bool settle : {false, true}) {
      SCOPED_TRACE("budget " + std::to_string(bound.budget) + (settle ? " settling" : ""));
      Config config = admission_config("alice=" + std::to_string(bound.budget), bound.cap);
      config.outbox_path =
          in_memory ? ":memory:" : dir_.file("bound" + std::to_string(++run) + ".db");
      config.aggregation_window_ms = "1000";  // the settled calls' rows: few usage records
      auto logger = start(config);
      ASSERT_NE(logger, nullptr);
      const BoundOutcome out = hammer(*logger, bound, settle, 64);
      EXPECT_EQ(out.wrong_sizes, 0u);
      EXPECT_EQ(out.odd_refusals, 0u);
      const std::int64_t one_reservation = 2 * bound.cap;  // input <= cap, output capped at cap
      EXPECT_LE(out.largest, one_reservation);
      // The bound.
      EXPECT_LE(out.open + out.settled, bound.budget + out.largest);
      const StripeLoggerStats stats = logger->stats();
      EXPECT_EQ(stats.admissions, out.allowed);
      EXPECT_EQ(stats.holds_open, out.open_holds);
      if (!settle) {
        // The demand exceeds the budget: it is used, up to less than one reservation.
        EXPECT_GE(out.open, bound.budget - one_reservation);
        EXPECT_EQ(out.settled, 0);
      } else {
        // What the engine has left is exactly the budget minus what the threads hold and used.
        const std::int64_t left = bound.budget - out.open - out.settled;
        if (left > 0) {
          const AdmissionDecision rest = logger->admit(ask("rest", "alice", left - 1, 1));
          EXPECT_TRUE(rest.allowed()) << rest.reason;
          EXPECT_EQ(rest.reserved, left);
          EXPECT_EQ(rest.remaining, 0);
        }
        const AdmissionDecision none = logger->admit(ask("none", "alice", 0, 1));
        EXPECT_FALSE(none.allowed()) << "left " << left;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Stores, AdmissionBoundTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("memory") : std::string("sqlite");
                         });

// Sixteen customers at once, four threads each: the shards keep each customer's bound.
TEST_F(AdmissionTest, ManyCustomersAtOnceEachKeepTheirBound) {
  const BoundCase bound{5'000, 64};
  auto logger = start(admission_config("*=" + std::to_string(bound.budget), bound.cap));
  ASSERT_NE(logger, nullptr);
  constexpr int kCustomers = 16;
  std::vector<BoundOutcome> outcomes(kCustomers);
  std::vector<std::thread> customers;
  for (int c = 0; c < kCustomers; ++c) {
    customers.emplace_back([&, c] {
      outcomes[c] = hammer(*logger, bound, c % 2 == 1, 4, "cust-" + std::to_string(c));
    });
  }
  for (auto& each : customers) each.join();
  std::uint64_t allowed = 0;
  std::uint64_t open_holds = 0;
  for (int c = 0; c < kCustomers; ++c) {
    SCOPED_TRACE("customer " + std::to_string(c));
    const BoundOutcome& out = outcomes[c];
    EXPECT_EQ(out.wrong_sizes, 0u);
    EXPECT_EQ(out.odd_refusals, 0u);
    EXPECT_LE(out.open + out.settled, bound.budget + out.largest);
    if (c % 2 == 0) {
      EXPECT_GE(out.open, bound.budget - 2 * bound.cap);
    }
    allowed += out.allowed;
    open_holds += out.open_holds;
  }
  const StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(stats.admissions, allowed);
  EXPECT_EQ(stats.holds_open, open_holds);
}

// The bound holds for a budget per token type as for the budget of all units.
TEST_F(TokenBudgetTest, SixtyFourThreadsNeverExceedATypesBudgetByMoreThanOneReservation) {
  for (const BoundCase& bound : {BoundCase{100, 8}, BoundCase{10'000, 100}}) {
    for (const bool settle : {false, true}) {
      SCOPED_TRACE("budget " + std::to_string(bound.budget) + (settle ? " settling" : ""));
      Config config = typed_config("alice:output=" + std::to_string(bound.budget));
      config.admission_max_output = std::to_string(bound.cap);
      config.outbox_path =
          dir_.file("typed-" + std::to_string(bound.budget) + (settle ? "-settle" : "") + ".db");
      auto logger = start(config);
      ASSERT_NE(logger, nullptr);
      const BoundOutcome out = hammer(*logger, bound, settle, 64, "alice", true);
      EXPECT_EQ(out.wrong_sizes, 0u);
      EXPECT_EQ(out.odd_refusals, 0u);
      EXPECT_LE(out.largest, bound.cap);
      EXPECT_LE(out.open + out.settled, bound.budget + out.largest);
      if (!settle) {
        EXPECT_GE(out.open, bound.budget - bound.cap);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Restarts

TEST_F(AdmissionTest, OpenHoldsOfAStoppedProcessCountUntilTheTtlAndItsUsageForever) {
  Config config = admission_config("alice=1000", 100);
  config.hold_ttl_s = "5";
  {
    auto first = start(config);
    ASSERT_NE(first, nullptr);
    ASSERT_EQ(first->admit(ask("a1", "alice", 200, 100)).reserved, 300);  // left open
    ASSERT_EQ(first->admit(ask("a2", "alice", 100, 100)).reserved, 200);
    first->log_success_event(used("a2", 50));
    ASSERT_TRUE(first->shutdown(in_seconds(10)));
  }  // a1 is still running somewhere, as far as anyone knows: its 300 stay held

  auto second = start(config);
  ASSERT_NE(second, nullptr);
  const AdmissionDecision too_much = second->admit(ask("b0", "alice", 551, 100));
  EXPECT_FALSE(too_much.allowed()) << "admitted 651 of the 650 left";
  EXPECT_EQ(too_much.reason, "held_by_open_calls");
  const AdmissionDecision rest = second->admit(ask("b1", "alice", 550, 100));
  ASSERT_TRUE(rest.allowed()) << rest.reason;
  EXPECT_EQ(rest.reserved, 650);
  EXPECT_EQ(rest.remaining, 0);
  EXPECT_FALSE(second->admit(ask("b2", "alice", 0, 1)).allowed());
  second->log_success_event(used("b1", 650));  // used: stays counted whatever the clock does

  // Past the TTL the stopped process is dead: its open hold is free, its usage is not.
  clock_->advance(std::chrono::seconds(6));
  AdmissionDecision freed;
  EXPECT_TRUE(eventually(
      [&] {
        freed = second->admit(ask("b3", "alice", 200, 100));
        return freed.allowed();
      },
      std::chrono::seconds(10)))
      << freed.reason;
  EXPECT_EQ(freed.reserved, 300);
  EXPECT_EQ(freed.remaining, 0);
  second->log_success_event(used("b3", 300));
  // 50 + 650 + 300: the budget is spent, and stays spent later on.
  clock_->advance(std::chrono::seconds(60));
  AdmissionDecision spent;
  EXPECT_TRUE(eventually(
      [&] {
        spent = second->admit(ask("b4", "alice", 0, 1));
        return spent.reason == "budget_exhausted";
      },
      std::chrono::seconds(10)))
      << spent.reason;
  EXPECT_FALSE(spent.allowed());
  EXPECT_EQ(second->stats().admissions, 2u);
}

TEST_F(AdmissionTest, ACleanStopWithoutOpenHoldsGivesEverythingBack) {
  Config config = admission_config("alice=1000", 100);
  {
    auto first = start(config);
    ASSERT_NE(first, nullptr);
    ASSERT_TRUE(first->admit(ask("a1", "alice", 200, 100)).allowed());
    ASSERT_TRUE(first->admit(ask("a2", "alice", 200, 100)).allowed());
    ASSERT_TRUE(first->admit(ask("a3", "alice", 200, 100)).allowed());
    first->log_success_event(used("a1", 250));
    first->log_success_event(used("a2", 150));
    first->log_failure_event(used("a3", 0));
    EXPECT_EQ(first->stats().holds_open, 0u);
  }  // destroyed: shutdown with its deadline

  auto second = start(config);
  ASSERT_NE(second, nullptr);
  // At once, no clock moved: everything but the 400 used.
  EXPECT_FALSE(second->admit(ask("b0", "alice", 501, 100)).allowed());
  const AdmissionDecision rest = second->admit(ask("b1", "alice", 500, 100));
  EXPECT_TRUE(rest.allowed()) << rest.reason;
  EXPECT_EQ(rest.remaining, 0);
}

// ---------------------------------------------------------------------------------------------
// The balance source down

class CreditsTest : public AdmissionTest {
 protected:
  Config credits_config(bool fail_open) {
    customer_ = emulator_.create_customer({{"litellm_customer_id", "alice"}});
    emulator_.create_subscription(customer_, price_);
    Config config = this->config();
    config.quantity = "cost";
    config.admission = "credits";
    config.admission_unestimable = "reserve";
    config.admission_reserve = "10";  // cents
    config.admission_fail = fail_open ? "open" : "closed";
    config.admission_wait_ms = "2000";
    config.customer_map = "alice=" + customer_;
    return config;
  }
  std::string customer_;
};

UsageEvent costing(const std::string& call_id, double dollars) {
  UsageEvent e;
  e.call_id = call_id;
  e.model = "gpt-test";
  e.end_user_id = "alice";
  e.total_tokens = 10;
  e.response_cost = dollars;
  e.end_time = std::chrono::system_clock::now();
  return e;
}

TEST_F(CreditsTest, CustomersAreAdmittedUpToTheirCreditBalance) {
  auto logger = start(credits_config(false));
  ASSERT_NE(logger, nullptr);
  emulator_.create_credit_grant(customer_, 100);  // $1.00
  // Five calls of 20 cents each, reserving 10 each, then nothing.
  for (int i = 0; i < 5; ++i) {
    const std::string call = "c" + std::to_string(i);
    const AdmissionDecision decision = logger->admit(ask(call, "alice", 10, 10));
    ASSERT_TRUE(decision.allowed()) << i << ": " << decision.reason;
    EXPECT_EQ(decision.verdict, AdmissionVerdict::kAllow);
    EXPECT_EQ(decision.reserved, 10);
    EXPECT_EQ(decision.remaining, 100 - 20 * i - 10);
    logger->log_success_event(costing(call, 0.20));
  }
  const AdmissionDecision refused = logger->admit(ask("c5", "alice", 10, 10));
  EXPECT_EQ(refused.verdict, AdmissionVerdict::kDeny);
  EXPECT_EQ(refused.reason, "credits_exhausted");
  EXPECT_EQ(refused.http_status(), 402);
  expect_error_body(refused, "insufficient_quota");
  const StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(stats.admissions, 5u);
  EXPECT_EQ(denials(stats, "credits_exhausted"), 1u);
  EXPECT_GE(stats.credit_balance_fetches, 1u);
  EXPECT_EQ(stats.credit_balance_failures, 0u);
}

TEST_F(CreditsTest, StripeDownRefusesUnderClosed) {
  Config config = credits_config(false);
  emulator_.stop();
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision refused = logger->admit(ask("c1", "alice", 10, 10));
  EXPECT_EQ(refused.verdict, AdmissionVerdict::kDeny);
  EXPECT_EQ(refused.reason, "balance_unavailable");
  EXPECT_EQ(refused.http_status(), 429);
  EXPECT_EQ(refused.retry_after, std::chrono::seconds(1));
  expect_error_body(refused, "rate_limit_error");
  EXPECT_TRUE(eventually([&] { return logger->stats().credit_balance_failures >= 1; },
                         std::chrono::seconds(10)));
  const StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(denials(stats, "balance_unavailable"), 1u);
  EXPECT_EQ(stats.holds_open, 0u);
  EXPECT_EQ(stats.admissions, 0u);
}

TEST_F(CreditsTest, StripeDownAllowsUnderOpen) {
  Config config = credits_config(true);
  emulator_.stop();
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  const AdmissionDecision allowed = logger->admit(ask("c1", "alice", 10, 10));
  EXPECT_EQ(allowed.verdict, AdmissionVerdict::kAllowUnavailable);
  EXPECT_TRUE(allowed.allowed());
  EXPECT_EQ(allowed.reason, "fail_open");
  EXPECT_EQ(allowed.http_status(), 200);
  EXPECT_TRUE(eventually([&] { return logger->stats().credit_balance_failures >= 1; },
                         std::chrono::seconds(10)));
  const StripeLoggerStats stats = logger->stats();
  EXPECT_EQ(stats.admissions_fail_open, 1u);
  EXPECT_EQ(stats.admissions, 0u);
  EXPECT_EQ(stats.holds_open, 0u);
}

TEST_F(CreditsTest, FailingBalanceRequestsFollowThePolicyThenRecover) {
  Config config = credits_config(false);
  emulator_.create_credit_grant(customer_, 50);
  emulator_.inject(
      stripe_emulator::Fault{
          stripe_emulator::FaultKind::kStatus, 500, "/v1/billing/credit_balance_summary", {}},
      1'000'000);
  auto logger = start(config);
  ASSERT_NE(logger, nullptr);
  EXPECT_EQ(logger->admit(ask("c1", "alice", 10, 10)).reason, "balance_unavailable");
  EXPECT_TRUE(eventually([&] { return logger->stats().credit_balance_failures >= 1; },
                         std::chrono::seconds(10)));
  const std::size_t asked = count_requests("GET", "/v1/billing/credit_balance_summary");
  emulator_.clear_faults();
  AdmissionDecision decision;
  EXPECT_TRUE(eventually(
      [&] {
        decision = logger->admit(ask("c2", "alice", 10, 10));
        return decision.allowed();
      },
      std::chrono::seconds(10)))
      << decision.reason;
  EXPECT_GT(count_requests("GET", "/v1/billing/credit_balance_summary"), asked)
      << "the balance was never asked again after the failures";
  EXPECT_EQ(decision.verdict, AdmissionVerdict::kAllow);
  EXPECT_EQ(decision.remaining, 50 - 10);
}

TEST_F(AdmissionTest, PostgresDownFollowsTheFailPolicyForStaticBudgets) {
  for (const bool fail_open : {false, true}) {
    SCOPED_TRACE(fail_open ? "open" : "closed");
    Config config = admission_config("*=1000");
    config.outbox_url = "postgresql://stripe:unused@127.0.0.1:1/none?connect_timeout=1";
    config.outbox_path.reset();
    config.admission_fail = fail_open ? "open" : "closed";
    config.admission_wait_ms = "1000";
    auto finalized = finalize_config(config);
    ASSERT_TRUE(finalized) << finalized.error().to_string();
    StripeLogger logger(std::move(finalized.value()), {nullptr, nullptr, clock_, {}});
    const AdmissionDecision decision = logger.admit(ask("c1", "alice", 10, 10));
    if (fail_open) {
      EXPECT_EQ(decision.verdict, AdmissionVerdict::kAllowUnavailable);
      EXPECT_EQ(decision.reason, "fail_open");
      EXPECT_EQ(logger.stats().admissions_fail_open, 1u);
    } else {
      EXPECT_EQ(decision.verdict, AdmissionVerdict::kDeny);
      EXPECT_EQ(decision.reason, "balance_unavailable");
      EXPECT_EQ(decision.http_status(), 429);
      EXPECT_EQ(denials(logger.stats(), "balance_unavailable"), 1u);
    }
    EXPECT_TRUE(eventually([&] { return logger.stats().admission_store_errors >= 1; },
                           std::chrono::seconds(10)));
    EXPECT_EQ(logger.stats().admissions, 0u);
    logger.shutdown(in_seconds(2));
  }
}

}  // namespace
}  // namespace stripe_billing
