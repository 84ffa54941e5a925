#include "retry_policy.h"

#include <gtest/gtest.h>

namespace stripe_billing {
namespace {

Expected<StripeResponse> stripe_error(int status, std::string code = "",
                                      std::optional<bool> should_retry = std::nullopt) {
  StripeError stripe;
  stripe.http_status = status;
  stripe.code = std::move(code);
  stripe.should_retry = should_retry;
  return Error{ErrorCode::kStripe, "", stripe};
}

Expected<StripeResponse> local_error(ErrorCode code) { return Error{code, "", std::nullopt}; }

struct Row {
  const char* name;
  Expected<StripeResponse> result;
  Outcome expected;
};

TEST(Classify, FollowsStripesRetryRules) {
  const std::vector<Row> table = {
      {"success", StripeResponse{200, "req_1", false, nlohmann::json::object()}, Outcome::kDelivered},
      {"network error", local_error(ErrorCode::kNetwork), Outcome::kRetry},
      {"timeout", local_error(ErrorCode::kTimeout), Outcome::kRetry},
      {"500", stripe_error(500), Outcome::kRetry},
      {"503", stripe_error(503), Outcome::kRetry},
      {"429", stripe_error(429, "rate_limit"), Outcome::kRetry},
      {"409 lock", stripe_error(409, "lock_timeout"), Outcome::kRetry},
      {"400", stripe_error(400, "parameter_unknown"), Outcome::kDead},
      {"400 should retry", stripe_error(400, "", true), Outcome::kRetry},
      {"500 should not retry", stripe_error(500, "", false), Outcome::kDead},
      {"401", stripe_error(401), Outcome::kPause},
      {"403", stripe_error(403), Outcome::kPause},
      {"401 should not retry", stripe_error(401, "", false), Outcome::kPause},
      {"404 resource_missing", stripe_error(404, "resource_missing", false), Outcome::kItemMissing},
      {"404 other", stripe_error(404), Outcome::kDead},
      {"invalid config", local_error(ErrorCode::kInvalidConfig), Outcome::kDead},
  };
  for (const Row& row : table) {
    EXPECT_EQ(classify(row.result).outcome, row.expected) << row.name;
  }
}

TEST(Classify, NamesTheReasonAfterStripesCode) {
  EXPECT_EQ(classify(stripe_error(429, "rate_limit")).reason, "stripe_rate_limit");
  EXPECT_EQ(classify(stripe_error(500)).reason, "stripe_500");
  EXPECT_EQ(classify(local_error(ErrorCode::kTimeout)).reason, "timeout");
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

}  // namespace
}  // namespace stripe_billing
