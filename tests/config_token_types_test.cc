// The settings of token types, Stripe's token-billing preset and priced calls: what each fills
// in, and the one message that names every problem.
#include <gtest/gtest.h>

#include "stripe_billing/config.h"

namespace stripe_billing {
namespace {

Config base() {
  Config config;
  config.api_key = "sk_test_emulator_0000000000000000";
  return config;
}

std::string problems_of(const Config& config) {
  auto finalized = finalize_config(config);
  return finalized ? std::string() : finalized.error().message;
}

TEST(TokenTypeConfig, ThePresetConfiguresWhatStripesTokenBillingExpects) {
  Config config = base();
  config.preset = "token_billing";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->billing_mode(), BillingMode::kMeterEventsV2);
  EXPECT_EQ(finalized->quantity_source(), QuantitySource::kTokenTypes);
  EXPECT_EQ(finalized->meter_customer_key(), "stripe_customer_id");
  EXPECT_EQ(finalized->meter_value_key(), "value");
  EXPECT_EQ(finalized->meter_token_type_key(), "token_type");
  EXPECT_EQ(finalized->meter_model_key(), "model");
  EXPECT_TRUE(finalized->model_slugs());
  EXPECT_EQ(finalized->v2_api_version(), kDefaultV2ApiVersion);
  std::vector<std::string> names;
  for (const BilledDimension& dimension : finalized->dimensions()) {
    names.push_back(dimension.name);
    EXPECT_EQ(dimension.meter_event_name, "token-billing-tokens");
    EXPECT_EQ(dimension.token_type, dimension.name) << "the type goes in the payload";
  }
  EXPECT_EQ(names, (std::vector<std::string>{"input", "output", "cached_input", "cache_read",
                                             "cache_write"}));
  EXPECT_NE(finalized->summary().find("preset=token_billing"), std::string::npos);
}

TEST(TokenTypeConfig, ThePresetMayUseTheStreamForVolume) {
  Config config = base();
  config.preset = "token_billing";
  config.billing_mode = "meter_event_stream";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->billing_mode(), BillingMode::kMeterEventStream);
}

TEST(TokenTypeConfig, ThePresetRefusesEverySettingThatContradictsIt) {
  Config config = base();
  config.preset = "token_billing";
  config.meter_value_key = "tokens";
  config.meter_model_key = "llm";
  config.model_slugs = "off";
  config.token_type_meters = "input=a";
  config.cache_hit = "token_type";
  const std::string message = problems_of(config);
  for (const char* variable :
       {"STRIPE_METER_VALUE_KEY", "STRIPE_METER_MODEL_KEY", "STRIPE_MODEL_SLUGS",
        "STRIPE_TOKEN_TYPE_METERS", "STRIPE_CACHE_HIT"}) {
    EXPECT_NE(message.find(variable), std::string::npos) << variable << " in " << message;
  }
}

TEST(TokenTypeConfig, UsageRecordsByTypeNameTheMissingPriceOfEachType) {
  Config config = base();
  config.quantity = "token_types";
  config.token_type_prices = "input=price_in,output=price_out";
  const std::string message = problems_of(config);
  for (const char* type : {"cached_input", "cache_read", "cache_write"}) {
    EXPECT_NE(message.find(std::string("no price for ") + type), std::string::npos)
        << type << " in " << message;
  }
  EXPECT_EQ(message.find("no price for input"), std::string::npos) << message;
}

TEST(TokenTypeConfig, FewerTypesNeedFewerPricesAndEachTypeItsOwnPrice) {
  Config config = base();
  config.quantity = "token_types";
  config.token_types = "input,output";
  config.token_type_prices = "input=price_in,output=price_out";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  ASSERT_EQ(finalized->dimensions().size(), 2u);
  EXPECT_EQ(finalized->dimension("output")->price_id, "price_out");

  config.token_type_prices = "input=price_same,output=price_same";
  EXPECT_NE(problems_of(config).find("for two types"), std::string::npos);
  config.token_type_prices = "input=price_in,output=price_out,cache_read=price_cr";
  EXPECT_NE(problems_of(config).find("names cache_read, which STRIPE_TOKEN_TYPES"),
            std::string::npos)
      << problems_of(config);
  config.token_types = "output";
  EXPECT_NE(problems_of(config).find("must include input"), std::string::npos);
  config.token_types = "input,output,fresh";
  EXPECT_NE(problems_of(config).find("\"fresh\""), std::string::npos) << problems_of(config);
}

TEST(TokenTypeConfig, MetersByTypeUseOneMeterWithTheTypeOrAMeterPerType) {
  Config config = base();
  config.billing_mode = "meter_events";
  config.quantity = "token_types";
  const std::string missing = problems_of(config);
  EXPECT_NE(missing.find("no meter for input"), std::string::npos) << missing;
  EXPECT_NE(missing.find("STRIPE_METER_EVENT_NAME to count every type"), std::string::npos);

  config.token_types = "input,output";
  config.token_type_meters = "input=in_tokens,output=out_tokens";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->dimension("input")->meter_event_name, "in_tokens");
  EXPECT_EQ(finalized->dimension("input")->token_type, "") << "its own meter needs no type";
}

TEST(TokenTypeConfig, CacheHitAsATypeNeedsTokenTypesAndATarget) {
  Config config = base();
  config.billing_mode = "meter_events";
  config.meter_event_name = "tokens";
  config.cache_hit = "token_type";
  EXPECT_NE(problems_of(config).find("STRIPE_CACHE_HIT=token_type needs STRIPE_QUANTITY"),
            std::string::npos);
  config.quantity = "token_types";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  ASSERT_NE(finalized->dimension("cache_hit"), nullptr);
  EXPECT_EQ(finalized->dimension("cache_hit")->token_type, "cache_hit");
}

TEST(TokenTypeConfig, PricedNeedsATableAndItsTargets) {
  Config config = base();
  config.billing_mode = "meter_events";
  config.quantity = "priced";
  config.price_markup = "1.2.3";
  config.cost_multiplier = "1e2";
  const std::string message = problems_of(config);
  for (const char* expected :
       {"STRIPE_PRICE_TABLE is required", "STRIPE_METER_EVENT_NAME is required",
        "STRIPE_PRICE_MARKUP", "STRIPE_COST_MULTIPLIER", "no meter for input"}) {
    EXPECT_NE(message.find(expected), std::string::npos) << expected << " in " << message;
  }
}

TEST(TokenTypeConfig, AMarkupOfZeroIsRefused) {
  Config config = base();
  config.billing_mode = "meter_events";
  config.meter_event_name = "cost";
  config.quantity = "priced";
  config.unpriced_model = "reject";
  config.price_markup = "0";
  EXPECT_NE(problems_of(config).find("STRIPE_PRICE_MARKUP must be"), std::string::npos)
      << problems_of(config);
}

TEST(TokenTypeConfig, TokenSettingsOutsideTokenModesAreRefusedNotIgnored) {
  Config config = base();
  config.price_id = "price_1";
  config.token_type_prices = "input=price_2";
  config.price_table = "/nonexistent/prices.yaml";
  config.model_slugs = "on";
  const std::string message = problems_of(config);
  for (const char* expected : {"STRIPE_TOKEN_TYPE_PRICES is set", "STRIPE_PRICE_TABLE is set",
                               "STRIPE_MODEL_SLUGS=on needs STRIPE_METER_MODEL_KEY"}) {
    EXPECT_NE(message.find(expected), std::string::npos) << expected << " in " << message;
  }
}

TEST(TokenTypeConfig, SkippedCallTypesDefaultToRetrievalsAndNoneTurnsThemOff) {
  Config config = base();
  config.price_id = "price_1";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  const auto& types = finalized->skip_call_types();
  EXPECT_NE(std::find(types.begin(), types.end(), "aretrieve_batch"), types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "aget_responses"), types.end());
  EXPECT_EQ(std::find(types.begin(), types.end(), "acompletion"), types.end());
  config.skip_call_types = "none";
  finalized = finalize_config(config);
  ASSERT_TRUE(finalized);
  EXPECT_TRUE(finalized->skip_call_types().empty());
  config.skip_call_types = "a&b=c";
  EXPECT_NE(problems_of(config).find("STRIPE_SKIP_CALL_TYPES"), std::string::npos);
}

TEST(TokenTypeConfig, TheV2VersionIsCheckedAndSent) {
  Config config = base();
  config.billing_mode = "meter_events_v2";
  config.meter_event_name = "tokens";
  config.v2_api_version = "2026-01-28.preview";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->v2_api_version(), "2026-01-28.preview");
  config.v2_api_version = "preview";
  EXPECT_NE(problems_of(config).find("STRIPE_V2_API_VERSION"), std::string::npos);
}

TEST(TokenTypeConfig, TheYamlSectionTakesTheNewSettings) {
  auto settings = config_from_yaml_string(
      "stripe_billing:\n"
      "  api_key: sk_test_emulator_0000000000000000\n"
      "  preset: token_billing\n"
      "  cache_hit: skip\n"
      "  skip_call_types: aretrieve_batch\n"
      "  v2_api_version: 2026-01-28.preview\n",
      [](const std::string&) { return std::nullopt; });
  ASSERT_TRUE(settings) << settings.error().message;
  auto finalized = finalize_config(settings->config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->preset(), Preset::kTokenBilling);
  EXPECT_EQ(finalized->cache_hit(), CacheHitPolicy::kSkip);
  EXPECT_EQ(finalized->skip_call_types(), std::vector<std::string>{"aretrieve_batch"});
  EXPECT_EQ(finalized->v2_api_version(), "2026-01-28.preview");
}

}  // namespace
}  // namespace stripe_billing
