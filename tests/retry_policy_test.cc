// classify(): every verdict, for every kind of request, by table; and the backoff schedule.
#include "retry_policy.h"

#include <gtest/gtest.h>

namespace stripe_billing {
namespace {

Expected<StripeResponse> stripe_error(int status, std::string code = "", std::string reason = "",
                                      std::optional<bool> should_retry = std::nullopt,
                                      std::optional<int> retry_after = std::nullopt,
                                      std::string message = "") {
  StripeError stripe;
  stripe.http_status = status;
  stripe.code = std::move(code);
  stripe.rate_limited_reason = std::move(reason);
  stripe.should_retry = should_retry;
  stripe.retry_after_seconds = retry_after;
  stripe.message = message;
  return Error{ErrorCode::kStripe, std::move(message), stripe};
}

Expected<StripeResponse> local_error(ErrorCode code) { return Error{code, "", std::nullopt}; }
Expected<StripeResponse> success() {
  return StripeResponse{200, "req_1", false, nlohmann::json::object()};
}

constexpr RequestKind kUsage = RequestKind::kUsageRecord;
constexpr RequestKind kMeter = RequestKind::kMeterEvent;
constexpr RequestKind kStream = RequestKind::kMeterStream;
constexpr RequestKind kSession = RequestKind::kStreamSession;
constexpr RequestKind kLookup = RequestKind::kLookup;

struct Row {
  const char* name;
  RequestKind kind;
  Expected<StripeResponse> result;
  Outcome outcome;
  const char* reason;
  Throttle throttle = Throttle::kNone;
};

const char* const kAlreadyRecorded = "An event already exists with identifier call-1:total_tokens";

TEST(Classify, GivesEveryVerdictForEveryKindOfRequest) {
  const std::vector<Row> table = {
      // Delivered.
      {"usage record accepted", kUsage, success(), Outcome::kDelivered, "ok"},
      {"meter event accepted", kMeter, success(), Outcome::kDelivered, "ok"},
      {"stream accepted", kStream, success(), Outcome::kDelivered, "ok"},
      {"meter identifier known", kMeter,
       stripe_error(400, "", "", false, std::nullopt, kAlreadyRecorded), Outcome::kDelivered,
       "already_recorded"},
      {"stream identifier known", kStream,
       stripe_error(400, "", "", false, std::nullopt, kAlreadyRecorded), Outcome::kDelivered,
       "already_recorded"},
      // A usage record has no identifier: the same words from Stripe are just a 400.
      {"usage record 400 with those words", kUsage,
       stripe_error(400, "", "", false, std::nullopt, kAlreadyRecorded), Outcome::kDead,
       "stripe_400"},
      // No answer.
      {"network", kUsage, local_error(ErrorCode::kNetwork), Outcome::kRetry, "network"},
      {"timeout", kMeter, local_error(ErrorCode::kTimeout), Outcome::kRetry, "timeout"},
      {"aborted", kStream, local_error(ErrorCode::kAborted), Outcome::kRetry, "aborted"},
      {"not Stripe's shape (or a redirect)", kUsage, local_error(ErrorCode::kInvalidResponse),
       Outcome::kRetry, "invalid_response"},
      {"a local storage failure", kMeter, local_error(ErrorCode::kStorage), Outcome::kRetry,
       "storage"},
      {"made under another configuration", kMeter, local_error(ErrorCode::kInvalidConfig),
       Outcome::kRetry, "meters_not_in_mode"},
      {"an internal error", kUsage, local_error(ErrorCode::kInternal), Outcome::kDead, "internal"},
      // Stripe's server side.
      {"500", kUsage, stripe_error(500), Outcome::kRetry, "stripe_500"},
      {"503", kStream, stripe_error(503), Outcome::kRetry, "stripe_503"},
      {"500 should not retry", kUsage, stripe_error(500, "", "", false), Outcome::kDead,
       "stripe_500"},
      {"409 idempotency key in use", kUsage, stripe_error(409, "idempotency_key_in_use"),
       Outcome::kRetry, "stripe_idempotency_key_in_use"},
      // 429s: throttling lowers the shared rate; one object busy does not.
      {"429 global rate", kUsage, stripe_error(429, "rate_limit", "global-rate"), Outcome::kRetry,
       "stripe_rate_limit", Throttle::kRate},
      {"429 endpoint concurrency", kMeter, stripe_error(429, "rate_limit", "endpoint-concurrency"),
       Outcome::kRetry, "stripe_rate_limit", Throttle::kRate},
      {"429 without a reason", kLookup, stripe_error(429, "rate_limit"), Outcome::kRetry,
       "stripe_rate_limit", Throttle::kRate},
      {"429 lock timeout", kUsage, stripe_error(429, "lock_timeout"), Outcome::kRetry,
       "stripe_lock_timeout", Throttle::kObject},
      {"429 one meter event per customer at a time", kMeter,
       stripe_error(429, "rate_limit", "resource-specific"), Outcome::kRetry, "stripe_rate_limit",
       Throttle::kObject},
      {"429 even with should-retry false", kMeter,
       stripe_error(429, "rate_limit", "global-rate", false), Outcome::kRetry, "stripe_rate_limit",
       Throttle::kRate},
      // The key.
      {"401 usage record", kUsage, stripe_error(401), Outcome::kPause, "stripe_401"},
      {"403 meter event", kMeter, stripe_error(403), Outcome::kPause, "stripe_403"},
      {"401 minting the stream session", kSession, stripe_error(401, "api_key_expired"),
       Outcome::kPause, "stripe_api_key_expired"},
      {"401 lookup", kLookup, stripe_error(401), Outcome::kPause, "stripe_401"},
      // A stream token refused even after a fresh session is not the secret key's fault.
      {"401 stream token", kStream, stripe_error(401, "invalid_api_key"), Outcome::kRetry,
       "stream_session_refused"},
      // Requests Stripe will refuse forever.
      {"400 usage record", kUsage, stripe_error(400, "parameter_unknown"), Outcome::kDead,
       "stripe_parameter_unknown"},
      {"400 should retry", kUsage, stripe_error(400, "", "", true), Outcome::kRetry, "stripe_400"},
      {"404 item gone", kUsage, stripe_error(404, "resource_missing", "", false),
       Outcome::kItemMissing, "stripe_resource_missing"},
      {"404 for a meter event", kMeter, stripe_error(404, "resource_missing"), Outcome::kDead,
       "stripe_resource_missing"},
      {"404 other", kUsage, stripe_error(404), Outcome::kDead, "stripe_404"},
  };
  for (const Row& row : table) {
    const Classification verdict = classify(row.kind, row.result);
    EXPECT_EQ(verdict.outcome, row.outcome) << row.name;
    EXPECT_EQ(verdict.reason, row.reason) << row.name;
    EXPECT_EQ(verdict.throttle, row.throttle) << row.name;
  }
}

TEST(Classify, AnAbortedTransferIsNoAttempt) {
  EXPECT_FALSE(classify(kUsage, local_error(ErrorCode::kAborted)).attempted);
  EXPECT_TRUE(classify(kUsage, local_error(ErrorCode::kNetwork)).attempted);
}

TEST(Classify, CarriesStripesRetryAfter) {
  EXPECT_EQ(
      classify(kUsage, stripe_error(429, "rate_limit", "global-rate", std::nullopt, 7)).retry_after,
      std::chrono::seconds(7));
  EXPECT_FALSE(classify(kUsage, stripe_error(429, "rate_limit")).retry_after);
}

TEST(ThrottleKind, TellsAccountThrottlingFromABusyObject) {
  EXPECT_EQ(throttle_kind(429, "rate_limit", "global-rate"), Throttle::kRate);
  EXPECT_EQ(throttle_kind(429, "rate_limit", "global-concurrency"), Throttle::kRate);
  EXPECT_EQ(throttle_kind(429, "rate_limit", "endpoint-rate"), Throttle::kRate);
  EXPECT_EQ(throttle_kind(429, "", ""), Throttle::kRate);
  EXPECT_EQ(throttle_kind(429, "lock_timeout", ""), Throttle::kObject);
  EXPECT_EQ(throttle_kind(429, "rate_limit", "resource-specific"), Throttle::kObject);
  EXPECT_EQ(throttle_kind(409, "lock_timeout", ""), Throttle::kNone);
  EXPECT_EQ(throttle_kind(500, "", "global-rate"), Throttle::kNone);
}

TEST(RetryPolicy, DoublesFromHalfASecondUpToTheCap) {
  RetryPolicy policy;
  EXPECT_EQ(policy.backoff(1, 1.0).count(), 500);
  EXPECT_EQ(policy.backoff(2, 1.0).count(), 1000);
  EXPECT_EQ(policy.backoff(4, 1.0).count(), 4000);
  EXPECT_EQ(policy.backoff(5, 1.0).count(), 5000);
  EXPECT_EQ(policy.backoff(60, 1.0).count(), 5000);
}

TEST(RetryPolicy, JitterScalesBetweenHalfAndFull) {
  RetryPolicy policy;
  EXPECT_EQ(policy.backoff(2, 0.5).count(), 500);
  EXPECT_EQ(policy.backoff(2, 0.1).count(), 500);  // clamped
  EXPECT_EQ(policy.backoff(2, 7.0).count(), 1000);
}

TEST(RetryPolicy, WaitsForStripesRetryAfterWhenItIsLongerThanTheBackoff) {
  RetryPolicy policy;
  Classification verdict(Outcome::kRetry, "stripe_rate_limit");
  EXPECT_EQ(policy.retry_delay(1, 1.0, verdict).count(), 500);
  verdict.retry_after = std::chrono::seconds(3);
  EXPECT_EQ(policy.retry_delay(1, 1.0, verdict).count(), 3000);
  EXPECT_EQ(policy.retry_delay(5, 1.0, verdict).count(), 5000) << "the backoff is longer";
  verdict.retry_after = std::chrono::hours(5);
  EXPECT_EQ(policy.retry_delay(1, 1.0, verdict), policy.max_retry_after) << "capped";
}

}  // namespace
}  // namespace stripe_billing
