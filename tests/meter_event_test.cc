// The meter event as built for Stripe: identifiers, form fields, stream JSON, RFC 3339 times,
// and which requests count toward the meter event rate limit.
#include "meter_event.h"

#include <gtest/gtest.h>

#include "rate_limiter.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

FinalizedConfig meter_config(const char* model_key = "") {
  Config config;
  config.api_key = "sk_test_unit";
  config.billing_mode = "meter_events";
  config.meter_event_name = "llm_tokens";
  config.meter_model_key = model_key;
  return std::move(finalize_config(config).value());
}

TEST(MeterEventIdentifier, IsTheCallIdAndDimensionWhenTheyFit) {
  EXPECT_EQ(meter_event_identifier("chatcmpl-9x.1", "total_tokens"), "chatcmpl-9x.1:total_tokens");
}

TEST(MeterEventIdentifier, IsAStableHashForLongOrUnusualCallIds) {
  const std::string long_id(200, 'a');
  const std::string hashed = meter_event_identifier(long_id, "total_tokens");
  EXPECT_EQ(hashed, meter_event_identifier(long_id, "total_tokens"));
  EXPECT_LE(hashed.size(), 100u);
  EXPECT_EQ(hashed.rfind("sbh-", 0), 0u);
  for (const char* hostile : {"a&b=c", "../x", "caf\xC3\xA9", "with space"}) {
    const std::string id = meter_event_identifier(hostile, "total_tokens");
    EXPECT_EQ(id.rfind("sbh-", 0), 0u) << hostile;
  }
  EXPECT_NE(meter_event_identifier(long_id, "prompt_tokens"), hashed);
}

TEST(MeterEventForm, CarriesTheCustomerValueIdentifierAndTimestamp) {
  const MeterEvent event{"llm_tokens", "call-1:total_tokens", "cus_1", 42, 1'700'000'000, "", "m"};
  const FormFields fields = meter_event_form(event, meter_config());
  EXPECT_EQ(fields, (FormFields{{"event_name", "llm_tokens"},
                                {"identifier", "call-1:total_tokens"},
                                {"timestamp", "1700000000"},
                                {"payload[stripe_customer_id]", "cus_1"},
                                {"payload[value]", "42"}}));
}

TEST(MeterEventForm, AddsTheTokenTypeAndTheModelWhenConfigured) {
  const MeterEvent event{"llm_tokens", "id", "cus_1", 1, 1, "input", "gpt-4o"};
  const FormFields fields = meter_event_form(event, meter_config("model"));
  EXPECT_EQ(fields[5], (std::pair<std::string, std::string>{"payload[token_type]", "input"}));
  EXPECT_EQ(fields[6], (std::pair<std::string, std::string>{"payload[model]", "gpt-4o"}));
}

TEST(MeterStreamEvent, IsStripesJsonShapeWithStringValuesAndAnRfc3339Timestamp) {
  const MeterEvent event{"llm_tokens", "id-1", "cus_1", 42, 1'700'000'000, "", ""};
  EXPECT_EQ(meter_stream_event(event, meter_config()),
            nlohmann::json::parse(R"({"event_name":"llm_tokens","identifier":"id-1",
              "payload":{"stripe_customer_id":"cus_1","value":"42"},
              "timestamp":"2023-11-14T22:13:20Z"})"));
}

TEST(Rfc3339, RoundTripsAndReadsOffsetsAndFractions) {
  EXPECT_EQ(to_rfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(parse_rfc3339(to_rfc3339(1'764'576'000)), 1'764'576'000);
  EXPECT_EQ(parse_rfc3339("2023-11-14T22:13:20.123Z"), 1'700'000'000);
  EXPECT_EQ(parse_rfc3339("2023-11-15T00:13:20+02:00"), 1'700'000'000);
  EXPECT_EQ(parse_rfc3339("2024-02-29T00:00:00Z"), 1'709'164'800);
  for (const char* bad : {"", "2023-11-14", "2023-11-14T22:13:20", "2023-13-14T22:13:20Z",
                          "2023-11-14T22:13:20Zjunk", "2023-11-14 22:13:20Z"}) {
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
  }
}

TEST(AlreadyRecorded, IsStripesDuplicateIdentifierAnswerOnly) {
  StripeError stripe;
  stripe.http_status = 400;
  stripe.message = "An event already exists with identifier call-1:total_tokens.";
  EXPECT_TRUE(is_already_recorded(Error{ErrorCode::kStripe, stripe.message, stripe}));
  stripe.message = "Timestamp too far in the past";
  EXPECT_FALSE(is_already_recorded(Error{ErrorCode::kStripe, stripe.message, stripe}));
  EXPECT_FALSE(is_already_recorded(Error{ErrorCode::kNetwork, "refused", std::nullopt}));
}

TEST(CostAmount, IsInMicroUnitsAndChecksItsInput) {
  using Verdict = QuantityCheck::Verdict;
  EXPECT_EQ(cost_amount(0.0123, 100, 1000).value, 1'230'000);
  EXPECT_EQ(cost_amount(0.0, 100, 1000).verdict, Verdict::kZero);
  EXPECT_EQ(cost_amount(-1, 100, 1000).verdict, Verdict::kNegative);
  EXPECT_EQ(cost_amount(std::nullopt, 100, 1000).verdict, Verdict::kMissingUsage);
  EXPECT_EQ(cost_amount(std::nan(""), 100, 1000).verdict, Verdict::kMissingUsage);
  EXPECT_EQ(cost_amount(11, 100, 1000).verdict, Verdict::kTooLarge);
  EXPECT_EQ(cost_amount(1e300, 100, 1000).verdict, Verdict::kTooLarge);
}

TEST(RoundWithCarry, NeverDriftsMoreThanHalfAUnitFromTheExactSum) {
  std::int64_t carry = 0, billed = 0, exact = 0;
  for (int call = 0; call < 10'000; ++call) {
    const std::int64_t micros = 1 + (call * 7'919) % 2'000'000;
    const RoundedAmount rounded = round_with_carry(micros, carry);
    carry = rounded.carry;
    billed += rounded.quantity;
    exact += micros;
    ASSERT_LE(std::abs(billed * kMicrosPerUnit - exact), kMicrosPerUnit / 2) << call;
  }
}

TEST(MeterRateLimit, AppliesToMeterEventsAndTheStreamOnly) {
  EXPECT_TRUE(is_meter_event_endpoint(endpoint_of("/v1/billing/meter_events")));
  EXPECT_TRUE(is_meter_event_endpoint(Endpoint::kMeterEventStream));
  EXPECT_FALSE(is_meter_event_endpoint(endpoint_of("/v1/billing/meter_event_adjustments")));
  EXPECT_FALSE(is_meter_event_endpoint(endpoint_of("/v2/billing/meter_event_session")));
  EXPECT_FALSE(is_meter_event_endpoint(endpoint_of("/v1/customers/search?query=x")));
}

TEST(EndpointOf, NamesEveryPathTheLibraryCalls) {
  EXPECT_EQ(endpoint_of("/v1/subscription_items/si_1/usage_records"), Endpoint::kUsageRecords);
  EXPECT_EQ(endpoint_of("/v1/subscription_items/si_1/usage_record_summaries"),
            Endpoint::kSummaries);
  EXPECT_EQ(endpoint_of("/v1/billing/meters/mtr_1/event_summaries"), Endpoint::kSummaries);
  EXPECT_EQ(endpoint_of("/v1/billing/meter_events"), Endpoint::kMeterEvents);
  EXPECT_EQ(endpoint_of("/v2/billing/meter_event_session"), Endpoint::kMeterEventSession);
  EXPECT_EQ(endpoint_of("/v1/customers/search"), Endpoint::kCustomerSearch);
  EXPECT_EQ(endpoint_of("/v1/subscriptions"), Endpoint::kSubscriptions);
  EXPECT_EQ(endpoint_of("/v1/prices/price_1"), Endpoint::kPrices);
  EXPECT_EQ(endpoint_of("/v1/billing/meters"), Endpoint::kMeters);
  EXPECT_EQ(endpoint_of("/v1/customers/cus_1"), Endpoint::kOther);
  // A hostile id cannot make a request look like another endpoint's.
  EXPECT_EQ(endpoint_of("/v1/subscription_items/" + encode_path_segment("x/usage_records") +
                        "/usage_record_summaries"),
            Endpoint::kSummaries);
}

}  // namespace
}  // namespace stripe_billing
