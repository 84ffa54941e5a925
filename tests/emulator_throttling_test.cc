// The Stripe emulator's 429s as Stripe answers them near an account's limits, exercised over real
// HTTP on loopback: the kinds an injected 429 can take (throttling by reason, lock_timeout),
// Retry-After on faults and on the rate limit, random throttling, the answer counters a benchmark
// reads, and the same controls over /_emulator/.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "stripe_emulator/emulator.h"

namespace {

using nlohmann::json;
using std::chrono::seconds;
using std::chrono::steady_clock;
using stripe_emulator::Emulator;
using stripe_emulator::EmulatorOptions;
using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using stripe_emulator::TooManyRequestsCode;
using Counts = std::map<std::string, std::size_t>;
using StatusCounts = std::map<int, std::size_t>;

constexpr char kApiKey[] = "sk_test_emulator_0000000000000000";
constexpr char kForm[] = "application/x-www-form-urlencoded";
constexpr std::int64_t kNow = 1'700'000'000;
constexpr auto kDeadline = seconds(10);
constexpr char kLockTimeoutMessage[] =
    "This object cannot be accessed right now because another API request or Stripe process is "
    "currently accessing it. If you see this error intermittently, retry the request.";

json body_of(const httplib::Result& result) { return json::parse(result->body); }
json error_of(const httplib::Result& result) { return body_of(result).at("error"); }

Fault status_fault(int status) {
  Fault fault;
  fault.status = status;
  return fault;
}

Fault lock_timeout_fault() {
  auto fault = status_fault(429);
  fault.code = TooManyRequestsCode::kLockTimeout;
  return fault;
}

Fault throttling_fault(const std::string& reason) {
  auto fault = status_fault(429);
  fault.rate_limited_reason = reason;
  return fault;
}

class ThrottlingTest : public ::testing::Test {
 protected:
  ThrottlingTest() : emulator_(options()) {
    const auto customer = emulator_.create_customer({{"litellm_customer_id", "alice"}});
    const auto price = emulator_.create_metered_price(emulator_.create_product("LLM tokens"));
    item_ = emulator_.create_subscription(customer, price).item_id;
  }

  EmulatorOptions options() {
    EmulatorOptions options;
    options.api_keys = {kApiKey};
    options.clock = [this] { return now_.load(); };
    return options;
  }

  httplib::Result record_usage() const {
    httplib::Client client("127.0.0.1", emulator_.port());
    client.set_read_timeout(kDeadline);
    client.set_bearer_token_auth(kApiKey);
    return client.Post(("/v1/subscription_items/" + item_ + "/usage_records").c_str(), "quantity=1",
                       kForm);
  }

  httplib::Client control() const { return httplib::Client("127.0.0.1", emulator_.port()); }
  httplib::Result control_post(const std::string& path, const json& body) const {
    return control().Post(path.c_str(), body.dump(), "application/json");
  }

  std::atomic<std::int64_t> now_{kNow};
  Emulator emulator_;
  std::string item_;
};

// --- Injected 429s --------------------------------------------------------------------------

TEST_F(ThrottlingTest, APlain429FaultIsGlobalRateThrottlingWithoutRetryAfter) {
  emulator_.inject(status_fault(429));
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->get_header_value("Stripe-Rate-Limited-Reason"), "global-rate");
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
  EXPECT_EQ(error_of(result)["code"], "rate_limit");
  EXPECT_FALSE(result->has_header("Retry-After"));
}

TEST_F(ThrottlingTest, A429FaultCarriesTheRateLimitedReasonItWasGiven) {
  emulator_.inject(throttling_fault("endpoint-concurrency"));
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->get_header_value("Stripe-Rate-Limited-Reason"), "endpoint-concurrency");
  EXPECT_EQ(error_of(result)["code"], "rate_limit");
}

TEST_F(ThrottlingTest, A429FaultWithAnEmptyReasonHasNoRateLimitedReasonHeader) {
  emulator_.inject(throttling_fault(""));
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_FALSE(result->has_header("Stripe-Rate-Limited-Reason"));
  EXPECT_EQ(error_of(result)["code"], "rate_limit");
}

TEST_F(ThrottlingTest, ALockTimeout429HasStripesBodyAndNoRateLimitedReason) {
  emulator_.inject(lock_timeout_fault());
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_FALSE(result->has_header("Stripe-Rate-Limited-Reason"));
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
  EXPECT_EQ(error_of(result)["code"], "lock_timeout");
  EXPECT_EQ(error_of(result)["message"], kLockTimeoutMessage);
  EXPECT_EQ(emulator_.total_usage(item_), 0);
}

TEST_F(ThrottlingTest, A429FaultWithRetryAfterAnswersItInSeconds) {
  auto fault = status_fault(429);
  fault.retry_after = seconds(2);
  emulator_.inject(fault);
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->get_header_value("Retry-After"), "2");
}

TEST_F(ThrottlingTest, RetryAfterGoesOnOtherInjectedStatusesToo) {
  auto fault = status_fault(503);
  fault.retry_after = seconds(5);
  emulator_.inject(fault);
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 503);
  EXPECT_EQ(result->get_header_value("Retry-After"), "5");
}

TEST_F(ThrottlingTest, The429OptionsLeaveOtherStatusesAlone) {
  auto fault = lock_timeout_fault();
  fault.status = 500;
  emulator_.inject(fault);
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 500);
  EXPECT_EQ(error_of(result)["type"], "api_error");
  EXPECT_FALSE(result->has_header("Stripe-Rate-Limited-Reason"));
}

TEST_F(ThrottlingTest, RandomFaultsAnswerWithTheir429Options) {
  auto fault = lock_timeout_fault();
  fault.retry_after = seconds(1);
  emulator_.set_random_faults({{fault, 1.0}}, 7);
  const auto result = record_usage();
  emulator_.set_random_faults({}, 0);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(error_of(result)["code"], "lock_timeout");
  EXPECT_EQ(result->get_header_value("Retry-After"), "1");
}

TEST_F(ThrottlingTest, RandomThrottlingAt5PercentHitsAboutOneRequestInTwenty) {
  emulator_.set_random_faults({{throttling_fault("global-rate"), 0.05}}, 42);
  httplib::Client client("127.0.0.1", emulator_.port());
  client.set_bearer_token_auth(kApiKey);
  const auto path = "/v1/subscription_items/" + item_ + "/usage_records";
  int throttled = 0;
  for (int request = 0; request < 400; ++request) {
    throttled += client.Post(path.c_str(), "quantity=1", kForm)->status == 429;
  }
  // 20 expected; the generator is seeded, so this is the same every run.
  EXPECT_GE(throttled, 8);
  EXPECT_LE(throttled, 32);
  EXPECT_EQ(emulator_.total_usage(item_), 400 - throttled);
}

// --- The rate limit -------------------------------------------------------------------------

TEST_F(ThrottlingTest, TheRateLimitAnswersRetryAfterWhenGivenOne) {
  emulator_.set_rate_limit(0.001, seconds(3));  // one request, then none for 1000 seconds
  ASSERT_EQ(record_usage()->status, 200);
  const auto limited = record_usage();
  emulator_.set_rate_limit(0);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429);
  EXPECT_EQ(limited->get_header_value("Stripe-Rate-Limited-Reason"), "global-rate");
  EXPECT_EQ(limited->get_header_value("Retry-After"), "3");
}

TEST_F(ThrottlingTest, TheRateLimitAnswersNoRetryAfterByDefault) {
  emulator_.set_rate_limit(0.001);
  ASSERT_EQ(record_usage()->status, 200);
  const auto limited = record_usage();
  emulator_.set_rate_limit(0);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429);
  EXPECT_FALSE(limited->has_header("Retry-After"));
}

// --- Observation ----------------------------------------------------------------------------

TEST_F(ThrottlingTest, EachRecordedRequestCarriesWhenItWasReceived) {
  const auto before = steady_clock::now();
  ASSERT_EQ(record_usage()->status, 200);
  const auto after = steady_clock::now();
  const auto requests = emulator_.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_GE(requests[0].received_at, before);
  EXPECT_LE(requests[0].received_at, after);
}

TEST_F(ThrottlingTest, AnswerCountsCountAnswersByStatus) {
  emulator_.inject(status_fault(500));
  emulator_.inject(status_fault(429));
  emulator_.inject(Fault{FaultKind::kCloseConnection, 500, "", {}});
  for (int request = 0; request < 5; ++request) record_usage();
  EXPECT_EQ(emulator_.answer_counts().by_status,
            (StatusCounts{{0, 1}, {200, 2}, {429, 1}, {500, 1}}));
}

TEST_F(ThrottlingTest, AnswerCountsCount429sByCodeAndReason) {
  emulator_.inject(status_fault(429), 2);
  emulator_.inject(throttling_fault("resource-specific"));
  emulator_.inject(throttling_fault(""));
  emulator_.inject(lock_timeout_fault());
  for (int request = 0; request < 5; ++request) ASSERT_EQ(record_usage()->status, 429);
  EXPECT_EQ(emulator_.answer_counts().too_many_requests,
            (Counts{{"lock_timeout", 1},
                    {"rate_limit", 1},
                    {"rate_limit/global-rate", 2},
                    {"rate_limit/resource-specific", 1}}));
}

TEST_F(ThrottlingTest, AnswerCountsCountTheRateLimitsRefusals) {
  emulator_.set_rate_limit(0.001);
  for (int request = 0; request < 3; ++request) record_usage();
  emulator_.set_rate_limit(0);
  EXPECT_EQ(emulator_.answer_counts().too_many_requests, (Counts{{"rate_limit/global-rate", 2}}));
}

TEST_F(ThrottlingTest, ClearRequestsResetsTheAnswerCounts) {
  ASSERT_EQ(record_usage()->status, 200);
  emulator_.clear_requests();
  const auto counts = emulator_.answer_counts();
  EXPECT_TRUE(counts.by_status.empty());
  EXPECT_TRUE(counts.too_many_requests.empty());
}

TEST_F(ThrottlingTest, CountAnswersCountsRequestsReceivedInTheWindowWithAStatusInRange) {
  ASSERT_EQ(record_usage()->status, 200);
  const auto from = steady_clock::now();
  ASSERT_EQ(record_usage()->status, 200);
  emulator_.inject(status_fault(429));
  ASSERT_EQ(record_usage()->status, 429);
  ASSERT_EQ(record_usage()->status, 200);
  const auto to = steady_clock::now();
  ASSERT_EQ(record_usage()->status, 200);
  EXPECT_EQ(emulator_.count_answers(200, 299, from, to), 2u);
  EXPECT_EQ(emulator_.count_answers(429, 429, from, to), 1u);
}

// --- Control endpoints ----------------------------------------------------------------------

TEST_F(ThrottlingTest, ALockTimeoutFaultQueuesOverHttp) {
  ASSERT_EQ(control_post("/_emulator/faults", {{"status", 429}, {"code", "lock_timeout"}})->status,
            200);
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(error_of(result)["code"], "lock_timeout");
  EXPECT_FALSE(result->has_header("Stripe-Rate-Limited-Reason"));
}

TEST_F(ThrottlingTest, TheRateLimitedReasonAndRetryAfterOfAFaultAreSetOverHttp) {
  ASSERT_EQ(control_post("/_emulator/faults", {{"status", 429},
                                               {"rate_limited_reason", "endpoint-rate"},
                                               {"retry_after_seconds", 4}})
                ->status,
            200);
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->get_header_value("Stripe-Rate-Limited-Reason"), "endpoint-rate");
  EXPECT_EQ(result->get_header_value("Retry-After"), "4");
}

TEST_F(ThrottlingTest, AnUnknown429CodeOverHttpIsRefused) {
  EXPECT_EQ(control_post("/_emulator/faults", {{"status", 429}, {"code", "slow_down"}})->status,
            400);
}

TEST_F(ThrottlingTest, ANegativeRetryAfterOverHttpIsRefused) {
  EXPECT_EQ(
      control_post("/_emulator/faults", {{"status", 429}, {"retry_after_seconds", -1}})->status,
      400);
}

TEST_F(ThrottlingTest, RandomFaultsAreSetOverHttp) {
  ASSERT_EQ(control_post(
                "/_emulator/random_faults",
                {{"seed", 7},
                 {"faults", {{{"status", 429}, {"code", "lock_timeout"}, {"probability", 1.0}}}}})
                ->status,
            200);
  const auto result = record_usage();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(error_of(result)["code"], "lock_timeout");
}

TEST_F(ThrottlingTest, AnEmptyListOverHttpTurnsRandomFaultsOff) {
  emulator_.set_random_faults({{status_fault(503), 1.0}}, 7);
  ASSERT_EQ(control_post("/_emulator/random_faults", {{"faults", json::array()}})->status, 200);
  EXPECT_EQ(record_usage()->status, 200);
}

TEST_F(ThrottlingTest, TheRateLimitsRetryAfterIsSetOverHttp) {
  ASSERT_EQ(
      control_post("/_emulator/rate_limit", {{"rps", 0.001}, {"retry_after_seconds", 6}})->status,
      200);
  ASSERT_EQ(record_usage()->status, 200);
  const auto limited = record_usage();
  emulator_.set_rate_limit(0);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429);
  EXPECT_EQ(limited->get_header_value("Retry-After"), "6");
}

TEST_F(ThrottlingTest, AnswersReportsTheAnswerCountsOverHttp) {
  ASSERT_EQ(record_usage()->status, 200);
  emulator_.inject(lock_timeout_fault());
  ASSERT_EQ(record_usage()->status, 429);
  const auto result = control().Get("/_emulator/answers");
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(body_of(result), (json{{"by_status", {{"200", 1}, {"429", 1}}},
                                   {"too_many_requests", {{"lock_timeout", 1}}},
                                   {"concurrent_meter_event_refusals", 0}}));
}

}  // namespace
