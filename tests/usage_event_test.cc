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

// LiteLLM's Usage dict as StandardLoggingPayload.metadata.usage_object carries it
// (litellm/types/utils.py: Usage, PromptTokensDetailsWrapper, CompletionTokensDetailsWrapper).
TEST(ParseStandardLoggingPayload, ReadsTheUsageObjectDetails) {
  auto event = parse_standard_logging_payload(R"({
    "id": "msg_1", "litellm_call_id": "call-1", "model": "claude-sonnet-4-5",
    "custom_llm_provider": "anthropic", "call_type": "acompletion", "cache_hit": false,
    "prompt_tokens": 4250, "completion_tokens": 400, "total_tokens": 4650,
    "metadata": {"usage_object": {
      "prompt_tokens": 4250, "completion_tokens": 400, "total_tokens": 4650,
      "prompt_tokens_details": {"cached_tokens": 3000, "cache_creation_tokens": 1200,
                                "audio_tokens": 7, "image_tokens": 8, "text_tokens": 50},
      "completion_tokens_details": {"reasoning_tokens": 90, "audio_tokens": 5,
                                    "image_tokens": 6, "text_tokens": 310},
      "cache_creation_input_tokens": 1200, "cache_read_input_tokens": 3000}}})");
  ASSERT_TRUE(event) << event.error().to_string();
  EXPECT_EQ(event->provider, "anthropic");
  EXPECT_EQ(event->call_type, "acompletion");
  EXPECT_FALSE(event->cache_hit);
  EXPECT_EQ(event->cache_read_tokens, 3000);
  EXPECT_EQ(event->cache_write_tokens, 1200);
  EXPECT_EQ(event->reasoning_tokens, 90);
  EXPECT_EQ(event->audio_input_tokens, 7);
  EXPECT_EQ(event->image_input_tokens, 8);
  EXPECT_EQ(event->audio_output_tokens, 5);
  EXPECT_EQ(event->image_output_tokens, 6);
  EXPECT_EQ(event->metadata.count("usage_object"), 0u);  // not a string: not metadata
}

TEST(ParseStandardLoggingPayload, LeavesAbsentDetailsUnset) {
  auto event = parse_standard_logging_payload(
      R"({"id":"a","prompt_tokens":3,"metadata":{"usage_object":{"prompt_tokens":3,
          "prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}})");
  ASSERT_TRUE(event) << event.error().to_string();
  for (const auto* count :
       {&event->cache_read_tokens, &event->cache_write_tokens, &event->reasoning_tokens,
        &event->audio_input_tokens, &event->audio_output_tokens, &event->image_input_tokens,
        &event->image_output_tokens}) {
    EXPECT_FALSE(count->has_value());
  }
  EXPECT_FALSE(event->cache_hit);
  EXPECT_TRUE(event->provider.empty());
  EXPECT_TRUE(event->call_type.empty());
}

TEST(ParseStandardLoggingPayload, TakesTheTopLevelCacheCountsWhenTheDetailsLackThem) {
  // cached_tokens first (what LiteLLM's cost calculator reads), else cache_read_input_tokens;
  // cache_creation_input_tokens first, else prompt_tokens_details.cache_creation_tokens.
  auto top_level = parse_standard_logging_payload(
      R"({"metadata":{"usage_object":{"cache_read_input_tokens":11,
          "prompt_tokens_details":{"cache_creation_tokens":12}}}})");
  ASSERT_TRUE(top_level) << top_level.error().to_string();
  EXPECT_EQ(top_level->cache_read_tokens, 11);
  EXPECT_EQ(top_level->cache_write_tokens, 12);
  auto both = parse_standard_logging_payload(
      R"({"metadata":{"usage_object":{"cache_read_input_tokens":11,
          "cache_creation_input_tokens":13,
          "prompt_tokens_details":{"cached_tokens":21,"cache_creation_tokens":22}}}})");
  ASSERT_TRUE(both) << both.error().to_string();
  EXPECT_EQ(both->cache_read_tokens, 21);
  EXPECT_EQ(both->cache_write_tokens, 13);
}

TEST(ParseStandardLoggingPayload, FallsBackToTheHiddenParamsUsageObject) {
  auto event = parse_standard_logging_payload(
      R"({"metadata":{"user_api_key_user_id":"u"},
          "hidden_params":{"usage_object":{"prompt_tokens_details":{"cached_tokens":5}}}})");
  ASSERT_TRUE(event) << event.error().to_string();
  EXPECT_EQ(event->cache_read_tokens, 5);
  // metadata's copy wins when it is there.
  auto both = parse_standard_logging_payload(
      R"({"metadata":{"usage_object":{"prompt_tokens_details":{"cached_tokens":6}}},
          "hidden_params":{"usage_object":{"prompt_tokens_details":{"cached_tokens":5}}}})");
  ASSERT_TRUE(both) << both.error().to_string();
  EXPECT_EQ(both->cache_read_tokens, 6);
}

TEST(ParseStandardLoggingPayload, ReadsCacheHit) {
  for (const auto& [json, hit] :
       {std::pair{R"({"cache_hit":true})", true}, std::pair{R"({"cache_hit":false})", false},
        std::pair{R"({"cache_hit":null})", false}, std::pair{R"({})", false}}) {
    auto event = parse_standard_logging_payload(json);
    ASSERT_TRUE(event) << json;
    EXPECT_EQ(event->cache_hit, hit) << json;
  }
}

struct IdCase {
  const char* json;
  const char* call_id;
  const char* response_id;
};

class ChoosesTheCallId : public ::testing::TestWithParam<IdCase> {};

TEST_P(ChoosesTheCallId, CallIdThenLitellmCallIdThenId) {
  auto event = parse_standard_logging_payload(GetParam().json);
  ASSERT_TRUE(event) << event.error().to_string();
  EXPECT_EQ(event->call_id, GetParam().call_id) << GetParam().json;
  EXPECT_EQ(event->response_id, GetParam().response_id) << GetParam().json;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ChoosesTheCallId,
    ::testing::Values(IdCase{R"({"call_id":"uuid-1","litellm_call_id":"uuid-2","id":"chatcmpl-3"})",
                             "uuid-1", "chatcmpl-3"},
                      IdCase{R"({"litellm_call_id":"uuid-2","id":"chatcmpl-3"})", "uuid-2",
                             "chatcmpl-3"},
                      IdCase{R"({"call_id":"","litellm_call_id":"uuid-2","id":"chatcmpl-3"})",
                             "uuid-2", "chatcmpl-3"},
                      IdCase{R"({"call_id":null,"litellm_call_id":"","id":"chatcmpl-3"})",
                             "chatcmpl-3", "chatcmpl-3"},
                      IdCase{R"({"call_id":"uuid-1"})", "uuid-1", ""}, IdCase{R"({})", "", ""}));

INSTANTIATE_TEST_SUITE_P(
    NewFields, RejectsBadPayload,
    ::testing::Values(
        BadPayload{R"({"call_id":7})", "field 'call_id'"},
        BadPayload{R"({"custom_llm_provider":["openai"]})", "field 'custom_llm_provider'"},
        BadPayload{R"({"call_type":1})", "field 'call_type'"},
        BadPayload{R"({"cache_hit":"yes"})", "field 'cache_hit'"},
        BadPayload{R"({"cache_hit":1})", "field 'cache_hit'"},
        BadPayload{R"({"metadata":{"usage_object":[]}})", "field 'metadata.usage_object'"},
        BadPayload{R"({"metadata":{"usage_object":{"prompt_tokens_details":5}}})",
                   "field 'metadata.usage_object.prompt_tokens_details'"},
        BadPayload{R"({"metadata":{"usage_object":{"completion_tokens_details":"x"}}})",
                   "field 'metadata.usage_object.completion_tokens_details'"},
        BadPayload{
            R"({"metadata":{"usage_object":{"prompt_tokens_details":{"cached_tokens":"3"}}}})",
            "field 'metadata.usage_object.prompt_tokens_details.cached_tokens'"},
        BadPayload{
            R"({"metadata":{"usage_object":{"prompt_tokens_details":{"cached_tokens":1.5}}}})",
            "field 'metadata.usage_object.prompt_tokens_details.cached_tokens' must be a "
            "whole number"},
        BadPayload{
            R"({"metadata":{"usage_object":{"prompt_tokens_details":{"cache_creation_tokens":true}}}})",
            "field 'metadata.usage_object.prompt_tokens_details.cache_creation_tokens'"},
        BadPayload{R"({"metadata":{"usage_object":{"prompt_tokens_details":{"audio_tokens":[]}}}})",
                   "field 'metadata.usage_object.prompt_tokens_details.audio_tokens'"},
        BadPayload{R"({"metadata":{"usage_object":{"prompt_tokens_details":{"image_tokens":{}}}}})",
                   "field 'metadata.usage_object.prompt_tokens_details.image_tokens'"},
        BadPayload{
            R"({"metadata":{"usage_object":{"completion_tokens_details":{"reasoning_tokens":"9"}}}})",
            "field 'metadata.usage_object.completion_tokens_details.reasoning_tokens'"},
        BadPayload{
            R"({"metadata":{"usage_object":{"completion_tokens_details":{"audio_tokens":2.5}}}})",
            "field 'metadata.usage_object.completion_tokens_details.audio_tokens'"},
        BadPayload{
            R"({"metadata":{"usage_object":{"completion_tokens_details":{"image_tokens":"1"}}}})",
            "field 'metadata.usage_object.completion_tokens_details.image_tokens'"},
        BadPayload{R"({"metadata":{"usage_object":{"cache_read_input_tokens":"1"}}})",
                   "field 'metadata.usage_object.cache_read_input_tokens'"},
        BadPayload{R"({"metadata":{"usage_object":{"cache_creation_input_tokens":-0.5}}})",
                   "field 'metadata.usage_object.cache_creation_input_tokens'"},
        BadPayload{R"({"hidden_params":[]})", "field 'hidden_params'"},
        BadPayload{
            R"({"hidden_params":{"usage_object":{"prompt_tokens_details":{"cached_tokens":"x"}}}})",
            "field 'hidden_params.usage_object.prompt_tokens_details.cached_tokens'"}));

TEST(ParseStandardLoggingPayload, RefusesDetailCountsAboveTheLargestInt64) {
  auto event = parse_standard_logging_payload(
      R"({"metadata":{"usage_object":{"prompt_tokens_details":{"cached_tokens":9223372036854775808}}}})");
  ASSERT_FALSE(event);
  EXPECT_NE(
      event.error().message.find(
          "field 'metadata.usage_object.prompt_tokens_details.cached_tokens' must be at most"),
      std::string::npos)
      << event.error().message;
}

}  // namespace
}  // namespace stripe_billing
