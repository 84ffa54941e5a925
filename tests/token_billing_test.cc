// Billing by token type end to end through the emulator: Stripe's token-billing preset over
// POST /v2/billing/meter_events, model slugs and the mapping file, what is not billed (cache
// hits, retrievals), meter events Stripe would refuse, and priced calls. What Stripe counted is
// read from the emulator, by the payload's token_type.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "stripe_billing/reconciliation.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using testing::eventually;
using testing::in_seconds;

class TokenBillingTest : public testing::EmulatorTest {
 protected:
  TokenBillingTest() {
    emulator_.create_meter(kTokenBillingEventName);
    alice_ = emulator_.create_customer({{"litellm_customer_id", "alice"}});
  }

  Config preset_config() const {
    Config config = EmulatorTest::config();
    config.preset = "token_billing";
    config.price_id.reset();
    config.park_retry_s = "1";
    return config;
  }

  // What Stripe counted for `customer` of one token type on the token-billing meter.
  std::int64_t counted(const std::string& customer, const std::string& type) const {
    const auto totals =
        emulator_.meter_totals_by_customer(kTokenBillingEventName, "token_type", type);
    const auto it = totals.find(customer);
    return it == totals.end() ? 0 : static_cast<std::int64_t>(it->second);
  }

  // An Anthropic call as LiteLLM reports it: prompt = input 300 + cache read 600 + write 100.
  static UsageEvent anthropic_call(const std::string& call_id) {
    UsageEvent call = for_customer(call_id, 0);
    call.model = "claude-3-7-sonnet-20250219";
    call.provider = "anthropic";
    call.prompt_tokens = 1000;
    call.cache_read_tokens = 600;
    call.cache_write_tokens = 100;
    call.completion_tokens = 50;
    call.total_tokens = 1050;
    return call;
  }

  std::string write_file(const std::string& name, const std::string& text) const {
    const std::string path = dir_.file(name);
    std::ofstream(path) << text;
    return path;
  }

  std::uint64_t rejected(const StripeLogger& logger, const std::string& reason) const {
    const auto stats = logger.stats();
    const auto it = stats.rejected.find(reason);
    return it == stats.rejected.end() ? 0 : it->second;
  }

  std::string alice_;
};

TEST_F(TokenBillingTest, ThePresetSendsOneV2EventPerNonZeroTypeWithTheSlugAndTheCallsIdentifier) {
  auto logger = make_logger(preset_config());
  ASSERT_NE(logger, nullptr);
  logger->log_success_event(anthropic_call("call-1"));
  ASSERT_TRUE(logger->flush(in_seconds(20)));

  EXPECT_EQ(counted(alice_, "input"), 300);
  EXPECT_EQ(counted(alice_, "cache_read"), 600);
  EXPECT_EQ(counted(alice_, "cache_write"), 100);
  EXPECT_EQ(counted(alice_, "output"), 50);
  EXPECT_EQ(counted(alice_, "cached_input"), 0);
  EXPECT_EQ(count_requests("POST", "/v2/billing/meter_events"), 4u) << "no event for a zero type";
  EXPECT_EQ(count_requests("POST", "/v1/billing/meter_events"), 0u);
  std::set<std::string> identifiers;
  for (const auto& event : emulator_.meter_events()) {
    EXPECT_EQ(event.event_name, kTokenBillingEventName);
    EXPECT_EQ(event.payload.at("model"), "anthropic/claude-3.7-sonnet");
    EXPECT_EQ(event.payload.at("stripe_customer_id"), alice_);
    EXPECT_EQ(event.error_code, "");
    identifiers.insert(event.identifier);
  }
  EXPECT_EQ(identifiers, (std::set<std::string>{"call-1:input", "call-1:cache_read",
                                                "call-1:cache_write", "call-1:output"}));
  for (const auto& request : emulator_.requests()) {
    if (request.path != "/v2/billing/meter_events") continue;
    EXPECT_EQ(request.headers.at("stripe-version"), kDefaultV2ApiVersion);
    EXPECT_EQ(request.headers.count("idempotency-key"), 1u);
  }
}

TEST_F(TokenBillingTest, AReportedTwiceCallIsBilledOncePerType) {
  auto logger = make_logger(preset_config());
  logger->log_success_event(anthropic_call("call-2"));
  logger->log_success_event(anthropic_call("call-2"));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(counted(alice_, "input") + counted(alice_, "cache_read") +
                counted(alice_, "cache_write") + counted(alice_, "output"),
            1050);
  EXPECT_EQ(count_requests("POST", "/v2/billing/meter_events"), 4u);
}

TEST_F(TokenBillingTest, OpenAiCachedTokensBillAsCachedInputAndReasoningStaysInsideOutput) {
  auto logger = make_logger(preset_config());
  UsageEvent call = for_customer("call-3", 0);
  call.model = "gpt-4o-2024-08-06";
  call.provider = "openai";
  call.prompt_tokens = 2000;
  call.cache_read_tokens = 1500;
  call.completion_tokens = 300;
  call.reasoning_tokens = 200;
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(counted(alice_, "input"), 500);
  EXPECT_EQ(counted(alice_, "cached_input"), 1500);
  EXPECT_EQ(counted(alice_, "output"), 300);
  for (const auto& event : emulator_.meter_events()) {
    EXPECT_EQ(event.payload.at("model"), "openai/gpt-4o");
  }
}

TEST_F(TokenBillingTest, AModelWithoutASlugIsParkedUntilTheMappingFileNamesIt) {
  const std::string map = write_file("models.yaml", "{}\n");
  Config config = preset_config();
  config.model_map_file = map;
  config.table_reload_s = "0";  // only reload_tables() reads it again
  auto logger = make_logger(config);
  UsageEvent call = for_customer("call-4", 0);
  call.model = "acme-inhouse-7b";
  call.prompt_tokens = 40;
  call.completion_tokens = 2;
  logger->log_success_event(call);
  ASSERT_TRUE(eventually([&] { return logger->stats().parked == 2; }, std::chrono::seconds(20)));
  EXPECT_EQ(count_requests("POST", "/v2/billing/meter_events"), 0u) << "never under a wrong name";
  EXPECT_GE(rejected(*logger, "unmapped_model"), 1u);

  write_file("models.yaml", "acme-inhouse-7b: acme/inhouse-7b\n");
  auto reloaded = logger->reload_tables();
  ASSERT_TRUE(reloaded) << reloaded.error().message;
  EXPECT_TRUE(*reloaded);
  ASSERT_TRUE(eventually([&] { return counted(alice_, "input") == 40; }, std::chrono::seconds(20)));
  EXPECT_TRUE(eventually([&] { return counted(alice_, "output") == 2; }, std::chrono::seconds(20)));
  for (const auto& event : emulator_.meter_events()) {
    EXPECT_EQ(event.payload.at("model"), "acme/inhouse-7b");
  }
}

TEST_F(TokenBillingTest, ABrokenMappingFileIsRefusedAndTheLastGoodOneStays) {
  const std::string map = write_file("models.yaml", "acme-inhouse-7b: acme/inhouse-7b\n");
  Config config = preset_config();
  config.model_map_file = map;
  config.table_reload_s = "0";
  auto logger = make_logger(config);
  write_file("models.yaml", "acme-inhouse-7b: [not, a, slug]\n");
  auto reloaded = logger->reload_tables();
  ASSERT_FALSE(reloaded);
  EXPECT_NE(reloaded.error().message.find("acme-inhouse-7b"), std::string::npos)
      << reloaded.error().message;
  UsageEvent call = for_customer("call-5", 0);
  call.model = "acme-inhouse-7b";
  call.prompt_tokens = 9;
  call.completion_tokens = 1;
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(counted(alice_, "input"), 9);
}

TEST_F(TokenBillingTest, CacheHitsAndRetrievalsAreNotBilledAndAreCounted) {
  Config config = preset_config();
  config.cache_hit = "skip";
  auto logger = make_logger(config);
  UsageEvent hit = anthropic_call("call-6");
  hit.cache_hit = true;
  UsageEvent retrieval = anthropic_call("call-7");
  retrieval.call_type = "aget_responses";
  UsageEvent generation = anthropic_call("call-8");
  generation.call_type = "acompletion";
  logger->log_success_event(hit);
  logger->log_success_event(retrieval);
  logger->log_success_event(generation);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(rejected(*logger, "cache_hit_not_billed"), 1u);
  EXPECT_EQ(rejected(*logger, "call_type_not_billed"), 1u);
  EXPECT_EQ(counted(alice_, "output"), 50) << "only the generation is billed";
}

TEST_F(TokenBillingTest, ByDefaultACacheHitBillsLikeAnyCall) {
  auto logger = make_logger(preset_config());
  UsageEvent hit = anthropic_call("call-9");
  hit.cache_hit = true;
  logger->log_success_event(hit);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(counted(alice_, "output"), 50);
}

TEST_F(TokenBillingTest, EventTimesStripeRefusesAreParkedWithAReasonNeverSent) {
  auto logger = make_logger(preset_config());
  UsageEvent ahead = anthropic_call("call-10");
  ahead.end_time = std::chrono::system_clock::now() + std::chrono::minutes(10);
  UsageEvent old = anthropic_call("call-11");
  old.end_time = std::chrono::system_clock::now() - std::chrono::hours(24 * 36);
  logger->log_success_event(ahead);
  logger->log_success_event(old);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(logger->stats().parked, 8u) << "four types of each call, kept";
  EXPECT_EQ(rejected(*logger, "event_time_in_future"), 4u);
  EXPECT_EQ(rejected(*logger, "meter_timestamp_too_old"), 4u);
  EXPECT_EQ(count_requests("POST", "/v2/billing/meter_events"), 0u);
}

TEST_F(TokenBillingTest, ARestrictedKeyThatMayOnlyWriteMeterEventsBillsMappedCustomers) {
  const std::string key = "rk_test_meterwriteonly_0123456789abcdef";
  emulator_.add_restricted_key(key, {"rak_billing_meter_event_write"});
  Config config = preset_config();
  config.api_key = key;
  config.customer_map = "alice=" + alice_;
  auto logger = make_logger(config);
  ASSERT_NE(logger, nullptr);
  // bob is in no map: his lookup needs a permission the key lacks. It backs off; alice's calls
  // are billed all the same, and sending is never paused.
  UsageEvent bobs = anthropic_call("bob-1");
  bobs.request_user = "bob";
  logger->log_success_event(bobs);
  logger->log_success_event(anthropic_call("call-12"));
  EXPECT_TRUE(
      eventually([&] { return counted(alice_, "output") == 50; }, std::chrono::seconds(20)));
  EXPECT_FALSE(logger->stats().paused);
  std::size_t refused_lookups = 0;
  for (const auto& request : emulator_.requests()) {
    if (request.path == "/v1/customers/search") refused_lookups += request.status == 403;
  }
  EXPECT_GE(refused_lookups, 1u);
  EXPECT_GT(logger->stats().pending, 0u) << "bob's rows wait, visibly";
}

TEST_F(TokenBillingTest, ReconcileComparesEachTypeOnItsOwnMeterAndTheSumOnASharedOne) {
  emulator_.create_meter("tokens_in");
  emulator_.create_meter("tokens_out");
  Config config = EmulatorTest::config();
  config.billing_mode = "meter_events";
  config.price_id.reset();
  config.quantity = "token_types";
  config.token_types = "input,output";
  config.token_type_meters = "input=tokens_in,output=tokens_out";
  const auto since = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count() -
                     60;
  {
    auto logger = make_logger(config);
    UsageEvent call = for_customer("rec-1", 0);
    call.prompt_tokens = 70;
    call.completion_tokens = 30;
    logger->log_success_event(call);
    ASSERT_TRUE(logger->flush(in_seconds(20)));
    ASSERT_TRUE(logger->shutdown(in_seconds(5)));
  }
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  auto report = reconcile(*finalized, since, since + 3600);
  ASSERT_TRUE(report) << report.error().message;
  std::map<std::string, std::pair<double, double>> by_dimension;
  for (const ReconciliationRow& row : report->rows) {
    by_dimension[row.dimension] = {row.local, row.stripe};
  }
  EXPECT_EQ(by_dimension["input"], (std::pair<double, double>{70, 70}));
  EXPECT_EQ(by_dimension["output"], (std::pair<double, double>{30, 30}));
  EXPECT_TRUE(report->matches());
}

TEST_F(TokenBillingTest, ACountStripeWouldRefuseAsOver15DigitsDiesBeforeQueueing) {
  Config config = preset_config();
  config.max_quantity = "999999999999999";  // the largest there is: 15 digits
  auto logger = make_logger(config);
  UsageEvent call = anthropic_call("call-13");
  call.prompt_tokens = 1'000'000'000'000'000;  // 16 digits
  call.cache_read_tokens.reset();
  call.cache_write_tokens.reset();
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(rejected(*logger, "quantity_too_large"), 1u);
  EXPECT_EQ(logger->stats().dead, 1u);
  EXPECT_EQ(count_requests("POST", "/v2/billing/meter_events"), 0u);
}

TEST_F(TokenBillingTest, TheMappingNamesAModelAsTheGatewaySentItWhenTheProviderIsKnownToo) {
  Config config = preset_config();
  config.model_map_file = write_file("models.yaml", "my-finetune: acme/finetune-1\n");
  auto logger = make_logger(config);
  UsageEvent call = for_customer("call-14", 0);
  call.model = "my-finetune";
  call.provider = "openai";
  call.prompt_tokens = 5;
  call.completion_tokens = 5;
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  ASSERT_EQ(emulator_.meter_events().size(), 2u);
  for (const auto& event : emulator_.meter_events()) {
    EXPECT_EQ(event.payload.at("model"), "acme/finetune-1");
  }
}

TEST_F(TokenBillingTest, InDualModeAFutureTimeParksOnlyTheMeterRow) {
  emulator_.create_meter("llm_tokens");
  std::string carol;
  const std::string item = add_customer("carol", &carol);
  Config config = EmulatorTest::config();
  config.billing_mode = "dual";
  config.meter_event_name = "llm_tokens";
  auto logger = make_logger(config);
  UsageEvent ahead = for_customer("call-15", 40, "carol");
  ahead.end_time = std::chrono::system_clock::now() + std::chrono::minutes(10);
  logger->log_success_event(ahead);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 40) << "usage records have no 5-minute window";
  EXPECT_EQ(logger->stats().parked, 1u);
  EXPECT_EQ(rejected(*logger, "event_time_in_future"), 1u);
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(TokenBillingTest, AKeyThatMayNotWriteMeterEventsStaysPausedItsProbeAsksThatPermission) {
  // It may read meters and customers: a probe that only read meters would resume sending, and
  // every resumption would send (and be refused) again.
  const std::string key = "rk_test_readsonly_0123456789abcdefgh";
  emulator_.add_restricted_key(key, {"rak_billing_meter_read", "rak_customer_read"});
  Config config = preset_config();
  config.api_key = key;
  config.auth_probe_s = "1";
  auto logger = make_logger(config);
  logger->log_success_event(anthropic_call("call-16"));
  ASSERT_TRUE(eventually([&] { return count_requests("POST", "/v1/billing/meter_events") >= 2; },
                         std::chrono::seconds(20)))
      << "two probes";
  EXPECT_TRUE(logger->stats().paused);
  std::size_t sends = 0;
  for (const auto& request : emulator_.requests()) {
    sends += request.path == "/v2/billing/meter_events";
  }
  EXPECT_LE(sends, 4u) << "the call's four events, each refused once: sending stays paused";
  EXPECT_EQ(counted(alice_, "output"), 0);
}

TEST_F(TokenBillingTest, ANegativeReasoningCountIsRefusedLikeAnyNegativeCount) {
  auto logger = make_logger(preset_config());
  UsageEvent call = anthropic_call("call-17");
  call.reasoning_tokens = -5;
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(rejected(*logger, "negative_quantity"), 1u);
  EXPECT_EQ(count_requests("POST", "/v2/billing/meter_events"), 0u);
}

TEST_F(TokenBillingTest, ThePresetNamesEverySettingThatContradictsIt) {
  Config config = preset_config();
  config.billing_mode = "usage_records";
  config.meter_event_name = "llm_tokens";
  config.quantity = "split";
  auto finalized = finalize_config(config);
  ASSERT_FALSE(finalized);
  for (const char* variable :
       {"STRIPE_BILLING_MODE", "STRIPE_METER_EVENT_NAME", "STRIPE_QUANTITY"}) {
    EXPECT_NE(finalized.error().message.find(variable), std::string::npos)
        << variable << " in " << finalized.error().message;
  }
}

// Priced calls: gpt-4.1 at $2 input, $0.50 cached input, $8 output per 1M tokens, markup 1.5,
// in cents. A call of 1,000 prompt tokens (400 cached) and 500 output tokens costs
// (600 × 2 + 400 × 0.5 + 500 × 8) / 1e6 = 0.0054 USD, × 1.5 = 0.0081 USD = 0.81 cents.
// Ten calls: 8.1 cents, billed as whole cents with the remainder carried: 8.
class PricedTest : public TokenBillingTest {
 protected:
  Config priced_config() {
    Config config = EmulatorTest::config();
    config.billing_mode = "meter_events";
    config.price_id.reset();
    config.quantity = "priced";
    config.meter_event_name = "llm_cost";
    config.price_table = write_file("prices.yaml",
                                    "models:\n"
                                    "  openai/gpt-4.1: {input: \"2.00\", cached_input: \"0.50\", "
                                    "output: \"8\"}\n");
    config.price_markup = "1.5";
    config.table_reload_s = "0";
    emulator_.create_meter("llm_cost");
    return config;
  }

  static UsageEvent gpt_call(const std::string& call_id) {
    UsageEvent call = for_customer(call_id, 0);
    call.model = "gpt-4.1";
    call.provider = "openai";
    call.prompt_tokens = 1000;
    call.cache_read_tokens = 400;
    call.completion_tokens = 500;
    call.response_cost = 99.0;  // the host's own figure is not what priced mode bills
    return call;
  }

  double cost_counted(const std::string& customer) const {
    const auto totals = emulator_.meter_totals_by_customer("llm_cost", "", "");
    const auto it = totals.find(customer);
    return it == totals.end() ? 0 : it->second;
  }
};

TEST_F(PricedTest, TenCallsBillTheirExactAmountInWholeCentsWithTheRemainderCarried) {
  Config config = priced_config();
  config.unpriced_model = "reject";
  auto logger = make_logger(config);
  ASSERT_NE(logger, nullptr);
  for (int i = 0; i < 10; ++i) logger->log_success_event(gpt_call("priced-" + std::to_string(i)));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(cost_counted(alice_), 8);
}

TEST_F(PricedTest, AModelWithoutAPriceIsRejectedWithAReasonOrBilledByTokenType) {
  Config config = priced_config();
  config.unpriced_model = "reject";
  {
    auto logger = make_logger(config);
    UsageEvent call = gpt_call("unpriced-1");
    call.model = "mystery-model";
    call.provider = "";
    logger->log_success_event(call);
    ASSERT_TRUE(logger->flush(in_seconds(20)));
    EXPECT_EQ(rejected(*logger, "unpriced_model"), 1u);
    EXPECT_EQ(logger->stats().dead, 1u);
    logger->shutdown(in_seconds(5));
  }
  emulator_.create_meter("tokens_in");
  emulator_.create_meter("tokens_out");
  config.unpriced_model = "token_types";
  config.token_types = "input,output";
  config.token_type_meters = "input=tokens_in,output=tokens_out";
  config.outbox_path = dir_.file("second.db");
  auto logger = make_logger(config);
  ASSERT_NE(logger, nullptr);
  UsageEvent call = gpt_call("unpriced-2");
  call.model = "mystery-model";
  call.provider = "";
  call.cache_read_tokens.reset();
  logger->log_success_event(call);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(rejected(*logger, "unpriced_fallback"), 1u);
  EXPECT_EQ(emulator_.meter_totals_by_customer("tokens_in", "", "")[alice_], 1000);
  EXPECT_EQ(emulator_.meter_totals_by_customer("tokens_out", "", "")[alice_], 500);
}

TEST_F(PricedTest, ABrokenPriceTableIsRefusedAtStartWithEveryProblemNamed) {
  Config config = priced_config();
  config.price_table = write_file("bad.yaml",
                                  "models:\n"
                                  "  openai/gpt-4.1: {input: \"-2\", fresh_input: \"1\"}\n");
  auto finalized = finalize_config(config);
  ASSERT_FALSE(finalized);
  EXPECT_NE(finalized.error().message.find("STRIPE_PRICE_TABLE"), std::string::npos);
  EXPECT_NE(finalized.error().message.find("fresh_input"), std::string::npos)
      << finalized.error().message;
}

TEST_F(PricedTest, AReloadedTableBillsLaterCallsAndABrokenOneLeavesTheLastGoodInForce) {
  Config config = priced_config();
  config.unpriced_model = "reject";
  auto logger = make_logger(config);
  write_file("prices.yaml", "models: [broken\n");
  EXPECT_FALSE(logger->reload_tables());
  for (int i = 0; i < 10; ++i) logger->log_success_event(gpt_call("kept-" + std::to_string(i)));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(cost_counted(alice_), 8) << "the last good table priced them";
  // Twice the prices: 1.62 cents a call; ten more calls bill 16.2 more, carried from 0.1.
  write_file("prices.yaml",
             "models:\n"
             "  openai/gpt-4.1: {input: \"4\", cached_input: \"1\", output: \"16\"}\n");
  auto reloaded = logger->reload_tables();
  ASSERT_TRUE(reloaded) << reloaded.error().message;
  for (int i = 0; i < 10; ++i) logger->log_success_event(gpt_call("new-" + std::to_string(i)));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(cost_counted(alice_), 24) << "8.1 + 16.2 = 24.3 cents, billed 24";
}

}  // namespace
}  // namespace stripe_billing
