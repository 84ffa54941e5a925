#include "stripe_billing/usage_event.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

namespace stripe_billing {
namespace {

TEST(ParseStandardLoggingPayload, ReadsEveryDocumentedField) {
  auto event = parse_standard_logging_payload(R"({
    "id": "chatcmpl-1", "litellm_call_id": "call-1", "model": "gpt-4o",
    "response_cost": 0.0125, "prompt_tokens": 10, "completion_tokens": 32, "total_tokens": 42,
    "end_user": "body-user", "startTime": 1700000000.25, "endTime": 1700000001.5,
    "metadata": {"user_api_key_user_id": "u1", "user_api_key_team_id": "t1",
                 "user_api_key_end_user_id": "eu1", "user_api_key_org_id": "o1",
                 "user_api_key_alias": "alias", "region": "eu", "count": 3}})");
  ASSERT_TRUE(event) << event.error().to_string();
  EXPECT_EQ(event->call_id, "call-1");
  EXPECT_EQ(event->response_id, "chatcmpl-1");
  EXPECT_EQ(event->model, "gpt-4o");
  EXPECT_DOUBLE_EQ(*event->response_cost, 0.0125);
  EXPECT_EQ(*event->prompt_tokens, 10);
  EXPECT_EQ(*event->completion_tokens, 32);
  EXPECT_EQ(*event->total_tokens, 42);
  EXPECT_EQ(event->request_user, "body-user");
  EXPECT_EQ(event->user_id, "u1");
  EXPECT_EQ(event->team_id, "t1");
  EXPECT_EQ(event->end_user_id, "eu1");
  EXPECT_EQ(event->org_id, "o1");
  EXPECT_EQ(event->key_alias, "alias");
  EXPECT_EQ(event->metadata.at("region"), "eu");
  EXPECT_EQ(event->metadata.count("count"), 0u);
  EXPECT_EQ(
      std::chrono::duration_cast<std::chrono::milliseconds>(event->end_time->time_since_epoch())
          .count(),
      1700000001500);
}

TEST(ParseStandardLoggingPayload, FallsBackToIdForTheCallId) {
  auto event = parse_standard_logging_payload(R"({"id":"abc","total_tokens":1})");
  ASSERT_TRUE(event);
  EXPECT_EQ(event->call_id, "abc");
}

TEST(ParseStandardLoggingPayload, TreatsNullAsAbsent) {
  auto event = parse_standard_logging_payload(R"({"id":"a","total_tokens":null,"metadata":null})");
  ASSERT_TRUE(event);
  EXPECT_FALSE(event->total_tokens.has_value());
}

struct BadPayload {
  const char* json;
  const char* mentions;
};

class RejectsBadPayload : public ::testing::TestWithParam<BadPayload> {};

TEST_P(RejectsBadPayload, WithAMessageNamingTheProblem) {
  auto event = parse_standard_logging_payload(GetParam().json);
  ASSERT_FALSE(event);
  EXPECT_EQ(event.error().code, ErrorCode::kInvalidEvent);
  EXPECT_NE(event.error().message.find(GetParam().mentions), std::string::npos)
      << event.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Table, RejectsBadPayload,
    ::testing::Values(BadPayload{"{not json", "not valid JSON"},
                      BadPayload{"[1,2]", "must be a JSON object"},
                      BadPayload{R"({"total_tokens":"12"})", "total_tokens"},
                      BadPayload{R"({"prompt_tokens":1.5})", "prompt_tokens"},
                      BadPayload{R"({"model":7})", "model"},
                      BadPayload{R"({"response_cost":"free"})", "response_cost"},
                      BadPayload{R"({"endTime":"yesterday"})", "endTime"},
                      BadPayload{R"({"endTime":1700000000000})", "endTime"},
                      BadPayload{R"({"metadata":[]})", "metadata"},
                      BadPayload{R"({"metadata":{"user_api_key_user_id":5}})",
                                 "metadata.user_api_key_user_id"},
                      BadPayload{"{\"model\":\"\xff\xfe\"}", "not valid JSON"}));

// JSON has no NaN or Infinity, but a number too large for a double is infinite once read (nlohmann
// 3.11 refuses the whole document instead; either way no infinite cost comes out).
TEST(ParseStandardLoggingPayload, NeverYieldsAResponseCostBeyondTheRangeOfADouble) {
  for (const char* json : {R"({"response_cost":1e400})", R"({"response_cost":-1e400})",
                           R"({"response_cost":1)"
                           "000000000000000000000000000000000000000"
                           "0000000000000000000000000000000000000000000000000000000000000000000"
                           "0000000000000000000000000000000000000000000000000000000000000000000"
                           "0000000000000000000000000000000000000000000000000000000000000000000"
                           "0000000000000000000000000000000000000000000000000000000000000000000"
                           "000000000000000000000000000000000000000000000000000000000})"}) {
    auto event = parse_standard_logging_payload(json);
    ASSERT_FALSE(event) << json << " gave a cost of " << event->response_cost.value_or(0);
    EXPECT_EQ(event.error().code, ErrorCode::kInvalidEvent);
  }
}

TEST(ParseStandardLoggingPayload, RefusesTokenCountsAboveTheLargestInt64) {
  for (const char* field : {"prompt_tokens", "completion_tokens", "total_tokens"}) {
    for (const char* number : {"9223372036854775808", "18446744073709551615", "1e19"}) {
      const std::string json = std::string("{\"") + field + "\":" + number + "}";
      auto event = parse_standard_logging_payload(json);
      ASSERT_FALSE(event) << json << " gave " << event->total_tokens.value_or(0);
      EXPECT_EQ(event.error().code, ErrorCode::kInvalidEvent);
      EXPECT_NE(event.error().message.find(std::string("field '") + field + "'"), std::string::npos)
          << event.error().message;
    }
  }
}

TEST(ParseStandardLoggingPayload, AcceptsTheLargestInt64TokenCount) {
  auto event = parse_standard_logging_payload(R"({"total_tokens":9223372036854775807})");
  ASSERT_TRUE(event) << event.error().to_string();
  EXPECT_EQ(*event->total_tokens, std::numeric_limits<std::int64_t>::max());
}

// system_clock counts nanoseconds in an int64: it ends on 2262-04-11 (9223372036 seconds).
TEST(ParseStandardLoggingPayload, RefusesTimesAfterTheLastOneTheClockCanHold) {
  for (const char* field : {"startTime", "endTime"}) {
    for (const char* seconds : {"9223372037", "9300000000", "10000000000", "13569465600"}) {
      const std::string json = std::string("{\"") + field + "\":" + seconds + "}";
      auto event = parse_standard_logging_payload(json);
      ASSERT_FALSE(event) << json;
      EXPECT_EQ(event.error().code, ErrorCode::kInvalidEvent);
      EXPECT_NE(event.error().message.find(std::string("field '") + field + "'"), std::string::npos)
          << event.error().message;
    }
  }
}

TEST(ParseStandardLoggingPayload, ReadsTimesUpToTheLastSecondTheClockCanHold) {
  auto event = parse_standard_logging_payload(R"({"startTime":0,"endTime":9223372035.5})");
  ASSERT_TRUE(event) << event.error().to_string();
  EXPECT_EQ(
      std::chrono::duration_cast<std::chrono::milliseconds>(event->end_time->time_since_epoch())
          .count(),
      9'223'372'035'500);
  EXPECT_EQ(event->start_time->time_since_epoch().count(), 0);
}

TEST(ParseStandardLoggingPayload, SurvivesAHugeString) {
  std::string big(10 * 1024 * 1024, 'x');
  auto event = parse_standard_logging_payload(R"({"id":"a","end_user":")" + big + R"("})");
  ASSERT_TRUE(event);
  EXPECT_EQ(event->request_user.size(), big.size());
}

}  // namespace
}  // namespace stripe_billing
